"""Per-row statistics of the LayerNorm: ``mean``, ``var``, ``std`` and ``recip``, exactly as
:func:`sim.golden.layernorm.layer_norm_stages` defines them, from a row's ``sum(x)`` and
``sum(x**2)``.

``mean = floor((2 * total + n) / (2 * n))`` is a restoring division by the constant ``2n`` of
``2 * total + n + 2**(w-1) * 2n`` (made non-negative; ``w`` quotient bits, then the offset
``2**(w-1)`` taken off). Its remainder ``r`` gives ``total - n * mean = (r - n) / 2`` for free, so
``var = sum((x - mean)**2) = sumsq - mean * (2 * total - n * mean) = sumsq - mean * t`` with
``t = total + (r - n) / 2``, exact; the product by shifts and adds, one bit of ``mean`` per
step (no DSP: the block's 7 multipliers then fit an iCE40 UP5K's 8).
``std = isqrt(var)`` digit by digit (two bits of ``var`` per step), and
``recip = 2**31 // max(std, 1)`` by restoring division (32 steps).
"""

from typing import NamedTuple

from amaranth import Cat, Const, Module, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sim.golden.layernorm import MAX_HIDDEN, RECIP_BITS

from ..common.arith import signed_width, unsigned_width
from ..common.checks import check_choice, check_int
from .steps import DIVIDERS, StepUnit

__all__ = ["StatWidths", "stat_widths", "RowSums", "RowStatsOut", "RowStats"]

#: Quotient bits of ``recip = 2**31 // std`` (``std = 1`` gives ``2**31``).
RECIP_STEPS = RECIP_BITS + 1


class StatWidths(NamedTuple):
    """Bit widths of a row's statistics for ``hidden`` elements of ``in_width`` bits."""

    total: int          # signed
    sumsq: int          # unsigned
    t: int              # signed, total + (r - n) / 2
    var: int            # unsigned
    std: int            # unsigned, also the square root's steps
    mean_steps: int     # quotient bits of the mean's division


def stat_widths(hidden: int, in_width: int) -> StatWidths:
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    total = signed_width(hidden * lo, hidden * hi)
    t = signed_width(hidden * lo - hidden, hidden * hi + hidden)
    var_max = hidden * (hi - lo) ** 2
    std = (unsigned_width(var_max) + 1) // 2
    return StatWidths(total, unsigned_width(hidden * lo * lo), t, 2 * std, std, in_width)


def RowSums(hidden: int, in_width: int) -> data.StructLayout:
    """A finished row's ``sum(x)`` and ``sum(x**2)``, and the parameter bank it will use."""
    wd = stat_widths(hidden, in_width)
    return data.StructLayout({"total": signed(wd.total), "sumsq": unsigned(wd.sumsq),
                              "bank": 1})


def RowStatsOut(in_width: int) -> data.StructLayout:
    """What the normalisation pass needs of a row: ``mean``, ``recip`` and the bank."""
    return data.StructLayout({"mean": signed(in_width), "recip": unsigned(RECIP_STEPS),
                              "bank": 1})


def _restoring(p, num, q, divisor):
    """One restoring-division step: the next numerator bit into the partial remainder."""
    shifted = Cat(num[-1], p)
    # One carry chain: the difference's sign is the comparison.
    diff = Cat(shifted, Const(0, 1)).as_signed() - divisor
    take = ~diff[-1]
    return {"p": Mux(take, diff, shifted)[:len(p)], "num": num << 1,
            "q": Cat(take, q)[:len(q)]}


