"""Bit-exact golden models of Lutra's softmax engine: two LUT methods and I-ViT's ShiftMax.

LUT methods (Vasyltsov & Chang 2021, "Efficient softmax approximation for deep neural networks
with attention mechanism", arXiv 2111.10770): every row is normalised by its maximum, so with
``d = max(x) - x >= 0`` the numerator ``exp(-d * S)`` lies in (0, 1] and the denominator in
[1, length]; fixed ranges make small tables enough.

``recip``
    ``e = EXP[d]`` (``exp_bits`` bits, ``(2**exp_bits - 1) * exp(-d * S)`` rounded; 0 beyond the
    table), ``s = sum(e)``; ``s = 2**k * m`` with ``m`` in [1, 2) by leading-one detection; the
    reciprocal mantissa ``RECIP[i] ~ 2**recip_bits / m`` is read with the ``recip_index_bits + 1``
    bits after the leading one, at the interval's midpoint. The table is piecewise uniform:
    [1, 1.5) in steps of ``2**-(r + 1)``, [1.5, 2) in steps of ``2**-r`` (``r`` =
    ``recip_index_bits``, ``1.5 * 2**r`` entries), because the output error the table causes,
    ``2**out_bits * p * |1 - m * RECIP / 2**recip_bits|`` with ``p <= 1 / m``, is largest near
    ``m = 1``. Then one multiply and a round-half-up shift:
    ``q = (e * RECIP + 2**(sh - 1)) >> sh`` with ``sh = recip_bits + k - out_bits``.
``lut2d``
    Multiplier- and divider-free (the paper's second method): the numerator is ``e`` rounded to
    ``exp_index_bits`` fraction bits relative to ``2**k``, the denominator ``m`` rounded to
    ``sum_index_bits`` fraction bits; the quotient ``2**out_bits * (e / 2**k) / m`` is read from a
    two-dimensional table indexed by both.

Both return ``q`` with ``q / 2**out_bits`` ~ softmax; 1.0 is not representable in ``out_bits``
bits, so every output saturates at ``2**out_bits - 1`` (a length-1 row gives ``2**out_bits - 1``).

ShiftMax (Li & Gu 2022, "I-ViT: integer-only quantization for efficient vision transformer
inference", github zkkli/I-ViT ``models/quantization_utils/quant_modules.py``, training-code
semantics as restated in the project's REFERENCES): ``y = (e * f) >> (32 - out_bits)`` with
``f = (2**31 - 1) // sum(e)``; its output scale is ``2**-(out_bits - 1)`` (I-ViT's).

Every function here works on exact integers (int64 NumPy arrays whose ranges are bounded below);
floats appear only where a table is computed from its defining formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["METHODS", "LUT_DEFAULTS", "SoftmaxTables", "softmax_tables", "table_bytes",
           "lut_softmax", "recip_index", "shift_exp", "shiftmax", "shiftmax_x0", "shiftmax_min_sum"]

METHODS = ("recip", "lut2d", "shiftmax")

#: Table parameters used when a caller gives none (chosen from the sweep of ``lutra bench
#: softmax``: the smallest tables meeting the 1-LSB target on MiniLM attention).
LUT_DEFAULTS = {"in_bits": 8, "exp_bits": 12, "recip_index_bits": 8, "recip_bits": 11,
                "exp_index_bits": 5, "sum_index_bits": 3}


def _round_half_up(v: float) -> int:
    return math.floor(v + 0.5)


@dataclass(frozen=True)
class SoftmaxTables:
    """Tables of one LUT configuration; ``exp[d]`` for d < len(exp), 0 beyond."""

    method: str
    scale: float
    in_bits: int
    out_bits: int
    exp_bits: int
    exp: tuple[int, ...]
    recip_index_bits: int = 0
    recip_bits: int = 0
    recip: tuple[int, ...] = ()
    exp_index_bits: int = 0
    sum_index_bits: int = 0
    quotient: tuple[tuple[int, ...], ...] = ()

    @property
    def bits(self) -> int:
        """Total table storage in bits (entries x entry width)."""
        total = len(self.exp) * self.exp_bits
        total += len(self.recip) * self.recip_bits
        total += sum(len(row) for row in self.quotient) * self.out_bits
        return total

    @property
    def bytes(self) -> int:
        return -(-self.bits // 8)


def _check_lut_params(method, scale, in_bits, out_bits, exp_bits, recip_index_bits, recip_bits,
                      exp_index_bits, sum_index_bits) -> None:
    if method not in ("recip", "lut2d"):
        raise ValueError(f"method must be one of 'recip', 'lut2d', not {method!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
            math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, not {scale!r}")
    for name, value, lo, hi in (("in_bits", in_bits, 2, 16), ("out_bits", out_bits, 4, 16),
                                ("exp_bits", exp_bits, 4, 24),
                                ("recip_index_bits", recip_index_bits, 1, 12),
                                ("recip_bits", recip_bits, 3, 24),
                                ("exp_index_bits", exp_index_bits, 1, 10),
                                ("sum_index_bits", sum_index_bits, 1, 10)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be in [{lo}, {hi}], not {value!r}")
    if method == "recip":
        if recip_bits < recip_index_bits + 3:
            raise ValueError(f"recip_bits must be >= recip_index_bits + 3 "
                             f"({recip_index_bits + 3}), not {recip_bits!r}")
        if recip_index_bits > exp_bits - 2:
            raise ValueError(f"recip_index_bits must be <= exp_bits - 2 ({exp_bits - 2}), "
                             f"not {recip_index_bits!r}")
        if recip_bits + exp_bits < out_bits + 2:
            raise ValueError(f"recip_bits + exp_bits must be >= out_bits + 2 ({out_bits + 2}), "
                             f"not {recip_bits + exp_bits!r}")
    else:
        for name, value in (("exp_index_bits", exp_index_bits),
                            ("sum_index_bits", sum_index_bits)):
            if value > exp_bits - 2:
                raise ValueError(f"{name} must be <= exp_bits - 2 ({exp_bits - 2}), "
                                 f"not {value!r}")


@lru_cache(maxsize=256)
def softmax_tables(*, method: str, scale: float, in_bits: int = 8, out_bits: int = 8,
                   exp_bits: int = LUT_DEFAULTS["exp_bits"],
                   recip_index_bits: int = LUT_DEFAULTS["recip_index_bits"],
                   recip_bits: int = LUT_DEFAULTS["recip_bits"],
                   exp_index_bits: int = LUT_DEFAULTS["exp_index_bits"],
                   sum_index_bits: int = LUT_DEFAULTS["sum_index_bits"]) -> SoftmaxTables:
    """The tables of one ``recip`` or ``lut2d`` configuration, from their defining formulas.

    This is the single source of the table contents: the golden model and the gateware both
    call it.
    """
    _check_lut_params(method, scale, in_bits, out_bits, exp_bits, recip_index_bits, recip_bits,
                      exp_index_bits, sum_index_bits)
    e_max = (1 << exp_bits) - 1
    exp = []
    for d in range(1 << in_bits):       # d = max - x is at most 2**in_bits - 1
        value = _round_half_up(e_max * math.exp(-d * scale))
        if value == 0:
            break                       # and every larger d rounds to zero too
        exp.append(value)
    common = dict(method=method, scale=float(scale), in_bits=in_bits, out_bits=out_bits,
                  exp_bits=exp_bits, exp=tuple(exp))
    if method == "recip":
        r = recip_index_bits
        mids = [1 + (i + 0.5) / (2 << r) for i in range(1 << r)]               # [1, 1.5)
        mids += [1.5 + (j + 0.5) / (1 << r) for j in range(1 << (r - 1))]     # [1.5, 2)
        recip = tuple(_round_half_up((1 << recip_bits) / m) for m in mids)
        return SoftmaxTables(**common, recip_index_bits=r, recip_bits=recip_bits, recip=recip)
    a, b = exp_index_bits, sum_index_bits
    q_max = (1 << out_bits) - 1
    # Rows: e / 2**k rounded to a fraction bits, in [0, 2]; columns: m rounded to b bits, [1, 2].
    quotient = tuple(
        tuple(min(_round_half_up((1 << out_bits) * (ne / (1 << a)) / (1 + ms / (1 << b))), q_max)
              for ms in range((1 << b) + 1))
        for ne in range((2 << a) + 1))
    return SoftmaxTables(**common, exp_index_bits=a, sum_index_bits=b, quotient=quotient)


def table_bytes(method: str, *, scale: float, n: int = 15, **table_params) -> int:
    """Bytes of table storage of one configuration (0 for ``shiftmax``, which has none)."""
    if method == "shiftmax":
        shiftmax_x0(scale)  # validates scale
        return 0
    return softmax_tables(method=method, scale=scale, **table_params).bytes


def _rows(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have at least one element along its last axis, not shape "
                         f"{x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"x must hold integers, not {x.dtype}")
    return x.astype(np.int64)


def _leading_one(s: np.ndarray) -> np.ndarray:
    """floor(log2(s)) of positive int64 values, exactly (no float rounding)."""
    k = np.zeros(s.shape, np.int64)
    for bit in range(62, -1, -1):
        k = np.where((k == 0) & ((s >> bit) > 0), bit, k)
    return k


def recip_index(s, k, r: int):
    """Row of the reciprocal table for sum ``s`` with leading one at bit ``k >= r + 1``."""
    f = (s >> (k - r - 1)) & ((2 << r) - 1)        # the r + 1 bits after the leading one
    return np.where(f < (1 << r), f, (1 << r) + ((f - (1 << r)) >> 1))


def lut_softmax(x, *, scale: float, method: str = "recip", out_bits: int = 8,
                **table_params) -> np.ndarray:
    """Softmax along the last axis by the ``recip`` or ``lut2d`` LUT method, bit-exact to the RTL.

    ``x`` holds signed ``in_bits``-bit integers (value ``x * scale``). Returns int64 ``q`` with
    ``q / 2**out_bits`` approximating softmax, saturated at ``2**out_bits - 1``.
    """
    t = softmax_tables(method=method, scale=scale, out_bits=out_bits, **table_params)
    x = _rows(x)
    lo, hi = -(1 << (t.in_bits - 1)), (1 << (t.in_bits - 1)) - 1
    if x.min() < lo or x.max() > hi:
        raise ValueError(f"x must fit signed {t.in_bits} bits, [{lo}, {hi}]")
    d = x.max(axis=-1, keepdims=True) - x
    exp = np.array(t.exp, np.int64)
    e = np.where(d < len(exp), exp[np.minimum(d, len(exp) - 1)], 0)
    s = e.sum(axis=-1, keepdims=True)               # >= exp[0] > 0: the maximum is in the row
    k = _leading_one(s)
    q_max = (1 << out_bits) - 1
    if method == "recip":
        recip = np.array(t.recip, np.int64)[recip_index(s, k, t.recip_index_bits)]
        sh = t.recip_bits + k - out_bits            # >= 1 by the parameter checks
        return np.minimum((e * recip + (1 << (sh - 1))) >> sh, q_max)
    a, b = t.exp_index_bits, t.sum_index_bits
    ne = (e + (1 << (k - a - 1))) >> (k - a)        # k >= exp_bits - 1 >= a + 1
    ms = ((s + (1 << (k - b - 1))) >> (k - b)) - (1 << b)
    return np.array(t.quotient, np.int64)[ne, ms]


# ---- ShiftMax (I-ViT) ---------------------------------------------------------------------

def shiftmax_x0(scale: float) -> int:
    """I-ViT's ``x0 = floor(-1 / S)``: the input step count of one power of two of exp."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
            math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, not {scale!r}")
    return math.floor(-1 / scale)


