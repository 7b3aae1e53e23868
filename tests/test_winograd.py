"""WinogradUnit: construction, Amaranth simulation of whole feature maps, cocotb on the Verilog."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from sim.testing import SIMULATORS, cocotb_run

from hw.common.requant import REQUANT_LATENCY
from hw.winograd import WinogradUnit
from hw.common.arith import signed_width
from hw.winograd.core import constant_matrix_product
from sim.golden.winograd import (
    TapShifts,
    calibrate_tap_shifts,
    conv2d_direct,
    default_tap_shifts,
    integer_matrices,
)
from sim.stalls import Stalls
from sim.streams import stream_get, stream_put
from sim.winograd_driver import assemble, plan, random_problem

# ---- construction ------------------------------------------------------------------------------


def test_init_defaults():
    unit = WinogradUnit()
    assert (unit.m, unit.mode, unit.in_channels, unit.taps_per_clock, unit.requantize,
            unit.out_lanes, unit.tap_shifts) == (2, "exact", 8, 16, True, 2, None)
    assert unit.tile_size == 4
    assert unit.cycles_per_beat == 1
    assert unit.beats_per_tile == 2
    # F2 exact: V within 4 * 128 (10 bits), U within 9 * 128 (12 bits), M mod 2**34.
    assert (unit.input_width, unit.weight_width, unit.accumulator_width) == (10, 12, 34)
    assert unit.multipliers == 16 + 4 * 2


def test_init_f4_widths():
    unit = WinogradUnit(m=4, taps_per_clock=9)
    # 12800 < 2**14 (15 bits signed), 576 * 128 = 73728 = 2**16 * 1.125 (18 bits), 32 + 6.
    assert (unit.input_width, unit.weight_width, unit.accumulator_width) == (15, 18, 38)
    assert unit.cycles_per_beat == 4
    assert unit.weight_words == 8 * 4
    tap = WinogradUnit(m=4, mode="tapwise")
    assert (tap.input_width, tap.weight_width, tap.accumulator_width) == (8, 8, 32)
    default = default_tap_shifts(4)
    assert np.array_equal(tap.tap_shifts.v, default.v)
    assert np.array_equal(tap.tap_shifts.u, default.u)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"m": 3}, ValueError, "m must be one of 2, 4, not 3"),
    ({"mode": "fast"}, ValueError, "mode must be one of 'exact', 'tapwise', not 'fast'"),
    ({"in_channels": 0}, ValueError, "in_channels must be in [1, 1024], not 0"),
    ({"in_channels": 2.0}, TypeError, "in_channels must be an integer, not 2.0"),
    ({"taps_per_clock": 17}, ValueError, "taps_per_clock must be in [1, 16], not 17"),
    ({"taps_per_clock": 5}, ValueError, "taps_per_clock must divide 16, not 5"),
    ({"m": 4, "taps_per_clock": 8}, ValueError, "taps_per_clock must divide 36, not 8"),
    ({"requantize": 1}, TypeError, "requantize must be a bool, not 1"),
    ({"out_lanes": 3}, ValueError, "out_lanes must divide 4, not 3"),
    ({"out_lanes": 5}, ValueError, "out_lanes must be in [1, 4], not 5"),
    ({"tap_shifts": default_tap_shifts(2)}, ValueError,
     "tap_shifts must be None in exact mode, not TapShifts"),
    ({"mode": "tapwise", "tap_shifts": [1, 2]}, TypeError,
     "tap_shifts must be a TapShifts or None, not [1, 2]"),
    ({"mode": "tapwise", "tap_shifts": TapShifts(np.full((4, 4), 16), np.zeros((4, 4)))},
     ValueError, "tap_shifts.v entries must be in [0, 15], not 16"),
    ({"mode": "tapwise", "tap_shifts": TapShifts(np.zeros((3, 3)), np.zeros((3, 3)))},
     ValueError, "tap_shifts.v must be 4 x 4, not " + repr(np.zeros((3, 3)))),
    ({"mode": "tapwise", "tap_shifts": TapShifts(np.full((4, 4), 15), np.full((4, 4), -14))},
     ValueError, "tap_shifts span max(v - u) - min(v - u) = 29 must be <= 26"),
])
def test_init_wrong(kwargs, error, message):
    with pytest.raises(error) as info:
        WinogradUnit(**kwargs)
    assert str(info.value) == message


def test_init_is_keyword_only():
    with pytest.raises(TypeError):
        WinogradUnit(2)


def test_signed_width():
    assert [signed_width(-128, 127), signed_width(-129, 0), signed_width(0, 128),
            signed_width(-512, 510)] == [8, 9, 9, 10]


def test_constant_matrix_product_is_shift_and_add():
    """The transform builder emits no multiplication operator."""
    from amaranth import Signal, signed
    _, _, bt, _ = integer_matrices(4)
    d = [[Signal(signed(8)) for _ in range(6)] for _ in range(6)]
    text = repr(constant_matrix_product(bt, d, bt))
    assert "(* " not in text and "(+ " in text and "(<< " in text


def test_block_config():
    from gen.blocks import get_block
    from gen.config import ConfigError, build_component, validate_params
    from sim.golden.winograd import format_tap_shifts
    block = get_block("winograd")
    unit = build_component(validate_params(block, {"m": 4}))
    assert (unit.taps_per_clock, unit.out_lanes) == (36, 4)      # 0 means "all" / "m"
    shifts = calibrate_tap_shifts(np.ones((1, 1, 6, 6), int), np.ones((1, 1, 3, 3), int), m=4)
    unit = build_component(validate_params(
        block, {"m": 4, "mode": "tapwise", "tap_shifts": format_tap_shifts(shifts)}))
    assert np.array_equal(unit.tap_shifts.u, shifts.u)
    figures = block.figures(WinogradUnit(m=4, taps_per_clock=9))
    assert (figures["latency_cycles"], figures["cycles_per_input_beat"],
            figures["winograd_multipliers"]) == (2 * 4 + 7 + REQUANT_LATENCY, 4, 9)
    for raw, message in [
        ({"tap_shifts": "1"}, "winograd: tap_shifts must be empty in exact mode, not '1'"),
        ({"mode": "tapwise", "tap_shifts": "1"},
         "winograd: tap_shifts must hold 32 integers for m=2, not 1"),
        ({"m": 4, "taps_per_clock": 8}, "winograd: taps_per_clock must divide 36, not 8"),
    ]:
        with pytest.raises(ConfigError) as info:
            validate_params(block, raw)
        assert str(info.value) == message


@pytest.mark.parametrize("raw", [{}, {"m": 4, "taps_per_clock": 9, "out_lanes": 1},
                                 {"m": 2, "mode": "tapwise", "requantize": False}])
def test_resources_hook(raw):
    """The fit check sees exactly the unit's multipliers and its weight memory."""
    from gen.blocks import get_block
    from gen.config import validate_params
    block = get_block("winograd")
    config = validate_params(block, raw)
    unit = block.parameters(config.params)        # the unit's figures, without building it
    need = block.resources(dict(config.params))
    assert sum(count for _, _, count in need["multipliers"]) == unit.multipliers - (
        3 * unit.out_lanes if unit.requantize else 0)   # one 32x32 product per lane, 4 DSPs
    assert need["multipliers"][0] == (unit.input_width, unit.weight_width, unit.taps_per_clock)
    assert need["memories"] == [(unit.weight_words, unit.taps_per_clock * unit.weight_width)]
    assert need["ram_bits"] == unit.weight_words * unit.taps_per_clock * unit.weight_width


