"""Bit-exact golden model of Lutra's integer LayerNorm (the specification of ``hw/layernorm``).

Source: I-BERT's ``IntLayerNorm`` (Kim et al., "I-BERT: Integer-only BERT Quantization", ICML
2021; HuggingFace ``transformers/models/ibert/quant_modules.py``, ``IntLayerNorm.forward``),
restated in ``shared/REFERENCES.md``. The reference computes the mean with ``torch.round`` and the
standard deviation with a float ``sqrt`` ("to be replaced with an integer-sqrt kernel"), then
divides by it through the integer factor ``floor(2**31 / std)`` and leaves ``gamma``/``beta`` in
float. Lutra's version is integer from end to end, and folds ``gamma``/``beta`` into one
per-channel TFLite requantization (``sim.golden.gemm.requantize``) to ``out_bits`` bits.

The formula, for one row ``x`` of ``n`` integers (``n <= 1024``, every ``|x| <= 2**15``: any int8
or int16 values), with the width of every intermediate (signed unless said):

====================  =================================================  =====================
step                  definition                                           bound, width
====================  =================================================  =====================
``total``             ``sum(x)``                                           ``|.| <= 2**25``, 26
``mean``              ``floor((2 * total + n) / (2 * n))`` (half up)       in ``[min x, max x]``
``y``                 ``x - mean``                                         ``|.| < 2**16``, 17
``var``               ``sum(y**2)`` (not divided by ``n``)                 ``< 2**42``, 42 unsgn.
``std``               ``isqrt(var)``: exact floor square root              ``< 2**21``, 21 unsgn.
``recip``             ``floor(2**31 / max(std, 1))``                       ``<= 2**31``, 32 unsgn.
``norm``              ``floor(y * recip / 2**11)``                         ``|.| <= 2**20``, 22
``acc``               ``(-norm if negate[c] else norm) + bias[c]``         ``|.| < 2**31``, int32
``out``               ``clamp(MBQM(acc, multiplier[c], shift[c]) + zp)``   ``out_bits``
====================  =================================================  =====================

Why the bounds hold: the rounded mean of values in ``[lo, hi]`` stays in ``[lo, hi]``, so
``|y| <= 2**16 - 1``; ``var <= n * (2**16 - 1)**2 < 2**42``; every ``y_i**2 <= var``, so
``|y_i| <= isqrt(var) = std`` (``|y_i|`` is an integer whose square is at most ``var``), hence
``|y * recip| <= std * 2**31 / std = 2**31`` and ``|norm| <= 2**20``; ``bias`` is clamped to
``[-2**30, 2**30]`` when folded, so ``|acc| < 2**31`` and the int32 requantization never wraps.
A constant row (``var = 0``) gives ``norm = 0`` and so ``out = clamp(MBQM(bias) + zp)``: beta.

``norm`` is the normalised row in units of ``S' = sqrt(n) / 2**20`` (``y / sigma`` with
``sigma = std / sqrt(n)``), kept to 20 fraction bits rather than I-BERT's 30 so that the folded
beta fits the same int32 accumulator. The relative error of ``recip`` is below ``std / 2**31``:
``2**-18`` for any int8 row of up to 1024 elements, ``2**-10`` in the worst int16 case.

Folding (:func:`fold_layer_norm`, floats allowed: it runs once, at quantization time): with
``gamma``/``beta`` per channel and the output scale ``S_out``,
``multiplier, shift = quantize_multiplier(|gamma| * S' / S_out)``, ``negate = gamma < 0``,
``bias = clamp(round_half_away(beta / (|gamma| * S')), -2**30, 2**30)`` (0 where the
multiplier is 0). The result is exact to the folded parameters; the fold itself only loses
``beta`` where ``|beta / gamma|`` exceeds ``2**30 * S'`` (over 20,000 standard deviations).

Everything is exact integer arithmetic on NumPy ``int64``; this module must not import Amaranth.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .gemm import quantize_multiplier, requantize

__all__ = ["MAX_HIDDEN", "RECIP_BITS", "NORM_FRAC_BITS", "BIAS_LIMIT", "LayerNormStages",
           "LayerNormFold", "isqrt", "layer_norm_stages", "layer_norm_int", "fold_layer_norm",
           "norm_scale"]

#: Longest row (elements) the widths above are proved for.
MAX_HIDDEN = 1024
#: ``recip = floor(2**RECIP_BITS / std)``.
RECIP_BITS = 31
#: Fraction bits of ``norm`` (``y / std * 2**NORM_FRAC_BITS``).
NORM_FRAC_BITS = 20
#: Folded biases are clamped to ``[-BIAS_LIMIT, BIAS_LIMIT]`` so that ``acc`` fits int32.
BIAS_LIMIT = 1 << 30

_IN_MIN, _IN_MAX = -(1 << 15), (1 << 15) - 1


class LayerNormStages(NamedTuple):
    """Every intermediate of :func:`layer_norm_stages`, per row (``keepdims``) or per element."""

    total: np.ndarray
    mean: np.ndarray
    centered: np.ndarray      # y
    var: np.ndarray
    std: np.ndarray
    recip: np.ndarray
    norm: np.ndarray


class LayerNormFold(NamedTuple):
    """Per-channel folded ``gamma``/``beta``: TFLite requantization of ``±norm + bias``."""

    multiplier: np.ndarray    # Q31, >= 0
    shift: np.ndarray         # TFLite convention (positive = left)
    bias: np.ndarray          # int32, |bias| <= BIAS_LIMIT
    negate: np.ndarray        # bool: gamma < 0


def isqrt(v) -> np.ndarray:
    """Exact ``floor(sqrt(v))`` of non-negative integers below ``2**62``, element-wise.

    The digit-by-digit (restoring) method, one result bit per step, as the hardware does it;
    no floating point.
    """
    v = np.asarray(v, dtype=np.int64)
    if np.any(v < 0):
        raise ValueError("isqrt: v must be non-negative")
    rem = v.copy()
    root = np.zeros_like(v)
    for b in range(30, -1, -1):
        bit = np.int64(1) << np.int64(2 * b)
        trial = root + bit
        take = rem >= trial
        rem = np.where(take, rem - trial, rem)
        root = np.where(take, (root >> 1) + bit, root >> 1)
    return root


def _rows(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"x must hold integers, not {x.dtype}")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have at least one element along its last axis, not shape "
                         f"{x.shape}")
    if x.shape[-1] > MAX_HIDDEN:
        raise ValueError(f"x rows must have at most {MAX_HIDDEN} elements, not {x.shape[-1]}")
    x = x.astype(np.int64)
    if x.min() < _IN_MIN or x.max() > _IN_MAX:
        raise ValueError(f"x must fit signed 16 bits, [{_IN_MIN}, {_IN_MAX}]")
    return x


def layer_norm_stages(x) -> LayerNormStages:
    """The integer normalisation of each row of ``x`` (last axis), every intermediate kept."""
    x = _rows(x)
    n = x.shape[-1]
    total = x.sum(axis=-1, keepdims=True)
    mean = (2 * total + n) // (2 * n)                      # round half up, exact
    y = x - mean
    var = (y * y).sum(axis=-1, keepdims=True)
    std = isqrt(var)
    recip = (np.int64(1) << RECIP_BITS) // np.maximum(std, 1)
    norm = (y * recip) >> (RECIP_BITS - NORM_FRAC_BITS)    # floor
    return LayerNormStages(total, mean, y, var, std, recip, norm)


def layer_norm_int(x, *, multiplier, shift, bias, negate=False, out_zero_point: int = 0,
                   out_bits: int = 8) -> np.ndarray:
    """Integer LayerNorm of each row of ``x`` (last axis), bit-exact to ``hw/layernorm``.

    ``multiplier``, ``shift``, ``bias`` and ``negate`` are per channel (broadcast along the last
    axis), usually from :func:`fold_layer_norm`. Returns signed ``out_bits``-bit integers
    (``out_bits`` 8 or 16) at the scale the fold was made for.
    """
    if out_bits not in (8, 16) or isinstance(out_bits, bool):
        raise ValueError(f"out_bits must be 8 or 16, not {out_bits!r}")
    top = 1 << (out_bits - 1)
    if not isinstance(out_zero_point, (int, np.integer)) or not -top <= out_zero_point < top:
        raise ValueError(f"out_zero_point must be an integer in [{-top}, {top - 1}], not "
                         f"{out_zero_point!r}")
    bias = np.asarray(bias, np.int64)
    if np.any(np.abs(bias) > BIAS_LIMIT):
        raise ValueError(f"bias must be in [-{BIAS_LIMIT}, {BIAS_LIMIT}]")
    norm = layer_norm_stages(x).norm
    acc = np.where(np.asarray(negate, bool), -norm, norm) + bias
    return requantize(acc, multiplier, shift, out_zero_point=int(out_zero_point),
                      act_min=-top, act_max=top - 1)


def norm_scale(hidden: int) -> float:
    """``S' = sqrt(hidden) / 2**NORM_FRAC_BITS``: the real value of one unit of ``norm``."""
    if isinstance(hidden, bool) or not isinstance(hidden, (int, np.integer)):
        raise TypeError(f"hidden must be an integer, not {hidden!r}")
    if not 1 <= hidden <= MAX_HIDDEN:
        raise ValueError(f"hidden must be in [1, {MAX_HIDDEN}], not {hidden!r}")
    return math.sqrt(hidden) / (1 << NORM_FRAC_BITS)


