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
    Multiplier- and divider-free: the paper's second method, a two-dimensional quotient table
    ``Q[numerator][sum]``, stored along its anti-diagonals. In log-domain indices
    ``2**out_bits * exp(-d * S) / (s / E0) = 2**(out_bits - T)`` with
    ``T = d * S * log2(e) + log2(s / E0)`` (``E0 = EXP[0] = 2**exp_bits - 1``): the table
    depends on its two indices only through their sum, so it is kept as 1-D pieces, all
    ``frac_bits``-bit fixed point (``f = frac_bits``):

    * numerator axis, per element: ``N = (min(d, d_cap) * C + 2**7) >> 8`` with the constant
      ``C = round(S * log2(e) * 2**(f + 8))`` (shifts and adds in the gateware);
      ``d_cap`` is the first ``d`` whose output is 0 whatever the row;
    * sum axis, per row: ``s = sum(EXP[d])`` as in ``recip``; ``k`` = leading one of ``s``;
      ``x = s / 2**(k + 1)`` in [1/2, 1) with ``f + 4`` fraction bits, then ``log_steps``
      stages of multiplicative normalisation: ``if x + (x >> i) <= 1: x += x >> i,
      A += LOGC[i]`` with ``LOGC[i] = round(log2(1 + 2**-i) * 2**f)``, so ``x`` ends in
      (1 - 2**-log_steps, 1]; the residual ``u = 1 - x`` contributes ``u / ln 2`` (a constant
      multiple). ``L = (k + 1 - exp_bits) * 2**f + Z - A - round(u / ln 2 * 2**f)`` with
      ``Z = round(-log2(1 - 2**-exp_bits) * 2**f)``;
    * anti-diagonal values, per element: ``T = max(N + L, 0)``, ``I = T >> f``, ``F`` its
      fraction; ``y = POW[F >> (f - p)] << 2`` with ``POW[j] = round(2**pow_bits *
      2**-(j / 2**p + bias))`` (``p = pow_index_bits``), refined by ``pow_steps`` stages
      ``i = p + 1, ...``: ``if F_lo >= POWC[i]: F_lo -= POWC[i], y -= y >> i`` with
      ``POWC[i] = round(-log2(1 - 2**-i) * 2**f)``; ``bias`` is half the last stage's
      constant, centring the residual fraction;
    * ``q = (y + 2**(sh - 1)) >> sh`` (round half up) with
      ``sh = min(I, out_bits + 1) + pow_bits - out_bits + 2``, saturated at ``2**out_bits - 1``.

    A plain 2-D table cannot reach 1 LSB in ~700 bytes (near ``d = 0`` and a sum in [1, 2) the
    output takes ~128 distinct values along both axes); the log-domain split keeps the table
    bytes to the ``EXP`` and ``POW`` tables and the stage constants.

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

from .ivit import shift_exp

__all__ = ["METHODS", "LUT_DEFAULTS", "TABLE_PARAM_BOUNDS", "SoftmaxTables", "softmax_tables",
           "table_bytes", "lut_softmax", "recip_index", "lut2d_log_num", "lut2d_log_sum",
           "lut2d_pow", "shift_exp", "shiftmax", "shiftmax_x0", "shiftmax_min_sum"]

METHODS = ("recip", "lut2d", "shiftmax")

#: Table parameters used when a caller gives none (chosen from the sweep of ``lutra bench
#: softmax``: the smallest tables meeting the 1-LSB target on MiniLM attention; 14-bit exp entries
#: because with 12 the rounding of many small entries adds up in long rows: 1.04 LSB seen).
LUT_DEFAULTS = {"in_bits": 8, "exp_bits": 14, "recip_index_bits": 8, "recip_bits": 11,
                "frac_bits": 12, "log_steps": 7, "pow_index_bits": 6, "pow_steps": 4,
                "pow_bits": 12}

#: ``lut2d``: extra fraction bits of the sum's mantissa in the log stages, and of ``y`` in the
#: exp2 refinement stages (truncation of ``x >> i`` / ``y >> i`` stays below the table error).
LOG_GUARD = 4
POW_GUARD = 2
#: ``lut2d``: fraction bits kept below ``frac_bits`` by the constant multiplications.
CONST_SHIFT = 8


