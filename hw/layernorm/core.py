"""Lutra's streaming integer LayerNorm, bit-exact to :func:`sim.golden.layernorm.layer_norm_int`.

Two passes over each row, overlapped across rows:

1. **Intake.** Each element is written into a two-row circular buffer (block RAM) while
   ``sum(x)`` and ``sum(x**2)`` accumulate (the square on a pipelined multiplier). A row's sums
   go to :class:`~hw.layernorm.stats.RowStats` (mean, variance, square root, reciprocal), whose
   results wait in a small FIFO.
2. **Normalisation.** The row is read back with its ``mean`` and ``recip`` and its channel's
   parameters (a second memory, two banks): ``norm = ((x - mean) * recip) >> 11`` (two 17 x 17
   products), ``acc = (-norm if negate else norm) + bias``, then the shared TFLite
   :class:`~hw.common.requant.Requantizer`. The read-back, normalisation and requantizer run
   free into a :class:`~hw.common.credit.CreditQueue`: an element is read back only when the
   queue will have a place for it, and a stall on ``o`` reaches no pipeline register.

Row ``k + 1`` streams in while row ``k`` is normalised.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sim.golden.layernorm import NORM_FRAC_BITS, RECIP_BITS

from ..common.credit import CreditQueue
from ..common.mul import MULTIPLIER_LATENCY, PipelinedMultiplier
from ..common.params import params_or_keywords
from ..common.requant import REQUANT_LATENCY, Requantizer, RequantIn
from ..common.pipeline import StallPipeline
from .params import LayerNormParams
from .stats import RECIP_STEPS, RowStats, RowStatsOut, RowSums, stat_widths

__all__ = ["InBeat", "OutBeat", "ParamBeat", "LayerNorm", "INTAKE_LATENCY", "READ_LATENCY",
           "NORM_LATENCY", "DESCRIPTORS"]

#: Cycles from an element's handshake to its row's sums on the statistics input (last element).
INTAKE_LATENCY = MULTIPLIER_LATENCY + 1
#: Cycles from the statistics' output to the row's first element leaving the row buffer.
READ_LATENCY = 3
#: Cycles from an element leaving the row buffer to its accumulator entering the requantizer.
NORM_LATENCY = MULTIPLIER_LATENCY + 4
#: Bits of ``recip`` per product piece: 17 x 17 signed, one DSP each on ECP5 and iCE40.
PIECE = 16
#: Rows whose statistics may wait for the normalisation pass.
DESCRIPTORS = 4
#: Rows counted per parameter bank (started and not yet fully read): every such row has an
#: element in the two-row buffer, so there are at most three.
_ROWS_IN_FLIGHT = 3


def _bank_base(bank, hidden: int):
    """The first parameter-memory address of ``bank`` (two banks of ``hidden`` entries)."""
    return Mux(bank, hidden, 0)


def _wrap(value, size: int):
    """``value + 1`` modulo ``size``."""
    return Mux(value == size - 1, 0, value + 1)


def InBeat(in_width: int) -> data.StructLayout:
    """One element of a row (rows are ``hidden`` consecutive elements)."""
    return data.StructLayout({"data": signed(in_width)})


def OutBeat(out_width: int) -> data.StructLayout:
    """One normalised element; ``last`` on each row's final element."""
    return data.StructLayout({"data": signed(out_width), "last": unsigned(1)})


def ParamBeat(out_width: int) -> data.StructLayout:
    """One channel's folded ``gamma``/``beta`` (:func:`sim.golden.layernorm.fold_layer_norm`)
    and the output zero point."""
    return data.StructLayout({
        "multiplier": signed(32),           # Q31
        "shift": signed(6),                 # TFLite convention, in [-31, 31]
        "bias": signed(32),                 # |bias| <= 2**30
        "negate": unsigned(1),
        "out_zero_point": signed(out_width),
    })