def _round_half_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def fold_layer_norm(gamma, beta, *, out_scale: float) -> LayerNormFold:
    """Fold float ``gamma``/``beta`` (one per channel) into the per-channel requantization that
    maps ``norm`` to the output scale ``out_scale`` (real = integer * out_scale)."""
    gamma = np.asarray(gamma, np.float64)
    beta = np.asarray(beta, np.float64)
    if gamma.ndim != 1 or gamma.shape != beta.shape or gamma.size == 0:
        raise ValueError(f"gamma and beta must be 1-D of one length, not {gamma.shape} and "
                         f"{beta.shape}")
    if gamma.size > MAX_HIDDEN:
        raise ValueError(f"gamma must have at most {MAX_HIDDEN} channels, not {gamma.size}")
    if not (np.all(np.isfinite(gamma)) and np.all(np.isfinite(beta))):
        raise ValueError("gamma and beta must be finite")
    if isinstance(out_scale, bool) or not isinstance(out_scale, (int, float)) or not (
            math.isfinite(out_scale) and out_scale > 0):
        raise ValueError(f"out_scale must be a positive finite number, not {out_scale!r}")
    unit = norm_scale(gamma.size)
    pairs = [quantize_multiplier(abs(g) * unit / out_scale) for g in gamma]
    multiplier = np.array([m for m, _ in pairs], np.int64)
    shift = np.array([s for _, s in pairs], np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(multiplier > 0, beta / (np.abs(gamma) * unit), 0.0)
    bias = np.clip(_round_half_away(raw), -BIAS_LIMIT, BIAS_LIMIT).astype(np.int64)
    return LayerNormFold(multiplier, shift, bias, gamma < 0)
