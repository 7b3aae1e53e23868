"""Softmax engine: parameter checks, golden model from first principles, Amaranth simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.softmax import SoftmaxEngine, SoftmaxParams
from sim.golden.softmax import (lut2d_log_num, lut2d_log_sum, lut2d_pow, lut_softmax, shift_exp,
                                shiftmax, softmax_tables, table_bytes)
from sim.streams import Stalls, handshake_monitor, stream_get, stream_put

S = 0.125


def exact_lsb(x, scale=S, out_bits=8):
    """Exact softmax of the dequantised row, in output LSB (float64)."""
    z = (np.asarray(x) - np.max(x, axis=-1, keepdims=True)) * scale
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True) * (1 << out_bits)


# ---- constructor validation -------------------------------------------------------------

def test_init_defaults():
    dut = SoftmaxEngine()
    assert (dut.method, dut.scale, dut.in_bits, dut.out_bits, dut.max_len) == (
        "recip", 0.125, 8, 8, 512)
    assert dut.table_bytes == 675
    # two passes over the row after it has arrived (the constants are checked in simulation)
    assert dut.row_latency(10) - dut.row_latency(9) == 2
    assert dut.first_out_latency(10) - dut.first_out_latency(9) == 1
    with pytest.raises(AttributeError):
        dut.max_len = 3


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"method": "taylor"}, ValueError,
     "method must be one of 'recip', 'lut2d', 'shiftmax', not 'taylor'"),
    ({"out_bits": 3}, ValueError, "out_bits must be in [4, 16], not 3"),
    ({"out_bits": 17}, ValueError, "out_bits must be in [4, 16], not 17"),
    ({"out_bits": "8"}, TypeError, "out_bits must be an integer, not '8'"),
    ({"max_len": 0}, ValueError, "max_len must be in [1, 65536], not 0"),
    ({"max_len": 2.5}, TypeError, "max_len must be an integer, not 2.5"),
    ({"scale": 0.0}, ValueError, "scale must be a positive finite number, not 0.0"),
    ({"scale": -1}, ValueError, "scale must be a positive finite number, not -1"),
    ({"scale": math.inf}, ValueError, "scale must be a positive finite number, not inf"),
    ({"scale": "1/8"}, TypeError, "scale must be a positive number, not '1/8'"),
    # one bound for the engine, the command line and the TOML schema (SoftmaxParams.scale)
    ({"scale": 1e-7}, ValueError, "scale must be in [1e-06, 1000000.0], not 1e-07"),
    ({"scale": 2e6}, ValueError, "scale must be in [1e-06, 1000000.0], not 2000000.0"),
    ({"in_bits": 1}, ValueError, "in_bits must be in [2, 16], not 1"),
    ({"n": 0, "method": "shiftmax"}, ValueError, "n must be in [1, 30], not 0"),
    # 512 * (8 << n) <= 2**31 - 1 holds up to n = 18
    ({"n": 19, "method": "shiftmax"}, ValueError,
     "n must be <= 18 for scale 0.125 and max_len 512 (a row's sum must fit I-ViT's 31 bits), "
     "not 19"),
    ({"recip_bits": 10}, ValueError, "recip_bits must be >= recip_index_bits + 3 (11), not 10"),
    ({"method": "lut2d", "log_steps": 0}, ValueError, "log_steps must be in [1, 16], not 0"),
    ({"method": "lut2d", "pow_steps": 13}, ValueError, "pow_steps must be in [0, 12], not 13"),
    ({"method": "lut2d", "frac_bits": 10, "pow_index_bits": 7}, ValueError,
     "pow_index_bits + pow_steps must be <= frac_bits (10), not 11"),
    ({"method": "lut2d", "pow_bits": 9}, ValueError,
     "pow_bits must be >= out_bits + 2 (10), not 9"),
])
def test_init_wrong(kwargs, error, message):
    with pytest.raises(error) as info:
        SoftmaxEngine(**kwargs)
    assert str(info.value) == message


def test_init_from_params():
    params = SoftmaxParams(method="lut2d", max_len=16)
    dut = SoftmaxEngine(params)
    assert dut.parameters is params and (dut.method, dut.max_len) == ("lut2d", 16)
    # the figures come from the parameters alone, no component built
    assert params.table_bytes == 260 and SoftmaxParams(method="shiftmax").tables is None
    with pytest.raises(TypeError) as info:
        SoftmaxEngine(params, max_len=8)
    assert str(info.value) == "give either params or keyword parameters, not both"
    with pytest.raises(TypeError) as info:
        SoftmaxEngine("recip")
    assert str(info.value) == "params must be a SoftmaxParams, not 'recip'"


# ---- golden model from first principles -------------------------------------------------

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


# ---- Amaranth simulation ------------------------------------------------------------------

def golden(rows, params):
    method, scale = params.get("method", "recip"), params.get("scale", S)
    out_bits = params.get("out_bits", 8)
    if method == "shiftmax":
        return [shiftmax(r, scale, n=params.get("n", 15), out_bits=out_bits)[0] for r in rows]
    table = {k: v for k, v in params.items()
             if k not in ("method", "scale", "out_bits", "max_len")}
    return [lut_softmax(r, scale=scale, method=method, out_bits=out_bits, **table)
            for r in rows]


def simulate(dut, rows, *, in_stalls=None, out_stalls=None):
    """Stream ``rows`` through ``dut``; returns (beats, input cycles, output cycles)."""
    beats, in_cycles, out_cycles = [], [], []
    total = sum(len(r) for r in rows)

    async def producer(ctx):
        for row in rows:
            for j, v in enumerate(row):
                await stream_put(ctx, dut.i, {"data": int(v), "last": int(j == len(row) - 1)},
                                 in_stalls)

    async def consumer(ctx):
        for _ in range(total):
            beats.append(await stream_get(ctx, dut.o, out_stalls))
        for _ in range(2 * dut.max_len + 40):          # nothing more may come out
            assert not ctx.get(dut.o.valid), "extra output beat"
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_process(handshake_monitor(dut.i, dut.o, in_cycles, out_cycles))
    sim.run()
    return beats, in_cycles, out_cycles


def check_rows(rows, beats, params):
    assert len(beats) == sum(len(r) for r in rows)
    start = 0
    for n, (row, want) in enumerate(zip(rows, golden(rows, params))):
        got = beats[start:start + len(row)]
        start += len(row)
        assert [b["data"] for b in got] == want.tolist(), f"row {n} {row.tolist()}"
        assert [b["last"] for b in got] == [0] * (len(row) - 1) + [1], f"row {n} last flags"


def random_rows(rng, count, max_len, in_bits=8):
    lo, hi = -(1 << (in_bits - 1)), 1 << (in_bits - 1)
    lengths = list(rng.integers(1, max_len + 1, count)) + [1, max_len, 1, 1, max_len]
    rows = [rng.integers(lo, hi, n) for n in lengths]
    rows.append(np.full(max_len, lo))                  # most negative, all equal
    rows.append(np.array([hi - 1] + [lo] * (max_len - 1)))   # one-hot
    return rows


CONFIGS = [
    {"method": "recip"},
    {"method": "lut2d"},
    {"method": "shiftmax"},
    {"method": "recip", "out_bits": 12, "scale": 0.3, "exp_bits": 14, "recip_index_bits": 6,
     "recip_bits": 12},
    {"method": "lut2d", "in_bits": 6, "out_bits": 6, "scale": 0.05, "exp_bits": 10,
     "frac_bits": 10, "log_steps": 5, "pow_index_bits": 4, "pow_steps": 3, "pow_bits": 9},
    {"method": "lut2d", "scale": 0.4, "pow_index_bits": 8, "pow_steps": 0},
    {"method": "shiftmax", "scale": 0.04, "n": 12, "out_bits": 10},
]


@pytest.mark.parametrize("params", CONFIGS, ids=lambda p: "-".join(f"{v}" for v in p.values()))
def test_sim_random_rows_with_stalls(params):
    seed = len(str(params))
    rng = np.random.default_rng(seed)
    dut = SoftmaxEngine(max_len=12, **params)
    rows = random_rows(rng, 25, 12, params.get("in_bits", 8))
    beats, _, _ = simulate(dut, rows, in_stalls=Stalls(0.3, 4, seed),
                           out_stalls=Stalls(0.4, 6, seed + 1))
    check_rows(rows, beats, params)


@pytest.mark.parametrize("method", ["recip", "lut2d", "shiftmax"])
def test_sim_idle_row_latency_matches_figure(method):
    dut = SoftmaxEngine(method=method, max_len=20)
    for length in (1, 7, 20):
        rows = [np.arange(length) - 5]
        beats, ins, outs = simulate(dut, rows)
        check_rows(rows, beats, {"method": method})
        assert outs[0] - ins[-1] == dut.first_out_latency(length), length
        assert outs[-1] - ins[-1] == dut.row_latency(length), length


@pytest.mark.parametrize("method", ["recip", "lut2d", "shiftmax"])
def test_sim_sustains_one_element_per_clock(method):
    """Never stalled, back-to-back rows of mixed lengths (including a full row followed by
    length-1 rows, the worst case for the row buffer) enter at one element per clock."""
    max_len = 24
    rng = np.random.default_rng(11)
    lengths = ([max_len] + [1] * 30 + [max_len, 2, max_len] + list(rng.integers(1, max_len, 30))
               + [max_len] * 4 + [1] * 10)
    rows = [rng.integers(-128, 128, n) for n in lengths]
    dut = SoftmaxEngine(method=method, max_len=max_len)
    beats, ins, outs = simulate(dut, rows)
    check_rows(rows, beats, {"method": method})
    total = sum(lengths)
    assert ins[-1] - ins[0] + 1 == total, f"input took {ins[-1] - ins[0] + 1} cycles for {total}"
    # the last row (length 1) leaves within its idle-engine latency plus the queue ahead of it
    assert outs[-1] - ins[-1] <= dut.row_latency(1) + 2 * max_len, outs[-1] - ins[-1]
    assert len(outs) == total


@pytest.mark.parametrize("method", ["recip", "lut2d", "shiftmax"])
def test_sim_max_len_one(method):
    rows = [np.array([v]) for v in np.random.default_rng(3).integers(-128, 128, 15)]
    dut = SoftmaxEngine(method=method, max_len=1)
    beats, _, _ = simulate(dut, rows, in_stalls=Stalls(0.3, 3, 1), out_stalls=Stalls(0.3, 3, 2))
    check_rows(rows, beats, {"method": method})


def test_lut2d_elaborates_without_multiplier_or_divider():
    """lut2d is for parts without DSPs: its netlist has no $mul / $div / $mod cell (the
    recip engine, which multiplies, shows that the check can fail)."""
    from amaranth.back import rtlil

    def cells(method):
        text = rtlil.convert(SoftmaxEngine(method=method, max_len=16))
        return {c for c in ("$mul", "$div", "$mod", "$divfloor", "$modfloor") if c in text}

    assert cells("lut2d") == set()
    assert "$mul" in cells("recip")
