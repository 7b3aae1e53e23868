"""LayerNorm golden model (sim/golden/layernorm.py) from first principles."""

import math

import numpy as np
import pytest

from sim.golden.layernorm import (BIAS_LIMIT, MAX_HIDDEN, fold_layer_norm, isqrt, layer_norm_int,
                                  layer_norm_stages, norm_scale)
from sim.layernorm_driver import folded_params, minilm_embedding_rows


def _ln(x, *, multiplier=1 << 30, shift=-12, bias=0, negate=False, zp=0, out_bits=8):
    return layer_norm_int(np.asarray(x), multiplier=multiplier, shift=shift, bias=bias,
                          negate=negate, out_zero_point=zp, out_bits=out_bits)


def test_golden_hand_checked_row():
    # total 10, mean floor(24 / 8) = 3, y = [-2, -1, 0, 1], var 6, std 2, recip 2**30,
    # norm = y * 2**19; times 0.5 * 2**-12: y * 64.
    s = layer_norm_stages(np.array([1, 2, 3, 4]))
    assert (s.total[0], s.mean[0], s.var[0], s.std[0], s.recip[0]) == (10, 3, 6, 2, 1 << 30)
    assert list(s.norm) == [-(1 << 20), -(1 << 19), 0, 1 << 19]
    assert list(_ln([1, 2, 3, 4])) == [-128, -64, 0, 64]
    assert list(_ln([1, 2, 3, 4], negate=True, zp=3)) == [127, 67, 3, -61]


def test_golden_isqrt_exact():
    v = np.concatenate([np.arange(0, 5000), np.array([(1 << 42) - 1, (1 << 40), 2 ** 41 + 7])])
    want = np.array([math.isqrt(int(k)) for k in v])
    assert (isqrt(v) == want).all()


@pytest.mark.parametrize("value", [-32768, -128, 0, 5, 127, 32767])
def test_golden_constant_row_gives_beta(value):
    hidden = 16
    bias = np.arange(-8, 8) * 1000
    out = _ln(np.full(hidden, value), bias=bias, shift=-5)
    want = np.clip(np.round(bias / 64.0 + 1e-9 * np.sign(bias)), -128, 127)
    assert (out == want).all(), f"{out} != {want}"
    assert (layer_norm_stages(np.full(hidden, value)).norm == 0).all()


def test_golden_one_outlier():
    x = np.zeros(64, np.int64)
    x[17] = 32767
    s = layer_norm_stages(x)
    # mean = round(32767 / 64) = 512; the outlier is sqrt(63) standard deviations out.
    assert s.mean[0] == 512 and s.var[0] == 63 * 512 ** 2 + (32767 - 512) ** 2
    # The floor square root and the floor reciprocal each lose less than their own LSB.
    exact = (32767 - 512) / math.sqrt(s.var[0])
    std = int(s.std[0])
    assert abs(s.norm[17] / (1 << 20) - exact) <= exact * (1 / std + std / 2 ** 31) + 2 ** -20
    assert (s.norm[np.arange(64) != 17] == s.norm[0]).all() and s.norm[0] < 0


@pytest.mark.parametrize("lo, hi", [(-128, 127), (-32768, 32767)])
@pytest.mark.parametrize("hidden", [1, 2, 1023, MAX_HIDDEN])
def test_golden_extremes_never_overflow(lo, hi, hidden):
    rng = np.random.default_rng(hidden)
    rows = np.stack([np.full(hidden, lo), np.full(hidden, hi),
                     np.where(np.arange(hidden) % 2, lo, hi), rng.choice([lo, hi], hidden),
                     np.where(np.arange(hidden) == 0, lo, hi)])
    s = layer_norm_stages(rows)
    assert (np.abs(s.total) <= 1 << 25).all() and (s.var < 1 << 42).all()
    assert (s.std < 1 << 21).all() and (s.recip <= 1 << 31).all()
    assert (np.abs(s.norm) <= 1 << 20).all()
    # The std bounds every |y|, so |y * recip| <= 2**31 exactly as the docstring proves.
    assert (np.abs(s.centered * s.recip) <= 1 << 31).all()
    assert (np.abs(s.norm) + BIAS_LIMIT < 1 << 31).all()
    if hidden == 1:
        assert (s.norm == 0).all()
    # int64 arithmetic agrees with Python's unbounded integers.
    for row, norm in zip(rows.tolist(), s.norm):
        n = len(row)
        mean = (2 * sum(row) + n) // (2 * n)
        std = math.isqrt(sum((v - mean) ** 2 for v in row))
        assert list(norm) == [(v - mean) * ((1 << 31) // max(std, 1)) >> 11 for v in row]


@pytest.mark.parametrize("out_bits", [8, 16])
def test_golden_close_to_float_layer_norm(out_bits):
    """Random int16 rows of 384 with random gamma/beta against float LayerNorm of the same
    integers. Error sources, in output steps: 0.5 of output rounding; the floor of ``norm``
    and the rounded folded beta, 1.5 units of ``|gamma| * S'``; the integer mean, off by up to
    half an input step, ``0.5 |gamma| / sigma``; the relative error of the floor square root
    and reciprocal (below ``1 / std + std / 2**31``, ~3e-5 here) times the output's
    magnitude. Under 0.6 steps at int8; under 5 steps of int16 (2.35 measured)."""
    rng = np.random.default_rng(out_bits)
    x = np.round(rng.normal(0, 3000, (32, 384)) + rng.normal(0, 500, (32, 1))).astype(np.int64)
    gamma, beta = rng.uniform(-2, 2, 384), rng.normal(0, 0.5, 384)
    xf = x.astype(np.float64)
    y = (xf - xf.mean(-1, keepdims=True)) / xf.std(-1, keepdims=True) * gamma + beta
    scale = np.abs(y).max() / ((1 << (out_bits - 1)) - 1)
    fold = fold_layer_norm(gamma, beta, out_scale=scale)
    got = layer_norm_int(x, multiplier=fold.multiplier, shift=fold.shift, bias=fold.bias,
                         negate=fold.negate, out_bits=out_bits)
    std = layer_norm_stages(x).std
    relative = float((1 / std + std / 2 ** 31).max())
    err = np.abs(got * scale - y) / scale
    unit = np.abs(gamma).max() * norm_scale(384) / scale
    sigma = std.min() / math.sqrt(384)
    mean_term = 0.5 * np.abs(gamma).max() / sigma / scale
    bound = 0.5 + 1.5 * unit + mean_term + relative * np.abs(y / scale).max() + 1e-3
    assert err.max() < bound, f"max error {err.max():.3f} steps (bound {bound:.3f})"
    assert bound < (0.6 if out_bits == 8 else 5), f"bound {bound:.3f}"


def test_golden_minilm_embeddings_close_to_float():
    """all-MiniLM-L6-v2's embedding LayerNorm of one sentence: int16 inputs by max-abs, int8
    outputs at the float output's max-abs scale: within 0.6 steps of float LayerNorm."""
    from sim.minilm import load_weights
    q, x, _ = minilm_embedding_rows("Where is the nearest train station?")
    w = load_weights()
    gamma, beta = w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"]
    y = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True) * gamma + beta
    scale = float(np.abs(y).max()) / 127
    p = folded_params(gamma, beta, out_scale=scale)
    got = layer_norm_int(q, multiplier=p.multiplier, shift=p.shift, bias=p.bias,
                         negate=p.negate)
    err = np.abs(got * scale - y) / scale
    assert err.max() < 0.6, f"max error {err.max():.3f} steps"
