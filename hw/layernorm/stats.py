"""Per-row statistics of the LayerNorm: ``mean``, ``var``, ``std`` and ``recip``, exactly as
:func:`sim.golden.layernorm.layer_norm_stages` defines them, from a row's ``sum(x)`` and
``sum(x**2)``.

``mean = floor((2 * total + n) / (2 * n))`` is a restoring division by the constant ``2n`` of
``2 * total + n + 2**(w-1) * 2n`` (made non-negative; ``w`` quotient bits, then the offset
``2**(w-1)`` taken off). Its remainder ``r`` gives ``total - n * mean = (r - n) / 2`` for free, so
``var = sum((x - mean)**2) = sumsq - mean * (2 * total - n * mean) = sumsq - mean * t`` with
``t = total + (r - n) / 2``: one ``w x 27``-bit product (two 17 x 17 DSP pieces), exact.
``std = isqrt(var)`` digit by digit (two bits of ``var`` per step), and
``recip = 2**31 // max(std, 1)`` by restoring division (32 steps).
"""

from typing import NamedTuple

from amaranth import Cat, Const, Module, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sim.golden.layernorm import RECIP_BITS

from ..common.mul import MULTIPLIER_LATENCY, PipelinedMultiplier
from ..gelu.pipeline import StallPipeline, signed_width, unsigned_width
from .steps import StepUnit

__all__ = ["StatWidths", "stat_widths", "RowSums", "RowStatsOut", "RowStats"]

#: Quotient bits of ``recip = 2**31 // std`` (``std = 1`` gives ``2**31``).
RECIP_STEPS = RECIP_BITS + 1
#: Product pieces: 17 x 17 signed, one DSP each on ECP5 (MULT18X18D) and iCE40 (SB_MAC16).
PIECE = 16


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


class _VarPipe(wiring.Component):
    """``var = sumsq - mean * t`` in a stall-together pipeline: the product in 17 x 17 pieces,
    then their sum, then the difference."""

    LATENCY = MULTIPLIER_LATENCY + 2

    def __init__(self, *, hidden: int, in_width: int):
        self._wd = wd = stat_widths(hidden, in_width)
        self._in_width = in_width
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "mean": signed(in_width), "t": signed(wd.t), "sumsq": unsigned(wd.sumsq),
                "bank": 1}))),
            "o": Out(stream.Signature(data.StructLayout({
                "var": unsigned(wd.var), "mean": signed(in_width), "bank": 1}))),
        })

    def elaborate(self, platform):
        m = Module()
        wd, payload = self._wd, self.i.payload
        pipe = StallPipeline(m, self.i, self.o)
        t = payload.t
        pieces = [Cat(t[lo:lo + PIECE], Const(0, 1)).as_signed() if lo + PIECE < len(t)
                  else t[lo:].as_signed() for lo in range(0, len(t), PIECE)]
        total = 0
        for k, piece in enumerate(pieces):
            mul = PipelinedMultiplier(a_width=self._in_width, b_width=max(len(piece), 2))
            m.submodules[f"mul_{k}"] = mul
            m.d.comb += [mul.a.eq(payload.mean), mul.b.eq(piece), mul.en.eq(pipe.advance)]
            total = total + (mul.p << (PIECE * k))
        product = pipe.reg("mean_t", signed(self._in_width + wd.t), total)
        sumsq = pipe.delay("sumsq", unsigned(wd.sumsq), payload.sumsq, MULTIPLIER_LATENCY + 1)
        var = pipe.reg("var", unsigned(wd.var), sumsq - product)
        mean = pipe.delay("mean", signed(self._in_width), payload.mean, self.LATENCY)
        bank = pipe.delay("bank", 1, payload.bank, self.LATENCY)
        m.d.comb += [self.o.payload.var.eq(var), self.o.payload.mean.eq(mean),
                     self.o.payload.bank.eq(bank)]
        pipe.finish(self.LATENCY)
        return m


