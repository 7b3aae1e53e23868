"""Bit-exact golden model of the Winograd F(m x m, 3 x 3) convolution unit (m = 2 or 4).

Sources (restated in ``shared/REFERENCES.md``):

* Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016:
  ``Y = A^T [(G g G^T) (.) (B^T d B)] A`` on (m + 2) x (m + 2) input tiles overlapping by 2.
* The Cook-Toom construction of the matrices, as in the ``wincnn`` tool (Lavin): interpolation
  points (0, 1, -1) for F2 and (0, 1, -1, 2, -2) for F4, plus the point at infinity.
* Andri et al., "Going Further With Winograd Convolutions: Tap-Wise Quantization for Efficient
  Inference on 4x4 Tiles", MICRO 2022 (arXiv 2209.12982): U and V quantized to int8 in the
  Winograd domain with one power-of-two scale per tap, so rescaling is a shift.
* Requantization: TFLite ``MultiplyByQuantizedMultiplier`` (``sim.golden.gemm.requantize``).

Two arithmetic modes:

``exact``
    ``U = (sG) g (sG)^T`` with ``s = 2`` (F2) or ``24`` (F4) is an integer; ``V = B^T d B`` is
    exact. ``M = sum_c U (.) V`` is kept modulo ``2**(32 + k)`` where ``2**k`` is the power of two
    in ``s**2`` (4 = 2**2, 576 = 2**6 * 9), ``A^T M A = s**2 * Y`` in the same ring, and the
    division by ``s**2`` is exact: an arithmetic shift by ``k`` and a multiplication by the
    inverse of the odd part modulo ``2**32``. The result is the int32-wrapped direct
    convolution, bit for bit, for any data.
``tapwise``
    ``V_q[t] = sat8((V[t] + 2**(sv[t]-1)) >> sv[t])`` and ``U_q[t] = round(U[t] * 2**su[t])``
    (half away from zero, int8); ``M = sum_c U_q (.) V_q`` wraps at int32; each tap is rescaled
    by the left shift ``sv[t] - su[t] + F`` with ``F = max(0, -min_t(sv[t] - su[t]))`` so no
    shift is negative; ``Y = sat32(round_half_up(A^T M' A / 2**F))`` is on the scale of the
    direct accumulator, so bias and requantization are the same as for direct convolution.

Convolution is the CNN one (cross-correlation), NCHW, stride 1, zero padding 0 or 1, symmetric
int8 activations (zero point 0, so padding with 0 is exact). Pure NumPy; no Amaranth import.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import numpy as np

from .gemm import requantize, wrap_int32

__all__ = [
    "POINTS",
    "TapShifts",
    "winograd_matrices",
    "weight_scale",
    "integer_matrices",
    "exact_divisor",
    "odd_inverse_steps",
    "exact_accumulator_width",
    "input_bounds",
    "weight_bounds",
    "output_growth_bits",
    "default_tap_shifts",
    "parse_tap_shifts",
    "format_tap_shifts",
    "rescale_shifts",
    "transform_weights",
    "input_transform",
    "quantize_input",
    "output_transform",
    "winograd_tiles",
    "extract_tiles",
    "place_tiles",
    "conv2d_direct",
    "conv2d_winograd",
    "calibrate_tap_shifts",
    "multiplications_per_output",
]

#: Finite Cook-Toom interpolation points per tile size (the point at infinity is implicit).
POINTS = {2: (0, 1, -1), 4: (0, 1, -1, 2, -2)}
R = 3  # kernel size


class TapShifts(NamedTuple):
    """Per-tap power-of-two exponents of the tap-wise mode, each an (m+2) x (m+2) int array.

    ``v[t]``: right shift quantizing the transformed input tap to int8 (>= 0).
    ``u[t]``: left exponent quantizing the transformed weight: ``U_q = round(U * 2**u)``.
    """

    v: np.ndarray
    u: np.ndarray


def _check_m(m) -> None:
    if not isinstance(m, int) or isinstance(m, bool):
        raise TypeError(f"m must be an integer (2 or 4), not {m!r}")
    if m not in POINTS:
        raise ValueError(f"m must be one of 2, 4, not {m!r}")


def _poly_mul(a: list, b: list) -> list:
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def winograd_matrices(m: int) -> tuple[list, list, list]:
    """``(A^T, G, B^T)`` of F(m, 3) as lists of rows of ``Fraction``, by Cook-Toom.

    With finite points ``p_0..p_{n-2}`` (``n = m + 2``) and the point at infinity:
    ``A^T[i][j] = p_j**i`` (last column selects the leading coefficient, ``[0, .., 0, 1]``);
    ``G[j][k] = p_j**k / f_j`` with ``f_j = prod_{l != j} (p_j - p_l)``, last row ``[0, 0, 1]``;
    row ``j`` of ``B^T`` holds the ascending coefficients of ``prod_{l != j} (x - p_l)`` and its
    last row those of ``prod_l (x - p_l)``. Like ``wincnn``, the row of the first point is negated
    in both ``G`` and ``B^T`` when ``f_0 < 0``, which reproduces the published matrices.
    """
    _check_m(m)
    points = [Fraction(p) for p in POINTS[m]]
    n = m + R - 1
    at = [[p ** i for p in points] + [Fraction(int(i == m - 1))] for i in range(m)]
    g, bt = [], []
    for j, pj in enumerate(points):
        f = Fraction(1)
        poly = [Fraction(1)]
        for ell, pl in enumerate(points):
            if ell != j:
                f *= pj - pl
                poly = _poly_mul(poly, [-pl, Fraction(1)])
        sign = -1 if (j == 0 and f < 0) else 1
        g.append([pj ** k / (sign * f) for k in range(R)])
        bt.append([sign * c for c in poly] + [Fraction(0)])
    full = [Fraction(1)]
    for pl in points:
        full = _poly_mul(full, [-pl, Fraction(1)])
    g.append([Fraction(int(k == R - 1)) for k in range(R)])
    bt.append(full)
    assert all(len(row) == n for row in bt + at)
    return at, g, bt


def weight_scale(m: int) -> int:
    """Per-dimension integer scale ``s`` making ``s * G`` integer: the lcm of G's denominators."""
    _, g, _ = winograd_matrices(m)
    s = 1
    for row in g:
        for v in row:
            s = np.lcm(s, v.denominator)
    return int(s)


