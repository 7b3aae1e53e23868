"""Bit-exact golden models of Lutra's three integer GELU units.

Sources (restated in ``shared/REFERENCES.md``):

* ``shift``: I-ViT's ShiftGELU (Li & Gu, "I-ViT: Integer-only Quantization for Efficient Vision
  Transformer Inference", ICCV 2023; github zkkli/I-ViT ``models/quantization_utils/
  quant_modules.py``, classes ``IntGELU.int_exp_shift`` / ``IntGELU.forward``), with the
  training-code semantics: ``n = 23``, ``x0 = floor(-1 / (1.702 S))``, floor rounding everywhere.
* ``poly``: I-BERT's i-GELU (Kim et al., "I-BERT: Integer-only BERT Quantization", ICML 2021;
  HuggingFace ``transformers/models/ibert/quant_modules.py``, class ``IntGELU``), every rounding
  step as that source writes it, including ``shift_int = 1.0 // S_L`` (Python's float floor
  division, which the original ``floor(1. / S_L)`` matches except within one rounding of an
  integer).
* ``lut``: the exact erf GELU, ``x / 2 * (1 + erf(x / sqrt 2))``, rounded to nearest (half away
  from zero) at the output scale, for every input code.

Exact integers throughout (NumPy ``int64`` with explicit saturation where the reference's value
only matters up to a clamp), never float emulation: the products exceed 2**24, where float32
stops being exact. The scale-derived constants (``x0``, ``b``, ``c``, ``shift_int``, the table)
are computed in double precision from the Python ``float`` scale, by the functions
:func:`shift_gelu_constants`, :func:`i_gelu_constants` and :func:`lut_gelu_table`, which the
gateware in ``hw/gelu`` calls too. This module is the specification; it must not import Amaranth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .ivit import DIV_NUMERATOR, shift_exp

__all__ = [
    "DIV_NUMERATOR",
    "ShiftGeluConstants",
    "IGeluConstants",
    "shift_exp",
    "shift_gelu_constants",
    "shift_gelu",
    "i_gelu_constants",
    "i_gelu",
    "lut_gelu_table",
    "lut_gelu",
    "gelu_exact",
]



def _int_array(x, name: str = "x") -> np.ndarray:
    array = np.asarray(x)
    if array.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integers, not {array.dtype}")
    return array.astype(np.int64)


def _check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a number, not {scale!r}")
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite positive number, not {scale!r}")
    return scale


def _check_range(x: np.ndarray, in_width: int) -> None:
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"x must be in [{lo}, {hi}] for in_width={in_width}, "
                         f"not [{x.min()}, {x.max()}]")


# ---- ShiftGELU (I-ViT) ----------------------------------------------------------------------

@dataclass(frozen=True)
class ShiftGeluConstants:
    """Everything ShiftGELU derives from its scale, shared by the golden model and the gateware.

    ``row_max_range`` is the range of the row maximum ``m`` (a single value in ``"static"``
    mode); the ``*_min``/``*_max`` fields bound the intermediate values over every input, which
    fixes the hardware's widths and the divider's quotient bits.
    """

    scale: float
    n: int
    out_bits: int
    in_width: int
    max_mode: str
    x0: int                     # floor(-1 / (1.702 S)), a negative integer
    row_max_range: tuple[int, int]
    e_max: int                  # largest exp(x - m) numerator
    em_min: int                 # smallest exp(-m) (saturated at DIV_NUMERATOR)
    em_max: int
    divisor_min: int            # smallest min(e + em, 2**31 - 1)
    quotient_bits: int          # bits of (2**31 - 1) // divisor
    sig_max: int                # largest sigmoid numerator
    out_scale: float

    @property
    def sig_shift(self) -> int:
        """``sig = (e * f) >> sig_shift``: the sigmoid keeps ``out_bits`` bits of a Q31 value."""
        return 32 - self.out_bits

    @property
    def y_range(self) -> tuple[int, int]:
        """Output range: ``x * sig`` with ``sig`` in ``[0, sig_max]``."""
        lo, hi = -(1 << (self.in_width - 1)), (1 << (self.in_width - 1)) - 1
        return lo * self.sig_max, hi * self.sig_max


def shift_gelu_constants(scale: float, *, n: int = 23, out_bits: int = 8, in_width: int = 8,
                         max_mode: str = "row") -> ShiftGeluConstants:
    """ShiftGELU's constants and value bounds for input scale ``scale`` (see the class)."""
    scale = _check_scale(scale)
    for name, value, lo, hi in (("n", n, 1, 30), ("out_bits", out_bits, 1, 31),
                                ("in_width", in_width, 2, 16)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be in [{lo}, {hi}], not {value!r}")
    if max_mode not in ("row", "static"):
        raise ValueError(f"max_mode must be one of 'row', 'static', not {max_mode!r}")
    # The reference computes `scaling_factor * 1.702` first, then floor(-1.0 / that).
    x0 = math.floor(-1.0 / (scale * 1.702))
    if -x0 >= 1 << 24:
        raise ValueError(f"scale must be >= 2**-24 / 1.702 for ShiftGELU, not {scale!r}")
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    row_max_range = (lo, hi) if max_mode == "row" else (hi, hi)
    # x - m ranges over [lo - hi, 0]; exp is monotonic, so its extremes sit at the ends.
    t = np.arange(lo - hi, 1, dtype=np.int64)
    e = shift_exp(t, x0, n)
    m = np.arange(row_max_range[0], row_max_range[1] + 1, dtype=np.int64)
    em = shift_exp(-m, x0, n, saturate=True)
    divisor_min = min(int(e.min()) + int(em.min()), DIV_NUMERATOR)
    quotient_bits = (DIV_NUMERATOR // divisor_min).bit_length()
    # e * f <= 2**31 - 1 unless the divisor clamps, where f == 1 and e * f == e.
    sig_max = max(DIV_NUMERATOR, int(e.max())) >> (32 - out_bits)
    return ShiftGeluConstants(
        scale=scale, n=n, out_bits=out_bits, in_width=in_width, max_mode=max_mode, x0=x0,
        row_max_range=row_max_range, e_max=int(e.max()), em_min=int(em.min()),
        em_max=int(em.max()), divisor_min=divisor_min, quotient_bits=quotient_bits,
        sig_max=sig_max, out_scale=scale * 2.0 ** -(out_bits - 1))


def shift_gelu(x, scale: float, *, n: int = 23, out_bits: int = 8, max_mode: str = "row",
               in_width: int = 8) -> tuple[np.ndarray, float]:
    """I-ViT ShiftGELU of integers ``x`` at scale ``scale``: ``x * sigmoid(1.702 x)``.

    ``max_mode="row"`` subtracts the maximum along the last axis, as I-ViT does;
    ``"static"`` subtracts the largest ``in_width``-bit input instead (no row buffer needed;
    same formulas). Returns ``(y, out_scale)`` with ``out_scale = scale * 2**-(out_bits - 1)``.
    """
    k = shift_gelu_constants(scale, n=n, out_bits=out_bits, in_width=in_width,
                             max_mode=max_mode)
    x = _int_array(x)
    _check_range(x, in_width)
    if max_mode == "row":
        if x.ndim == 0 or x.shape[-1] == 0:
            raise ValueError("x must have at least one element along its last axis")
        m = x.max(axis=-1, keepdims=True)
    else:
        m = np.full_like(x, k.row_max_range[1])
    e = shift_exp(x - m, k.x0, n)
    em = shift_exp(-m, k.x0, n, saturate=True)
    f = DIV_NUMERATOR // np.minimum(e + em, DIV_NUMERATOR)
    sig = (e * f) >> k.sig_shift
    return x * sig, k.out_scale


# ---- i-GELU (I-BERT) ------------------------------------------------------------------------

@dataclass(frozen=True)
class IGeluConstants:
    """i-GELU's integer constants for one input scale (HuggingFace ``IntGELU``)."""

    scale: float
    in_width: int
    b: int                      # floor(-1.769 / Se), Se = S / 1.4142
    c: int                      # floor((1 / -0.2888) / Se**2)
    shift_int: int              # 1.0 // S_L
    sigmoid_scale: float        # S_L = Se**2 * -0.2888 * 2**14 (negative)
    out_scale: float            # S * S_L / 2 (negative)
    y_range: tuple[int, int]

    #: ``floor(y / 2**CONST)`` keeps the erf polynomial small ("avoid overflow").
    CONST = 14


def _i_gelu_int(x: np.ndarray, b: int, c: int, shift_int: int) -> np.ndarray:
    sign = np.sign(x)
    magnitude = np.minimum(np.abs(x), -b)
    erf_int = (sign * ((magnitude + b) ** 2 + c)) >> IGeluConstants.CONST    # floor
    return x * (erf_int + shift_int)


def i_gelu_constants(scale: float, *, in_width: int = 16) -> IGeluConstants:
    """i-GELU's constants and output range for input scale ``scale`` and ``in_width`` bits."""
    scale = _check_scale(scale)
    if isinstance(in_width, bool) or not isinstance(in_width, int):
        raise TypeError(f"in_width must be an integer, not {in_width!r}")
    if not 2 <= in_width <= 16:
        raise ValueError(f"in_width must be in [2, 16], not {in_width!r}")
    k, coeff = 1.4142, [-0.2888, -1.769, 1.0]
    coeff[2] /= coeff[0]                    # as the source: a (x + b)**2 + c with c = 1 / a
    se = scale / k
    try:
        b = math.floor(coeff[1] / se)
        c = math.floor(coeff[2] / se ** 2)
        sigmoid_scale = se ** 2 * coeff[0] * 2 ** IGeluConstants.CONST
        shift_int = int(1.0 // sigmoid_scale)
    except (ZeroDivisionError, OverflowError):
        sigmoid_scale = 0.0
    # The integer polynomial x * (sign * ((min(|x|, -b) + b)^2 + c) >> 14 + shift_int) is
    # evaluated in int64: refuse a scale whose constants would overflow it (or not exist).
    if sigmoid_scale == 0.0 or not math.isfinite(sigmoid_scale) or (
            (1 << (in_width - 1)) * (b * b + abs(c) + abs(shift_int)) >= 1 << 63):
        raise ValueError(f"scale must give i-GELU constants that fit int64 arithmetic "
                         f"(in_width={in_width}), not {scale!r}")
    codes = np.arange(-(1 << (in_width - 1)), 1 << (in_width - 1), dtype=np.int64)
    y = _i_gelu_int(codes, b, c, shift_int)
    return IGeluConstants(scale=scale, in_width=in_width, b=b, c=c, shift_int=shift_int,
                          sigmoid_scale=sigmoid_scale, out_scale=scale * sigmoid_scale / 2,
                          y_range=(int(y.min()), int(y.max())))


def i_gelu(x, scale: float, *, in_width: int = 16) -> tuple[np.ndarray, float]:
    """I-BERT i-GELU of integers ``x`` at scale ``scale``; returns ``(y, out_scale)``.

    ``out_scale = S * S_L / 2`` is negative (``S_L`` is), as in the source. ``in_width`` only
    bounds the accepted inputs (I-BERT feeds i-GELU wide GEMM outputs).
    """
    k = i_gelu_constants(scale, in_width=in_width)
    x = _int_array(x)
    _check_range(x, in_width)
    return _i_gelu_int(x, k.b, k.c, k.shift_int), k.out_scale


# ---- table ----------------------------------------------------------------------------------

def gelu_exact(x) -> np.ndarray:
    """The exact erf GELU ``x / 2 * (1 + erf(x / sqrt 2))`` in double precision."""
    x = np.asarray(x, dtype=np.float64)
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return x / 2 * (1 + erf(x / math.sqrt(2)))


def lut_gelu_table(scale: float, *, out_bits: int = 8, in_width: int = 8) -> np.ndarray:
    """GELU of every ``in_width``-bit input code, rounded to nearest (ties away from zero) at
    the output scale ``scale * 2**-(out_bits - 1)``; entry ``i`` is for code ``i - 2**(w-1)``."""
    scale = _check_scale(scale)
    for name, value, hi in (("out_bits", out_bits, 16), ("in_width", in_width, 12)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if not 1 <= value <= hi or (name == "in_width" and value < 2):
            raise ValueError(f"{name} must be in [{1 if name == 'out_bits' else 2}, {hi}], "
                             f"not {value!r}")
    codes = np.arange(-(1 << (in_width - 1)), 1 << (in_width - 1), dtype=np.int64)
    # x * 2**(out_bits - 1) * Phi(x S): the scale cancels except inside erf.
    units = gelu_exact(codes * scale) / (scale * 2.0 ** -(out_bits - 1))
    return (np.sign(units) * np.floor(np.abs(units) + 0.5)).astype(np.int64)


def lut_gelu(x, scale: float, *, out_bits: int = 8, in_width: int = 8
             ) -> tuple[np.ndarray, float]:
    """Table GELU of integers ``x`` at scale ``scale``; returns ``(y, out_scale)`` with
    ``out_scale = scale * 2**-(out_bits - 1)``."""
    table = lut_gelu_table(scale, out_bits=out_bits, in_width=in_width)
    x = _int_array(x)
    _check_range(x, in_width)
    return table[x + (1 << (in_width - 1))], scale * 2.0 ** -(out_bits - 1)
