"""Golden GELU models from first principles: hand-worked values and literal transcriptions of
the reference implementations in exact arithmetic (Python integers and fractions)."""

import math
from fractions import Fraction

import numpy as np
import pytest

from sim.golden.gelu import (
    DIV_NUMERATOR,
    gelu_exact,
    i_gelu,
    i_gelu_constants,
    lut_gelu,
    lut_gelu_table,
    shift_exp,
    shift_gelu,
    shift_gelu_constants,
)

S = 2.0 ** -4          # x0 = floor(-1 / (1.702 / 16)) = floor(-9.40) = -10


# ---- reference transcriptions (unbounded integers, no saturation needed) ------------------------

def ivit_int_exp_shift(x: int, x0: int, n: int) -> int:
    """I-ViT ``IntGELU.int_exp_shift`` line by line, with exact fractions for its float ops."""
    x = x + math.floor(Fraction(x, 2)) - math.floor(Fraction(x, 2 ** 4))
    x = max(x, n * x0)
    q = math.floor(Fraction(x, x0))
    r = x - x0 * q
    exp_int = Fraction(r, 2) - x0
    return max(math.floor(exp_int * Fraction(2) ** (n - q)), 0)


def ivit_int_gelu(row: list[int], scale: float, n: int = 23, output_bit: int = 8) -> list[int]:
    """I-ViT ``IntGELU.forward`` on one row (max over the last axis)."""
    x0 = math.floor(-1.0 / (scale * 1.702))
    x_max = max(row)
    out = []
    for x in row:
        exp_sum = min(ivit_int_exp_shift(x - x_max, x0, n) + ivit_int_exp_shift(-x_max, x0, n),
                      2 ** 31 - 1)
        factor = math.floor(Fraction(2 ** 31 - 1, exp_sum))
        sigmoid = math.floor(Fraction(ivit_int_exp_shift(x - x_max, x0, n) * factor,
                                      2 ** (31 - output_bit + 1)))
        out.append(x * sigmoid)
    return out


def hf_ibert_int_gelu(x: int, scale: float) -> tuple[int, float]:
    """HuggingFace I-BERT ``IntGELU.forward`` for one integer, in double precision (every
    intermediate here is an integer below 2**53, so the float steps are exact)."""
    k, const = 1.4142, 14
    coeff = [-0.2888, -1.769, 1]
    coeff[2] /= coeff[0]
    sf = scale / k
    b_int = math.floor(coeff[1] / sf)
    c_int = math.floor(coeff[2] / sf ** 2)
    sign = (x > 0) - (x < 0)
    abs_int = min(abs(x), -b_int)
    y_int = sign * ((abs_int + b_int) ** 2 + c_int)
    sigmoid_sf = sf ** 2 * coeff[0]
    sigmoid_int = math.floor(y_int / 2 ** const)
    sigmoid_sf = sigmoid_sf * 2 ** const
    shift_int = 1.0 // sigmoid_sf
    return int(x * (sigmoid_int + shift_int)), scale * sigmoid_sf / 2


# ---- ShiftGELU ----------------------------------------------------------------------------------

def test_shift_constants_by_hand():
    k = shift_gelu_constants(S)
    assert k.x0 == -10
    assert k.out_scale == S / 128
    assert k.em_min == 272          # shift_exp(-127): x' = -183, q = 18, r = -3, (17 << 5) >> 1
    assert k.e_max == 10 << 23      # shift_exp(0) = -x0 * 2**n
    assert k.sig_max == 127


def test_shift_exp_by_hand():
    # x = 0: q = 0, r = 0, ((0 + 20) << 23) >> 1.
    assert shift_exp([0], -10, 23).tolist() == [10 << 23]
    # x = -2: -2 + (-1) - (-1) = -2, q = 0, r = -2, (18 << 23) >> 1.
    assert shift_exp([-2], -10, 23).tolist() == [9 << 23]
    # Far below: clamped at n * x0 = -230, q = 23, r = 0, (20 << 0) >> 1.
    assert shift_exp([-255], -10, 23).tolist() == [10]
    # Positive argument (a negative row maximum): x = 1, q = -1, r = -9, (11 << 24) >> 1.
    assert shift_exp([1], -10, 23, saturate=True).tolist() == [11 << 23]


