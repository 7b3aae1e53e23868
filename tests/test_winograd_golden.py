"""Golden model of the Winograd unit, checked from first principles."""

from fractions import Fraction as F

import numpy as np
import pytest

from sim.golden.winograd import (
    TapShifts,
    calibrate_tap_shifts,
    conv2d_direct,
    conv2d_winograd,
    default_tap_shifts,
    exact_accumulator_width,
    exact_divisor,
    format_tap_shifts,
    input_bounds,
    input_transform,
    integer_matrices,
    multiplications_per_output,
    odd_inverse_steps,
    output_growth_bits,
    parse_tap_shifts,
    quantize_input,
    transform_weights,
    weight_bounds,
    winograd_matrices,
)

# Published matrices (shared/REFERENCES.md; Lavin & Gray 2016 / wincnn).
PUBLISHED = {
    2: ([[1, 1, 1, 0], [0, 1, -1, 1]],
        [[1, 0, 0], [F(1, 2), F(1, 2), F(1, 2)], [F(1, 2), F(-1, 2), F(1, 2)], [0, 0, 1]],
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]]),
    4: ([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
        [[F(1, 4), 0, 0], [F(-1, 6), F(-1, 6), F(-1, 6)], [F(-1, 6), F(1, 6), F(-1, 6)],
         [F(1, 24), F(1, 12), F(1, 6)], [F(1, 24), F(-1, 12), F(1, 6)], [0, 0, 1]],
        [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
}


@pytest.mark.parametrize("m", [2, 4])
def test_matrices_equal_published(m):
    got = winograd_matrices(m)
    for name, g, want in zip(("A^T", "G", "B^T"), got, PUBLISHED[m]):
        assert all(isinstance(v, F) for row in g for v in row)
        assert g == [[F(v) for v in row] for row in want], f"F{m} {name}: {g}"


@pytest.mark.parametrize("m", [2, 4])
def test_1d_winograd_is_correlation(m):
    """y = A^T [(G g) . (B^T d)] computes y_i = sum_k g_k d_(i+k), in exact fractions."""
    at, g, bt = winograd_matrices(m)
    rng = np.random.default_rng(m)
    for _ in range(20):
        d = [F(int(v)) for v in rng.integers(-9, 10, m + 2)]
        w = [F(int(v)) for v in rng.integers(-9, 10, 3)]
        gw = [sum(r[k] * w[k] for k in range(3)) for r in g]
        bd = [sum(r[k] * d[k] for k in range(m + 2)) for r in bt]
        y = [sum(r[j] * gw[j] * bd[j] for j in range(m + 2)) for r in at]
        assert y == [sum(w[k] * d[i + k] for k in range(3)) for i in range(m)]


def test_integer_constants():
    assert integer_matrices(2)[3] == 2 and integer_matrices(4)[3] == 24
    # s**2 = 4 = 2**2 and 576 = 2**6 * 9.
    assert exact_divisor(2) == (2, 1) and exact_divisor(4) == (6, 9)
    assert exact_accumulator_width(2) == 34 and exact_accumulator_width(4) == 38
    assert odd_inverse_steps(1) == []
    steps = odd_inverse_steps(9)
    y = 1
    for sign, shift in steps:
        y = (y + sign * (y << shift)) % (1 << 32)
    assert (y * 9) % (1 << 32) == 1 and y == pow(9, -1, 1 << 32)
    with pytest.raises(ValueError, match="odd must be 1 or 1 \\+ 2\\*\\*a, not 7"):
        odd_inverse_steps(7)


def test_growth_bounds():
    # REFERENCES.md: F2 input x4, output x9; F4 input x100, output x361 (ceil log2: 4 and 9 bits).
    lo2, hi2 = input_bounds(2)
    assert (lo2, hi2) == (-4 * 128, 4 * 128 - 2)   # row L1 2 x 2, one +1 term of each sign
    lo4, hi4 = input_bounds(4)
    assert max(-lo4, hi4) <= 100 * 128 and max(-lo4, hi4) > 99 * 128
    assert output_growth_bits(2) == 4 and output_growth_bits(4) == 9
    # (2G) rows have L1 <= 3, (24G) rows <= 24: |U| <= 9 * 128 and 576 * 128.
    assert weight_bounds(2)[0] == -9 * 128 and weight_bounds(4)[0] == -576 * 128


@pytest.mark.parametrize("m", [2, 4])
def test_extreme_tiles_reach_the_input_bound(m):
    """For each tap, the tile of -128/127 matching the signs of its coefficients reaches the
    tap's extreme; the largest of them is the bound the RTL widths are sized from."""
    _, _, bt, _ = integer_matrices(m)
    highs, lows = [], []
    for i in range(m + 2):
        for j in range(m + 2):
            coeff = np.outer(bt[i], bt[j])
            highs.append(input_transform(np.where(coeff > 0, 127, -128), m=m)[i, j])
            lows.append(input_transform(np.where(coeff > 0, -128, 127), m=m)[i, j])
    assert (min(lows), max(highs)) == input_bounds(m)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("padding", [0, 1])
def test_identity_kernel_copies_the_input(m, padding):
    rng = np.random.default_rng(padding)
    x = rng.integers(-128, 128, (2, 3, 7, 9))
    w = np.zeros((3, 3, 3, 3), dtype=np.int64)
    for c in range(3):
        w[c, c, 1, 1] = 1
    y = conv2d_winograd(x, w, m=m, mode="exact", padding=padding)
    want = x if padding else x[:, :, 1:-1, 1:-1]
    assert np.array_equal(y, want)


@pytest.mark.parametrize("m", [2, 4])
def test_delta_kernel_shifts_the_input(m):
    x = np.arange(1, 1 + 6 * 6).reshape(1, 1, 6, 6)
    w = np.zeros((1, 1, 3, 3), dtype=np.int64)
    w[0, 0, 0, 2] = 2                       # y[r, c] = 2 * x[r - 1, c + 1] with padding 1
    y = conv2d_winograd(x, w, m=m, mode="exact", padding=1)
    want = np.zeros((6, 6), dtype=np.int64)
    want[1:, :-1] = 2 * x[0, 0, :-1, 1:]
    assert np.array_equal(y[0, 0], want)


def test_hand_worked_f2_tile():
    """All-ones 4x4 tile and kernel: every output is 9; with bias 5 it is 14."""
    x = np.ones((1, 1, 4, 4), dtype=np.int64)
    w = np.ones((1, 1, 3, 3), dtype=np.int64)
    assert conv2d_winograd(x, w, m=2, mode="exact", padding=0, bias=[5]).tolist() == \
        [[[[14, 14], [14, 14]]]]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("padding", [0, 1])
def test_exact_equals_direct_on_random_data(m, padding):
    rng = np.random.default_rng(10 * m + padding)
    x = rng.integers(-128, 128, (2, 5, 9, 7))
    w = rng.integers(-128, 128, (4, 5, 3, 3))
    bias = rng.integers(-(1 << 20), 1 << 20, 4)
    assert np.array_equal(conv2d_winograd(x, w, m=m, mode="exact", padding=padding, bias=bias),
                          conv2d_direct(x, w, padding=padding, bias=bias))


@pytest.mark.parametrize("m", [2, 4])
def test_exact_equals_direct_when_int32_wraps(m):
    """-128 everywhere over 20000 channels overflows int32: both wrap identically."""
    x = np.full((1, 20000, m + 2, m + 2), -128)
    w = np.full((1, 20000, 3, 3), -128)
    direct = conv2d_direct(x, w, padding=0)
    exact_value = 20000 * 9 * 128 * 128
    assert exact_value > (1 << 31)
    assert direct[0, 0, 0, 0] == (exact_value + (1 << 31)) % (1 << 32) - (1 << 31)
    assert np.array_equal(conv2d_winograd(x, w, m=m, mode="exact", padding=0), direct)


def test_direct_hand_worked():
    x = np.array([[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]])
    w = np.zeros((1, 1, 3, 3), dtype=np.int64)
    w[0, 0, 1, 1], w[0, 0, 0, 0] = 1, -1
    assert conv2d_direct(x, w, padding=0).tolist() == [[[[5 - 1]]]]
    assert conv2d_direct(x, w, padding=1)[0, 0, 0].tolist() == [1, 2, 3]


def test_requantized_output_uses_tflite_requantization():
    x = np.full((1, 1, 4, 4), 10)
    w = np.ones((1, 1, 3, 3), dtype=np.int64)
    # acc = 90; multiplier 0.5 (1 << 30, shift 0) -> 45; zero point 3 -> 48.
    y = conv2d_winograd(x, w, m=2, mode="exact", padding=0, multiplier=[1 << 30], shift=[0],
                        out_zero_point=3)
    assert y.tolist() == [[[[48, 48], [48, 48]]]]


def test_quantize_input_rounds_half_up_and_saturates():
    assert quantize_input([5, 6, 7, -5, -6, -7, 1000, -1000], 1).tolist() == \
        [3, 3, 4, -2, -3, -3, 127, -128]
    assert quantize_input([127, 128, -129], 0).tolist() == [127, 127, -128]


def test_tapwise_weights_round_half_away():
    w = np.zeros((1, 1, 3, 3), dtype=np.int64)
    w[0, 0, 0, 0] = 3                        # F2: U[0, 0] = g00 = 3, U[1, 1] = 3/4
    u = transform_weights(w, m=2, mode="tapwise",
                          tap_shifts=TapShifts(np.zeros((4, 4), int), np.full((4, 4), 1)))
    assert u[0, 0, 0, 0] == 6 and u[0, 0, 1, 1] == 2       # 1.5 -> 2 (half away)
    w[0, 0, 0, 0] = -3
    u = transform_weights(w, m=2, mode="tapwise",
                          tap_shifts=TapShifts(np.zeros((4, 4), int), np.full((4, 4), 1)))
    assert u[0, 0, 1, 1] == -2


def test_tapwise_with_lossless_shifts_is_exact():
    """F2 with data in {-1, 0, 1}: V fits int8 unshifted (|V| <= 4) and U * 2**2 = (2G) g (2G)^T
    is an integer within int8 (|U| <= 9), so nothing is rounded and the rescaling by 2**-2 is
    exact: the tap-wise result equals direct convolution."""
    rng = np.random.default_rng(2)
    x = rng.integers(-1, 2, (1, 2, 6, 6))
    w = rng.integers(-1, 2, (2, 2, 3, 3))
    shifts = TapShifts(np.zeros((4, 4), int), np.full((4, 4), 2))
    got = conv2d_winograd(x, w, m=2, mode="tapwise", padding=1, tap_shifts=shifts)
    assert np.array_equal(got, conv2d_direct(x, w, padding=1))


def test_tapwise_error_small_on_smooth_data_and_per_tap_beats_per_tensor():
    rng = np.random.default_rng(0)
    base = rng.integers(-60, 60, (4, 4, 4, 4))
    x = np.kron(base, np.ones((1, 1, 3, 3), dtype=np.int64))[:, :, :10, :10]  # smooth images
    w = rng.integers(-127, 128, (4, 4, 3, 3))
    direct = conv2d_direct(x, w, padding=1)
    errors = {}
    for per_tensor in (False, True):
        shifts = calibrate_tap_shifts(x, w, m=4, per_tensor=per_tensor)
        got = conv2d_winograd(x, w, m=4, mode="tapwise", padding=1, tap_shifts=shifts)
        errors[per_tensor] = np.abs(got - direct).mean() / np.abs(direct).mean()
    assert errors[False] < 0.1, errors
    assert errors[False] < errors[True] / 2, errors


def test_calibration_per_tensor_is_uniform_and_fits():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (2, 3, 8, 8))
    w = rng.integers(-128, 128, (2, 3, 3, 3))
    per_tap = calibrate_tap_shifts(x, w, m=4)
    per_tensor = calibrate_tap_shifts(x, w, m=4, per_tensor=True)
    assert len(set(per_tensor.v.ravel())) == 1 and len(set(per_tensor.u.ravel())) == 1
    assert per_tensor.v[0, 0] == per_tap.v.max() and per_tensor.u[0, 0] == per_tap.u.min()
    u = transform_weights(w, m=4, mode="tapwise", tap_shifts=per_tap)
    assert np.abs(u).max() <= 127 and np.abs(u).max() >= 64   # fits, with <= 1 bit to spare


def test_default_tap_shifts_fit_every_tile():
    shifts = default_tap_shifts(4)
    _, _, bt, _ = integer_matrices(4)
    lo, hi = input_bounds(4)
    assert (((max(-lo, hi) + (1 << (shifts.v.max() - 1))) >> shifts.v.max()) <= 128)
    assert parse_tap_shifts("", 4).v.tolist() == shifts.v.tolist()
    assert parse_tap_shifts(format_tap_shifts(shifts), 4).u.tolist() == shifts.u.tolist()


@pytest.mark.parametrize("text, message", [
    ("1,2", "tap_shifts must hold 32 integers for m=2, not 2"),
    ("a", "tap_shifts must be comma-separated integers, not 'a'"),
])
def test_parse_tap_shifts_wrong(text, message):
    with pytest.raises(ValueError) as info:
        parse_tap_shifts(text, 2)
    assert str(info.value) == message


def test_wrong_arguments():
    x = np.zeros((1, 1, 4, 4), dtype=np.int64)
    w = np.zeros((1, 1, 3, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="m must be one of 2, 4, not 3"):
        conv2d_winograd(x, w, m=3, mode="exact", padding=0)
    with pytest.raises(ValueError, match="padding must be 0 or 1, not 2"):
        conv2d_winograd(x, w, m=2, mode="exact", padding=2)
    with pytest.raises(ValueError, match="mode must be one of 'exact', 'tapwise', not 'x'"):
        conv2d_winograd(x, w, m=2, mode="x", padding=0)


def test_multiplications_per_output():
    assert multiplications_per_output(None) == 9
    assert multiplications_per_output(2) == 4 and multiplications_per_output(4) == F(9, 4)
    assert 9 / multiplications_per_output(2) == F(9, 4) and 9 / multiplications_per_output(4) == 4