class RowStats(wiring.Component):
    """``mean`` and ``recip = 2**31 // max(isqrt(var), 1)`` of each row from its sums.

    Four units in a chain: the mean's division, the variance's product, the square root and the
    reciprocal. ``divider="pipelined"`` takes a row per clock; ``"iterative"`` a row every
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
        self._hidden, self._in_width, self._divider = hidden, in_width, divider
        super().__init__({"i": In(stream.Signature(RowSums(hidden, in_width))),
                          "o": Out(stream.Signature(RowStatsOut(in_width)))})

    @staticmethod
    def latency_for(hidden: int, in_width: int, divider: str) -> int:
        """Cycles from a row's sums to its statistics (no stalls)."""
        wd = stat_widths(hidden, in_width)
        return (StepUnit.latency_for(wd.mean_steps, divider) + _VarPipe.LATENCY
                + StepUnit.latency_for(wd.std, divider)
                + StepUnit.latency_for(RECIP_STEPS, divider))

    @staticmethod
    def period_for(hidden: int, in_width: int, divider: str) -> int:
        """Cycles between rows at full rate."""
        wd = stat_widths(hidden, in_width)
        return max(StepUnit.period_for(s, divider) for s in (wd.mean_steps, wd.std,
                                                             RECIP_STEPS))

    def elaborate(self, platform):
        m = Module()
        n, w, divider = self._hidden, self._in_width, self._divider
        wd = stat_widths(n, w)
        divisor = 2 * n
        rem_width = unsigned_width(2 * divisor - 1)
        offset = n * ((1 << w) + 1)           # 2 * total + offset = 2*total + n + 2**(w-1)*2n

        def mean_init(p):
            numerator = (p.total << 1) + offset        # in [n, 2n * 2**w)
            return {"p": numerator[w:], "num": numerator[:w], "q": 0, "total": p.total,
                    "sumsq": p.sumsq, "bank": p.bank}

        def mean_finish(s):
            # total - n * mean = (r - n) / 2, exactly (r - n is even).
            e = (s.p - n).as_signed() >> 1
            return {"mean": Cat(s.q[:w - 1], ~s.q[w - 1]).as_signed(), "t": s.total + e,
                    "sumsq": s.sumsq, "bank": s.bank}

        var_pipe = _VarPipe(hidden=n, in_width=w)
        mean_unit = StepUnit(
            in_layout=RowSums(n, w),
            state_layout=data.StructLayout({
                "p": unsigned(rem_width), "num": unsigned(w), "q": unsigned(w),
                "total": signed(wd.total), "sumsq": unsigned(wd.sumsq), "bank": 1}),
            out_layout=var_pipe.i.payload.shape(),
            steps=wd.mean_steps, divider=divider, init=mean_init,
            step=lambda s: _restoring(s.p, s.num, s.q, divisor), finish=mean_finish)

        def isqrt_step(s):
            # Digit by digit: bring down two bits, try (root << 2) | 1.
            shifted = Cat(s.v[-2:], s.p)
            diff = Cat(shifted, Const(0, 1)).as_signed() - Cat(Const(1, 2), s.root)
            take = ~diff[-1]
            return {"p": Mux(take, diff, shifted)[:len(s.p)], "v": s.v << 2,
                    "root": Cat(take, s.root)[:wd.std]}

        isqrt_unit = StepUnit(
            in_layout=var_pipe.o.payload.shape(),
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
        m.submodules.var = var_pipe
        m.submodules.isqrt = isqrt_unit
        m.submodules.recip = recip_unit
        wiring.connect(m, wiring.flipped(self.i), mean_unit.i)
        wiring.connect(m, mean_unit.o, var_pipe.i)
        wiring.connect(m, var_pipe.o, isqrt_unit.i)
        wiring.connect(m, isqrt_unit.o, recip_unit.i)
        wiring.connect(m, recip_unit.o, wiring.flipped(self.o))
        return m
