"""Softmax engine: parameter checks, Amaranth simulation against the golden model, cocotb on
the generated Verilog."""

from __future__ import annotations

import math

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.softmax import SoftmaxEngine, SoftmaxParams
from sim.golden.softmax import lut_softmax, shiftmax
from sim.streams import Stalls, handshake_monitor, stream_get, stream_put
from sim.testing import SIMULATORS, cocotb_run

S = 0.125


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


# ---- cocotb on the generated Verilog -----------------------------------------------------------

COCOTB_CONFIGS = {
    "recip": {"method": "recip", "max_len": 48},
    "lut2d": {"method": "lut2d", "max_len": 48},
    "shiftmax": {"method": "shiftmax", "max_len": 48},
    "recip-wide": {"method": "recip", "max_len": 16, "out_bits": 12, "scale": 0.3,
                   "exp_bits": 14, "recip_index_bits": 6, "recip_bits": 12},
}

# Every method under both simulators; the extra configuration under Icarus only, because a
# Verilator build costs ~25 s of compilation and the suite must stay within its time budget.
COCOTB_RUNS = [(name, sim) for name in ("recip", "lut2d", "shiftmax") for sim in SIMULATORS]
COCOTB_RUNS.append(("recip-wide", "icarus"))


@pytest.mark.cocotb
@pytest.mark.parametrize(("name", "simulator"), COCOTB_RUNS)
def test_cocotb(name, simulator, tmp_path):
    cocotb_run("softmax", COCOTB_CONFIGS[name], simulator, tmp_path, LUTRA_ROWS=20)


@pytest.mark.cocotb
@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_cocotb_dsp_primitives(family, tmp_path):
    """``recip``'s product in the target's DSP with its operand and product registers
    (MULT18X18D or SB_MAC16 and their behavioural models): bit-exact and on time, like the
    generic form."""
    cocotb_run("softmax", COCOTB_CONFIGS["recip"], "icarus", tmp_path, primitives=family,
               LUTRA_ROWS=20)


def test_recip_product_is_one_registered_dsp():
    from gen.verilog import convert
    ecp5 = convert(SoftmaxEngine(method="recip", max_len=16), "softmax", primitives="ecp5")
    assert ecp5.count("MULT18X18D ") == 1 and '.REG_OUTPUT_CLK("CLK0")' in ecp5, ecp5[-2000:]
    ice40 = convert(SoftmaxEngine(method="recip", max_len=16), "softmax", primitives="ice40")
    assert ice40.count("SB_MAC16 ") == 1
