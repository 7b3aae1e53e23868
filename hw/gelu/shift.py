"""The pieces of the ShiftGELU unit (I-ViT): row buffer, exponentials, divider, product.

Every constant and width comes from :func:`sim.golden.gelu.shift_gelu_constants`, the function
the golden model uses, so the gateware and the specification cannot drift apart.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sim.golden.gelu import DIV_NUMERATOR, ShiftGeluConstants, shift_exp

from ..common.arith import signed_width, unsigned_width
from ..common.checks import check_choice, check_int
from ..common.ivit import (DIVISOR_WIDTH, division_first_remainder, division_step, exp_offset,
                           shift_exp_restoring, shift_exp_restoring_latency)
from ..common.pipeline import StallPipeline
from .pipeline import GeluBeat

__all__ = ["RowBeat", "FrontOut", "DivOut", "RowBuffer", "ShiftFront", "Divider", "ShiftBack",
           "exp_quotient_bits"]


def _check_constants(constants) -> None:
    if not isinstance(constants, ShiftGeluConstants):
        raise TypeError(f"constants must be a ShiftGeluConstants (shift_gelu_constants()), "
                        f"not {constants!r}")


def RowBeat(lanes: int, width: int) -> data.StructLayout:
    """A beat of a buffered row together with the row's maximum."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(width), lanes),
        "max": signed(width),
        "last": unsigned(1),
    })


def FrontOut(k: ShiftGeluConstants, lanes: int) -> data.StructLayout:
    """Inputs, numerators ``e`` and clamped divisors ``min(e + em, 2**31 - 1)`` of one beat."""
    return data.StructLayout({
        "x": data.ArrayLayout(signed(k.in_width), lanes),
        "e": data.ArrayLayout(unsigned(unsigned_width(k.e_max)), lanes),
        "divisor": data.ArrayLayout(unsigned(DIVISOR_WIDTH), lanes),
        "last": unsigned(1),
    })


def DivOut(k: ShiftGeluConstants, lanes: int) -> data.StructLayout:
    """Inputs, numerators and factors ``f = (2**31 - 1) // divisor`` of one beat."""
    return data.StructLayout({
        "x": data.ArrayLayout(signed(k.in_width), lanes),
        "e": data.ArrayLayout(unsigned(unsigned_width(k.e_max)), lanes),
        "f": data.ArrayLayout(unsigned(k.quotient_bits), lanes),
        "last": unsigned(1),
    })


