"""Bit-exact golden model of the residual adder: TFLite's int8/int16 ``ADD``, for N inputs.

Source: TensorFlow Lite ``kernels/internal/reference/integer_ops/add.h`` (``AddElementwise``)
with the parameters of ``kernels/add.cc`` (``Prepare``), restated in ``shared/REFERENCES.md``:
``left_shift = 20`` for int8 inputs and ``15`` for int16 (the general int16 path);
``twice_max = 2 * max(S_i)``; input multipliers ``S_i / twice_max`` and the output multiplier
``twice_max / (2**left_shift * S_out)``, each through ``QuantizeMultiplier``. Per element::

    a_i = MBQM_SmallerThanOneExp((x_i + offset_i) << left_shift, m_i, s_i)
    out = clamp(MBQM_SmallerThanOneExp(sum(a_i), m_out, s_out) + out_offset)

(``MultiplyByQuantizedMultiplierSmallerThanOneExp(x, m, s) = RDBPOT(SRDHM(x, m), -s)``, which is
``sim.golden.gemm.multiply_by_quantized_multiplier`` for ``s <= 0``). TFLite adds two tensors;
the same recipe with three inputs sums the embedding rows of the encoder. Bounds: an int16 input
shifted by 15 is below ``2**30`` and its multiplier below one, so two of them sum below
``2**31``; three int8 inputs shifted by 20 sum below ``2**29``: int32 throughout.

Exact integers on NumPy ``int64``; this module must not import Amaranth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .gemm import multiply_by_quantized_multiplier, quantize_multiplier

__all__ = ["ADD_LEFT_SHIFT", "AddParams", "add_int"]

#: TFLite ADD left shifts: int8 inputs 20, int16 inputs 15 (``kernels/add.cc``).
ADD_LEFT_SHIFT = {8: 20, 16: 15}


@dataclass
class AddParams:
    """TFLite int8/int16 ``ADD`` generalised to N inputs (``reference_integer_ops/add.h``):
    each input ``(x + offset) << left_shift`` scaled by its multiplier (``MBQM``, shift <= 0 as
    ``MultiplyByQuantizedMultiplierSmallerThanOneExp``), summed, scaled to the output, offset
    and clamped to ``bits``. The multipliers come from ``S_i / twice_max`` and
    ``twice_max / (2**left_shift S_out)``, ``twice_max = 2 max(S_i)``."""

    left_shift: int
    offsets: np.ndarray       # per input
    multipliers: np.ndarray   # per input
    shifts: np.ndarray        # per input (<= 0)
    out_multiplier: int
    out_shift: int
    out_offset: int = 0
    bits: int = 16

    @classmethod
    def from_scales(cls, in_scales, out_scale: float, *, in_bits: int, bits: int) -> AddParams:
        left = ADD_LEFT_SHIFT[in_bits]
        twice_max = 2 * max(in_scales)
        pairs = [quantize_multiplier(s / twice_max) for s in in_scales]
        out_m, out_s = quantize_multiplier(twice_max / ((1 << left) * out_scale))
        return cls(left, np.zeros(len(in_scales), np.int64),
                   np.array([m for m, _ in pairs], np.int64),
                   np.array([s for _, s in pairs], np.int64), out_m, out_s, 0, bits)


def add_int(inputs, p: AddParams) -> np.ndarray:
    """Element-wise TFLite ADD of ``inputs`` (integer arrays of one shape), bit-exact."""
    total = 0
    for x, off, m, s in zip(inputs, p.offsets, p.multipliers, p.shifts):
        shifted = (np.asarray(x, np.int64) + int(off)) << p.left_shift
        total = total + multiply_by_quantized_multiplier(shifted, int(m), int(s))
    # The output multiplier is below one whenever S_out >= twice_max / 2**left_shift (always in
    # practice); a larger one takes TFLite's general (left-shifting) MBQM rather than failing.
    raw = multiply_by_quantized_multiplier(total, p.out_multiplier, p.out_shift) + p.out_offset
    top = 1 << (p.bits - 1)
    return np.clip(raw, -top, top - 1)