# ---- Amaranth simulation -----------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 4])
def test_transforms_match_golden(m):
    """The shift-and-add input transform B^T d B and output transform A^T M A, simulated alone:
    random and all-extreme int8 tiles (the growth bounds) and random wide M."""
    from amaranth import Module, Signal, signed
    from amaranth.lib import data

    from sim.golden.winograd import input_transform, output_transform
    at, _, bt, _ = integer_matrices(m)
    n = m + 2
    top = Module()
    # One signal per operand so that each vector costs one set/get in the simulator.
    d = Signal(data.ArrayLayout(signed(8), n * n))
    mm = Signal(data.ArrayLayout(signed(32), n * n))
    v = Signal(data.ArrayLayout(signed(16), n * n))
    y = Signal(data.ArrayLayout(signed(42), m * m))
    d_rows = [[d[r * n + c] for c in range(n)] for r in range(n)]
    m_rows = [[mm[r * n + c] for c in range(n)] for r in range(n)]
    for t, e in enumerate(x for row in constant_matrix_product(bt, d_rows, bt) for x in row):
        top.d.comb += v[t].eq(e)
    for t, e in enumerate(x for row in constant_matrix_product(at, m_rows, at) for x in row):
        top.d.comb += y[t].eq(e)
    rng = np.random.default_rng(m)
    tiles = [rng.integers(-128, 128, (n, n)) for _ in range(10)]
    for i in range(n):
        for j in range(n):
            coeff = np.outer(bt[i], bt[j])
            tiles += [np.where(coeff > 0, 127, -128), np.where(coeff > 0, -128, 127)]
    wides = [rng.integers(-(1 << 31), 1 << 31, (n, n)) for _ in range(10)]

    async def bench(ctx):
        for tile, wide in zip(tiles, wides * 9):
            ctx.set(d, [int(x) for x in tile.ravel()])
            ctx.set(mm, [int(x) for x in wide.ravel()])
            got_v = [ctx.get(v[t]) for t in range(n * n)]
            got_y = [ctx.get(y[t]) for t in range(m * m)]
            assert got_v == input_transform(tile, m=m).ravel().tolist(), f"V of {tile}"
            assert got_y == output_transform(wide, m=m).ravel().tolist(), f"Y of {wide}"

    sim = Simulator(top)
    sim.add_testbench(bench)
    sim.run()