class RowBuffer(wiring.Component):
    """Holds each row until its maximum is known, then replays it with that maximum.

    Beats are written into a circular buffer in block RAM while the row's running maximum is
    tracked; when the row's ``last`` beat arrives its maximum and length go into a descriptor
    FIFO, and the row is read back beat by beat with the maximum attached. Writing row ``k + 1``
    overlaps reading row ``k``, so rows of up to ``depth - 2`` beats stream at one beat per
    clock. A row longer than ``depth`` beats can never complete and stalls the input for good:
    size ``depth`` for the longest row.

    Parameters
    ----------
    lanes : int
        Elements per beat.
    width : int
        Bits per element.
    depth : int
        Buffer capacity in beats.

    Members
    -------
    i : In(stream.Signature(GeluBeat(lanes, width)))
        Rows, ``last`` on each row's final beat.
    o : Out(stream.Signature(RowBeat(lanes, width)))
        The same beats, in order, each with its row's maximum.
    """

    #: Cycles from the handshake of a row's last beat to its first beat on ``o`` (no stalls).
    LATENCY = 3
    #: Rows (maxima and lengths) queued between the write and the read side.
    DESCRIPTORS = 4

    def __init__(self, *, lanes: int, width: int, depth: int):
        check_int("lanes", lanes, 1, 64)
        check_int("width", width, 2, 32)
        check_int("depth", depth, 2)
        self._lanes, self._width, self._depth = lanes, width, depth
        super().__init__({
            "i": In(stream.Signature(GeluBeat(lanes, width))),
            "o": Out(stream.Signature(RowBeat(lanes, width))),
        })

    lanes = property(lambda self: self._lanes)
    width = property(lambda self: self._width)
    depth = property(lambda self: self._depth)

    def elaborate(self, platform):
        m = Module()
        lanes, width, depth = self._lanes, self._width, self._depth
        beat_layout = data.ArrayLayout(signed(width), lanes)
        m.submodules.rows = rows = Memory(shape=beat_layout, depth=depth, init=[])
        write, read = rows.write_port(), rows.read_port()
        # The row's last beat index, not its length: the read side then needs only an equality.
        Desc = data.StructLayout({"max": signed(width), "last_index": range(depth)})
        # A few descriptors cover the rows between write and read at full rate, even one-beat
        # rows; when the sink stalls, a full descriptor FIFO holds the input like a full buffer.
        m.submodules.descriptors = descs = SyncFIFOBuffered(
            width=Desc.size, depth=min(depth, self.DESCRIPTORS))

        def next_addr(addr):
            return Mux(addr == depth - 1, 0, addr + 1)

        # ---- write side: store beats, track the row's maximum and length ----------------
        stored = Signal(range(depth + 1))     # beats written and not yet read
        write_addr = Signal(range(depth))
        row_max = Signal(signed(width))
        row_beats = Signal(range(depth))
        first = Signal(init=1)
        accept = Signal()
        read_issue = Signal()

        beat_max = self.i.payload.data[0]
        for lane in range(1, lanes):
            elem = self.i.payload.data[lane]
            beat_max = Mux(elem > beat_max, elem, beat_max)
        new_max = Mux(first | (beat_max > row_max), beat_max, row_max)
        new_desc = Signal(Desc)
        m.d.comb += [
            self.i.ready.eq((stored < depth) & descs.w_rdy),
            accept.eq(self.i.valid & self.i.ready),
            write.addr.eq(write_addr),
            write.data.eq(self.i.payload.data),
            write.en.eq(accept),
            new_desc.max.eq(new_max),
            new_desc.last_index.eq(row_beats),
            descs.w_data.eq(new_desc),
            descs.w_en.eq(accept & self.i.payload.last),
        ]
        with m.If(accept):
            m.d.sync += [
                write_addr.eq(next_addr(write_addr)),
                row_max.eq(new_max),
                first.eq(self.i.payload.last),
                row_beats.eq(Mux(self.i.payload.last, 0, row_beats + 1)),
            ]
        m.d.sync += stored.eq(stored + accept - read_issue)

        # ---- read side: replay complete rows with their maximum ---------------------------
        head = data.View(Desc, descs.r_data)
        read_addr = Signal(range(depth))
        beats_read = Signal(range(depth))
        advance = Signal()
        out_valid = Signal()
        row_end = beats_read == head.last_index
        m.d.comb += [
            advance.eq(~out_valid | self.o.ready),
            read_issue.eq(advance & descs.r_rdy),
            read.addr.eq(read_addr),
            read.en.eq(advance),               # the read data holds while the sink stalls
            descs.r_en.eq(read_issue & row_end),
            self.o.valid.eq(out_valid),
            self.o.payload.data.eq(read.data),
        ]
        with m.If(advance):
            m.d.sync += [
                out_valid.eq(read_issue),
                self.o.payload.max.eq(head.max),
                self.o.payload.last.eq(row_end),
            ]
        with m.If(read_issue):
            m.d.sync += [
                read_addr.eq(next_addr(read_addr)),
                beats_read.eq(Mux(row_end, 0, beats_read + 1)),
            ]
        return m


def exp_quotient_bits(k: ShiftGeluConstants) -> int:
    """Quotient bits of ``x // x0`` shared by both exponentials (so their latencies match)."""
    return (k.n + exp_offset(k.x0, -k.row_max_range[0])).bit_length()