def test_shift_exp_saturates_instead_of_wrapping():
    x = np.arange(0, 200)
    got = shift_exp(x, -10, 23, saturate=True)
    want = [min(ivit_int_exp_shift(int(v), -10, 23), DIV_NUMERATOR) for v in x]
    assert got.tolist() == want
    assert got[-1] == DIV_NUMERATOR
    with pytest.raises(OverflowError):
        shift_exp([400], -10, 23)          # shift 81: would wrap int64


def test_shift_zero_and_small_rows_by_hand():
    # Row [0]: e = em = 10 << 23, f = (2**31 - 1) // (20 << 23) = 12, sig = (e * 12) >> 24 = 60.
    assert shift_gelu([0], S)[0].tolist() == [0]
    # Row [1]: em = shift_exp(-1) = 19 << 22, f = 13, sig = 65.
    assert shift_gelu([1], S)[0].tolist() == [65]
    # Row [-3, -1] (negative maximum): em = shift_exp(1) = 11 << 23; sig 54 and 60.
    assert shift_gelu([-3, -1], S)[0].tolist() == [-3 * 54, -1 * 60]


def test_shift_large_inputs_by_hand():
    # Large positive ~ x: row [127], e = 10 << 23, em = 272, f = 25, sig = 125 (of 128).
    y, out_scale = shift_gelu([127], S)
    assert y.tolist() == [127 * 125]
    assert abs(y[0] * out_scale - 127 * S) < 0.03 * 127 * S
    # Large negative ~ 0 when the row maximum is >= 0: e = shift_exp(-128) = 256, f = 25.
    assert shift_gelu([-128, 0], S)[0].tolist() == [0, 0]
    # ...but not when the whole row is very negative: shift_exp(128) saturates the divisor,
    # f = 1 and sig = (10 << 23) >> 24 = 5 (I-ViT's behaviour, reported in the README).
    assert shift_gelu([-128], S)[0].tolist() == [-128 * 5]
    # Static mode: m = 127, e = shift_exp(-255) = 10 (clamped), em = 272, f = 7615190, sig = 4.
    assert shift_gelu([-128], S, max_mode="static")[0].tolist() == [-128 * 4]


@pytest.mark.parametrize("scale", [0.9, 0.25, S, 0.01, 0.002, 0.0005])
def test_shift_matches_ivit_transcription(scale):
    rng = np.random.default_rng(int(scale * 1e4))
    for trial in range(60):
        length = int(rng.integers(1, 12))
        hi = 128 if trial % 3 else -40                 # every third row has a negative max
        row = rng.integers(-128, hi, length)
        got, _ = shift_gelu(row, scale)
        assert got.tolist() == ivit_int_gelu(row.tolist(), scale), f"row {row.tolist()}"


def test_shift_rows_along_last_axis():
    x = np.array([[0, 1, 2, 3], [-50, -40, -30, -20]])
    got, _ = shift_gelu(x, S)
    for r in range(2):
        assert got[r].tolist() == ivit_int_gelu(x[r].tolist(), S)


def test_shift_static_uses_largest_input():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, 300)
    got, _ = shift_gelu(x, S, max_mode="static")
    # Static mode is row mode on a row that also holds the largest code 127 (element-wise).
    want = [ivit_int_gelu([int(v), 127], S)[0] for v in x]
    assert got.tolist() == want


def test_shift_other_n_and_out_bits():
    rng = np.random.default_rng(4)
    row = rng.integers(-128, 128, 40).tolist()
    got, out_scale = shift_gelu(row, S, n=15, out_bits=10)
    assert got.tolist() == ivit_int_gelu(row, S, n=15, output_bit=10)
    assert out_scale == S / 512