def shift_exp(x, x0: int, n: int) -> np.ndarray:
    """I-ViT ``shift_exp`` of integers ``x <= 0`` (training-code semantics, exact)."""
    x = np.asarray(x, np.int64)
    x = x + (x >> 1) - (x >> 4)                     # ~ x * log2(e)
    x = np.maximum(x, n * x0)
    q = x // x0
    r = x - x0 * q
    return ((r - 2 * x0) << (n - q)) >> 1


def shiftmax_min_sum(scale: float, n: int = 15) -> int:
    """Smallest possible row sum of ShiftMax: the row maximum's own ``shift_exp(0)``."""
    return int(shift_exp(0, shiftmax_x0(scale), n))


def shiftmax(x, scale: float, *, n: int = 15, out_bits: int = 8) -> tuple[np.ndarray, float]:
    """I-ViT ShiftMax along the last axis; returns ``(y, out_scale)``, out_scale 2**-(out_bits-1).

    Bit-exact to I-ViT's ``IntSoftmax`` with integer input ``x`` of scale ``scale``.
    """
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 30:
        raise ValueError(f"n must be an integer in [1, 30], not {n!r}")
    if not isinstance(out_bits, int) or isinstance(out_bits, bool) or not 2 <= out_bits <= 16:
        raise ValueError(f"out_bits must be an integer in [2, 16], not {out_bits!r}")
    x0 = shiftmax_x0(scale)
    x = _rows(x)
    e = shift_exp(x - x.max(axis=-1, keepdims=True), x0, n)
    # e <= -x0 * 2**n and rows are short enough in practice; the clamp is I-ViT's own.
    f = ((1 << 31) - 1) // np.minimum(e.sum(axis=-1, keepdims=True), (1 << 31) - 1)
    y = (e * f) >> (32 - out_bits)
    return y, 2.0 ** -(out_bits - 1)
