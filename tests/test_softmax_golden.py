"""Softmax golden model (sim/golden/softmax.py) from first principles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.golden.softmax import (lut2d_log_num, lut2d_log_sum, lut2d_pow, lut_softmax, shift_exp,
                                shiftmax, softmax_tables, table_bytes)

S = 0.125


def exact_lsb(x, scale=S, out_bits=8):
    """Exact softmax of the dequantised row, in output LSB (float64)."""
    z = (np.asarray(x) - np.max(x, axis=-1, keepdims=True)) * scale
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True) * (1 << out_bits)


def test_tables_from_their_formulas():
    t = softmax_tables(method="recip", scale=S)
    assert t.exp[0] == 16383                           # (2**14 - 1) * e**0
    assert t.exp[8] == 6027                            # 16383 / e = 6026.94
    # the last entry is the last d for which 16383 * exp(-d / 8) >= 0.5: d <= 8 ln 32766 = 83.2
    assert len(t.exp) == 84 and t.exp[-1] == 1
    assert all(a >= b for a, b in zip(t.exp, t.exp[1:]))          # non-increasing
    # 256 entries for [1, 1.5) and 128 for [1.5, 2): midpoints 1 + 1/1024 and 2 - 1/512
    assert len(t.recip) == 384
    assert t.recip[0] == round(2048 / (1 + 1 / 1024)) == 2046
    assert t.recip[-1] == round(2048 / (2 - 1 / 512)) == 1025      # 1025.002
    assert t.bytes == math.ceil((84 * 14 + 384 * 11) / 8) == 675
    q = softmax_tables(method="lut2d", scale=S)
    assert q.exp == t.exp
    # exp2 table: 64 entries of 2**12 * 2**-(j / 64 + bias), bias = half the last refinement
    # constant POWC[10] = round(-log2(1 - 2**-10) * 2**12) = round(5.776) = 6
    assert q.pow_consts == (46, 23, 12, 6)         # -log2(1 - 2**-i) * 4096, i = 7..10
    assert len(q.pow) == 64 and q.pow[0] == round(4096 * 2 ** (-3 / 4096)) == 4094
    assert q.pow[32] == round(4096 * 2 ** (-0.5 - 3 / 4096)) == 2895         # 2894.8
    assert q.log_consts[:3] == (2396, 1319, 696)   # log2(1.5), log2(1.25), log2(1.125) * 4096
    assert q.num_const == round(2 ** 20 / (8 * math.log(2))) == 189097
    assert table_bytes("lut2d", scale=S) == math.ceil((84 * 14 + 64 * 12 + 11 * 12) / 8) == 260
    assert table_bytes("shiftmax", scale=S) == 0


def test_recip_hand_worked():
    # d = 8: e = round(4095 / e) = 1506; s = 5601 = 2**12 * 1.367, the 9 bits after the
    # leading one are 5601 >> 3 & 511 = 188 -> RECIP = round(2048 / (1 + 188.5 / 512)) = 1497;
    # sh = 11 + 12 - 8 = 15: (4095 * 1497 + 2**14) >> 15 = 187, (1506 * 1497 + 2**14) >> 15 = 69.
    assert lut_softmax(np.array([0, -8]), scale=S).tolist() == [187, 69]


@pytest.mark.parametrize("method", ["recip", "lut2d"])
def test_lut_extremes(method):
    # length 1 and one-hot rows: 1.0 saturates at 255, e**(-255 / 8) is below the table
    for row in ([5], [-128], [127], [127, -128, -128, -128], [-128, -128, 127]):
        want = [255 if v == max(row) else 0 for v in row]
        assert lut_softmax(np.array(row), scale=S, method=method).tolist() == want, row
    # all-equal rows: 256 / L correctly rounded (either way at the tie 256 / 512 = 0.5)
    for length in (2, 3, 4, 8, 16, 64, 512):
        got = lut_softmax(np.full(length, -128), scale=S, method=method)
        assert (np.abs(got - 256 / length) <= 0.5).all(), (length, got[0])
        assert (got == got[0]).all(), length
    # adjacent most-negative values: 256 / (1 + e**(1/8)) = 120.01 and 135.99
    got = lut_softmax(np.array([-128, -127]), scale=S, method=method).tolist()
    assert got == [120, 136]


def test_recip_max_len_rows_stay_within_one_lsb():
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (20, 512))
    x[:, 0] = 127
    err = np.abs(lut_softmax(x, scale=S) - exact_lsb(x))
    assert err.max() <= 1.0, err.max()


def test_lut2d_dense_sweep_within_one_lsb():
    """Every row of length 2 and 3 (all max - x in 0..255) and random rows of 4..512 elements
    at several spreads: the lut2d default stays within 1 LSB of softmax computed with
    math.exp, at S = 1/8 and 1/16 (where 1.0 saturates to 255 the error is 256 p - 255 <= 1)."""
    rng = np.random.default_rng(7)
    d1, d2 = np.meshgrid(np.arange(256), np.arange(256))
    short = [np.stack([np.full(d1.size, 127), 127 - d1.ravel(), 127 - d2.ravel()], axis=1)
             .clip(-128, 127)]
    short.append(short[0][:256, :2])
    long = [(127 - rng.random((max(40, 8000 // n), n)) * spread).astype(np.int64).clip(-128)
            for n in (4, 8, 16, 32, 64, 128, 512) for spread in (8, 32, 128, 256)]
    for scale in (S, S / 2):
        for x in short + long:
            want = np.array([[math.exp((v - max(r)) * scale) for v in r] for r in x.tolist()])
            want = want / want.sum(axis=1, keepdims=True) * 256
            err = np.abs(lut_softmax(x, scale=scale, method="lut2d") - want)
            assert err.max() <= 1.0, (scale, x.shape, err.max())


def test_lut2d_pieces_from_their_formulas():
    t = softmax_tables(method="lut2d", scale=S)
    d = np.arange(256)
    num = lut2d_log_num(t, d) / 4096
    # d * S * log2(e) to within half a unit of 2**-12, up to d_cap
    assert np.abs(num[:t.d_cap] - d[:t.d_cap] / 8 / math.log(2)).max() <= 0.6 / 4096
    assert t.d_cap * S / math.log(2) > 9                # d_cap's output is 0: T > out_bits + 1
    e0 = (1 << t.exp_bits) - 1                         # exp(0): the smallest possible sum
    s = np.arange(e0, 600 * e0, 37 * e0 // 4095)
    k = np.floor(np.log2(s)).astype(np.int64)
    assert np.abs(lut2d_log_sum(t, s, k) / 4096 - np.log2(s / e0)).max() < 2.5 / 4096
    total = np.arange(0, 10 * 4096)
    want = np.floor(2 ** (8 - total / 4096) + 0.5).clip(max=255)
    assert np.abs(lut2d_pow(t, total) - want).max() <= 1   # only where 2**x is near a tie


def test_shift_exp_hand_worked():
    # S = 1/8: x0 = -8; x = -8 -> -8 - 4 + 1 = -11 -> q = 1, r = -3 -> ((-3 + 16) << 14) >> 1
    assert int(shift_exp(-8, -8, 15)) == 13 << 13
    assert int(shift_exp(0, -8, 15)) == 8 << 15
    # far below the maximum the clamp n * x0 = -120 gives q = 15, r = 0: (16 << 0) >> 1 = 8
    assert int(shift_exp(-255, -8, 15)) == 8


def test_shiftmax_hand_worked():
    # one-hot: sum = 2**18 + 3 * 8, f = (2**31 - 1) // 262168 = 8191,
    # (2**18 * 8191) >> 24 = 127 and (8 * 8191) >> 24 = 0
    y, scale = shiftmax(np.array([127, -128, -128, -128]), S)
    assert y.tolist() == [127, 0, 0, 0] and scale == 2 ** -7
    # all equal: f = floor((2**31 - 1) / (2**18 * L)), y = f >> 6
    for length in (1, 2, 4, 5, 512):
        f = ((1 << 31) - 1) // ((1 << 18) * length)
        y, _ = shiftmax(np.full(length, -128), S)
        assert (y == f >> 6).all(), length
