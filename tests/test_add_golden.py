"""Residual adder golden model (sim/golden/add.py) from first principles."""

import numpy as np
import pytest

from sim.add_driver import random_params
from sim.golden.add import AddParams, add_int
from sim.golden.gemm import INT32_MAX, INT32_MIN


def _srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul on Python integers."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    num = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    return -((-num) >> 31) if num < 0 else num >> 31


def _mbqm(x: int, m: int, s: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier (int32 wrap of the left shift) on Python ints."""
    x = ((x << max(s, 0)) + (1 << 31)) % (1 << 32) - (1 << 31)
    e = max(-s, 0)
    high = _srdhm(x, m)
    mask = (1 << e) - 1
    return (high >> e) + ((high & mask) > (mask >> 1) + (high < 0))


def _add_reference(xs, p: AddParams) -> int:
    """One element of add.h's AddElementwise generalised to N inputs, int32 throughout."""
    total = 0
    for x, off, m, s in zip(xs, p.offsets, p.multipliers, p.shifts):
        total += _mbqm((x + int(off)) << p.left_shift, int(m), int(s))
    total = (total + (1 << 31)) % (1 << 32) - (1 << 31)
    top = 1 << (p.bits - 1)
    return min(top - 1, max(-top, _mbqm(total, p.out_multiplier, p.out_shift) + p.out_offset))


def test_golden_hand_checked_three_inputs():
    # Each input multiplier one half: leg = x << 19; the output multiplier one half and shift
    # -19: out = round((x1 + x2 + x3) / 2) + out_offset (ties away from zero).
    half = np.full(3, 1 << 30)
    p = AddParams(20, np.zeros(3, np.int64), half, np.zeros(3, np.int64), 1 << 30, -19, 5, 16)
    x = np.array([[1, 2, 3, -128], [2, 2, -128, -128], [0, 1, 127, -128]])
    assert add_int(list(x), p).tolist() == [7, 8, 6, -187]
    p.offsets = np.array([1, 0, -1])                   # (x + offset) before the shift
    assert add_int(list(x), p).tolist() == [7, 8, 6, -187]
    p.bits = 8
    assert add_int(list(x), p).tolist() == [7, 8, 6, -128]


@pytest.mark.parametrize("in_bits, inputs", [(8, 3), (16, 2), (8, 2), (16, 3)])
def test_golden_matches_python_integers(in_bits, inputs):
    """add_int against a Python-integer transcription of add.h for N inputs, realistic and
    extreme parameters (offsets at both ends of their field, multipliers 0 and 2**31 - 1,
    shifts of -31, positive output shifts), every input at its minimum and maximum."""
    rng = np.random.default_rng(in_bits * 10 + inputs)
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    for trial in range(12):
        p = random_params(rng, inputs, in_bits, 16 if trial % 2 else 8, extreme=trial % 3 == 2)
        x = rng.integers(lo, hi + 1, (inputs, 150))
        x[:, :4] = [[lo, hi, lo, hi]] * inputs
        x[0, 4], x[-1, 4] = lo, hi
        got = add_int(list(x), p)
        want = [_add_reference([int(v) for v in col], p) for col in x.T]
        assert got.tolist() == want, f"trial {trial}"


@pytest.mark.parametrize("in_bits, inputs", [(8, 3), (16, 2)])
def test_golden_within_one_step_of_real_sum_and_int32(in_bits, inputs):
    """With TFLite's parameters (from_scales, offsets 0) the result is the real sum rounded
    to within one output step, and the legs' sum never leaves int32 (three int8 legs below
    2**29, two int16 legs below 2**31), so the wrap never acts."""
    rng = np.random.default_rng(in_bits)
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    for trial in range(10):
        scales = rng.uniform(1e-3, 1e-1, inputs)
        s_out = scales.sum() * rng.uniform(0.5, 2.0)
        p = AddParams.from_scales(list(scales), s_out, in_bits=in_bits, bits=16)
        x = rng.choice([lo, hi, 0, rng.integers(lo, hi)], (inputs, 64))
        x[:, 0], x[:, 1] = lo, hi
        legs = sum(np.abs(((xk + 0) << p.left_shift) * int(m) / 2 ** 31 / 2 ** -int(s))
                   for xk, m, s in zip(x, p.multipliers, p.shifts))
        assert legs.max() < (1 << (29 if inputs == 3 else 31))
        real = (scales[:, None] * x).sum(0) / s_out
        assert np.abs(add_int(list(x), p) - np.clip(real, -32768, 32767)).max() <= 1.01


def test_golden_saturates_at_both_ends():
    p = AddParams.from_scales([1.0, 1.0], 1.0, in_bits=16, bits=16)
    out = add_int([np.array([32767, -32768, 20000]), np.array([32767, -32768, -20000])], p)
    assert out.tolist() == [32767, -32768, 0]