def run_unit(unit: WinogradUnit, problems, *, stall_prob: float, seed: int,
             latencies: list | None = None, accepted: list | None = None):
    """Stream every problem (all passes) through ``unit``; return each problem's output.

    With ``latencies`` (a list), also records, for each tile, the cycles between the handshake
    of its last input beat and its first output beat (meaningful with no output stalls); with
    ``accepted``, the handshake cycle of every input beat.
    """
    plans = [plan(p, m=unit.m, mode=unit.mode, taps_per_clock=unit.taps_per_clock,
                  requantize=unit.requantize, tap_shifts=_shifts(unit)) for p in problems]
    passes = [ps for passes in plans for ps in passes]
    beats, last_in, first_out = [], [], []
    cycle = [0]

    async def clock(ctx):
        # Handshake edges, numbered: a beat moves on the edge where valid & ready is sampled.
        fire_in = unit.i.valid & unit.i.ready
        fire_out = unit.o.valid & unit.o.ready
        outs = 0
        async for _, _, took, last, gave in ctx.tick().sample(fire_in, unit.i.payload.last,
                                                               fire_out):
            cycle[0] += 1
            if took and accepted is not None:
                accepted.append(cycle[0])
            if took and last:
                last_in.append(cycle[0])
            if gave:
                if outs % unit.beats_per_tile == 0:
                    first_out.append(cycle[0])
                outs += 1

    async def params_and_weights(ctx):
        stalls = Stalls(stall_prob, seed=seed)
        for ps in passes:
            await stream_put(ctx, unit.params, ps.params, stalls)
            for beat in ps.weights:
                await stream_put(ctx, unit.weights, beat, stalls)

    async def tiles(ctx):
        stalls = Stalls(stall_prob, seed=seed + 1)
        for ps in passes:
            for beat in ps.tiles:
                await stream_put(ctx, unit.i, beat, stalls)

    async def results(ctx):
        stalls = Stalls(stall_prob, seed=seed + 2)
        total = _tile_count(plans) * unit.beats_per_tile
        for _ in range(total):
            beats.append(await stream_get(ctx, unit.o, stalls))
        for _ in range(unit.latency + 10):          # nothing more may come out
            assert not ctx.get(unit.o.valid), "extra output beat"
            await ctx.tick()

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_process(clock)
    sim.add_testbench(params_and_weights)
    sim.add_testbench(tiles)
    sim.add_testbench(results)
    sim.run()
    if latencies is not None:
        latencies.extend(o - i for i, o in zip(last_in, first_out))
    out, start = [], 0
    for problem, passes_of in zip(problems, plans):
        count = sum(sum(b["last"] for b in ps.tiles) for ps in passes_of) * unit.beats_per_tile
        out.append(assemble(beats[start:start + count], problem, m=unit.m, lanes=unit.out_lanes))
        start += count
    return out