def integer_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(A^T, s*G, B^T, s)`` as int64 arrays: the constants shared by the model and the RTL."""
    at, g, bt = winograd_matrices(m)
    s = weight_scale(m)

    def as_int(rows, scale=1):
        out = [[v * scale for v in row] for row in rows]
        assert all(v.denominator == 1 for row in out for v in row)
        return np.array([[int(v) for v in row] for row in out], dtype=np.int64)

    return as_int(at), as_int(g, s), as_int(bt), s


def exact_divisor(m: int) -> tuple[int, int]:
    """``(k, odd)`` with ``s**2 = 2**k * odd``: exact mode divides by ``s**2`` this way."""
    s2 = weight_scale(m) ** 2
    k = (s2 & -s2).bit_length() - 1
    return k, s2 >> k


def odd_inverse_steps(odd: int, bits: int = 32) -> list[tuple[int, int]]:
    """Shift-and-add steps multiplying by ``odd**-1`` modulo ``2**bits`` (``odd = 1 + 2**a``).

    ``1 / (1 + x) = (1 - x)(1 + x**2)(1 + x**4)...`` and ``x**(2**i) = 0`` modulo ``2**bits``
    once it reaches ``2**bits``, so each step is ``y += sign * (y << shift)``. Returns
    ``[(sign, shift), ...]``; empty for ``odd == 1``.
    """
    for name, value in (("odd", odd), ("bits", bits)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, not {value!r}")
    if odd == 1:
        return []
    a = (odd - 1).bit_length() - 1
    if odd < 3 or odd != 1 + (1 << a):
        raise ValueError(f"odd must be 1 or 1 + 2**a, not {odd!r}")
    steps = [(-1, a)]
    shift = 2 * a
    while shift < bits:
        steps.append((1, shift))
        shift *= 2
    return steps


def exact_accumulator_width(m: int) -> int:
    """Bits of the exact-mode Winograd-domain accumulators: int32 plus the power of two of
    ``s**2`` that the exact division shifts out (34 for F2, 38 for F4)."""
    return 32 + exact_divisor(m)[0]


def _bound_matrix(left: np.ndarray, right: np.ndarray, lo: int, hi: int):
    """Exact per-entry (min, max) of ``left @ X @ right.T`` for X in [lo, hi] elementwise."""
    coeff = np.einsum("ik,jl->ijkl", left, right)
    pos = np.where(coeff > 0, coeff, 0).sum(axis=(2, 3))
    neg = np.where(coeff < 0, coeff, 0).sum(axis=(2, 3))
    return pos * lo + neg * hi, pos * hi + neg * lo


def input_bounds(m: int) -> tuple[int, int]:
    """Exact (min, max) of any tap of ``V = B^T d B`` over int8 tiles ``d``."""
    _, _, bt, _ = integer_matrices(m)
    lo, hi = _bound_matrix(bt, bt, -128, 127)
    return int(lo.min()), int(hi.max())


def weight_bounds(m: int) -> tuple[int, int]:
    """Exact (min, max) of any tap of the exact-mode ``U = (sG) g (sG)^T`` over int8 ``g``."""
    _, sg, _, _ = integer_matrices(m)
    lo, hi = _bound_matrix(sg, sg, -128, 127)
    return int(lo.min()), int(hi.max())


def output_growth_bits(m: int) -> int:
    """Extra bits of ``A^T M A`` over ``M``: ``ceil(log2(max row L1 norm of A^T ** 2))``."""
    at, _, _, _ = integer_matrices(m)
    growth = int(np.abs(at).sum(axis=1).max()) ** 2
    return (growth - 1).bit_length()


def _n(m: int) -> int:
    return m + R - 1


def default_tap_shifts(m: int) -> TapShifts:
    """Data-free tap shifts from the worst-case bounds: every int8 tile and kernel fits."""
    _check_m(m)
    _, sg, bt, s = integer_matrices(m)
    vlo, vhi = _bound_matrix(bt, bt, -128, 127)
    ulo, uhi = _bound_matrix(sg, sg, -127, 127)
    v = np.array([[_fit_right_shift(max(-a, b)) for a, b in zip(r0, r1)]
                  for r0, r1 in zip(vlo, vhi)], dtype=np.int64)
    u = np.array([[_fit_left_exponent(Fraction(int(max(-a, b)), s * s)) for a, b in zip(r0, r1)]
                  for r0, r1 in zip(ulo, uhi)], dtype=np.int64)
    return TapShifts(v, u)


def _fit_right_shift(peak: int) -> int:
    """Smallest ``s >= 0`` with ``round(peak / 2**s) <= 127``."""
    s = 0
    while (peak + ((1 << s) >> 1)) >> s > 127:
        s += 1
    return s


def _fit_left_exponent(peak: Fraction) -> int:
    """Largest ``e`` (in [-16, 24]) with ``round(peak * 2**e) <= 127``; 24 when ``peak == 0``."""
    e = 24
    while e > -16 and _round_half_away(peak * Fraction(2) ** e) > 127:
        e -= 1
    return e


def _round_half_away(x: Fraction) -> int:
    q = (abs(x.numerator) * 2 + x.denominator) // (2 * x.denominator)
    return q if x >= 0 else -q


def parse_tap_shifts(text: str, m: int) -> TapShifts:
    """``TapShifts`` from ``"v0,...,v{n*n-1},u0,...,u{n*n-1}"`` (row-major taps); the empty
    string gives ``default_tap_shifts(m)``."""
    _check_m(m)
    if not isinstance(text, str):
        raise TypeError(f"tap_shifts text must be a string, not {text!r}")
    if text.strip() == "":
        return default_tap_shifts(m)
    n = _n(m)
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"tap_shifts must be comma-separated integers, not {text!r}") from None
    if len(values) != 2 * n * n:
        raise ValueError(f"tap_shifts must hold {2 * n * n} integers for m={m}, "
                         f"not {len(values)}")
    arr = np.array(values, dtype=np.int64).reshape(2, n, n)
    return TapShifts(arr[0], arr[1])


def format_tap_shifts(shifts: TapShifts) -> str:
    """Inverse of ``parse_tap_shifts``: the string ``lutra generate winograd`` takes."""
    return ",".join(str(int(v)) for v in np.concatenate([shifts.v.ravel(), shifts.u.ravel()]))


def rescale_shifts(shifts: TapShifts) -> tuple[np.ndarray, int]:
    """Per-tap left shifts ``sv - su + F`` (all >= 0) and the common fraction bits ``F``."""
    e = np.asarray(shifts.v, dtype=np.int64) - np.asarray(shifts.u, dtype=np.int64)
    frac = max(0, -int(e.min()))
    return e + frac, frac


def transform_weights(w, *, m: int, mode: str, tap_shifts: TapShifts | None = None) -> np.ndarray:
    """Winograd-domain weights for the unit's weight memory, shape (K, C, n, n).

    ``exact``: ``(sG) g (sG)^T``. ``tapwise``: ``round_half_away(U * 2**u[t])`` clipped to int8,
    with ``U = G g G^T`` computed exactly in integers.
    """
    _, sg, _, s = integer_matrices(m)
    w = np.asarray(w, dtype=np.int64)
    u_int = np.einsum("ik,ackl,jl->acij", sg, w, sg)
    if mode == "exact":
        return u_int
    if mode != "tapwise":
        raise ValueError(f"mode must be one of 'exact', 'tapwise', not {mode!r}")
    shifts = tap_shifts if tap_shifts is not None else default_tap_shifts(m)
    su = np.asarray(shifts.u, dtype=np.int64)
    # U * 2**su = u_int * 2**max(su, 0) / (s**2 * 2**max(-su, 0)): exact integer rounding.
    num = u_int << np.maximum(su, 0)
    den = (s * s) << np.maximum(-su, 0)
    q = (2 * np.abs(num) + den) // (2 * den)
    return np.clip(np.sign(num) * q, -128, 127)


def input_transform(d, *, m: int) -> np.ndarray:
    """``V = B^T d B`` of int tiles ``d[..., n, n]`` (exact)."""
    _, _, bt, _ = integer_matrices(m)
    return np.einsum("ik,...kl,jl->...ij", bt, np.asarray(d, dtype=np.int64), bt)


def quantize_input(v, v_shift) -> np.ndarray:
    """Tap-wise int8 quantization of ``V``: round half up by ``v_shift`` (>= 0), saturate."""
    v = np.asarray(v, dtype=np.int64)
    sv = np.asarray(v_shift, dtype=np.int64)
    half = np.where(sv > 0, np.int64(1) << np.maximum(sv - 1, 0), 0)
    return np.clip((v + half) >> sv, -128, 127)


def output_transform(mm, *, m: int) -> np.ndarray:
    """``A^T M A`` of ``M[..., n, n]`` (exact on int64)."""
    at, _, _, _ = integer_matrices(m)
    return np.einsum("ik,...kl,jl->...ij", at, np.asarray(mm, dtype=np.int64), at)


def _wrap(x, bits: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    half = np.int64(1) << (bits - 1)
    return ((x + half) & ((half << 1) - 1)) - half


def winograd_tiles(d_tiles, u, *, m: int, mode: str, tap_shifts: TapShifts | None = None,
                   bias=None) -> np.ndarray:
    """The unit's int32 output tiles (bias added, before requantization).

    ``d_tiles``: (T, C, n, n) int8 input tiles; ``u``: (K, C, n, n) weight-memory contents
    (``transform_weights``); ``bias``: (K,) int32. Returns (T, K, m, m).
    """
    d_tiles = np.asarray(d_tiles, dtype=np.int64)
    u = np.asarray(u, dtype=np.int64)
    v = input_transform(d_tiles, m=m)
    if mode == "exact":
        width = exact_accumulator_width(m)
        k, odd = exact_divisor(m)
        # Reduce after every channel so int64 never overflows, whatever the channel count.
        acc = np.zeros((d_tiles.shape[0], u.shape[0]) + v.shape[2:], dtype=np.int64)
        for c in range(v.shape[1]):
            acc = _wrap(acc + v[:, None, c] * u[None, :, c], width)
        y_scaled = _wrap(output_transform(acc, m=m), width)
        y = wrap_int32(wrap_int32(y_scaled >> k) * pow(odd, -1, 1 << 32))
    elif mode == "tapwise":
        shifts = tap_shifts if tap_shifts is not None else default_tap_shifts(m)
        vq = quantize_input(v, shifts.v)
        acc = np.zeros((d_tiles.shape[0], u.shape[0]) + v.shape[2:], dtype=np.int64)
        for c in range(v.shape[1]):
            acc = wrap_int32(acc + vq[:, None, c] * u[None, :, c])
        left, frac = rescale_shifts(shifts)
        y_wide = output_transform(acc << left, m=m)
        if frac:
            y_wide = (y_wide + (np.int64(1) << (frac - 1))) >> frac
        y = np.clip(y_wide, -(1 << 31), (1 << 31) - 1)
    else:
        raise ValueError(f"mode must be one of 'exact', 'tapwise', not {mode!r}")
    if bias is not None:
        y = wrap_int32(y + np.asarray(bias, dtype=np.int64)[None, :, None, None])
    return y


def _tile_grid(height: int, width: int, m: int, padding: int) -> tuple[int, int, int, int]:
    if padding not in (0, 1):
        raise ValueError(f"padding must be 0 or 1, not {padding!r}")
    out_h, out_w = height + 2 * padding - 2, width + 2 * padding - 2
    if out_h < 1 or out_w < 1:
        raise ValueError(f"input {height}x{width} is too small for a 3x3 kernel with "
                         f"padding {padding}")
    return out_h, out_w, -(-out_h // m), -(-out_w // m)


def extract_tiles(x, *, m: int, padding: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Overlapping (m+2) x (m+2) input tiles of NCHW ``x``, zero-padded at the borders.

    Returns ``(tiles, (out_h, out_w))`` with tiles of shape (N, tiles_y, tiles_x, C, n, n) in
    raster order; the right and bottom are padded with zeros up to whole output tiles.
    """
    x = np.asarray(x, dtype=np.int64)
    n_img, chans, height, width = x.shape
    out_h, out_w, ty, tx = _tile_grid(height, width, m, padding)
    n = _n(m)
    padded = np.zeros((n_img, chans, ty * m + 2, tx * m + 2), dtype=np.int64)
    padded[:, :, padding:padding + height, padding:padding + width] = x
    tiles = np.zeros((n_img, ty, tx, chans, n, n), dtype=np.int64)
    for i in range(ty):
        for j in range(tx):
            tiles[:, i, j] = padded[:, :, i * m:i * m + n, j * m:j * m + n]
    return tiles, (out_h, out_w)


