"""Streaming softmax engine: int logits in, unsigned probabilities out, one element per clock."""

from __future__ import annotations

import math

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sim.golden.softmax import (CONST_SHIFT, LOG_GUARD, LUT_DEFAULTS, METHODS, POW_GUARD,
                                shiftmax_min_sum, shiftmax_x0, softmax_tables)

from ..common.arith import constant_product_levels, pipelined_constant_product
from ..common.checks import check_choice, check_int
from ..common.pipeline import delayed

__all__ = ["SoftmaxIn", "SoftmaxOut", "SoftmaxEngine"]

INT31_MAX = (1 << 31) - 1


# Cycles each part of the engine adds, fixed by the code below; the latency figures, the row
# buffer's slack and the output FIFO depth are derived from them (and checked by the tests).
INGEST = 1           # the row descriptor is written one cycle after the row's last element
DESC_FIFO = 3        # SyncFIFOBuffered (written at t, readable at t + 2), head register
SUM_PIPE = 3         # buffer read, d register, (exponent), accumulator
OUT_PIPE = 4         # buffer read, d register, (exponent), product / quotient, output register
OUT_FIFO = 1         # output FIFO write -> o.valid


def SoftmaxIn(in_bits: int) -> data.StructLayout:
    """One logit; ``last`` marks the final element of a row."""
    return data.StructLayout({"data": signed(in_bits), "last": unsigned(1)})