def _tile_count(plans) -> int:
    return sum(b["last"] for passes in plans for ps in passes for b in ps.tiles)


def _shifts(unit: WinogradUnit) -> TapShifts | None:
    if unit.tap_shifts is None:
        return None
    return TapShifts(np.array(unit.tap_shifts.v), np.array(unit.tap_shifts.u))


def _check(got, want, what):
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"{what}: {len(bad)} mismatches, first at {tuple(bad[0])}: "
                           f"{got[tuple(bad[0])]} != {want[tuple(bad[0])]}")


@pytest.mark.parametrize("seed, kwargs", list(enumerate([
    {"m": 2},
    {"m": 2, "taps_per_clock": 4, "requantize": False, "out_lanes": 1},
    {"m": 4, "taps_per_clock": 12, "out_lanes": 16},
    {"m": 4, "requantize": False},
])))
def test_exact_feature_maps_match_golden_with_stalls(seed, kwargs):
    unit = WinogradUnit(in_channels=3, **kwargs)
    rng = np.random.default_rng(seed)
    problems = [random_problem(rng, n_img=1, chans=3, out_chans=2, height=7, width=6,
                               padding=seed % 2),
                random_problem(rng, n_img=1, chans=1, out_chans=1, height=unit.m + 2,
                               width=unit.m + 2, padding=1 - seed % 2)]
    results = run_unit(unit, problems, stall_prob=0.3, seed=seed)
    for n, (problem, got) in enumerate(zip(problems, results)):
        want = problem.expected(m=unit.m, mode="exact", requantize=unit.requantize)
        _check(got, want, f"problem {n}")
        if not unit.requantize:     # exact mode is direct convolution, bit for bit
            direct = conv2d_direct(problem.x, problem.w, padding=problem.padding,
                                   bias=problem.bias)
            _check(got, direct, f"problem {n} vs direct")


@pytest.mark.parametrize("m", [2, 4])
def test_exact_extremes_wrap_like_int32(m):
    """-128 everywhere gives the largest V and U; 3 channels and a bias near INT32_MAX make the
    int32 result wrap, which the modulo-2**(32+k) accumulators must reproduce."""
    unit = WinogradUnit(m=m, in_channels=3, requantize=False, out_lanes=m * m)
    rng = np.random.default_rng(m)
    problem = random_problem(rng, n_img=1, chans=3, out_chans=1, height=m + 2, width=m + 2,
                             padding=0, extreme=True)
    problem.bias = np.array([(1 << 31) - 1 - 3 * 9 * 128 * 128 + 5])
    (got,) = run_unit(unit, [problem], stall_prob=0.2, seed=m)
    want = 3 * 9 * 128 * 128 + int(problem.bias[0]) - (1 << 32)
    assert got.tolist() == [[[[want] * m] * m]]


