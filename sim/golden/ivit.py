"""I-ViT's shift-based exponential, shared by ShiftMax (``softmax``) and ShiftGELU (``gelu``).

Source: Li & Gu, "I-ViT: Integer-only Quantization for Efficient Vision Transformer Inference",
ICCV 2023; github zkkli/I-ViT ``models/quantization_utils/quant_modules.py``
(``IntSoftmax.int_exp_shift`` and ``IntGELU.int_exp_shift``, training-code semantics as restated
in the project's REFERENCES). Exact integers on NumPy ``int64``; this module must not import
Amaranth.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DIV_NUMERATOR", "SATURATING_SHIFT", "shift_exp"]

#: The Q31 numerator I-ViT divides by its exponential sums, ``2**31 - 1``.
DIV_NUMERATOR = (1 << 31) - 1

#: Shifts beyond this make any exponent exceed DIV_NUMERATOR (the shifted value is >= 2), so
#: clipping the shift here keeps int64 exact wherever the clamp does not hide the value.
SATURATING_SHIFT = 32


def shift_exp(x, x0: int, n: int, *, saturate: bool = False) -> np.ndarray:
    """I-ViT's ``int_exp_shift``: ``exp(x * S_exp)`` at scale ``S_exp / 2**n`` by shifts and adds.

    ``x`` integer (``<= 0`` in ShiftMax and ShiftGELU's numerator; ShiftGELU's ``-rowmax`` may
    be positive), ``x0 = floor(-1 / S_exp)`` a negative integer. ``x + (x >> 1) - (x >> 4)``
    approximates ``x * log2(e)``; the result is ``((r - 2 x0) << (n - q)) >> 1`` with
    ``q = x // x0`` and ``r = x - x0 q``, i.e. the reference's ``floor((r / 2 - x0) * 2**(n - q))``.

    With ``saturate`` the result is clamped to ``DIV_NUMERATOR`` (positive ``x`` otherwise
    overflows any fixed width): ShiftGELU uses ``e + em`` only through ``min(e + em, 2**31 - 1)``,
    which the clamp leaves unchanged because ``e >= 0``.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "iub":
        raise TypeError(f"x must hold integers, not {x.dtype}")
    x = x.astype(np.int64)
    x = x + (x >> 1) - (x >> 4)
    x = np.maximum(x, n * x0)
    q = x // x0                              # floor division, q <= n
    r = x - x0 * q                           # r in (x0, 0]
    shift = n - q
    if saturate:
        shift = np.minimum(shift, SATURATING_SHIFT)
        return np.minimum(((r - 2 * x0) << shift) >> 1, DIV_NUMERATOR)
    if np.any(shift > 62 - int(-2 * x0).bit_length()):
        raise OverflowError("shift_exp of a positive argument needs saturate=True")
    return ((r - 2 * x0) << shift) >> 1