class ShiftFront(wiring.Component):
    """Per element ``e = shift_exp(x - m)`` and ``min(e + shift_exp(-m), 2**31 - 1)``.

    ``m`` is the row maximum carried by each beat (``max_mode="row"``) or the largest input
    (``"static"``, where ``shift_exp(-m)`` is a constant). One beat per clock, ``latency``
    cycles, no multipliers: the division by ``x0`` is a constant-divisor restoring division.

    Parameters
    ----------
    constants : ShiftGeluConstants
        From :func:`sim.golden.gelu.shift_gelu_constants`.
    lanes : int
        Elements per beat.

    Members
    -------
    i : In(stream.Signature(RowBeat(lanes, in_width) or GeluBeat(lanes, in_width)))
        Elements (with the row maximum in ``"row"`` mode).
    o : Out(stream.Signature(FrontOut(constants, lanes)))
        The elements with their numerators and divisors.
    """

    def __init__(self, *, constants: ShiftGeluConstants, lanes: int):
        _check_constants(constants)
        check_int("lanes", lanes, 1, 64)
        self._k, self._lanes = constants, lanes
        width = constants.in_width
        in_layout = RowBeat(lanes, width) if constants.max_mode == "row" \
            else GeluBeat(lanes, width)
        super().__init__({
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(FrontOut(constants, lanes))),
        })

    @staticmethod
    def latency_for(constants: ShiftGeluConstants) -> int:
        """Cycles from an accepted beat to its result (no stalls)."""
        return shift_exp_restoring_latency(exp_quotient_bits(constants)) + 1

    @property
    def latency(self) -> int:
        return self.latency_for(self._k)

    def elaborate(self, platform):
        m = Module()
        k, lanes = self._k, self._lanes
        w = k.in_width
        lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
        qbits = exp_quotient_bits(k)
        pipe = StallPipeline(m, self.i, self.o)
        exp_latency = shift_exp_restoring_latency(qbits)

        if k.max_mode == "row":
            row_max = self.i.payload.max
            em = shift_exp_restoring(pipe, "em", -row_max, -hi, -lo, x0=k.x0, n=k.n,
                                     qbits=qbits, saturate=True)
        else:
            row_max = Const(hi, signed(w))
            em = Const(int(shift_exp(-hi, k.x0, k.n, saturate=True)), unsigned(DIVISOR_WIDTH))

        for lane in range(lanes):
            x = self.i.payload.data[lane]
            e = shift_exp_restoring(pipe, f"l{lane}_e", x - row_max, lo - hi, 0, x0=k.x0,
                                    n=k.n, qbits=qbits, saturate=False)
            total = e + em
            divisor = Mux(total > DIV_NUMERATOR, DIV_NUMERATOR, total)
            m.d.comb += [
                self.o.payload.divisor[lane].eq(pipe.reg(f"l{lane}_divisor",
                                                         unsigned(DIVISOR_WIDTH), divisor)),
                self.o.payload.e[lane].eq(pipe.reg(f"l{lane}_e_out", e.shape(), e)),
                self.o.payload.x[lane].eq(pipe.delay(f"l{lane}_x", signed(w), x,
                                                     exp_latency + 1)),
            ]
        m.d.comb += self.o.payload.last.eq(pipe.delay("last", 1, self.i.payload.last,
                                                      exp_latency + 1))
        pipe.finish(exp_latency + 1)
        return m


