"""WinogradFeatureMap (tiler -> unit -> untiler): construction, Amaranth simulation of whole
feature maps streamed row by row against the golden model, cocotb on the Verilog."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from sim.testing import SIMULATORS, cocotb_run

from gen.blocks import get_block
from gen.config import validate_params
from hw.winograd import Tiler, Untiler, WinogradFeatureMap
from sim.golden.winograd import TapShifts, conv2d_direct
from sim.stalls import Stalls
from sim.streams import stream_get, stream_put
from sim.winograd_driver import (
    ConvProblem,
    assemble_feature_map,
    feature_map_beats,
    plan_feature_map,
    random_problem,
)

# ---- construction ------------------------------------------------------------------------------


def test_init_defaults():
    fm = WinogradFeatureMap()
    assert (fm.max_height, fm.max_width) == (32, 32)
    assert (fm.unit.m, fm.unit.out_lanes, fm.unit.in_channels) == (2, 2, 8)
    # 2m + 2 line buffers of max_width x 8 channels; two banks of m rows of 16 tile columns.
    assert (fm.tiler.line_buffers, fm.tiler.buffer_depth) == (6, 32 * 8)
    assert (fm.untiler.tile_bits, fm.untiler.depth) == (4, 2 * 2 * 16)
    assert fm.tiler.clocks_per_beat == 4
    f4 = WinogradFeatureMap(m=4, in_channels=3, max_width=9)
    # 3 channels take 4 addresses per pixel; ceil(9 / 4) = 3 tile columns take 4.
    assert (f4.tiler.line_buffers, f4.tiler.buffer_depth) == (10, 9 * 4)
    assert (f4.untiler.tile_bits, f4.untiler.depth) == (2, 2 * 4 * 4)


@pytest.mark.parametrize("cls, kwargs, error, message", [
    (WinogradFeatureMap, {"max_width": 0}, ValueError, "max_width must be in [1, 4096], not 0"),
    (WinogradFeatureMap, {"max_height": 5000}, ValueError,
     "max_height must be in [1, 4096], not 5000"),
    (WinogradFeatureMap, {"max_height": "8"}, TypeError, "max_height must be an integer, not '8'"),
    (WinogradFeatureMap, {"m": 3}, ValueError, "m must be one of 2, 4, not 3"),
    (Tiler, {"channels": 0}, ValueError, "channels must be in [1, 1024], not 0"),
    (Tiler, {"m": 6}, ValueError, "m must be one of 2, 4, not 6"),
    (Untiler, {"requantize": 0}, TypeError, "requantize must be a bool, not 0"),
])
def test_init_wrong(cls, kwargs, error, message):
    with pytest.raises(error) as info:
        cls(**kwargs)
    assert str(info.value) == message


def test_init_is_keyword_only():
    with pytest.raises(TypeError):
        WinogradFeatureMap(2)


def test_block_config():
    spec = get_block("winograd_fm")
    config = validate_params(spec, {"m": 4, "in_channels": 2, "max_width": 12})
    fm = spec.build(dict(config.params))
    assert isinstance(fm, WinogradFeatureMap)
    assert (fm.unit.m, fm.max_width, fm.max_height) == (4, 12, 32)
    figures = spec.figures(fm)
    assert figures["multipliers"] == 36 + 4 * 4
    assert figures["tiler_clocks_per_tile_beat"] == 6
    # Line buffers: 10 x (12 columns x 2 channels); output buffer: 2 banks x 4 rows x 4 tile
    # columns of 4 int8; weight memory: 2 channels x 1 word of 36 x 18 bits.
    need = spec.resources(dict(config.params))
    assert need["memories"] == [(2, 36 * 18)] + [(24, 8)] * 10 + [(32, 32)]
    assert need["multipliers"] == [(15, 18, 36), (32, 32, 4)]


# ---- simulation --------------------------------------------------------------------------------


def run_feature_maps(fm: WinogradFeatureMap, problems: list[ConvProblem], *, seed: int,
                     stall_prob: float = 0.3, cycles: list | None = None) -> list[np.ndarray]:
    """Stream every problem through ``fm`` (random stalls on all four streams); the NKHW
    outputs. ``cycles`` gets the clocks from the first params handshake to the last output."""
    unit = fm.unit
    shifts = None if unit.tap_shifts is None else TapShifts(np.array(unit.tap_shifts.v),
                                                             np.array(unit.tap_shifts.u))
    plans = [plan_feature_map(p, m=unit.m, mode=unit.mode, taps_per_clock=unit.taps_per_clock,
                              requantize=unit.requantize, tap_shifts=shifts) for p in problems]
    passes = [ps for passes in plans for ps in passes]
    beats = []
    total = sum(feature_map_beats(p) for p in problems)

    async def params_and_weights(ctx):
        stalls = Stalls(stall_prob, seed=seed)
        for ps in passes:
            await stream_put(ctx, fm.params, ps.params, stalls)
            for beat in ps.weights:
                await stream_put(ctx, fm.weights, beat, stalls)

    async def pixels(ctx):
        stalls = Stalls(stall_prob, seed=seed + 1)
        for ps in passes:
            for beat in ps.tiles:
                await stream_put(ctx, fm.i, beat, stalls)

    async def results(ctx):
        stalls = Stalls(stall_prob, seed=seed + 2)
        for _ in range(total):
            beats.append(await stream_get(ctx, fm.o, stalls))
        for _ in range(unit.latency + 20):          # nothing more may come out
            assert not ctx.get(fm.o.valid), "extra output beat"
            assert not ctx.get(fm.i.ready), "input taken beyond the maps"
            await ctx.tick()

    async def clock(ctx):
        count, started = 0, None
        async for _, _, took, gave in ctx.tick().sample(fm.params.valid & fm.params.ready,
                                                        fm.o.valid & fm.o.ready):
            count += 1
            if took and started is None:
                started = count
            if gave and cycles is not None:
                cycles.append(count - started)

    sim = Simulator(fm)
    sim.add_clock(1e-8)
    sim.add_process(clock)
    sim.add_testbench(params_and_weights)
    sim.add_testbench(pixels)
    sim.add_testbench(results)
    sim.run()
    out, start = [], 0
    for problem in problems:
        count = feature_map_beats(problem)
        out.append(assemble_feature_map(beats[start:start + count], problem))
        start += count
    return out


def _check(got, want, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"{what}: {len(bad)} mismatches, first at {tuple(bad[0])}: "
                           f"{got[tuple(bad[0])]} != {want[tuple(bad[0])]}")


def _expected(fm: WinogradFeatureMap, problem: ConvProblem) -> np.ndarray:
    unit = fm.unit
    shifts = None if unit.tap_shifts is None else TapShifts(np.array(unit.tap_shifts.v),
                                                             np.array(unit.tap_shifts.u))
    return problem.expected(m=unit.m, mode=unit.mode, requantize=unit.requantize,
                            tap_shifts=shifts)


# Each configuration streams several maps back to back: both paddings, heights and widths that
# are and are not multiples of m, the smallest maps (1 x 1 output), one as wide as max_width.
@pytest.mark.parametrize("seed, kwargs", list(enumerate([
    {"m": 2, "in_channels": 3, "max_width": 7, "max_height": 9},
    {"m": 2, "in_channels": 2, "taps_per_clock": 4, "requantize": False, "max_width": 8},
    {"m": 4, "in_channels": 2, "taps_per_clock": 9, "max_width": 11, "max_height": 12},
    {"m": 4, "mode": "tapwise", "in_channels": 1, "requantize": False, "max_width": 6},
    {"m": 2, "mode": "tapwise", "in_channels": 4, "taps_per_clock": 8, "max_width": 5},
])))
def test_feature_maps_match_golden_with_stalls(seed, kwargs):
    rng = np.random.default_rng(100 + seed)
    fm = WinogradFeatureMap(**kwargs)
    chans, wmax = fm.unit.in_channels, fm.max_width
    shapes = [(7, wmax, 1), (5, 3, 0), (3, 3, 0), (1, 1, 1), (fm.unit.m + 3, 4, 0)]
    problems = [random_problem(rng, n_img=1, chans=chans, out_chans=2, height=h, width=w,
                               padding=p) for h, w, p in shapes]
    for (h, w, p), problem, got in zip(shapes, problems, run_feature_maps(fm, problems,
                                                                          seed=seed)):
        _check(got, _expected(fm, problem), f"{h}x{w} padding {p}")
        if fm.unit.mode == "exact" and not fm.unit.requantize:
            direct = conv2d_direct(problem.x, problem.w, padding=p, bias=problem.bias)
            _check(got, direct, f"{h}x{w} padding {p} vs direct")


def test_extreme_map_and_full_rate():
    """-128 everywhere (largest Winograd-domain values) through F4 exact; with no stalls the
    pass takes the documented number of clocks."""
    fm = WinogradFeatureMap(m=4, in_channels=2, requantize=False, max_width=8, max_height=8)
    problem = random_problem(np.random.default_rng(7), n_img=1, chans=2, out_chans=1,
                             height=8, width=8, padding=1, extreme=True)
    cycles = []
    (got,) = run_feature_maps(fm, [problem], seed=3, stall_prob=0.0, cycles=cycles)
    _check(got, conv2d_direct(problem.x, problem.w, padding=1, bias=problem.bias), "extreme")
    assert len(cycles) == 64
    # The 8 x 8 x 2 values arrive one per clock (128 clocks) and the tiler then needs the last
    # tile row: 2 tiles x 2 channels x 7 clocks; the output leaves one value per clock.
    assert cycles[-1] < 128 + 2 * 2 * 7 + fm.unit.latency + 4 * 8 + 16, cycles[-1]


@pytest.mark.parametrize("m", [2, 4])
def test_tiler_rate(m):
    """With the sink ready the tiler emits one tile beat every m + 2 clocks, waiting only for
    rows that have not arrived yet (input one value per clock)."""
    tiler = Tiler(m=m, channels=3, max_width=12, max_height=12)
    x = np.random.default_rng(m).integers(-128, 128, (3, 12, 12))
    fires = []

    async def source(ctx):
        await stream_put(ctx, tiler.frame, {"height": 12, "width": 12, "padding": 1})
        for value in x.transpose(1, 2, 0).reshape(-1):
            await stream_put(ctx, tiler.i, {"data": int(value)})

    async def sink(ctx):
        ctx.set(tiler.o.ready, 1)
        count = 0
        async for _, _, fired in ctx.tick().sample(tiler.o.valid & tiler.o.ready):
            count += 1
            if fired:
                fires.append(count)
            if count > 1000:
                break

    sim = Simulator(tiler)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    tiles = (-(-12 // m)) ** 2
    assert len(fires) == tiles * 3
    gaps = np.diff(fires)
    assert gaps.min() == tiler.clocks_per_beat == m + 2
    # F2: the rows arrive (432 clocks for the map) as fast as the tiler reads (4 x 108 beats).
    # F4: it waits for the 4 new rows of each of the last two tile rows.
    assert (gaps > m + 2).sum() == (0 if m == 2 else 2), gaps.tolist()


# ---- cocotb on the generated Verilog ----------------------------------------------------------

COCOTB_CONFIGS = [
    {"in_channels": 2, "max_width": 7, "max_height": 8},
    {"m": 4, "mode": "tapwise", "in_channels": 2, "taps_per_clock": 9, "max_width": 9,
     "max_height": 10},
]


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("params", COCOTB_CONFIGS, ids=lambda p: "-".join(
    f"{k}={v}" for k, v in p.items()))
def test_cocotb(params, simulator, tmp_path):
    cocotb_run("winograd_fm", params, simulator, tmp_path)
