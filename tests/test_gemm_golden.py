"""The GEMM golden model against hand-worked cases from the gemmlowp/TFLite definitions."""

import math

import numpy as np
import pytest

from sim.golden.gemm import (
    INT32_MAX,
    INT32_MIN,
    gemm,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)

srdhm = saturating_rounding_doubling_high_mul


@pytest.mark.parametrize("a, b, want", [
    (1 << 30, 1 << 30, 1 << 29),            # 0.5 * 0.5 in Q31 = 0.25
    (INT32_MIN, INT32_MIN, INT32_MAX),      # the one overflow saturates
    (INT32_MIN, INT32_MAX, -INT32_MAX),     # -1 * (1 - 2**-31), exact
    (1, 1 << 30, 1),                        # +0.5 rounds up
    (-1, 1 << 30, 0),                       # -0.5: gemmlowp's nudge truncates toward zero
    (3, 1 << 30, 2),                        # 1.5 -> 2
    (-3, 1 << 30, -1),                      # -1.5 -> -1 (nudge 1 - 2**30, truncating division)
    (-5, 1 << 30, -2),                      # -2.5 -> -2
    (0, INT32_MIN, 0),
])
def test_srdhm_hand_cases(a, b, want):
    assert int(srdhm(a, b)) == want


def test_srdhm_matches_definition_on_random_int32():
    rng = np.random.default_rng(0)
    a = rng.integers(INT32_MIN, INT32_MAX + 1, 20000)
    b = rng.integers(INT32_MIN, INT32_MAX + 1, 20000)
    got = srdhm(a, b)
    for x, y, g in zip(a[:2000], b[:2000], got[:2000]):
        ab = int(x) * int(y)
        nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
        num = ab + nudge
        want = abs(num) // (1 << 31) * (1 if num >= 0 else -1)   # C division truncates
        assert g == want, f"srdhm({x}, {y}) = {g}, want {want}"


@pytest.mark.parametrize("x, e, want", [
    (5, 1, 3), (-5, 1, -3),       # 2.5 -> 3, -2.5 -> -3: half away from zero
    (6, 2, 2), (-6, 2, -2),       # 1.5 -> 2, -1.5 -> -2
    (7, 2, 2), (-7, 2, -2),       # 1.75 -> 2
    (5, 2, 1), (-5, 2, -1),       # 1.25 -> 1
    (1, 2, 0), (-1, 2, 0),
    (123, 0, 123), (-123, 0, -123),
    (INT32_MIN, 31, -1), (INT32_MAX, 31, 1),
])
def test_rounding_divide_by_pot_hand_cases(x, e, want):
    assert int(rounding_divide_by_pot(x, e)) == want


def test_rounding_divide_by_pot_rejects_bad_exponent():
    with pytest.raises(ValueError, match="exponent must be in"):
        rounding_divide_by_pot(1, 32)


@pytest.mark.parametrize("acc, mult, shift, want", [
    (1000, 1 << 30, -1, 250),          # 1000 * 0.5 * 2**-1
    (1000, 1 << 30, 1, 1000),          # 1000 * 0.5 * 2
    (-1000, 1 << 30, -3, -63),         # -62.5 -> -63 (away from zero in the final shift)
    (1000, 1 << 30, -4, 31),           # 31.25 -> 31
    (3, 1 << 30, 0, 2),                # 1.5 -> 2 in the high multiply
    (1 << 30, 1 << 30, 1, -(1 << 30)),  # 2**30 << 1 wraps to INT32_MIN, then * 0.5
])
def test_multiply_by_quantized_multiplier_hand_cases(acc, mult, shift, want):
    assert int(multiply_by_quantized_multiplier(acc, mult, shift)) == want


def test_multiply_by_quantized_multiplier_broadcasts_per_column():
    acc = np.array([[100, 100], [-100, -100]])
    got = multiply_by_quantized_multiplier(acc, [1 << 30, 1 << 30], [0, -1])
    assert got.tolist() == [[50, 25], [-50, -25]]


