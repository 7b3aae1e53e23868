"""Streaming softmax engine: int logits in, unsigned probabilities out, one element per clock.

This module holds the row buffer and the three passes (ingest, sum, output) every method
shares; each method's arithmetic (its exponential, the row's normaliser and the output
quotient) is in a module of its own: :mod:`.lut` (``recip``, and the exp table ``lut2d``
shares), :mod:`.lut2d` and :mod:`.shift` (I-ViT's ShiftMax).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..common.params import params_or_keywords
from ..common.pipeline import delayed
from .lut import RecipMethod
from .lut2d import Lut2dMethod
from .params import SoftmaxParams
from .shift import ShiftMaxMethod

__all__ = ["SoftmaxIn", "SoftmaxOut", "SoftmaxEngine"]

#: The arithmetic of each method, built into the engine's passes.
_METHODS = {"recip": RecipMethod, "lut2d": Lut2dMethod, "shiftmax": ShiftMaxMethod}


def SoftmaxIn(in_bits: int) -> data.StructLayout:
    """One logit; ``last`` marks the final element of a row."""
    return data.StructLayout({"data": signed(in_bits), "last": unsigned(1)})


def SoftmaxOut(out_bits: int) -> data.StructLayout:
    """One probability; ``last`` marks the final element of a row."""
    return data.StructLayout({"data": unsigned(out_bits), "last": unsigned(1)})


def _row_head(m: Module, name: str, fifo, layout):
    """The descriptor of the row a pass is reading, held in registers (block RAM outputs are
    too slow to decide the next pop from). Returns (head, have, done): the pass sets ``done``
    when it reads the row's last element."""
    head = Signal(layout, name=f"{name}_head")
    have = Signal(name=f"{name}_have")
    done = Signal(name=f"{name}_done")
    pop = fifo.r_rdy & (~have | done)
    m.d.comb += fifo.r_en.eq(pop)
    with m.If(pop):
        m.d.sync += [head.eq(fifo.r_data), have.eq(1)]
    with m.Elif(done):
        m.d.sync += have.eq(0)
    return head, have, done