#: Inclusive bounds of the widths and table parameters ``softmax_tables`` accepts; the engine's
#: parameter declaration (``hw/softmax/params.py``) reads its bounds from here.
TABLE_PARAM_BOUNDS = {"in_bits": (2, 16), "out_bits": (4, 16), "exp_bits": (4, 24),
                      "recip_index_bits": (1, 12), "recip_bits": (3, 24), "frac_bits": (4, 24),
                      "log_steps": (1, 16), "pow_index_bits": (1, 12), "pow_steps": (0, 12),
                      "pow_bits": (4, 24)}


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
    frac_bits: int = 0
    log_steps: int = 0
    pow_index_bits: int = 0
    pow_steps: int = 0
    pow_bits: int = 0
    pow: tuple[int, ...] = ()
    log_consts: tuple[int, ...] = ()    # LOGC[i], i = 1..log_steps
    pow_consts: tuple[int, ...] = ()    # POWC[i], i = pow_index_bits + 1..
    num_const: int = 0                  # C: N = (min(d, d_cap) * C + 2**7) >> 8
    d_cap: int = 0
    tail_const: int = 0                 # round(2**(frac_bits + 8) / ln 2)
    log_offset: int = 0                 # Z

    @property
    def bits(self) -> int:
        """Total table storage in bits (entries x entry width); ``lut2d`` counts its stage
        constants too (they are a small table unrolled into logic)."""
        total = len(self.exp) * self.exp_bits
        total += len(self.recip) * self.recip_bits
        total += len(self.pow) * self.pow_bits
        total += (len(self.log_consts) + len(self.pow_consts)) * self.frac_bits
        return total

    @property
    def bytes(self) -> int:
        return -(-self.bits // 8)


def _check_lut_params(method, scale, in_bits, out_bits, exp_bits, recip_index_bits, recip_bits,
                      frac_bits, log_steps, pow_index_bits, pow_steps, pow_bits) -> None:
    if method not in ("recip", "lut2d"):
        raise ValueError(f"method must be one of 'recip', 'lut2d', not {method!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
            math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, not {scale!r}")
    values = {"in_bits": in_bits, "out_bits": out_bits, "exp_bits": exp_bits,
              "recip_index_bits": recip_index_bits, "recip_bits": recip_bits,
              "frac_bits": frac_bits, "log_steps": log_steps, "pow_index_bits": pow_index_bits,
              "pow_steps": pow_steps, "pow_bits": pow_bits}
    for name, (lo, hi) in TABLE_PARAM_BOUNDS.items():
        value = values[name]
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
        if pow_index_bits + pow_steps > frac_bits:
            raise ValueError(f"pow_index_bits + pow_steps must be <= frac_bits ({frac_bits}), "
                             f"not {pow_index_bits + pow_steps!r}")
        if pow_bits < out_bits + 2:
            raise ValueError(f"pow_bits must be >= out_bits + 2 ({out_bits + 2}), "
                             f"not {pow_bits!r}")


@lru_cache(maxsize=256)
def softmax_tables(*, method: str, scale: float, in_bits: int = 8, out_bits: int = 8,
                   exp_bits: int = LUT_DEFAULTS["exp_bits"],
                   recip_index_bits: int = LUT_DEFAULTS["recip_index_bits"],
                   recip_bits: int = LUT_DEFAULTS["recip_bits"],
                   frac_bits: int = LUT_DEFAULTS["frac_bits"],
                   log_steps: int = LUT_DEFAULTS["log_steps"],
                   pow_index_bits: int = LUT_DEFAULTS["pow_index_bits"],
                   pow_steps: int = LUT_DEFAULTS["pow_steps"],
                   pow_bits: int = LUT_DEFAULTS["pow_bits"]) -> SoftmaxTables:
    """The tables of one ``recip`` or ``lut2d`` configuration, from their defining formulas.

    This is the single source of the table contents: the golden model and the gateware both
    call it.
    """
    _check_lut_params(method, scale, in_bits, out_bits, exp_bits, recip_index_bits, recip_bits,
                      frac_bits, log_steps, pow_index_bits, pow_steps, pow_bits)
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
    f, p = frac_bits, pow_index_bits
    log2e = 1 / math.log(2)
    # d_cap: N >= out_bits + 1 makes I >= out_bits + 1, an output of 0 whatever the row
    d_cap = min(math.ceil((out_bits + 1) / (scale * log2e)) + 1, (1 << in_bits) - 1)
    log_consts = tuple(_round_half_up(math.log2(1 + 2.0 ** -i) * (1 << f))
                       for i in range(1, log_steps + 1))
    pow_consts = tuple(_round_half_up(-math.log2(1 - 2.0 ** -i) * (1 << f))
                       for i in range(p + 1, p + pow_steps + 1))
    # the residual fraction the stages leave is in [0, last step) : centre it
    bias = (pow_consts[-1] if pow_consts else 1 << (f - p)) / (2 << f)
    pow_ = tuple(_round_half_up((1 << pow_bits) * 2.0 ** -(j / (1 << p) + bias))
                 for j in range(1 << p))
    return SoftmaxTables(
        **common, frac_bits=f, log_steps=log_steps, pow_index_bits=p, pow_steps=pow_steps,
        pow_bits=pow_bits, pow=pow_, log_consts=log_consts, pow_consts=pow_consts,
        num_const=_round_half_up(scale * log2e * (1 << (f + CONST_SHIFT))), d_cap=d_cap,
        tail_const=_round_half_up((1 << (f + CONST_SHIFT)) * log2e),
        log_offset=_round_half_up(-math.log2(1 - 2.0 ** -exp_bits) * (1 << f)))


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
    return _lut2d_quotient(t, d, s, k)


def lut2d_log_sum(t: SoftmaxTables, s, k) -> np.ndarray:
    """``L ~ log2(s / EXP[0]) * 2**frac_bits`` of row sums ``s`` with leading one ``k``."""
    f, w = t.frac_bits, t.frac_bits + LOG_GUARD
    # x = s / 2**(k + 1) with w fraction bits (truncated when s is wider)
    x = np.where(k + 1 >= w, s >> np.maximum(k + 1 - w, 0), s << np.maximum(w - k - 1, 0))
    acc = np.zeros_like(x)
    for i, c in enumerate(t.log_consts, 1):
        grown = x + (x >> i)
        take = grown <= (1 << w)
        x = np.where(take, grown, x)
        acc = acc + np.where(take, c, 0)
    u = (1 << w) - x                                # 1 - x, small
    tail = (u * t.tail_const + (1 << (w + CONST_SHIFT - 1))) >> (w + CONST_SHIFT)
    return ((k + 1 - t.exp_bits) << f) + t.log_offset - acc - tail


def lut2d_log_num(t: SoftmaxTables, d) -> np.ndarray:
    """``N ~ d * S * log2(e) * 2**frac_bits``, with ``d`` capped at ``d_cap``."""
    d = np.minimum(d, t.d_cap)
    return (d * t.num_const + (1 << (CONST_SHIFT - 1))) >> CONST_SHIFT


def lut2d_pow(t: SoftmaxTables, total) -> np.ndarray:
    """``q = round(2**(out_bits - T / 2**frac_bits))`` from the anti-diagonal index ``T``."""
    f, p, out_bits = t.frac_bits, t.pow_index_bits, t.out_bits
    total = np.maximum(total, 0)
    whole, frac = total >> f, total & ((1 << f) - 1)
    y = np.array(t.pow, np.int64)[frac >> (f - p)] << POW_GUARD
    low = frac & ((1 << (f - p)) - 1)
    for i, c in enumerate(t.pow_consts, p + 1):
        take = low >= c
        low = np.where(take, low - c, low)
        y = np.where(take, y - (y >> i), y)
    sh = np.minimum(whole, out_bits + 1) + t.pow_bits - out_bits + POW_GUARD
    return np.minimum((y + (1 << (sh - 1))) >> sh, (1 << out_bits) - 1)


def _lut2d_quotient(t: SoftmaxTables, d, s, k) -> np.ndarray:
    return lut2d_pow(t, lut2d_log_num(t, d) + lut2d_log_sum(t, s, k))


# ---- ShiftMax (I-ViT) ---------------------------------------------------------------------

def shiftmax_x0(scale: float) -> int:
    """I-ViT's ``x0 = floor(-1 / S)``: the input step count of one power of two of exp."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
            math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, not {scale!r}")
    return math.floor(-1 / scale)


def shiftmax_min_sum(scale: float, n: int = 15) -> int:
    """Smallest possible row sum of ShiftMax: the row maximum's own ``shift_exp(0)``."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 30:
        raise ValueError(f"n must be an integer in [1, 30], not {n!r}")
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