class RowStats(wiring.Component):
    """``mean`` and ``recip = 2**31 // max(isqrt(var), 1)`` of each row from its sums.

    Four step units in a chain: the mean's division, the variance's product, the square root
    and the reciprocal. ``divider="pipelined"`` takes a row per clock; ``"iterative"`` a row every
    ``period`` clocks (the reciprocal's 32 steps + 1).

    Parameters
    ----------
    hidden : int
        Elements per row, ``n``.
    in_width : int
        Bits per element.
    divider : str
        ``"pipelined"`` or ``"iterative"``.

    Members
    -------
    i : In(stream.Signature(RowSums(hidden, in_width)))
    o : Out(stream.Signature(RowStatsOut(in_width)))
    """

    def __init__(self, *, hidden: int, in_width: int, divider: str):
        check_int("hidden", hidden, 1, MAX_HIDDEN)
        check_choice("in_width", in_width, (8, 16))
        check_choice("divider", divider, DIVIDERS)
        self._hidden, self._in_width, self._divider = hidden, in_width, divider
        super().__init__({"i": In(stream.Signature(RowSums(hidden, in_width))),
                          "o": Out(stream.Signature(RowStatsOut(in_width)))})

    @staticmethod
    def latency_for(hidden: int, in_width: int, divider: str) -> int:
        """Cycles from a row's sums to its statistics (no stalls)."""
        wd = stat_widths(hidden, in_width)
        return (StepUnit.latency_for(wd.mean_steps, divider)
                + StepUnit.latency_for(in_width - 1, divider)
                + StepUnit.latency_for(wd.std, divider)
                + StepUnit.latency_for(RECIP_STEPS, divider))

    @staticmethod
    def period_for(hidden: int, in_width: int, divider: str) -> int:
        """Cycles between rows at full rate."""
        wd = stat_widths(hidden, in_width)
        return max(StepUnit.period_for(s, divider) for s in (wd.mean_steps, in_width - 1,
                                                             wd.std, RECIP_STEPS))

    def elaborate(self, platform):
        m = Module()
        n, w, divider = self._hidden, self._in_width, self._divider
        wd = stat_widths(n, w)
        divisor = 2 * n
        rem_width = unsigned_width(2 * divisor - 1)
        offset = n * ((1 << w) + 1)           # 2 * total + offset = 2*total + n + 2**(w-1)*2n

        def mean_init(p):
            numerator = (p.total << 1) + offset        # in [n, 2n * 2**w)
            # total - n * mean = (r - n) / 2 = r // 2 - n // 2 exactly (r and n share parity),
            # so t = (total - n // 2) + r // 2: one adder after the division.
            return {"p": numerator[w:], "num": numerator[:w], "q": 0,
                    "total": p.total - (n >> 1), "sumsq": p.sumsq, "bank": p.bank}

        def mean_finish(s):
            return {"mean": Cat(s.q[:w - 1], ~s.q[w - 1]).as_signed(), "t": s.total + (s.p >> 1),
                    "sumsq": s.sumsq, "bank": s.bank}

        var_in = data.StructLayout({"mean": signed(w), "t": signed(wd.t),
                                    "sumsq": unsigned(wd.sumsq), "bank": 1})
        mean_unit = StepUnit(
            in_layout=RowSums(n, w),
            state_layout=data.StructLayout({
                "p": unsigned(rem_width), "num": unsigned(w), "q": unsigned(w),
                "total": signed(wd.t), "sumsq": unsigned(wd.sumsq), "bank": 1}),
            out_layout=var_in,
            steps=wd.mean_steps, divider=divider, init=mean_init,
            step=lambda s: _restoring(s.p, s.num, s.q, divisor), finish=mean_finish)

        # sumsq - mean * t: Horner's rule over mean's bits, the sign bit (weight -2**(w-1)) first,
        # accumulating -mean * t so that no step negates.
        var_unit = StepUnit(
            in_layout=var_in,
            state_layout=data.StructLayout({
                "acc": signed(w + wd.t), "num": unsigned(w - 1), "t": signed(wd.t),
                "sumsq": unsigned(wd.sumsq), "mean": signed(w), "bank": 1}),
            out_layout=data.StructLayout({"var": unsigned(wd.var), "mean": signed(w),
                                          "bank": 1}),
            steps=w - 1, divider=divider,
            init=lambda p: {"acc": Mux(p.mean[-1], p.t, 0), "num": p.mean[:w - 1],
                            "t": p.t, "sumsq": p.sumsq, "mean": p.mean, "bank": p.bank},
            step=lambda s: {"acc": (s.acc << 1) - Mux(s.num[-1], s.t, 0), "num": s.num << 1},
            finish=lambda s: {"var": s.sumsq + s.acc, "mean": s.mean, "bank": s.bank})

        def isqrt_step(s):
            # Digit by digit: bring down two bits, try (root << 2) | 1.
            shifted = Cat(s.v[-2:], s.p)
            diff = Cat(shifted, Const(0, 1)).as_signed() - Cat(Const(1, 2), s.root)
            take = ~diff[-1]
            return {"p": Mux(take, diff, shifted)[:len(s.p)], "v": s.v << 2,
                    "root": Cat(take, s.root)[:wd.std]}

        isqrt_unit = StepUnit(
            in_layout=var_unit.o.payload.shape(),
            state_layout=data.StructLayout({
                "p": unsigned(wd.std + 3), "v": unsigned(wd.var), "root": unsigned(wd.std),
                "mean": signed(w), "bank": 1}),
            out_layout=data.StructLayout({"std": unsigned(wd.std), "mean": signed(w),
                                          "bank": 1}),
            steps=wd.std, divider=divider,
            init=lambda p: {"p": 0, "v": p.var, "root": 0, "mean": p.mean, "bank": p.bank},
            step=isqrt_step,
            finish=lambda s: {"std": s.root, "mean": s.mean, "bank": s.bank})

        recip_unit = StepUnit(
            in_layout=isqrt_unit.o.payload.shape(),
            state_layout=data.StructLayout({
                "p": unsigned(wd.std + 1), "num": unsigned(RECIP_STEPS),
                "q": unsigned(RECIP_STEPS), "d": unsigned(wd.std), "mean": signed(w),
                "bank": 1}),
            out_layout=RowStatsOut(w),
            steps=RECIP_STEPS, divider=divider,
            init=lambda p: {"p": 0, "num": 1 << RECIP_BITS, "q": 0,
                            "d": Mux(p.std == 0, 1, p.std), "mean": p.mean, "bank": p.bank},
            step=lambda s: _restoring(s.p, s.num, s.q, s.d),
            finish=lambda s: {"mean": s.mean, "recip": s.q, "bank": s.bank})

        m.submodules.mean = mean_unit
        m.submodules.var = var_unit
        m.submodules.isqrt = isqrt_unit
        m.submodules.recip = recip_unit
        wiring.connect(m, wiring.flipped(self.i), mean_unit.i)
        wiring.connect(m, mean_unit.o, var_unit.i)
        wiring.connect(m, var_unit.o, isqrt_unit.i)
        wiring.connect(m, isqrt_unit.o, recip_unit.i)
        wiring.connect(m, recip_unit.o, wiring.flipped(self.o))
        return m