def place_tiles(y_tiles, out_hw: tuple[int, int]) -> np.ndarray:
    """Inverse of the tiling: (N, ty, tx, K, m, m) output tiles -> NKHW, cropped."""
    y_tiles = np.asarray(y_tiles)
    n_img, ty, tx, k, m, _ = y_tiles.shape
    full = y_tiles.transpose(0, 3, 1, 4, 2, 5).reshape(n_img, k, ty * m, tx * m)
    return full[:, :, :out_hw[0], :out_hw[1]]


def conv2d_direct(x, w, *, padding: int, bias=None) -> np.ndarray:
    """Direct int32 3x3 convolution (cross-correlation), NCHW, stride 1, int32 wrap."""
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    n_img, chans, height, width = x.shape
    out_h, out_w, _, _ = _tile_grid(height, width, 1, padding)
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.zeros((n_img, w.shape[0], out_h, out_w), dtype=np.int64)
    for dy in range(R):
        for dx in range(R):
            patch = padded[:, :, dy:dy + out_h, dx:dx + out_w]
            out += np.einsum("nchw,kc->nkhw", patch, w[:, :, dy, dx])
    if bias is not None:
        out += np.asarray(bias, dtype=np.int64)[None, :, None, None]
    return wrap_int32(out)


def _requantize_nkhw(acc, multiplier, shift, **kw) -> np.ndarray:
    k = acc.shape[1]
    mult = np.broadcast_to(np.asarray(multiplier, dtype=np.int64), (k,))[None, :, None, None]
    sh = np.broadcast_to(np.asarray(shift, dtype=np.int64), (k,))[None, :, None, None]
    return requantize(acc, mult, sh, **kw)