def SoftmaxOut(out_bits: int) -> data.StructLayout:
    """One probability; ``last`` marks the final element of a row."""
    return data.StructLayout({"data": unsigned(out_bits), "last": unsigned(1)})


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

    Parameters
    ----------
    method : str
        ``"recip"``, ``"lut2d"`` or ``"shiftmax"``.
    scale : float
        Input scale ``S`` (logit = ``x * S``); fixes the table contents.
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

    def __init__(self, *, method: str = "recip", scale: float = 0.125, in_bits: int = 8,
                 out_bits: int = 8, max_len: int = 512,
                 exp_bits: int = LUT_DEFAULTS["exp_bits"],
                 recip_index_bits: int = LUT_DEFAULTS["recip_index_bits"],
                 recip_bits: int = LUT_DEFAULTS["recip_bits"],
                 frac_bits: int = LUT_DEFAULTS["frac_bits"],
                 log_steps: int = LUT_DEFAULTS["log_steps"],
                 pow_index_bits: int = LUT_DEFAULTS["pow_index_bits"],
                 pow_steps: int = LUT_DEFAULTS["pow_steps"],
                 pow_bits: int = LUT_DEFAULTS["pow_bits"], n: int = 15):
        check_choice("method", method, METHODS)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a positive number, not {scale!r}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, not {scale!r}")
        check_int("in_bits", in_bits, 2, 16)
        check_int("out_bits", out_bits, 4, 16)
        check_int("max_len", max_len, 1, 65536)
        check_int("n", n, 1, 30)
        self._method, self._scale = method, float(scale)
        self._in_bits, self._out_bits, self._max_len, self._n = in_bits, out_bits, max_len, n
        if method == "shiftmax":
            self._tables = None
            self._x0 = shiftmax_x0(scale)
            e_max = int(shiftmax_min_sum(scale, n))        # e of the row maximum: the largest e
            if max_len * e_max > INT31_MAX:
                # Beyond this I-ViT clamps the sum and its outputs exceed out_bits bits.
                n_max = max((k for k in range(1, 31)
                             if max_len * int(shiftmax_min_sum(scale, k)) <= INT31_MAX),
                            default=0)
                raise ValueError(f"n must be <= {n_max} for scale {scale} and max_len "
                                 f"{max_len} (a row's sum must fit I-ViT's 31 bits), not {n!r}")
            self._sum_width = (max_len * e_max).bit_length()
            # f = (2**31 - 1) // sum with e_max <= sum <= 2**31 - 1
            self._quotient_bits = (INT31_MAX // e_max).bit_length()
        else:
            # Raises ValueError naming the offending table parameter.
            self._tables = softmax_tables(
                method=method, scale=scale, in_bits=in_bits, out_bits=out_bits,
                exp_bits=exp_bits, recip_index_bits=recip_index_bits, recip_bits=recip_bits,
                frac_bits=frac_bits, log_steps=log_steps, pow_index_bits=pow_index_bits,
                pow_steps=pow_steps, pow_bits=pow_bits)
            self._sum_width = (max_len * ((1 << exp_bits) - 1)).bit_length()
        super().__init__({"i": In(stream.Signature(SoftmaxIn(in_bits))),
                          "o": Out(stream.Signature(SoftmaxOut(out_bits)))})

    method = property(lambda self: self._method)
    scale = property(lambda self: self._scale)
    in_bits = property(lambda self: self._in_bits)
    out_bits = property(lambda self: self._out_bits)
    max_len = property(lambda self: self._max_len)
    n = property(lambda self: self._n)
    tables = property(lambda self: self._tables, doc="SoftmaxTables of a LUT method, or None")

    @property
    def table_bytes(self) -> int:
        return 0 if self._tables is None else self._tables.bytes

    @property
    def exp_latency(self) -> int:
        """Cycles from a registered ``d`` to its ``e``: a table read, or three logic stages."""
        return 3 if self._method == "shiftmax" else 1

    @property
    def normaliser_latency(self) -> int:
        """Cycles from a row's sum to its normaliser entering the descriptor FIFO: leading-one
        detection and a table read (recip); leading one, mantissa, one stage per
        normalisation step, the residual, its constant product and the sum (lut2d); or a
        register and one stage per quotient bit (shiftmax)."""
        if self._method == "shiftmax":
            return 1 + self._quotient_bits
        if self._method == "lut2d":
            return 4 + self._tables.log_steps + constant_product_levels(self._tables.tail_const)
        return 2

    def first_out_latency(self, length: int) -> int:
        """Cycles from a row's last input handshake to its first output handshake, for a row
        entering an idle engine with the sink always ready."""
        # the sum pass reads the whole row before the output pass can start it
        return (INGEST + DESC_FIFO + length + SUM_PIPE + self.exp_latency
                + self.normaliser_latency + DESC_FIFO + self.out_pipe + OUT_FIFO)

    @property
    def out_pipe(self) -> int:
        """Cycles of the output pass from a buffer read to the output FIFO write."""
        if self._method == "lut2d":
            # buffer read, d, capped d, the constant product and its rounding, T, the exp2
            # table read, one stage per refinement step, output register
            t = self._tables
            return 7 + constant_product_levels(t.num_const) + t.pow_steps
        return OUT_PIPE + self.exp_latency

    def row_latency(self, length: int) -> int:
        """Cycles from a row's last input handshake to its last output handshake (idle engine,
        sink always ready)."""
        return self.first_out_latency(length) + length - 1

    @property
    def buffer_depth(self) -> int:
        """Elements the row buffer holds. Each pass serves one element per clock but waits for
        whole rows, so it lags the pass before it by at most ``max_len`` plus its fixed
        delays; two such lags bound the elements in flight when the sink never stalls."""
        return 2 * self.first_out_latency(self._max_len) + 4

    @property
    def out_fifo_depth(self) -> int:
        """Output FIFO entries: the credits cover the loop read -> output FIFO -> sink ->
        credit back, so an always-ready sink never throttles the output pass."""
        return self.out_pipe + OUT_FIFO + 3

    def _descriptor_layout(self) -> data.StructLayout:
        """A row as the passes hand it on: its maximum and its length minus one."""
        return data.StructLayout({"max": signed(self._in_bits),
                                  "len_m1": range(max(self._max_len, 2))})

    def _norm_layout(self) -> data.StructLayout:
        """A row's normaliser: I-ViT's quotient ``f``; the sum's leading-one offset and the
        reciprocal mantissa; or ``L ~ log2(sum / EXP[0]) * 2**frac_bits`` (signed: slightly
        negative for a one-hot row)."""
        if self._tables is None:
            return data.StructLayout({"f": unsigned(self._quotient_bits)})
        k_span = self._sum_width - (self._tables.exp_bits - 1)
        if self._method == "recip":
            return data.StructLayout({"k_off": range(max(k_span, 2)),
                                      "recip": unsigned(self._tables.recip_bits)})
        log_width = self._tables.frac_bits + max(k_span, 2).bit_length() + 2
        return data.StructLayout({"log_sum": signed(log_width)})

    def elaborate(self, platform):
        m = Module()
        in_bits, out_bits, max_len = self._in_bits, self._out_bits, self._max_len
        depth = self.buffer_depth
        lut = self._tables
        method = self._method

        # ---- row buffer and ingest -----------------------------------------------------
        m.submodules.buffer = buffer = Memory(shape=signed(in_bits), depth=depth, init=[])
        write = buffer.write_port()
        read_sum = buffer.read_port()
        read_out = buffer.read_port()

        def advance(ptr):
            return Mux(ptr == depth - 1, 0, ptr + 1)

        len_shape = range(max(max_len, 2))
        used = Signal(range(depth + 1))        # written, not yet read by the output pass
        w_ptr = Signal(range(depth))
        in_row = Signal()                      # the next input continues a row
        row_max = Signal(signed(in_bits))
        row_len = Signal(len_shape)            # elements so far minus one
        freed = Signal()                       # the output pass read one element this cycle

        Desc = self._descriptor_layout()
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
                w_ptr.eq(advance(w_ptr)),
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

        # ---- exponent, shared by the sum and output passes ------------------------------
        d_bits = in_bits + 1
        if lut is not None:
            # Zero-padded to a power of two so that d addresses it without a range check;
            # d beyond the padding is caught by its upper bits (table_bytes counts the
            # defined entries only).
            exp_addr_bits = max(1, (len(lut.exp) - 1).bit_length())
            m.submodules.exp_table = exp_table = Memory(
                shape=unsigned(lut.exp_bits), depth=1 << exp_addr_bits,
                init=list(lut.exp) + [0] * ((1 << exp_addr_bits) - len(lut.exp)))

        def exponent(name: str, d):
            """``e`` of the registered ``d``, valid ``exp_latency`` cycles after ``d``."""
            if lut is not None:
                port = exp_table.read_port()
                in_range = Signal(name=f"{name}_in_range")
                m.d.comb += port.addr.eq(d[:exp_addr_bits])
                m.d.sync += in_range.eq(d[exp_addr_bits:] == 0)
                e = Signal(unsigned(lut.exp_bits), name=f"{name}_e")
                m.d.comb += e.eq(Mux(in_range, port.data, 0))
                return e
            # ShiftMax's shift_exp in logic, three stages: ~x * log2(e) and the clamp; the
            # quotient by comparisons; the remainder and the shift.
            n, x0 = self._n, self._x0
            xv = Signal(signed(d_bits + 1), name=f"{name}_xneg")
            m.d.comb += xv.eq(-d)
            t_raw = xv + (xv >> 1) - (xv >> 4)
            # wide enough for both t_raw (>= -1.5 * 2**in_bits) and the clamp n * x0
            t_width = max(d_bits + 2, (-n * x0).bit_length() + 1) + 1
            t = Signal(signed(t_width), name=f"{name}_t")
            m.d.sync += t.eq(Mux(t_raw < n * x0, n * x0, t_raw))
            # q = t // x0 in [0, n] (x0 < 0): the number of multiples j * x0 >= t
            q = Signal(range(n + 1), name=f"{name}_q")
            t_q = Signal.like(t, name=f"{name}_t_q")
            m.d.sync += [q.eq(sum((t <= j * x0) for j in range(1, n + 1))), t_q.eq(t)]
            multiples = data.ArrayLayout(signed(t_width), n + 1)
            table = Signal(multiples, init=[x0 * j for j in range(n + 1)], name=f"{name}_x0q")
            r = Signal(signed(t_width), name=f"{name}_r")
            m.d.comb += r.eq(t_q - table[q])
            left = Signal(range(n + 1), name=f"{name}_shift")
            m.d.comb += left.eq(n - q)
            mantissa = Signal(unsigned((-2 * x0).bit_length()), name=f"{name}_mantissa")
            m.d.comb += mantissa.eq(r - 2 * x0)            # in (-x0, -2 * x0]
            e_width = int(shiftmax_min_sum(self._scale, n)).bit_length()
            e = Signal(unsigned(e_width), name=f"{name}_e")
            m.d.sync += e.eq((mantissa << left) >> 1)
            return e

        def row_head(name: str, fifo, layout):
            """The descriptor of the row a pass is reading, held in registers (block RAM
            outputs are too slow to decide the next pop from). Returns (head, have, done):
            the pass sets ``done`` when it reads the row's last element."""
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

        # ---- sum pass ----------------------------------------------------------------
        s_ptr = Signal(range(depth))
        s_cnt = Signal(len_shape)
        s_head, s_issue, s_done = row_head("sum", rows_in, Desc)
        s_last = s_cnt == s_head.len_m1
        m.d.comb += [read_sum.addr.eq(s_ptr), s_done.eq(s_issue & s_last)]
        with m.If(s_issue):
            m.d.sync += [s_ptr.eq(advance(s_ptr)), s_cnt.eq(Mux(s_last, 0, s_cnt + 1))]

        Tag = data.StructLayout({"valid": 1, "first": 1, "last": 1, "desc": Desc})
        s1 = Signal(Tag)           # the element is on read_sum.data
        m.d.sync += [s1.valid.eq(s_issue), s1.first.eq(s_cnt == 0), s1.last.eq(s_last),
                     s1.desc.eq(s_head)]
        # d is registered straight out of the block RAM: RAM outputs are slow on iCE40
        s_d = Signal(unsigned(d_bits))
        m.d.sync += s_d.eq(s1.desc.max - read_sum.data)
        s2 = delayed(m, "sum_tag", s1, 1 + self.exp_latency)      # e is valid
        s_e = exponent("sum", s_d)
        acc = Signal(unsigned(self._sum_width))
        total = Mux(s2.first, 0, acc) + s_e
        row_sum = Signal(unsigned(self._sum_width))
        row_done = Signal()
        row_desc = Signal(Desc)
        with m.If(s2.valid):
            m.d.sync += acc.eq(total)
        m.d.sync += [row_done.eq(s2.valid & s2.last), row_sum.eq(total), row_desc.eq(s2.desc)]

        # ---- per-row normaliser ---------------------------------------------------------
        Norm = self._norm_layout()
        if lut is not None:
            k_min = lut.exp_bits - 1                # sum >= exp[0] = 2**exp_bits - 1
            k_span = self._sum_width - k_min
        RowInfo = data.StructLayout({"desc": Desc, "norm": Norm})
        m.submodules.rows_norm = rows_norm = SyncFIFOBuffered(width=RowInfo.size, depth=depth)
        info_valid = Signal()
        info = Signal(RowInfo)
        m.d.comb += [rows_norm.w_en.eq(info_valid), rows_norm.w_data.eq(info)]

        if method == "shiftmax":
            # Restoring division of 2**31 - 1 by the sum, one quotient bit per stage;
            # the sum is at least shiftmax_min_sum, so the quotient has _quotient_bits bits.
            qb = self._quotient_bits
            divisor = Signal(unsigned(31))
            valid0 = Signal()
            desc0 = Signal(Desc)
            # I-ViT's clamp of the sum at 2**31 - 1 is unreachable: the constructor checks it
            m.d.sync += [divisor.eq(row_sum), valid0.eq(row_done), desc0.eq(row_desc)]
            rem, quo, valid, desc = INT31_MAX, 0, valid0, desc0
            for bit in reversed(range(qb)):
                step = divisor << bit
                fits = rem >= step
                n_rem = Signal(unsigned(31), name=f"div{bit}_rem")
                n_quo = Signal(unsigned(qb), name=f"div{bit}_quo")
                n_valid = Signal(name=f"div{bit}_valid")
                n_desc = Signal(Desc, name=f"div{bit}_desc")
                n_div = Signal(unsigned(31), name=f"div{bit}_divisor")
                m.d.sync += [n_rem.eq(Mux(fits, rem - step, rem)),
                             n_quo.eq(quo | Mux(fits, 1 << bit, 0)),
                             n_valid.eq(valid), n_desc.eq(desc), n_div.eq(divisor)]
                rem, quo, valid, desc, divisor = n_rem, n_quo, n_valid, n_desc, n_div
            m.d.comb += [info_valid.eq(valid), info.desc.eq(desc), info.norm.f.eq(quo)]
        else:
            # stage 1: leading one of the sum; stage 2: table read or rounding of the mantissa
            k_off = Signal(range(max(k_span, 2)))
            for bit in range(k_min, self._sum_width):
                with m.If(row_sum[bit]):
                    m.d.comb += k_off.eq(bit - k_min)
            valid1 = Signal()
            desc1 = Signal(Desc)
            k1 = Signal(range(max(k_span, 2)))
            sum1 = Signal.like(row_sum)
            m.d.sync += [valid1.eq(row_done), desc1.eq(row_desc), k1.eq(k_off),
                         sum1.eq(row_sum)]
            if method == "recip":
                valid2 = delayed(m, "norm_valid", valid1, 1)
                desc2 = delayed(m, "norm_desc", desc1, 1)
                k2 = delayed(m, "norm_k", k1, 1)
                m.d.comb += [info_valid.eq(valid2), info.desc.eq(desc2),
                             info.norm.k_off.eq(k2)]
                r = lut.recip_index_bits
                m.submodules.recip_table = recip_table = Memory(
                    shape=unsigned(lut.recip_bits), depth=len(lut.recip), init=lut.recip)
                recip_port = recip_table.read_port()
                # the r + 1 bits after the leading one; k >= k_min >= r + 1
                frac = (sum1 >> (k1 + (k_min - r - 1)))[:r + 1]
                m.d.comb += recip_port.addr.eq(
                    Mux(frac < (1 << r), frac, (1 << r) + ((frac - (1 << r)) >> 1)))
                m.d.comb += info.norm.recip.eq(recip_port.data)
            else:
                # log2 of the sum (sim.golden.softmax.lut2d_log_sum): the mantissa
                # x = s / 2**(k + 1) in [1/2, 1) with w fraction bits ...
                w = lut.frac_bits + LOG_GUARD
                x = Signal(unsigned(w + 1), name="log_x")
                m.d.sync += x.eq((sum1 << w) >> (k1 + k_min + 1))
                stage_k = delayed(m, "log_k", k1, 1)
                stage_valid = delayed(m, "log_valid", valid1, 1)
                stage_desc = delayed(m, "log_desc", desc1, 1)
                acc_width = lut.frac_bits + 2
                acc = Const(0, unsigned(acc_width))
                # ... multiplied by (1 + 2**-i) while it stays <= 1, one stage per step; the
                # step's constant joins the sum A one stage later, so that no stage chains
                # two carry chains
                took, took_const = Const(0), 0
                for i, c in enumerate(lut.log_consts, 1):
                    grown = x + (x >> i)
                    take = grown <= (1 << w)
                    n_x = Signal.like(x, name=f"log{i}_x")
                    n_take = Signal(name=f"log{i}_take")
                    n_acc = Signal(unsigned(acc_width), name=f"log{i}_acc")
                    m.d.sync += [n_x.eq(Mux(take, grown, x)), n_take.eq(take),
                                 n_acc.eq(acc + Mux(took, took_const, 0))]
                    x, acc, took, took_const = n_x, n_acc, n_take, c
                    stage_k = delayed(m, f"log{i}_k", stage_k, 1)
                    stage_valid = delayed(m, f"log{i}_valid", stage_valid, 1)
                    stage_desc = delayed(m, f"log{i}_desc", stage_desc, 1)
                # ... and the residual u = 1 - x contributes u / ln 2, a constant product
                # (registered first: the subtraction and the first adders in one stage were
                # the iCE40 critical path)
                residual = Signal(unsigned(w + 1), name="log_residual")
                m.d.sync += residual.eq((1 << w) - x)
                tail_levels = 1 + constant_product_levels(lut.tail_const)
                tail = pipelined_constant_product(m, "log_tail", residual, lut.tail_const)
                stage_k = delayed(m, "log_tail_k", stage_k, tail_levels)
                last_acc = Signal(unsigned(acc_width), name="log_acc")
                m.d.sync += last_acc.eq(acc + Mux(took, took_const, 0))
                acc = delayed(m, "log_tail_acc", last_acc, tail_levels - 1)
                stage_valid = delayed(m, "log_tail_valid", stage_valid, tail_levels)
                stage_desc = delayed(m, "log_tail_desc", stage_desc, tail_levels)
                log_sum = Signal.like(info.norm.log_sum, name="log_sum")
                rounded_tail = (tail + (1 << (w + CONST_SHIFT - 1))) >> (w + CONST_SHIFT)
                m.d.sync += log_sum.eq((stage_k << lut.frac_bits) + lut.log_offset - acc
                                       - rounded_tail)
                m.d.comb += [info_valid.eq(delayed(m, "log_sum_valid", stage_valid, 1)),
                             info.desc.eq(delayed(m, "log_sum_desc", stage_desc, 1)),
                             info.norm.log_sum.eq(log_sum)]

        # ---- output pass ---------------------------------------------------------------
        m.submodules.out_fifo = out_fifo = SyncFIFOBuffered(
            width=SoftmaxOut(out_bits).size, depth=self.out_fifo_depth)
        credits = Signal(range(self.out_fifo_depth + 1), init=self.out_fifo_depth)
        o_ptr = Signal(range(depth))
        o_cnt = Signal(len_shape)
        o_head, o_have, o_done = row_head("out", rows_norm, RowInfo)
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
            m.d.sync += [o_ptr.eq(advance(o_ptr)), o_cnt.eq(Mux(o_last, 0, o_cnt + 1))]

        OTag = data.StructLayout({"valid": 1, "last": 1, "info": RowInfo})
        o1 = Signal(OTag)          # the element is on read_out.data
        m.d.sync += [o1.valid.eq(o_issue), o1.last.eq(o_last), o1.info.eq(o_head)]
        o_d = Signal(unsigned(d_bits))
        m.d.sync += o_d.eq(o1.info.desc.max - read_out.data)
        result = Signal(unsigned(out_bits))
        q_max = (1 << out_bits) - 1
        if method == "lut2d":
            # sim.golden.softmax.lut2d_log_num / lut2d_pow, one register per step
            f, p = lut.frac_bits, lut.pow_index_bits
            capped = Signal(range(lut.d_cap + 1))
            m.d.sync += capped.eq(Mux(o_d > lut.d_cap, lut.d_cap, o_d))
            num_levels = constant_product_levels(lut.num_const)
            product = pipelined_constant_product(m, "log_num_product", capped, lut.num_const)
            # rounded in its own stage: with the sum below it was the iCE40 critical path
            num = Signal(unsigned(max(1, len(product) - CONST_SHIFT + 1)), name="log_num")
            m.d.sync += num.eq((product + (1 << (CONST_SHIFT - 1))) >> CONST_SHIFT)
            # only the row's L and the element's flags travel down this pipeline
            log_sum = delayed(m, "out_log_sum", o1.info.norm.log_sum, 3 + num_levels)
            flags = Signal(data.StructLayout({"valid": 1, "last": 1}), name="out_flags")
            m.d.comb += [flags.valid.eq(o1.valid), flags.last.eq(o1.last)]
            total = Signal(signed(max(len(num), len(log_sum)) + 2))
            m.d.comb += total.eq(num + log_sum)
            whole = Signal(range(out_bits + 2))
            frac = Signal(unsigned(f))
            m.d.sync += [whole.eq(Mux(total < 0, 0, Mux((total >> f) > out_bits + 1,
                                                          out_bits + 1, total >> f))),
                         frac.eq(Mux(total < 0, 0, total[:f]))]
            m.submodules.pow_table = pow_table = Memory(
                shape=unsigned(lut.pow_bits), depth=len(lut.pow), init=lut.pow)
            pow_port = pow_table.read_port()
            m.d.comb += pow_port.addr.eq(frac[f - p:])
            low = Signal(unsigned(f - p), name="pow_low")
            m.d.sync += low.eq(frac[:f - p])
            whole = delayed(m, "pow_whole", whole, 1)
            y = Signal(unsigned(lut.pow_bits + POW_GUARD), name="pow_y")
            m.d.comb += y.eq(pow_port.data << POW_GUARD)
            for i, c in enumerate(lut.pow_consts, p + 1):
                take = low >= c
                n_low = Signal.like(low, name=f"pow{i}_low")
                n_y = Signal.like(y, name=f"pow{i}_y")
                m.d.sync += [n_low.eq(Mux(take, low - c, low)), n_y.eq(Mux(take, y - (y >> i), y))]
                low, y = n_low, n_y
                whole = delayed(m, f"pow{i}_whole", whole, 1)
            o3 = delayed(m, "out_flags", flags, 5 + num_levels + lut.pow_steps)
            # round half up: (y + 2**(sh-1)) >> sh == ((y >> (sh-1)) + 1) >> 1
            halves = (y >> (whole + (lut.pow_bits - out_bits + POW_GUARD - 1))) + 1
            rounded = halves >> 1
            m.d.comb += result.eq(Mux(rounded > q_max, q_max, rounded))
        else:
            o_e = exponent("out", o_d)
            o2 = delayed(m, "out_tag", o1, 1 + self.exp_latency)     # e is valid
            o3 = delayed(m, "out_tag", o2, 1)                        # product is valid
        if method == "recip":
            product = Signal(unsigned(lut.exp_bits + lut.recip_bits))
            m.d.sync += product.eq(o_e * o2.info.norm.recip)
            # round half up: (p + 2**(sh-1)) >> sh == ((p >> (sh-1)) + 1) >> 1
            base = lut.recip_bits + (lut.exp_bits - 1) - out_bits - 1
            halves = (product >> (o3.info.norm.k_off + base)) + 1
            rounded = halves >> 1
            m.d.comb += result.eq(Mux(rounded > q_max, q_max, rounded))
        elif method == "shiftmax":
            product = Signal(unsigned(o_e.shape().width + self._quotient_bits))
            m.d.sync += product.eq(o_e * o2.info.norm.f)
            m.d.comb += result.eq(product >> (32 - out_bits))
        out_beat = Signal(SoftmaxOut(out_bits))
        out_valid = Signal()
        m.d.sync += [out_beat.data.eq(result), out_beat.last.eq(o3.last),
                     out_valid.eq(o3.valid)]
        m.d.comb += [out_fifo.w_en.eq(out_valid), out_fifo.w_data.eq(out_beat)]
        return m
