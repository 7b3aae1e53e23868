"""GemmCore and Requantizer: construction, Amaranth simulation and cocotb on the Verilog."""

import json

import numpy as np
import pytest
from amaranth.sim import Simulator
from conftest import SIMULATORS, cocotb_run

from hw.common.requant import REQUANT_LATENCY, Requantizer
from hw.gemm import GemmCore
from sim.gemm_driver import assemble, plan, random_problem
from sim.golden.gemm import INT32_MAX, INT32_MIN, requantize
from sim.stalls import Stalls
from sim.streams import stream_get, stream_put

# ---- construction ------------------------------------------------------------------------------


def test_init_defaults():
    core = GemmCore()
    assert (core.rows, core.cols, core.acc_width, core.requantize, core.out_lanes) == \
        (4, 4, 32, True, 1)
    assert core.beats_per_tile == 16
    assert core.min_tile_cycles == 4
    assert core.max_k == ((1 << 31) - 1) // (384 * 128)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"rows": 0}, ValueError, "rows must be in [1, 32], not 0"),
    ({"rows": 33}, ValueError, "rows must be in [1, 32], not 33"),
    ({"cols": "4"}, TypeError, "cols must be an integer, not '4'"),
    ({"rows": True}, TypeError, "rows must be an integer, not True"),
    ({"acc_width": 17}, ValueError, "acc_width must be in [18, 32], not 17"),
    ({"requantize": 1}, TypeError, "requantize must be a bool, not 1"),
    ({"out_lanes": 0}, ValueError, "out_lanes must be in [1, 4], not 0"),
    ({"cols": 4, "out_lanes": 3}, ValueError, "out_lanes must divide cols (4), not 3"),
])
def test_init_wrong(kwargs, error, message):
    with pytest.raises(error) as info:
        GemmCore(**kwargs)
    assert str(info.value) == message


def test_init_is_keyword_only():
    with pytest.raises(TypeError):
        GemmCore(4, 4)


def test_requantizer_init_wrong():
    with pytest.raises(ValueError) as info:
        Requantizer(lanes=0)
    assert str(info.value) == "lanes must be in [1, 64], not 0"
    with pytest.raises(ValueError) as info:
        Requantizer(lanes=1, out_width=12)
    assert str(info.value) == "out_width must be one of 8, 16, not 12"


# ---- Amaranth simulation -----------------------------------------------------------------------


@pytest.mark.parametrize("out_width", [8, 16])
def test_requantizer_matches_golden_with_stalls(out_width):
    lanes, count = 2, 400
    dut = Requantizer(lanes=lanes, out_width=out_width)
    top = 1 << (out_width - 1)
    rng = np.random.default_rng(5)
    acc = rng.integers(INT32_MIN, INT32_MAX + 1, (count, lanes))
    mult = rng.integers(INT32_MIN, INT32_MAX + 1, (count, lanes))
    shift = rng.integers(-31, 32, (count, lanes))
    acc[:30], mult[:15] = INT32_MIN, INT32_MIN                 # the saturating SRDHM case
    acc[30:60] = rng.integers(-4, 5, (30, lanes)) << 20          # exact halves: ties
    mult[30:60], shift[30:60] = 1 << 30, rng.integers(-25, 1, (30, lanes))
    mult[60:200] = rng.integers(1 << 30, 1 << 31, (140, lanes))  # realistic Q31 multipliers
    shift[60:200] = rng.integers(-20, 2, (140, lanes))
    acc[60:200] = rng.integers(-(1 << 18), 1 << 18, (140, lanes))
    zp = rng.integers(-top, top, count)
    lo, hi = rng.integers(-top, 0, count), rng.integers(0, top, count)
    beats = []

    async def producer(ctx):
        stalls = Stalls(0.3, seed=1)
        for n in range(count):
            await stream_put(ctx, dut.i, {
                "acc": acc[n].tolist(), "multiplier": mult[n].tolist(),
                "shift": shift[n].tolist(), "out_zero_point": int(zp[n]),
                "act_min": int(lo[n]), "act_max": int(hi[n]), "last": n % 3 == 0}, stalls)

    async def consumer(ctx):
        stalls = Stalls(0.3, seed=2)
        for _ in range(count):
            beats.append(await stream_get(ctx, dut.o, stalls))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert len(beats) == count
    for n, beat in enumerate(beats):
        want = requantize(acc[n], mult[n], shift[n], out_zero_point=zp[n], act_min=lo[n],
                          act_max=hi[n]).tolist()
        assert beat["data"] == want, f"beat {n}: {beat['data']} != {want}"
        assert beat["last"] == (n % 3 == 0), f"beat {n}: last {beat['last']}"


def test_requantizer_latency():
    dut = Requantizer(lanes=1)
    seen = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.payload, {"acc": [5], "multiplier": [1 << 30], "shift": [0],
                                "out_zero_point": 0, "act_min": -128, "act_max": 127,
                                "last": 0})
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for cycle in range(1, 20):
            if ctx.get(dut.o.valid):
                seen.append(cycle)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [REQUANT_LATENCY], f"output valid at cycles {seen}"