class SoftmaxEngine(wiring.Component):
    """Softmax of each row of a stream of signed logits, one element per clock.

    Three passes run concurrently on different rows: *ingest* writes a row into a circular
    buffer in block RAM and finds its maximum; *sum* re-reads the complete row, computes
    ``e = exp(-(max - x) * S)`` and its sum, and derives the row's normaliser (a reciprocal,
    a sum index, or an integer division); *output* re-reads the row and produces
    ``e / sum``. Row descriptors travel between the passes in FIFOs. The buffer holds
    ``2 * max_len`` elements plus pipeline slack, so rows of any lengths (1..``max_len``,
    chosen by ``last``) stream back to back at one element per clock. The arithmetic is
    :func:`sim.golden.softmax.lut_softmax` (``recip``, ``lut2d``) or
    :func:`sim.golden.softmax.shiftmax` (``shiftmax``), bit for bit.

    Backpressure: the output pass only reads an element when the output FIFO has room for it
    (credits), so the internal pipelines never stall; a stalled sink fills the buffer and then
    holds ``i.ready`` low.

    The keyword parameters build and check a :class:`SoftmaxParams` (:attr:`parameters`),
    which also derives the tables, latencies and depths; or pass one as ``params``.

    Parameters
    ----------
    params : SoftmaxParams
        All the parameters below at once (or give them as keywords).
    method : str
        ``"recip"``, ``"lut2d"`` or ``"shiftmax"``.
    scale : float
        Input scale ``S`` (logit = ``x * S``), in [1e-6, 1e6]; fixes the table contents.
    in_bits : int
        Logit width, 2..16.
    out_bits : int
        Probability width, 4..16. ``recip``/``lut2d``: ``q / 2**out_bits`` ~ softmax, saturated
        at ``2**out_bits - 1`` (1.0 is not representable). ``shiftmax``: ``q / 2**(out_bits-1)``.
    max_len : int
        Longest row, 1..65536.
    exp_bits, recip_index_bits, recip_bits : int
        Table parameters of the LUT methods (see :func:`sim.golden.softmax.softmax_tables`).
    frac_bits, log_steps, pow_index_bits, pow_steps, pow_bits : int
        ``lut2d``: log-domain fraction bits, normalisation stages of the sum's logarithm, exp2
        table index bits, its refinement stages, and its entry width.
    n : int
        ShiftMax's ``n`` (exponent range), 1..30.

    Members
    -------
    i : In(stream.Signature(SoftmaxIn(in_bits)))
        Logits; ``last`` ends a row.
    o : Out(stream.Signature(SoftmaxOut(out_bits)))
        One probability per logit, same order, same ``last``.
    """

    def __init__(self, params: SoftmaxParams | None = None, **kwargs):
        params = params_or_keywords(SoftmaxParams, params, kwargs)
        self._params = params
        super().__init__({"i": In(stream.Signature(SoftmaxIn(params.in_bits))),
                          "o": Out(stream.Signature(SoftmaxOut(params.out_bits)))})

    @property
    def parameters(self) -> SoftmaxParams:
        """The validated parameters with every derived figure."""
        return self._params

    method = property(lambda self: self._params.method)
    scale = property(lambda self: self._params.scale)
    in_bits = property(lambda self: self._params.in_bits)
    out_bits = property(lambda self: self._params.out_bits)
    max_len = property(lambda self: self._params.max_len)
    n = property(lambda self: self._params.n)
    tables = property(lambda self: self._params.tables,
                      doc="SoftmaxTables of a LUT method, or None")
    table_bytes = property(lambda self: self._params.table_bytes)
    buffer_depth = property(lambda self: self._params.buffer_depth)

    def first_out_latency(self, length: int) -> int:
        """See :meth:`SoftmaxParams.first_out_latency`."""
        return self._params.first_out_latency(length)

    def row_latency(self, length: int) -> int:
        """See :meth:`SoftmaxParams.row_latency`."""
        return self._params.row_latency(length)

    def _descriptor_layout(self) -> data.StructLayout:
        """A row as the passes hand it on: its maximum and its length minus one."""
        return data.StructLayout({"max": signed(self._params.in_bits),
                                  "len_m1": range(max(self._params.max_len, 2))})

    def elaborate(self, platform):
        m = Module()
        depth = self._params.buffer_depth
        m.submodules.buffer = buffer = Memory(shape=signed(self._params.in_bits), depth=depth,
                                              init=[])
        write = buffer.write_port()
        read_sum = buffer.read_port()
        read_out = buffer.read_port()
        Desc = self._descriptor_layout()
        rows_in, freed = self._ingest(m, write, Desc)
        method = _METHODS[self._params.method](m, self._params)
        row_sum, row_done, row_desc = self._sum_pass(m, method, read_sum, rows_in, Desc)

        # ---- per-row normaliser: into the second descriptor FIFO --------------------------
        RowInfo = data.StructLayout({"desc": Desc, "norm": method.norm_layout()})
        m.submodules.rows_norm = rows_norm = SyncFIFOBuffered(width=RowInfo.size, depth=depth)
        info_valid = Signal()
        info = Signal(RowInfo)
        m.d.comb += [rows_norm.w_en.eq(info_valid), rows_norm.w_data.eq(info)]
        method.normaliser(row_sum, row_done, row_desc, info_valid, info)

        self._output_pass(m, method, read_out, rows_norm, RowInfo, freed)
        return m

    def _advance(self, ptr):
        """The next position of a pointer into the circular row buffer."""
        return Mux(ptr == self._params.buffer_depth - 1, 0, ptr + 1)

    def _ingest(self, m: Module, write, Desc):
        """Writes rows into the buffer and queues each row's descriptor (maximum, length) one
        cycle after its last element. Returns the descriptor FIFO and ``freed``, which the
        output pass drives when it reads an element (the buffer's room)."""
        depth = self._params.buffer_depth
        len_shape = range(max(self._params.max_len, 2))
        used = Signal(range(depth + 1))        # written, not yet read by the output pass
        w_ptr = Signal(range(depth))
        in_row = Signal()                      # the next input continues a row
        row_max = Signal(signed(self._params.in_bits))
        row_len = Signal(len_shape)            # elements so far minus one
        freed = Signal()                       # the output pass read one element this cycle

        m.submodules.rows_in = rows_in = SyncFIFOBuffered(width=Desc.size, depth=depth)

        fire = Signal()
        x = self.i.payload.data
        cur_max = Mux(in_row & (row_max > x), row_max, x)
        cur_len = Mux(in_row, row_len + 1, 0)
        m.d.comb += [
            self.i.ready.eq(used != depth),
            fire.eq(self.i.valid & self.i.ready),
            write.addr.eq(w_ptr),
            write.data.eq(x),
            write.en.eq(fire),
        ]
        m.d.sync += used.eq(used + fire - freed)
        with m.If(fire):
            m.d.sync += [
                w_ptr.eq(self._advance(w_ptr)),
                in_row.eq(~self.i.payload.last),
                row_max.eq(cur_max),
                row_len.eq(cur_len),
            ]
        # The descriptor is written one cycle after the row's last element, from registers.
        ended = Signal()
        m.d.sync += ended.eq(fire & self.i.payload.last)
        ended_desc = Signal(Desc)
        m.d.comb += [ended_desc.max.eq(row_max), ended_desc.len_m1.eq(row_len)]
        m.d.comb += [rows_in.w_en.eq(ended), rows_in.w_data.eq(ended_desc)]
        return rows_in, freed

    def _sum_pass(self, m: Module, method, read_sum, rows_in, Desc):
        """Re-reads each complete row and sums its exponentials. Returns the row's sum, a
        strobe in the cycle it is final, and the row's descriptor."""
        p = self._params
        s_ptr = Signal(range(p.buffer_depth))
        s_cnt = Signal(range(max(p.max_len, 2)))
        s_head, s_issue, s_done = _row_head(m, "sum", rows_in, Desc)
        s_last = s_cnt == s_head.len_m1
        m.d.comb += [read_sum.addr.eq(s_ptr), s_done.eq(s_issue & s_last)]
        with m.If(s_issue):
            m.d.sync += [s_ptr.eq(self._advance(s_ptr)), s_cnt.eq(Mux(s_last, 0, s_cnt + 1))]

        Tag = data.StructLayout({"valid": 1, "first": 1, "last": 1, "desc": Desc})
        s1 = Signal(Tag)           # the element is on read_sum.data
        m.d.sync += [s1.valid.eq(s_issue), s1.first.eq(s_cnt == 0), s1.last.eq(s_last),
                     s1.desc.eq(s_head)]
        # d is registered straight out of the block RAM: RAM outputs are slow on iCE40
        s_d = Signal(unsigned(p.in_bits + 1))
        m.d.sync += s_d.eq(s1.desc.max - read_sum.data)
        s2 = delayed(m, "sum_tag", s1, 1 + p.exp_latency)      # e is valid
        s_e = method.exponent("sum", s_d)
        acc = Signal(unsigned(p.sum_width))
        total = Mux(s2.first, 0, acc) + s_e
        row_sum = Signal(unsigned(p.sum_width))
        row_done = Signal()
        row_desc = Signal(Desc)
        with m.If(s2.valid):
            m.d.sync += acc.eq(total)
        m.d.sync += [row_done.eq(s2.valid & s2.last), row_sum.eq(total), row_desc.eq(s2.desc)]
        return row_sum, row_done, row_desc

    def _output_pass(self, m: Module, method, read_out, rows_norm, RowInfo, freed) -> None:
        """Re-reads each row with its normaliser and writes the probabilities into the output
        FIFO, reading an element only when the FIFO has room for it (credits)."""
        p = self._params
        m.submodules.out_fifo = out_fifo = SyncFIFOBuffered(
            width=SoftmaxOut(p.out_bits).size, depth=p.out_fifo_depth)
        credits = Signal(range(p.out_fifo_depth + 1), init=p.out_fifo_depth)
        o_ptr = Signal(range(p.buffer_depth))
        o_cnt = Signal(range(max(p.max_len, 2)))
        o_head, o_have, o_done = _row_head(m, "out", rows_norm, RowInfo)
        o_issue = Signal()
        o_last = o_cnt == o_head.desc.len_m1
        returned = Signal()
        m.d.comb += [
            o_issue.eq(o_have & (credits != 0)),
            read_out.addr.eq(o_ptr),
            o_done.eq(o_issue & o_last),
            freed.eq(o_issue),
            self.o.valid.eq(out_fifo.r_rdy),
            self.o.payload.eq(out_fifo.r_data),
            out_fifo.r_en.eq(self.o.ready),
            returned.eq(self.o.valid & self.o.ready),
        ]
        m.d.sync += credits.eq(credits - o_issue + returned)
        with m.If(o_issue):
            m.d.sync += [o_ptr.eq(self._advance(o_ptr)), o_cnt.eq(Mux(o_last, 0, o_cnt + 1))]

        OTag = data.StructLayout({"valid": 1, "last": 1, "info": RowInfo})
        o1 = Signal(OTag)          # the element is on read_out.data
        m.d.sync += [o1.valid.eq(o_issue), o1.last.eq(o_last), o1.info.eq(o_head)]
        o_d = Signal(unsigned(p.in_bits + 1))
        m.d.sync += o_d.eq(o1.info.desc.max - read_out.data)
        result = Signal(unsigned(p.out_bits))
        o3 = method.output(o1, o_d, result)
        out_beat = Signal(SoftmaxOut(p.out_bits))
        out_valid = Signal()
        m.d.sync += [out_beat.data.eq(result), out_beat.last.eq(o3.last),
                     out_valid.eq(o3.valid)]
        m.d.comb += [out_fifo.w_en.eq(out_valid), out_fifo.w_data.eq(out_beat)]