@pytest.mark.parametrize("seed, kwargs", list(enumerate([
    {"m": 4},
    {"m": 4, "taps_per_clock": 6, "requantize": False},
    {"m": 2, "taps_per_clock": 8},
], start=10)))
def test_tapwise_feature_maps_match_golden_with_stalls(seed, kwargs):
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, n_img=2, chans=2, out_chans=2, height=6, width=5, padding=1)
    shifts = calibrate_tap_shifts(problem.x, problem.w, m=kwargs["m"])
    unit = WinogradUnit(mode="tapwise", in_channels=2, tap_shifts=shifts, **kwargs)
    (got,) = run_unit(unit, [problem], stall_prob=0.3, seed=seed)
    want = problem.expected(m=unit.m, mode="tapwise", requantize=unit.requantize,
                            tap_shifts=shifts)
    _check(got, want, "tapwise")


@pytest.mark.parametrize("kwargs", [
    {"m": 2}, {"m": 4, "taps_per_clock": 9}, {"m": 2, "requantize": False},
])
def test_latency_and_rate(kwargs):
    """Latency as documented; with no stalls one beat is taken every cycles_per_beat clocks
    once the input register is full (the first two beats come one clock apart)."""
    unit = WinogradUnit(in_channels=5, **kwargs)
    rng = np.random.default_rng(1)
    problem = random_problem(rng, n_img=1, chans=5, out_chans=1, height=unit.m + 2,
                             width=unit.m + 2, padding=0)
    latencies, accepted = [], []
    run_unit(unit, [problem], stall_prob=0.0, seed=0, latencies=latencies, accepted=accepted)
    assert latencies == [unit.latency], f"{latencies} != [{unit.latency}]"
    extra = REQUANT_LATENCY if unit.requantize else 0
    assert unit.latency == 2 * unit.cycles_per_beat + 7 + extra
    gaps = np.diff(accepted).tolist()
    assert gaps[0] == 1 and gaps[2:] == [unit.cycles_per_beat] * 2, f"input beats {accepted}"


@pytest.mark.parametrize("kwargs, chans", [({"m": 4, "out_lanes": 4}, 3),
                                           ({"m": 2, "taps_per_clock": 4, "out_lanes": 1}, 1)])
def test_tile_period(kwargs, chans):
    """Steady state: one tile per in_channels x cycles_per_beat + beats_per_tile - 1 clocks
    (the output sequencer holds the front pipeline while a tile's beats leave)."""
    unit = WinogradUnit(in_channels=chans, **kwargs)
    problem = random_problem(np.random.default_rng(0), n_img=1, chans=chans, out_chans=1,
                             height=3 * unit.m + 2, width=3 * unit.m + 2, padding=0)
    accepted = []
    run_unit(unit, [problem], stall_prob=0.0, seed=0, accepted=accepted)
    periods = np.diff(accepted[chans - 1::chans]).tolist()
    want = chans * unit.cycles_per_beat + unit.beats_per_tile - 1
    assert periods[-4:] == [want] * 4, f"tile periods {periods}, want {want}"


def test_back_to_back_tiles_at_full_rate():
    """One channel beat per clock over many tiles when the sink keeps up."""
    unit = WinogradUnit(m=2, in_channels=2, out_lanes=4)
    rng = np.random.default_rng(3)
    problem = random_problem(rng, n_img=1, chans=2, out_chans=1, height=8, width=8, padding=1)
    accepted = []
    (got,) = run_unit(unit, [problem], stall_prob=0.0, seed=0, accepted=accepted)
    assert np.diff(accepted).tolist() == [1] * (len(accepted) - 1)
    _check(got, problem.expected(m=2, mode="exact", requantize=True), "full rate")


# ---- cocotb on the generated Verilog -----------------------------------------------------------

# Two configurations x two simulators keep the suite within its time budget on 2 cores; between
# them they cover both tile sizes, both modes, reduced taps_per_clock and requantization. The
# Amaranth-simulator tests above run every combination.
COCOTB_CONFIGS = [
    {"in_channels": 3},
    {"m": 4, "mode": "tapwise", "in_channels": 2, "taps_per_clock": 9},
]


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("params", COCOTB_CONFIGS, ids=lambda p: "-".join(
    f"{k}={v}" for k, v in p.items()))
def test_cocotb(params, simulator, tmp_path):
    cocotb_run("winograd", params, simulator, tmp_path)
