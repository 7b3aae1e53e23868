"""Bit-exact golden model of the int8 GEMM core and its integer requantization.

Sources (restated in ``shared/REFERENCES.md``):

* Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
  Inference", CVPR 2018.
* gemmlowp ``fixedpoint/fixedpoint.h``: ``SaturatingRoundingDoublingHighMul`` and
  ``RoundingDivideByPOT``.
* TensorFlow Lite ``kernels/internal/common.h``/``common.cc``: ``MultiplyByQuantizedMultiplier``
  (the "double rounding" variant, ``shift > 0`` means a left shift) and ``QuantizeMultiplier``;
  ``reference_integer_ops/fully_connected.h`` for the accumulate / offset / bias / clamp order.

Everything here is exact integer arithmetic on NumPy ``int64`` arrays (products of two int32 values
need 63 bits, which ``int64`` holds; the one case that would not, ``INT32_MIN * INT32_MIN``, is the
saturating special case of SRDHM). This module is the specification the RTL is tested against; it
must not import Amaranth.

Where C leaves behaviour undefined, this model fixes it to what two's-complement hardware does:
``acc << shift`` and the int32 accumulation (``sum + bias``) wrap modulo 2**32.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "wrap_int32",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "gemm_accumulate",
    "requantize",
    "gemm",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def _as_int64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def wrap_int32(x) -> np.ndarray:
    """Reduce integers modulo 2**32 into [INT32_MIN, INT32_MAX] (two's-complement wrap)."""
    x = _as_int64(x)
    return ((x + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values, element-wise.

    ``(2 * a * b) / 2**32`` rounded half away from zero, computed as a truncating division of
    ``a * b + nudge`` by ``2**31``; the one overflowing case ``a == b == INT32_MIN`` saturates to
    ``INT32_MAX``.
    """
    a = _as_int64(a)
    b = _as_int64(b)
    a, b = np.broadcast_arrays(a, b)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    # INT32_MIN * INT32_MIN = 2**62 still fits int64; the special case only changes the result.
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    num = ab + nudge
    # Truncating (toward zero) division by 2**31, NOT floor: add 2**31 - 1 before the arithmetic
    # shift when the numerator is negative.
    high = np.where(num >= 0, num >> 31, (num + ((1 << 31) - 1)) >> 31)
    return np.where(overflow, np.int64(INT32_MAX), high).astype(np.int64)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero.

    ``exponent`` is in [0, 31] (element-wise, broadcasting).
    """
    x = _as_int64(x)
    e = _as_int64(exponent)
    if np.any((e < 0) | (e > 31)):
        raise ValueError("exponent must be in [0, 31]")
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(acc, multiplier, shift) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier(acc, multiplier, shift)``, element-wise.

    ``acc`` and ``multiplier`` are int32 values; ``shift`` follows TFLite: positive means a left
    shift before the high multiply, negative a rounding right shift after it. Arguments broadcast;
    the result is an ``int64`` array of int32 values.
    """
    acc = _as_int64(acc)
    multiplier = _as_int64(multiplier)
    shift = _as_int64(shift)
    if np.any((shift < -31) | (shift > 31)):
        raise ValueError("shift must be in [-31, 31]")
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    # TFLite computes `x * (1 << left_shift)` in int32; hardware wraps, and so does this model.
    shifted = wrap_int32(acc << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def _round_half_away_from_zero(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: ``real ~= multiplier * 2**(shift - 31)``.

    Returns ``(multiplier, shift)`` with ``multiplier`` a Q31 value in [2**30, 2**31) (or 0) and
    ``shift`` in TFLite's convention (positive = left). ``real == 0`` gives ``(0, 0)``.
    """
    if isinstance(real, bool) or not isinstance(real, (int, float, np.integer, np.floating)):
        raise TypeError(f"real multiplier must be a number, not {real!r}")
    real = float(real)
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"real multiplier must be a finite non-negative number, not {real!r}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)  # real = q * 2**shift, q in [0.5, 1)
    q_fixed = _round_half_away_from_zero(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift = 0
        q_fixed = 0
    return int(q_fixed), int(shift)


def gemm_accumulate(a, b, *, bias=None, a_offset: int = 0) -> np.ndarray:
    """int32 accumulators ``acc[m, n] = sum_k (a[m, k] + a_offset) * b[k, n] + bias[n]``.

    The sum wraps modulo 2**32 exactly like an int32 accumulator (the array uses a narrower
    accumulator only when its width provably holds every partial sum).
    """
    a = _as_int64(a)
    b = _as_int64(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"a and b must be matrices M x K and K x N, not {a.shape} and {b.shape}")
    a = a + int(a_offset)
    # Exact either way: a float64 matrix product is exact while every partial sum stays below
    # 2**53 (int16 x int8 operands up to K = 2**22), and BLAS makes it ~100x faster than
    # NumPy's integer matmul; wider operands take the int64 product (exact below 2**63).
    bound = int(np.abs(a).max(initial=0)) * int(np.abs(b).max(initial=0)) * a.shape[1]
    if bound < 1 << 53:
        acc = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    else:
        acc = a @ b
    if bias is not None:
        acc = acc + _as_int64(bias)
    return wrap_int32(acc)


def requantize(acc, multiplier, shift, *, out_zero_point: int = 0, act_min: int = -128,
               act_max: int = 127) -> np.ndarray:
    """TFLite output stage: ``clamp(MBQM(acc, multiplier, shift) + out_zero_point)``.

    ``multiplier`` and ``shift`` broadcast along the last axis (per output channel).
    """
    scaled = multiply_by_quantized_multiplier(acc, multiplier, shift)
    return np.clip(scaled + int(out_zero_point), int(act_min), int(act_max)).astype(np.int64)


def gemm(a, b, *, bias=None, a_offset: int = 0, multiplier=None, shift=None,
         out_zero_point: int = 0, act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """The GEMM core's result for ``A[M x K] . B[K x N]``.

    With ``multiplier`` and ``shift`` (scalars or one per column) the result is the requantized
    int8 output; with both ``None`` it is the raw int32 accumulator (bias included).
    """
    acc = gemm_accumulate(a, b, bias=bias, a_offset=a_offset)
    if multiplier is None and shift is None:
        return acc
    if multiplier is None or shift is None:
        raise ValueError("multiplier and shift must be given together")
    return requantize(acc, multiplier, shift, out_zero_point=out_zero_point,
                      act_min=act_min, act_max=act_max)
