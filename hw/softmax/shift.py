"""``shiftmax``: I-ViT's ShiftMax, no tables: ``e = shift_exp(x - max)``, the row's
``f = (2**31 - 1) // sum`` and ``(e * f) >> (32 - out_bits)``
(:func:`sim.golden.softmax.shiftmax`); the exponential and the division are
:mod:`hw.common.ivit`'s, shared with ShiftGELU."""

from __future__ import annotations

from amaranth import Cat, Const, Module, Signal, signed, unsigned
from amaranth.lib import data

from ..common.ivit import (DIVISOR_WIDTH, division_first_remainder, division_step,
                           shift_exp_compare)
from ..common.pipeline import delayed
from .params import SoftmaxParams

__all__ = ["ShiftMaxMethod"]


class ShiftMaxMethod:
    """ShiftMax's exponential in three logic stages, the row's quotient by a restoring
    division (a register, then one stage per quotient bit), one product per element."""

    def __init__(self, m: Module, params: SoftmaxParams):
        self._m, self._p = m, params

    def norm_layout(self) -> data.StructLayout:
        """I-ViT's quotient ``f``."""
        return data.StructLayout({"f": unsigned(self._p.quotient_bits)})

    def exponent(self, name: str, d):
        """``e = shift_exp(-d)`` of the registered ``d = max - x``, valid ``exp_latency`` (3)
        cycles after ``d``."""
        x = Signal(signed(len(d) + 1), name=f"{name}_xneg")
        self._m.d.comb += x.eq(-d)
        return shift_exp_compare(self._m, name, x, x0=self._p.x0, n=self._p.n)

    def normaliser(self, row_sum, row_done, row_desc, info_valid, info) -> None:
        """Restoring division of ``2**31 - 1`` by the sum, one quotient bit per stage; the sum
        is at least ``e_max``, so the quotient has ``quotient_bits`` bits. I-ViT's clamp of the
        sum at ``2**31 - 1`` is unreachable: :class:`SoftmaxParams` checks it."""
        m, qb = self._m, self._p.quotient_bits
        divisor = Signal(unsigned(DIVISOR_WIDTH))
        valid0 = Signal()
        desc0 = Signal(row_desc.shape())
        m.d.sync += [divisor.eq(row_sum), valid0.eq(row_done), desc0.eq(row_desc)]
        rem = Const(division_first_remainder(qb), DIVISOR_WIDTH)
        quo, valid, desc = Const(0, 0), valid0, desc0
        for bit in reversed(range(qb)):
            next_rem, take = division_step(rem, divisor)
            n_rem = Signal(unsigned(DIVISOR_WIDTH), name=f"div{bit}_rem")
            n_quo = Signal(unsigned(qb - bit), name=f"div{bit}_quo")
            n_valid = Signal(name=f"div{bit}_valid")
            n_desc = Signal(row_desc.shape(), name=f"div{bit}_desc")
            n_div = Signal(unsigned(DIVISOR_WIDTH), name=f"div{bit}_divisor")
            m.d.sync += [n_rem.eq(next_rem), n_quo.eq(Cat(take, quo)), n_valid.eq(valid),
                         n_desc.eq(desc), n_div.eq(divisor)]
            rem, quo, valid, desc, divisor = n_rem, n_quo, n_valid, n_desc, n_div
        m.d.comb += [info_valid.eq(valid), info.desc.eq(desc), info.norm.f.eq(quo)]

    def output(self, o1, o_d, result):
        """``(e * f) >> (32 - out_bits)``; returns the element's tag aligned with ``result``."""
        m, p = self._m, self._p
        o_e = self.exponent("out", o_d)
        o2 = delayed(m, "out_tag", o1, 1 + p.exp_latency)     # e is valid
        o3 = delayed(m, "out_tag", o2, 1)                     # product is valid
        product = Signal(unsigned(o_e.shape().width + p.quotient_bits))
        m.d.sync += product.eq(o_e * o2.info.norm.f)
        m.d.comb += result.eq(product >> (32 - p.out_bits))
        return o3