@pytest.mark.parametrize("kwargs, error, message", [
    ({"max_mode": "col"}, ValueError, "max_mode must be one of 'row', 'static', not 'col'"),
    ({"n": 0}, ValueError, "n must be in [1, 30], not 0"),
    ({"out_bits": 8.0}, TypeError, "out_bits must be an integer, not 8.0"),
])
def test_shift_wrong_arguments(kwargs, error, message):
    with pytest.raises(error) as info:
        shift_gelu([0], S, **kwargs)
    assert str(info.value) == message


def test_wrong_inputs():
    with pytest.raises(ValueError, match=r"x must be in \[-128, 127\] for in_width=8"):
        shift_gelu([128], S)
    with pytest.raises(TypeError, match="x must hold integers"):
        shift_gelu([0.5], S)
    with pytest.raises(ValueError, match="scale must be a finite positive number, not -1.0"):
        lut_gelu([0], -1.0)
    with pytest.raises(TypeError, match="scale must be a number, not '1'"):
        i_gelu([0], "1")


# ---- i-GELU -------------------------------------------------------------------------------------

def test_i_gelu_constants_by_hand():
    k = i_gelu_constants(2.0 ** -10)
    se = 2.0 ** -10 / 1.4142
    assert k.b == math.floor(-1.769 / se) == -2562          # -2561.8
    assert k.c == math.floor(-1 / 0.2888 / se ** 2)
    assert k.sigmoid_scale < 0 and k.out_scale < 0
    assert k.shift_int == -444                               # 1 / S_L = -443.2


def test_i_gelu_by_hand():
    k = i_gelu_constants(2.0 ** -10)
    # x = 1024 (1.0): ((1024 - 2562)**2 + c) >> 14, plus shift_int, times x.
    erf_int = ((1024 + k.b) ** 2 + k.c) >> 14
    y, out_scale = i_gelu([0, 1024], 2.0 ** -10)
    assert y.tolist() == [0, 1024 * (erf_int + k.shift_int)]
    assert abs(y[1] * out_scale - 0.8413) < 0.01            # GELU(1) = 0.8413


@pytest.mark.parametrize("scale", [2.0 ** -4, 0.01, 2.0 ** -10, 3e-4])
def test_i_gelu_matches_hf_transcription(scale):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.integers(-32768, 32768, 300), [-32768, 32767, 0, 1, -1]])
    got, out_scale = i_gelu(x, scale)
    for value, y in zip(x.tolist(), got.tolist()):
        want, want_scale = hf_ibert_int_gelu(value, scale)
        assert y == want, f"x={value}: {y} != {want}"
    assert out_scale == want_scale


def test_i_gelu_large_inputs():
    scale = 2.0 ** -10
    y, out_scale = i_gelu([-8192, 8192], scale)               # -8.0 and 8.0
    assert abs(y[0] * out_scale) < 0.01
    assert abs(y[1] * out_scale - 8.0) < 0.02             # the polynomial erf errs ~0.2%


# ---- table --------------------------------------------------------------------------------------

def test_lut_by_hand():
    table = lut_gelu_table(S)
    assert table[128] == 0                               # code 0
    assert table[255] == 127 * 128                       # GELU(7.9375) = 7.9375 - 1e-14
    assert table[0] == 0                                 # GELU(-8) = -5e-15
    # Code 16 (1.0): GELU(1) = 0.841345 -> 0.841345 * 2048 = 1723.07.
    assert table[128 + 16] == 1723
    y, out_scale = lut_gelu([-128, 0, 16, 127], S)
    assert y.tolist() == [0, 0, 1723, 16256]
    assert out_scale == S / 128


def test_lut_is_correctly_rounded():
    codes = np.arange(-128, 128)
    y, out_scale = lut_gelu(codes, 0.05, out_bits=1)
    err = np.abs(y * out_scale - gelu_exact(codes * 0.05)) / out_scale
    assert err.max() <= 0.5 + 1e-9