class LayerNorm(wiring.Component):
    """Integer LayerNorm of rows of ``hidden`` signed elements, with run-time ``gamma``/``beta``.

    Bit-exact to :func:`sim.golden.layernorm.layer_norm_int` with the per-channel
    ``multiplier``, ``shift``, ``bias``, ``negate`` and ``out_zero_point`` of the parameter
    load in effect for the row (``out_bits = out_width``). Backpressure on ``o`` stalls the
    block; nothing is dropped, repeated or reordered.

    **Parameter loads.** ``hidden`` beats on ``params``, channel 0 first, make one load. A load
    takes effect for every row whose first element is accepted on ``i`` in a later clock cycle
    than the load's last beat; rows started before keep the previous load to their end. Two
    banks hold the load in effect and the next one, so a load streams in while rows are
    normalised; ``params`` is held not-ready while rows that use the bank it would overwrite are
    still in flight. Before the first load every parameter is 0 (outputs 0).

    Takes a :class:`LayerNormParams` or its fields as keywords (not both), checked by it
    (:attr:`parameters`), which also derives the latency and rate figures.

    Parameters
    ----------
    hidden : int
        Elements per row, 1..1024.
    in_width, out_width : int
        8 or 16.
    divider : str
        ``"iterative"`` or ``"pipelined"`` statistics units.

    Members
    -------
    i : In(stream.Signature(InBeat(in_width)))
        Elements, row after row (``hidden`` beats each).
    params : In(stream.Signature(ParamBeat(out_width)))
        Per-channel parameters, ``hidden`` beats per load.
    o : Out(stream.Signature(OutBeat(out_width)))
        One output per input element, in order; ``last`` on each row's final element.
    """

    def __init__(self, parameters: LayerNormParams | None = None, **kwargs):
        self._params = p = params_or_keywords(LayerNormParams, parameters, kwargs,
                                              name="parameters")
        super().__init__({
            "i": In(stream.Signature(InBeat(p.in_width))),
            "params": In(stream.Signature(ParamBeat(p.out_width))),
            "o": Out(stream.Signature(OutBeat(p.out_width))),
        })

    @property
    def parameters(self) -> LayerNormParams:
        """The validated parameters with every derived figure."""
        return self._params

    hidden = property(lambda self: self._params.hidden)
    in_width = property(lambda self: self._params.in_width)
    out_width = property(lambda self: self._params.out_width)
    divider = property(lambda self: self._params.divider)
    latency = property(lambda self: self._params.latency)
    pair_period = property(lambda self: self._params.pair_period)

    def elaborate(self, platform):
        m = Module()
        cfg = self._params
        n, w, ow = cfg.hidden, cfg.in_width, cfg.out_width
        depth = cfg.row_buffer_depth

        m.submodules.rows = rows = Memory(shape=signed(w), depth=depth, init=[])
        row_write, row_read = rows.write_port(), rows.read_port()
        m.submodules.channel_params = chans = Memory(shape=ParamBeat(ow),
                                                     depth=cfg.param_memory_depth, init=[])
        chan_write, chan_read = chans.write_port(), chans.read_port()
        m.submodules.stats = stats = RowStats(hidden=n, in_width=w, divider=cfg.divider)
        stats_layout = RowStatsOut(w)
        m.submodules.descriptors = descs = SyncFIFOBuffered(width=stats_layout.size,
                                                            depth=DESCRIPTORS)
        m.submodules.requant = requant = Requantizer(lanes=1, out_width=ow)
        # From an element's read (``read_issue``) to the requantizer's output: the read
        # register, the normaliser, the requantizer.
        m.submodules.queue = queue = CreditQueue(
            OutBeat(ow), latency=1 + NORM_LATENCY + REQUANT_LATENCY)

        current_bank, rows_using = self._parameter_loads(m, chan_write)
        read_issue, row_read_done, read_bank = self._intake(m, row_write, stats, descs,
                                                            current_bank, rows_using)
        beat = self._read_back(m, row_read, chan_read, descs, stats_layout, read_issue,
                               row_read_done, read_bank, queue)
        self._normalise(m, beat, requant, queue)
        return m

    def _parameter_loads(self, m, chan_write):
        """Parameter loads, into the bank no row in flight uses; returns the bank rows starting
        now use and, per bank, the count of rows using it."""
        n = self._params.hidden
        current_bank = Signal()           # the bank rows starting now use
        rows_using = [Signal(range(_ROWS_IN_FLIGHT + 1), name=f"rows_using_bank{b}")
                      for b in range(2)]
        loading = Signal()                # a load has started and is not complete
        load_col = Signal(range(max(n, 2)))       # no zero-width signals at n = 1
        load_bank = ~current_bank
        load_accept = Signal()
        m.d.comb += [
            self.params.ready.eq(loading | (Mux(load_bank, rows_using[1], rows_using[0]) == 0)),
            load_accept.eq(self.params.valid & self.params.ready),
            chan_write.addr.eq(_bank_base(load_bank, n) + load_col),
            chan_write.data.eq(self.params.payload),
            chan_write.en.eq(load_accept),
        ]
        with m.If(load_accept):
            m.d.sync += [load_col.eq(_wrap(load_col, n)), loading.eq(load_col != n - 1)]
            with m.If(load_col == n - 1):
                m.d.sync += current_bank.eq(load_bank)
        return current_bank, rows_using

    def _intake(self, m, row_write, stats, descs, current_bank, rows_using):
        """Intake: buffer the row, accumulate sum(x) and sum(x**2) into the statistics units
        (whose results go to the descriptor FIFO). Returns the read side's ``read_issue``,
        ``row_read_done`` and ``read_bank``, driven by ``_read_back``."""
        cfg = self._params
        n, w = cfg.hidden, cfg.in_width
        wd = stat_widths(n, w)
        depth = cfg.row_buffer_depth
        stored = Signal(range(depth + 1))     # elements written and not yet read
        write_addr = Signal(range(depth))
        col_in = Signal(range(max(n, 2)))
        row_bank = Signal()
        accept = Signal()
        read_issue = Signal()
        row_read_done = Signal()              # the last element of a row leaves the buffer
        read_bank = Signal()
        # The intake moves unless a finished row's sums wait for the statistics units.
        intake_advance = Signal()
        sums = Signal(RowSums(n, w))
        sums_valid = Signal()
        first = col_in == 0
        bank_now = Mux(first, current_bank, row_bank)
        m.d.comb += [
            stats.i.valid.eq(sums_valid),
            stats.i.payload.eq(sums),
            intake_advance.eq(~sums_valid | stats.i.ready),
            self.i.ready.eq(intake_advance & (stored < depth)),
            accept.eq(self.i.valid & self.i.ready),
            row_write.addr.eq(write_addr),
            row_write.data.eq(self.i.payload.data),
            row_write.en.eq(accept),
        ]
        with m.If(accept):
            m.d.sync += [write_addr.eq(_wrap(write_addr, depth)), col_in.eq(_wrap(col_in, n)),
                         row_bank.eq(bank_now)]
        m.d.sync += stored.eq(stored + accept - read_issue)
        for b in range(2):
            started = accept & first & (current_bank == b)
            finished = row_read_done & (read_bank == b)
            m.d.sync += rows_using[b].eq(rows_using[b] + started - finished)

        m.submodules.square = square = PipelinedMultiplier(a_width=w, b_width=w)
        m.d.comb += [square.a.eq(self.i.payload.data), square.b.eq(self.i.payload.data),
                     square.en.eq(intake_advance)]
        # The element's flags and value, delayed with the square.
        tag = data.StructLayout({"valid": 1, "first": 1, "last": 1, "bank": 1,
                                 "x": signed(w)})
        tagged = Signal(tag)
        m.d.comb += [tagged.valid.eq(accept), tagged.first.eq(first),
                     tagged.last.eq(col_in == n - 1), tagged.bank.eq(bank_now),
                     tagged.x.eq(self.i.payload.data)]
        for step in range(MULTIPLIER_LATENCY):
            delayed = Signal(tag, name=f"element_d{step + 1}")
            with m.If(intake_advance):
                m.d.sync += delayed.eq(tagged)
            tagged = delayed
        total = Signal(signed(wd.total))
        sumsq = Signal(unsigned(wd.sumsq))
        new_total = Mux(tagged.first, 0, total) + tagged.x
        new_sumsq = Mux(tagged.first, 0, sumsq) + square.p.as_unsigned()
        with m.If(stats.i.valid & stats.i.ready):
            m.d.sync += sums_valid.eq(0)
        with m.If(intake_advance & tagged.valid):
            m.d.sync += [total.eq(new_total), sumsq.eq(new_sumsq)]
            with m.If(tagged.last):
                m.d.sync += [sums_valid.eq(1), sums.total.eq(new_total),
                             sums.sumsq.eq(new_sumsq), sums.bank.eq(tagged.bank)]
        m.d.comb += [descs.w_data.eq(stats.o.payload), descs.w_en.eq(stats.o.valid),
                     stats.o.ready.eq(descs.w_rdy)]
        return read_issue, row_read_done, read_bank

    def _read_back(self, m, row_read, chan_read, descs, stats_layout, read_issue,
                   row_read_done, read_bank, queue):
        """Read the row back with its statistics and the channel's parameters, one element
        per clock while the output queue has room; returns the stream of elements to
        normalise (its ``ready`` is always 1)."""
        cfg = self._params
        n, w, ow = cfg.hidden, cfg.in_width, cfg.out_width
        depth = cfg.row_buffer_depth
        head = data.View(stats_layout, descs.r_data)
        read_addr = Signal(range(depth))
        col_out = Signal(range(max(n, 2)))
        row_end = col_out == n - 1
        beat = stream.Signature(data.StructLayout({
            "x": signed(w), "mean": signed(w), "recip": unsigned(RECIP_STEPS),
            "chan": ParamBeat(ow), "last": 1})).create()
        held = Signal(data.StructLayout({"mean": signed(w), "recip": unsigned(RECIP_STEPS),
                                         "last": 1}))
        read_advance = Signal()
        m.d.comb += [
            read_advance.eq(~beat.valid | beat.ready),
            read_issue.eq(read_advance & descs.r_rdy & queue.room),
            queue.take.eq(read_issue),
            row_read_done.eq(read_issue & row_end),
            read_bank.eq(head.bank),
            row_read.addr.eq(read_addr),
            row_read.en.eq(read_advance),          # the read data holds while stalled
            chan_read.addr.eq(_bank_base(head.bank, n) + col_out),
            chan_read.en.eq(read_advance),
            descs.r_en.eq(row_read_done),
            beat.payload.x.eq(row_read.data),
            beat.payload.chan.eq(chan_read.data),
            beat.payload.mean.eq(held.mean),
            beat.payload.recip.eq(held.recip),
            beat.payload.last.eq(held.last),
        ]
        with m.If(read_advance):
            m.d.sync += [beat.valid.eq(read_issue), held.mean.eq(head.mean),
                         held.recip.eq(head.recip), held.last.eq(row_end)]
        with m.If(read_issue):
            m.d.sync += [read_addr.eq(_wrap(read_addr, depth)), col_out.eq(_wrap(col_out, n))]
        return beat

    def _normalise(self, m, beat, requant, queue):
        """Normalise: norm = floor((x - mean) * recip / 2**11), acc = +-norm + bias, then the
        requantizer into the output queue. Nothing here stalls (the requantizer's ``o.ready``
        is 1, so every ``advance`` is constant)."""
        w, ow = self._params.in_width, self._params.out_width
        to_requant = stream.Signature(RequantIn(1, ow)).create()
        pipe = StallPipeline(m, beat, to_requant)
        p = beat.payload
        # The block RAM's output is registered before any logic: its clock-to-output (5.8 ns on
        # ECP5 without the RAM's own output register) and a subtractor were the critical path.
        x = pipe.reg("x", signed(w), p.x)
        mean = pipe.reg("mean", signed(w), p.mean)
        y = pipe.reg("centered", signed(w + 1), x - mean)
        recip = pipe.delay("recip", unsigned(RECIP_STEPS), p.recip, 2)
        product = 0
        for k, lo in enumerate(range(0, RECIP_STEPS, PIECE)):
            mul = PipelinedMultiplier(a_width=w + 1, b_width=PIECE + 1)
            m.submodules[f"norm_mul_{k}"] = mul
            m.d.comb += [mul.a.eq(y), mul.b.eq(Cat(recip[lo:lo + PIECE], Const(0, 1))),
                         mul.en.eq(pipe.advance)]
            product = product + (mul.p << lo)
        shift = RECIP_BITS - NORM_FRAC_BITS
        norm = pipe.reg("norm", signed(NORM_FRAC_BITS + 2), (product >> shift))
        chan = pipe.delay("chan", ParamBeat(ow), p.chan, NORM_LATENCY - 1)
        acc = pipe.reg("acc", signed(32), Mux(chan.negate, chan.bias - norm, chan.bias + norm))
        out_chan = pipe.reg("chan_out", ParamBeat(ow), chan)
        last = pipe.delay("last", 1, p.last, NORM_LATENCY)
        top = 1 << (ow - 1)
        m.d.comb += [
            to_requant.payload.acc[0].eq(acc),
            to_requant.payload.multiplier[0].eq(out_chan.multiplier),
            to_requant.payload.shift[0].eq(out_chan.shift),
            to_requant.payload.out_zero_point.eq(out_chan.out_zero_point),
            to_requant.payload.act_min.eq(-top),
            to_requant.payload.act_max.eq(top - 1),
            to_requant.payload.last.eq(last),
        ]
        pipe.finish(NORM_LATENCY)
        m.d.comb += [requant.i.valid.eq(to_requant.valid), requant.i.payload.eq(
            to_requant.payload), to_requant.ready.eq(requant.i.ready)]
        m.d.comb += [queue.i.valid.eq(requant.o.valid), requant.o.ready.eq(1),
                     queue.i.payload.data.eq(requant.o.payload.data[0]),
                     queue.i.payload.last.eq(requant.o.payload.last)]
        wiring.connect(m, queue.o, wiring.flipped(self.o))
