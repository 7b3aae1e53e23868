"""``lut2d``: ``e / sum`` with no multiplier, as ``exp2`` of a log-domain difference: the row's
``L ~ log2(sum)`` by shift-and-add normalisation, each element's ``N ~ d * S * log2(e)`` by a
constant product, and ``2**-(N + L)`` from a table refined by shift-and-add steps
(:func:`sim.golden.softmax.lut2d_log_sum`, ``lut2d_log_num``, ``lut2d_pow``)."""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory

from sim.golden.softmax import CONST_SHIFT, LOG_GUARD, POW_GUARD

from ..common.arith import constant_product_levels, pipelined_constant_product
from ..common.pipeline import delayed
from .lut import ExpTable, k_span, leading_one
from .params import SoftmaxParams

__all__ = ["Lut2dMethod"]


class Lut2dMethod:
    """The exp table for the sum; ``log2(sum)`` as the row's normaliser; per element a constant
    product and an exp2 table read, one register per step."""

    def __init__(self, m: Module, params: SoftmaxParams):
        self._m, self._p = m, params
        self._exp = ExpTable(m, params)

    def norm_layout(self) -> data.StructLayout:
        """``L ~ log2(sum / EXP[0]) * 2**frac_bits`` (signed: slightly negative for a one-hot
        row)."""
        log_width = self._p.frac_bits + max(k_span(self._p), 2).bit_length() + 2
        return data.StructLayout({"log_sum": signed(log_width)})

    def exponent(self, name: str, d):
        return self._exp.exponent(name, d)

    def normaliser(self, row_sum, row_done, row_desc, info_valid, info) -> None:
        """log2 of the sum (:func:`sim.golden.softmax.lut2d_log_sum`)."""
        m, lut = self._m, self._p.tables
        k_min = lut.exp_bits - 1
        valid1, desc1, k1, sum1 = leading_one(m, self._p, row_sum, row_done, row_desc)
        # the mantissa x = s / 2**(k + 1) in [1/2, 1) with w fraction bits ...
        w = lut.frac_bits + LOG_GUARD
        x = Signal(unsigned(w + 1), name="log_x")
        m.d.sync += x.eq((sum1 << w) >> (k1 + k_min + 1))
        stage_k = delayed(m, "log_k", k1, 1)
        stage_valid = delayed(m, "log_valid", valid1, 1)
        stage_desc = delayed(m, "log_desc", desc1, 1)
        acc_width = lut.frac_bits + 2
        acc = Const(0, unsigned(acc_width))
        # ... multiplied by (1 + 2**-i) while it stays <= 1, one stage per step; the step's
        # constant joins the sum A one stage later, so that no stage chains two carry chains
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
        # ... and the residual u = 1 - x contributes u / ln 2, a constant product (registered
        # first: the subtraction and the first adders in one stage were the iCE40 critical
        # path)
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

    def output(self, o1, o_d, result):
        """:func:`sim.golden.softmax.lut2d_log_num` and ``lut2d_pow``, one register per step;
        returns the element's flags aligned with ``result``."""
        m, p, lut = self._m, self._p, self._p.tables
        out_bits = p.out_bits
        f, pib = lut.frac_bits, lut.pow_index_bits
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
        m.d.comb += pow_port.addr.eq(frac[f - pib:])
        low = Signal(unsigned(f - pib), name="pow_low")
        m.d.sync += low.eq(frac[:f - pib])
        whole = delayed(m, "pow_whole", whole, 1)
        y = Signal(unsigned(lut.pow_bits + POW_GUARD), name="pow_y")
        m.d.comb += y.eq(pow_port.data << POW_GUARD)
        for i, c in enumerate(lut.pow_consts, pib + 1):
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
        q_max = (1 << out_bits) - 1
        m.d.comb += result.eq(Mux(rounded > q_max, q_max, rounded))
        return o3