class Divider(wiring.Component):
    """Exact ``f = (2**31 - 1) // divisor`` per element, by restoring division.

    ``divider="pipelined"``: one quotient bit per stage, one beat per clock, ``latency`` cycles.
    ``divider="iterative"``: one quotient bit per clock in a single stage per lane, one beat
    every ``period`` cycles (``quotient_bits + 1``). The divisor is at least
    ``constants.divisor_min``, so only ``quotient_bits`` quotient bits can be non-zero.

    Parameters
    ----------
    constants : ShiftGeluConstants
    lanes : int
    divider : str
        ``"pipelined"`` or ``"iterative"``.

    Members
    -------
    i : In(stream.Signature(FrontOut(constants, lanes)))
    o : Out(stream.Signature(DivOut(constants, lanes)))
    """

    def __init__(self, *, constants: ShiftGeluConstants, lanes: int, divider: str):
        _check_constants(constants)
        check_int("lanes", lanes, 1, 64)
        check_choice("divider", divider, ("pipelined", "iterative"))
        self._k, self._lanes, self._divider = constants, lanes, divider
        super().__init__({
            "i": In(stream.Signature(FrontOut(constants, lanes))),
            "o": Out(stream.Signature(DivOut(constants, lanes))),
        })

    @property
    def latency(self) -> int:
        """Cycles from an accepted beat to its result (no stalls)."""
        return self._k.quotient_bits + (1 if self._divider == "iterative" else 0)

    @property
    def period(self) -> int:
        """Cycles between accepted beats at full rate."""
        return 1 if self._divider == "pipelined" else self._k.quotient_bits + 1

    def elaborate(self, platform):
        m = Module()
        k, lanes = self._k, self._lanes
        qbits = k.quotient_bits
        first_remainder = division_first_remainder(qbits)     # < divisor_min
        payload = self.i.payload

        if self._divider == "pipelined":
            pipe = StallPipeline(m, self.i, self.o)
            for lane in range(lanes):
                divisor = payload.divisor[lane]
                remainder = Const(first_remainder, DIVISOR_WIDTH)
                quotient = Const(0, 0)
                for bit in reversed(range(qbits)):
                    remainder, take = division_step(remainder, divisor)
                    remainder = pipe.reg(f"l{lane}_rem{bit}", unsigned(DIVISOR_WIDTH),
                                         remainder)
                    quotient = pipe.reg(f"l{lane}_quot{bit}", unsigned(qbits - bit),
                                        Cat(take, quotient))
                    if bit:
                        divisor = pipe.reg(f"l{lane}_div{bit}", unsigned(DIVISOR_WIDTH),
                                           divisor)
                m.d.comb += [
                    self.o.payload.f[lane].eq(quotient),
                    self.o.payload.x[lane].eq(pipe.delay(f"l{lane}_x", payload.x[lane].shape(),
                                                         payload.x[lane], qbits)),
                    self.o.payload.e[lane].eq(pipe.delay(f"l{lane}_e", payload.e[lane].shape(),
                                                         payload.e[lane], qbits)),
                ]
            m.d.comb += self.o.payload.last.eq(pipe.delay("last", 1, payload.last, qbits))
            pipe.finish(qbits)
            return m

        # Iterative: load, then qbits steps, then hold the result until it is taken.
        running = Signal()
        steps_left = Signal(range(qbits))
        out_valid = Signal()
        held = Signal(DivOut(k, lanes))
        divisors = Signal(data.ArrayLayout(unsigned(DIVISOR_WIDTH), lanes))
        remainders = Signal(data.ArrayLayout(unsigned(DIVISOR_WIDTH), lanes))
        accept = Signal()
        m.d.comb += [
            self.i.ready.eq(~running & (~out_valid | self.o.ready)),
            accept.eq(self.i.valid & self.i.ready),
            self.o.valid.eq(out_valid),
            self.o.payload.eq(held),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(accept):
            m.d.sync += [
                running.eq(1),
                steps_left.eq(qbits - 1),
                held.x.eq(payload.x),
                held.e.eq(payload.e),
                held.last.eq(payload.last),
                divisors.eq(payload.divisor),
            ]
            for lane in range(lanes):
                m.d.sync += [remainders[lane].eq(first_remainder), held.f[lane].eq(0)]
        with m.Elif(running):
            for lane in range(lanes):
                remainder, take = division_step(remainders[lane], divisors[lane])
                m.d.sync += [
                    remainders[lane].eq(remainder),
                    held.f[lane].eq(Cat(take, held.f[lane])),
                ]
            m.d.sync += steps_left.eq(steps_left - 1)
            with m.If(steps_left == 0):
                m.d.sync += [running.eq(0), out_valid.eq(1)]
        return m


class ShiftBack(wiring.Component):
    """``sig = (e * f) >> (32 - out_bits)`` and ``y = x * sig``; one beat per clock.

    ``e * f`` is cut into 16 x 16-bit partial products (one DSP each on iCE40 and ECP5), summed
    over two stages, so no stage holds more than a multiplier or two adders.

    Parameters
    ----------
    constants : ShiftGeluConstants
    lanes : int

    Members
    -------
    i : In(stream.Signature(DivOut(constants, lanes)))
    o : Out(stream.Signature(GeluBeat(lanes, out_width)))
        ``x * sigmoid(1.702 x)`` at scale ``S * 2**-(out_bits - 1)``.
    """

    LATENCY = 4
    CHUNK = 16

    def __init__(self, *, constants: ShiftGeluConstants, lanes: int):
        _check_constants(constants)
        check_int("lanes", lanes, 1, 64)
        self._k, self._lanes = constants, lanes
        super().__init__({
            "i": In(stream.Signature(DivOut(constants, lanes))),
            "o": Out(stream.Signature(GeluBeat(lanes, self.out_width))),
        })

    @property
    def out_width(self) -> int:
        return signed_width(*self._k.y_range)

    def elaborate(self, platform):
        m = Module()
        k, chunk = self._k, self.CHUNK
        pipe = StallPipeline(m, self.i, self.o)
        sig_width = unsigned_width(k.sig_max)
        payload = self.i.payload
        for lane in range(self._lanes):
            p = f"l{lane}_"
            e, f = payload.e[lane], payload.f[lane]
            e_parts = [e[lo:lo + chunk] for lo in range(0, len(e), chunk)]
            f_parts = [f[lo:lo + chunk] for lo in range(0, len(f), chunk)]
            # s1: partial products; s2: those of equal weight summed; s3: the whole product.
            by_weight = {}
            for a, e_part in enumerate(e_parts):
                for b, f_part in enumerate(f_parts):
                    pp = pipe.reg(f"{p}pp{a}{b}", unsigned(len(e_part) + len(f_part)),
                                  e_part * f_part)
                    by_weight.setdefault(a + b, []).append(pp)
            groups = []
            for weight, terms in sorted(by_weight.items()):
                total = sum(terms[1:], terms[0])
                group = pipe.reg(f"{p}pp_w{weight}", unsigned(len(total)), total)
                groups.append(group << (chunk * weight))
            product = pipe.reg(f"{p}ef", unsigned(len(e) + len(f)), sum(groups[1:], groups[0]))
            # s4: the sigmoid's top bits times x.
            x = pipe.delay(f"{p}x", signed(k.in_width), payload.x[lane], 3)
            sig = (product >> k.sig_shift)[:sig_width]
            y = pipe.reg(f"{p}y", signed(self.out_width), x * sig)
            m.d.comb += self.o.payload.data[lane].eq(y)
        m.d.comb += self.o.payload.last.eq(pipe.delay("last", 1, payload.last, self.LATENCY))
        pipe.finish(self.LATENCY)
        return m
