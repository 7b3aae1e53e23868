"""Gateware of I-ViT's integer exponential and division, shared by ShiftMax (``hw/softmax``) and
ShiftGELU (``hw/gelu``).

The specification is :mod:`sim.golden.ivit`: ``shift_exp`` is ``((r - 2 x0) << (n - q)) >> 1``
with ``t = max(x + (x >> 1) - (x >> 4), n x0)``, ``q = t // x0`` and ``r = t - x0 q``; both
blocks then divide ``DIV_NUMERATOR = 2**31 - 1`` by a sum of such exponentials. The exponential
comes in two pipelinings of that one formula, because the two blocks need different ones and
their latencies are part of each block's contract:

- :func:`shift_exp_compare`: three free-running stages, the quotient found by comparing ``t``
  with its ``n`` multiples of ``x0`` at once (ShiftMax: arguments ``<= 0``, nothing stalls);
- :func:`shift_exp_restoring`: stages of a :class:`~hw.common.pipeline.StallPipeline`, at most
  about two adders deep each, the quotient by restoring division, one bit per stage
  (ShiftGELU: positive arguments too, saturated at ``DIV_NUMERATOR``).
"""

from amaranth import Cat, Const, Mux, Signal, signed, unsigned
from amaranth.lib import data

from sim.golden.ivit import DIV_NUMERATOR, SATURATING_SHIFT

from .arith import signed_width, unsigned_width

__all__ = ["DIVISOR_WIDTH", "log2e", "exp_offset", "shift_exp_compare",
           "SHIFT_EXP_COMPARE_LATENCY", "shift_exp_restoring", "shift_exp_restoring_latency",
           "division_first_remainder", "division_step"]

#: Bits of a divisor ``min(sum, 2**31 - 1)`` and of the division's remainders: 31.
DIVISOR_WIDTH = DIV_NUMERATOR.bit_length()

#: Cycles of :func:`shift_exp_compare` from its argument to its result.
SHIFT_EXP_COMPARE_LATENCY = 3


def log2e(v):
    """I-ViT's ``x * log2(e)``, ``x + (x >> 1) - (x >> 4)``: non-decreasing, so its range is
    ``[log2e(lo), log2e(hi)]`` (works on integers and Amaranth values alike)."""
    return v + (v >> 1) - (v >> 4)


def exp_offset(x0: int, t_hi: int) -> int:
    """Multiples of ``-x0`` added to ``-log2e(t)`` so that the restoring division's dividend
    is never negative for arguments ``t <= t_hi``."""
    return -(-max(log2e(t_hi), 0) // -x0)


def shift_exp_compare(m, name: str, x, *, x0: int, n: int):
    """``shift_exp(x, x0, n)`` of a signed ``x <= 0`` (combinational or registered), in
    ``SHIFT_EXP_COMPARE_LATENCY`` free-running ``sync`` stages: ``x * log2(e)`` and the clamp;
    the quotient by comparisons with the multiples of ``x0``; the remainder and the shift."""
    t_raw = log2e(x)
    # wide enough for both t_raw (>= -1.5 * |x|) and the clamp n * x0
    t_width = max(len(x) + 1, (-n * x0).bit_length() + 1) + 1
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
    e = Signal(unsigned(unsigned_width(-x0 << n)), name=f"{name}_e")   # e <= shift_exp(0)
    m.d.sync += e.eq((mantissa << left) >> 1)
    return e


def shift_exp_restoring_latency(qbits: int) -> int:
    """Stages of :func:`shift_exp_restoring` with ``qbits`` quotient bits."""
    return qbits + 6


def shift_exp_restoring(pipe, name: str, t, t_lo: int, t_hi: int, *, x0: int, n: int,
                        qbits: int, saturate: bool):
    """``shift_exp(t, x0, n, saturate=saturate)`` for arguments in ``[t_lo, t_hi]``, built into
    the :class:`~hw.common.pipeline.StallPipeline` ``pipe``; valid
    ``shift_exp_restoring_latency(qbits)`` stages after ``t``. ``qbits`` must hold
    ``n + exp_offset(x0, t_hi)``."""
    d = -x0
    offset = exp_offset(x0, t_hi)
    # s1: the argument; s2: x * log2(e) by shifts and adds.
    t = pipe.reg(f"{name}_t", signed(signed_width(t_lo, t_hi)), t)
    t1 = pipe.reg(f"{name}_t1", signed(signed_width(log2e(t_lo), log2e(t_hi))), log2e(t))
    # s3: the clamp at n * x0, then u = offset * d - x >= 0.
    clamped = Mux(t1 < n * x0, n * x0, t1)
    u = pipe.reg(f"{name}_u", unsigned(unsigned_width((n + offset) * d)), offset * d - clamped)
    # s4..: restoring division by the constant d, one quotient bit per stage.
    q = Const(0, 0)
    for bit in reversed(range(qbits)):
        step = d << bit
        take = u >= step
        u = pipe.reg(f"{name}_u{bit}", u.shape(), Mux(take, u - step, u))
        q = pipe.reg(f"{name}_q{bit}", unsigned(qbits - bit), Cat(take, q))
    # The golden model's q is q' - offset and r = -remainder; v = r - 2 x0, s = n - q.
    v_width = unsigned_width(2 * d)
    v = pipe.reg(f"{name}_v", unsigned(v_width), 2 * d - u)
    s = pipe.reg(f"{name}_s", unsigned(unsigned_width(n + offset)), n + offset - q)
    # Then the shift, and (saturating) the clamp, each in a stage of its own.
    if saturate:
        shifted = pipe.reg(f"{name}_shifted", unsigned(v_width + SATURATING_SHIFT - 1),
                           (v << s)[:v_width + SATURATING_SHIFT] >> 1)
        beyond = pipe.reg(f"{name}_beyond", 1, s > SATURATING_SHIFT)
        value = Mux(beyond | (shifted > DIV_NUMERATOR), DIV_NUMERATOR, shifted)
        return pipe.reg(f"{name}_exp", unsigned(DIVISOR_WIDTH), value)
    width = unsigned_width(2 * d << (n + offset)) - 1
    shifted = pipe.reg(f"{name}_shifted", unsigned(width), ((v << s) >> 1)[:width])
    return pipe.reg(f"{name}_exp", unsigned(width), shifted)


def division_first_remainder(qbits: int) -> int:
    """The remainder :func:`division_step` starts from when ``DIV_NUMERATOR // divisor`` has at
    most ``qbits`` bits (``divisor > DIV_NUMERATOR >> qbits``): the numerator's top bits."""
    return DIV_NUMERATOR >> qbits


def division_step(remainder, divisor):
    """One step of the restoring division of ``DIV_NUMERATOR`` by ``divisor``: the next
    remainder (``DIVISOR_WIDTH`` bits) and the quotient bit. The numerator's bits below
    ``2**31`` are all ones, so each step shifts in a 1."""
    shifted = Cat(Const(1, 1), remainder)
    take = shifted >= divisor
    return Mux(take, shifted - divisor, shifted)[:DIVISOR_WIDTH], take