def conv2d_winograd(x, w, *, m: int, mode: str, padding: int,
                    tap_shifts: TapShifts | None = None, bias=None, multiplier=None,
                    shift=None, out_zero_point: int = 0, act_min: int = -128,
                    act_max: int = 127) -> np.ndarray:
    """The unit's convolution of int8 NCHW ``x`` by int8 KC33 ``w``.

    Without ``multiplier``/``shift`` the int32 result (bias included); with them the TFLite
    requantized int8 result (per output channel), exactly as the unit and its tiler produce it.
    """
    _check_m(m)
    tiles, out_hw = extract_tiles(x, m=m, padding=padding)
    n_img, ty, tx = tiles.shape[:3]
    u = transform_weights(w, m=m, mode=mode, tap_shifts=tap_shifts)
    flat = tiles.reshape((n_img * ty * tx,) + tiles.shape[3:])
    y = winograd_tiles(flat, u, m=m, mode=mode, tap_shifts=tap_shifts, bias=bias)
    acc = place_tiles(y.reshape((n_img, ty, tx) + y.shape[1:]), out_hw)
    if multiplier is None and shift is None:
        return acc
    if multiplier is None or shift is None:
        raise ValueError("multiplier and shift must be given together")
    return _requantize_nkhw(acc, multiplier, shift, out_zero_point=out_zero_point,
                            act_min=act_min, act_max=act_max)