def run_core(core: GemmCore, problems, *, stall_prob: float, seed: int):
    """Stream ``problems`` through ``core`` in the Amaranth simulator; return the results."""
    plans = [plan(p, core.rows, core.cols, core.requantize) for p in problems]
    tiles = [t for tiles in plans for t in tiles]
    beats = []

    async def slices(ctx):
        stalls = Stalls(stall_prob, seed=seed)
        for tile in tiles:
            for beat in tile.slices:
                await stream_put(ctx, core.i, beat, stalls)

    async def params(ctx):
        stalls = Stalls(stall_prob, seed=seed + 1)
        for tile in tiles:
            await stream_put(ctx, core.params, tile.params, stalls)

    async def results(ctx):
        stalls = Stalls(stall_prob, seed=seed + 2)
        for _ in range(len(tiles) * core.beats_per_tile):
            beats.append(await stream_get(ctx, core.o, stalls))
        for _ in range(core.latency + 10):          # nothing more may come out
            assert not ctx.get(core.o.valid), "extra output beat"
            await ctx.tick()

    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(slices)
    sim.add_testbench(params)
    sim.add_testbench(results)
    sim.run()
    out, start = [], 0
    for problem, tiles_of in zip(problems, plans):
        count = len(tiles_of) * core.beats_per_tile
        m, _, n = problem.shape
        out.append(assemble(beats[start:start + count], (m, n), core.rows, core.cols,
                            core.out_lanes))
        start += count
    return out


@pytest.mark.parametrize("seed, kwargs", list(enumerate([
    {"rows": 1, "cols": 1},
    {"rows": 2, "cols": 3, "requantize": False, "out_lanes": 3},
    {"rows": 3, "cols": 2, "acc_width": 24},
    {"rows": 4, "cols": 4, "out_lanes": 2},
])))
def test_core_matches_golden_with_stalls(seed, kwargs):
    core = GemmCore(**kwargs)
    rng = np.random.default_rng(seed)
    problems = [random_problem(rng, 2 * core.rows + 1, k, 2 * core.cols - 1) for k in (1, 7)]
    problems.append(random_problem(rng, core.rows, 50, core.cols, extreme=True))
    results = run_core(core, problems, stall_prob=0.3, seed=seed)
    for n, (problem, got) in enumerate(zip(problems, results)):
        want = problem.expected(core.requantize)
        assert np.array_equal(got, want), f"problem {n} {problem.shape}:\n{got}\n!=\n{want}"


def test_core_raw_accumulators_are_exact_at_the_extremes():
    core = GemmCore(rows=2, cols=2, requantize=False)
    rng = np.random.default_rng(9)
    problem = random_problem(rng, 2, 300, 2, extreme=True)
    problem.a_offset = -127                       # (-128 - 127) * -128 = 32640 per k
    problem.bias = np.array([INT32_MAX - 300 * 32640, -5])
    (got,) = run_core(core, [problem], stall_prob=0.0, seed=0)
    assert got.tolist() == [[INT32_MAX, 300 * 32640 - 5]] * 2


# ---- cocotb on the generated Verilog -----------------------------------------------------------

COCOTB_CONFIGS = [
    {},
    {"rows": 1, "cols": 1},
    {"rows": 2, "cols": 3, "requantize": False},
    {"rows": 8, "cols": 8, "out_lanes": 4},
]


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("params", COCOTB_CONFIGS, ids=lambda p: "-".join(
    f"{k}={v}" for k, v in p.items()) or "default")
def test_cocotb(params, simulator, tmp_path):
    cocotb_run("gemm", params, simulator, tmp_path)


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("params", [{"rows": 2, "cols": 3}, {"rows": 3, "cols": 2,
                                                              "requantize": False}],
                         ids=["2x3", "3x2-raw"])
def test_cocotb_ecp5_primitives(params, simulator, tmp_path):
    """The Verilog written for ECP5 (MULT18X18D instances with their pipeline registers, run
    on the behavioural model in sim/models) passes the same regression as the generic one."""
    cocotb_run("gemm", params, simulator, tmp_path, primitives="ecp5")


def test_ecp5_verilog_instantiates_one_registered_dsp_per_pe():
    from gen.verilog import convert
    text = convert(GemmCore(rows=2, cols=3, requantize=False), "gemm", primitives="ecp5")
    assert text.count("MULT18X18D ") == 6
    assert text.count('.REG_INPUTA_CLK("CLK0")') == 6
    assert text.count('.REG_OUTPUT_CLK("CLK0")') == 6
    # Each requantizer lane adds its four 17 x 17 partial products.
    core = GemmCore(rows=2, cols=3, out_lanes=1)
    assert convert(core, "gemm", primitives="ecp5").count("MULT18X18D ") == 6 + 4
    assert "MULT18X18D" not in convert(GemmCore(rows=2, cols=3), "gemm")


@pytest.mark.cocotb
def test_bench_reports_utilization_from_rtl_cycles(tmp_path, capsys):
    from sim.bench_gemm import bench
    from sim.runner import available
    if not available():
        pytest.skip("no simulator")
    simulator = "icarus" if "icarus" in available() else available()[0]
    assert bench(["--arrays", "2x2", "--shape", "4x40x4", "--simulator", simulator,
                  "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (result,) = json.loads((tmp_path / "gemm_bench.json").read_text())
    # 4 tiles of K = 40 back to back: 160 input cycles plus the pipeline's fill and drain.
    assert result["useful_macs"] == 4 * 40 * 4
    assert 160 <= result["cycles"] <= 160 + result["latency_cycles"] + 4 + 2
    assert result["utilization"] == result["useful_macs"] / (4 * result["cycles"])
    assert f"{100 * result['utilization']:.2f}%" in out