def test_multiply_by_quantized_multiplier_approximates_the_real_scale():
    rng = np.random.default_rng(1)
    for real in (0.0123, 0.5, 0.999, 1.7, 3e-5):
        m, s = quantize_multiplier(real)
        acc = rng.integers(-(1 << 20), 1 << 20, 1000)
        err = np.abs(multiply_by_quantized_multiplier(acc, m, s) - acc * real)
        assert err.max() <= 1.0, f"real={real}: max error {err.max()}"


@pytest.mark.parametrize("real, want", [
    (0.5, (1 << 30, 0)),
    (1.0, (1 << 30, 1)),
    (0.75, (3 << 29, 0)),
    (0.25, (1 << 30, -1)),
    (1 - 2.0 ** -40, (1 << 30, 1)),    # q rounds to 2**31: halved, shift + 1
    (2.0 ** -40, (0, 0)),              # shift < -31 flushes to zero
    (0.0, (0, 0)),
])
def test_quantize_multiplier(real, want):
    assert quantize_multiplier(real) == want


def test_quantize_multiplier_rounds_half_away_from_zero():
    # q * 2**31 = 2**30 + 0.5 exactly: Python's round() would give the even 2**30.
    real = (2 ** 30 + 0.5) / 2 ** 31
    assert quantize_multiplier(real) == ((1 << 30) + 1, 0)


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_quantize_multiplier_rejects(bad):
    with pytest.raises(ValueError, match="real multiplier must be"):
        quantize_multiplier(bad)


def test_gemm_hand_worked():
    a = np.array([[1, 2], [3, -4]])
    b = np.array([[5, 6], [7, -8]])
    # (a + 1) = [[2, 3], [4, -3]]; (a + 1) @ b = [[31, -12], [-1, 48]]; + bias [10, -10]
    assert gemm(a, b, a_offset=1, bias=[10, -10]).tolist() == [[41, -22], [9, 38]]
    # requantize: x 0.5 (multiplier 2**30, shift 0), zero point 3, clamp [-10, 20]
    got = gemm(a, b, a_offset=1, bias=[10, -10], multiplier=1 << 30, shift=0,
               out_zero_point=3, act_min=-10, act_max=20)
    assert got.tolist() == [[20, -8], [8, 20]]   # 20.5->21 clamps, -11->-8, 4.5->5+3, 19+3


def test_gemm_extreme_accumulation_is_exact():
    k = 4096
    a = np.full((1, k), -128)
    b = np.full((k, 1), -128)
    assert gemm(a, b)[0, 0] == 16384 * k


def test_gemm_accumulator_wraps_like_int32():
    a = np.full((1, 3), 127)
    b = np.full((3, 1), 127)
    assert gemm(a, b, bias=[INT32_MAX])[0, 0] == wrap_int32(3 * 127 * 127 + INT32_MAX)


def test_gemm_needs_multiplier_and_shift_together():
    with pytest.raises(ValueError, match="multiplier and shift must be given together"):
        gemm(np.zeros((1, 1)), np.zeros((1, 1)), multiplier=1 << 30)


def test_gemm_int16_activations_fit_int32_up_to_max_k_and_wrap_beyond():
    # int16 a, a_offset = -32767 (zero point 32767), int8 b: 65535 * 128 per k. The core's
    # max_k for a_width=16 is 256 (hw.gemm.params.max_k); 256 terms fit, one more wraps.
    term = 65535 * 128
    a, b = np.full((1, 257), -32768), np.full((257, 1), -128)
    assert gemm(a[:, :256], b[:256], a_offset=-32767)[0, 0] == 256 * term
    assert gemm(a, b, a_offset=-32767)[0, 0] == 257 * term - (1 << 32)


def test_gemm_int16_results_use_int16_zero_point_and_clamp():
    a = np.array([[30000, -30000]])
    b = np.array([[100], [1]])
    # (30000 * 100 - 30000) * 0.5 = 1485000; + zero point 1000, clamped to int16.
    got = gemm(a, b, multiplier=1 << 30, shift=0, out_zero_point=1000, act_min=-32768,
               act_max=32767)
    assert got[0, 0] == 32767
    got = gemm(a, b, multiplier=1 << 30, shift=-7, out_zero_point=-1000, act_min=-32768,
               act_max=32767)
    assert got[0, 0] == 11602 - 1000          # 1485000 / 128 = 11601.56 -> 11602