def calibrate_tap_shifts(x_samples, w, *, m: int, padding: int = 1,
                         per_tensor: bool = False) -> TapShifts:
    """Power-of-two scales from data: per tap (or one per tensor with ``per_tensor``).

    ``v[t]``: smallest right shift that brings the largest ``|V[t]|`` seen on the input tiles of
    ``x_samples`` to int8. ``u[t]``: largest exponent keeping every ``|U[t]| * 2**u`` of ``w``
    within int8. Per tensor, the maxima are taken over all taps.
    """
    _check_m(m)
    tiles, _ = extract_tiles(x_samples, m=m, padding=padding)
    n = _n(m)
    v = np.abs(input_transform(tiles.reshape(-1, n, n), m=m)).max(axis=0)
    _, sg, _, s = integer_matrices(m)
    u = np.abs(np.einsum("ik,ackl,jl->acij", sg, np.asarray(w, dtype=np.int64), sg))
    u = u.reshape(-1, n, n).max(axis=0)
    if per_tensor:
        v = np.full((n, n), v.max())
        u = np.full((n, n), u.max())
    sv = np.array([[_fit_right_shift(int(p)) for p in row] for row in v], dtype=np.int64)
    su = np.array([[_fit_left_exponent(Fraction(int(p), s * s)) for p in row] for row in u],
                  dtype=np.int64)
    return TapShifts(sv, su)


def multiplications_per_output(m: int | None) -> Fraction:
    """Multiplications per output pixel per input channel: 9 direct, (m+2)**2 / m**2 Winograd."""
    if m is None:
        return Fraction(R * R)
    _check_m(m)
    return Fraction(_n(m) ** 2, m * m)
