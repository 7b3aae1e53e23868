"""GemmCore and Requantizer: construction, Amaranth simulation and cocotb on the Verilog."""

import json
import re

import numpy as np
import pytest
from amaranth.sim import Simulator
from sim.testing import SIMULATORS, build_netlist, cocotb_run, connectivity

from amaranth import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.common.fabric_mul import FabricMultiplier
from hw.common.mul import PipelinedMultiplier
from hw.common.requant import RAW_WIDTH, REQUANT_LATENCY, Requantizer
from hw.gemm import GemmCore
from hw.gemm.params import DSP_INPUT_REG_ABOVE, GemmParams, max_abs_product
from sim.gemm_driver import GemmProblem, assemble, plan, random_problem
from sim.golden.gemm import (INT32_MAX, INT32_MIN, gemm, multiply_by_quantized_multiplier,
                             requantize)
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
    ({"k_per_pe": 3}, ValueError, "k_per_pe must be one of 1, 2, 4, not 3"),
    ({"k_per_pe": 8}, ValueError, "k_per_pe must be one of 1, 2, 4, not 8"),
    ({"k_per_pe": True}, TypeError, "k_per_pe must be an integer, not True"),
    ({"fabric_cols": 5}, ValueError, "fabric_cols must be in [0, 4], not 5"),
    ({"cols": 2, "fabric_cols": 3}, ValueError, "fabric_cols must be in [0, 2], not 3"),
    ({"fabric_cols": -1}, ValueError, "fabric_cols must be in [0, 4], not -1"),
    ({"fabric_cols": 1.0}, TypeError, "fabric_cols must be an integer, not 1.0"),
    ({"block_ram": 1}, TypeError, "block_ram must be a bool, not 1"),
    ({"dsp_input_reg": True}, ValueError,
     "dsp_input_reg must be one of 'auto', 'on', 'off', not True"),
])
def test_init_wrong(kwargs, error, message):
    with pytest.raises(error) as info:
        GemmCore(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("kwargs, error, message", [
    ({"a_width": 12}, ValueError, "a_width must be one of 8, 16, not 12"),
    ({"a_width": "16"}, TypeError, "a_width must be an integer, not '16'"),
    ({"a_width": 16.0}, TypeError, "a_width must be an integer, not 16.0"),
    ({"out_width": 32}, ValueError, "out_width must be one of 8, 16, not 32"),
    ({"out_width": True}, TypeError, "out_width must be an integer, not True"),
    ({"a_width": 16, "acc_width": 23}, ValueError,
     "acc_width must be in [24, 32] when a_width is 16, not 23"),
    ({"a_width": 16, "acc_width": 17}, ValueError, "acc_width must be in [18, 32], not 17"),
    ({"requantize": False, "out_width": 16}, ValueError,
     "out_width must be 8 when requantize is False (the raw output is int32), not 16"),
])
def test_init_wrong_widths(kwargs, error, message):
    with pytest.raises(error) as info:
        GemmCore(**kwargs)
    assert str(info.value) == message


def test_init_widths():
    core = GemmCore(rows=3, cols=2, a_width=16, out_width=16)
    assert (core.a_width, core.out_width) == (16, 16)
    assert core.a_offset_range == (-32767, 32768)
    # |(a + a_offset) * b| <= 65535 * 128; 256 such terms still fit int32, 257 do not.
    assert max_abs_product(16) == 65535 * 128
    assert core.max_k == 256
    assert 256 * 65535 * 128 <= INT32_MAX < 257 * 65535 * 128
    assert GemmCore(a_width=16, acc_width=24).max_k == 1
    assert core.multipliers == 3 * 2 + 2 + 4             # PEs, offset cells, requantizer
    assert core.i.payload.shape().members["a"].elem_shape == signed(16)
    assert core.i.payload.shape().members["b"].elem_shape == signed(8)
    params = core.params.payload.shape().members
    assert params["a_offset"] == signed(17)
    assert params["act_min"] == params["act_max"] == params["out_zero_point"] == signed(16)
    assert core.o.payload.shape().members["data"].elem_shape == signed(16)
    default = GemmCore()
    assert (default.a_width, default.out_width, default.a_offset_range) == (8, 8, (-256, 255))
    assert default.multipliers == 16 + 4
    raw = GemmCore(requantize=False, a_width=16)
    assert raw.o.payload.shape().members["data"].elem_shape == signed(32)


@pytest.mark.parametrize("change, message", [
    ({"a_offset": 32769}, "a_offset must be in [-32767, 32768] (a_width 16), not 32769"),
    ({"a_offset": -32768}, "a_offset must be in [-32767, 32768] (a_width 16), not -32768"),
    ({"b": np.full((3, 2), 128)}, "b must be in [-128, 127] (int8 weights), not 128"),
    ({"act_min": -32769}, "act_min must be in [-32768, 32767] (out_width 16), not -32769"),
])
def test_plan_refuses_values_the_core_cannot_take(change, message):
    problem = random_problem(np.random.default_rng(0), 2, 3, 2, a_width=16, out_width=16)
    for name, value in change.items():
        setattr(problem, name, value)
    with pytest.raises(ValueError) as info:
        plan(problem, 2, 2, True, a_width=16, out_width=16)
    assert str(info.value) == message
    int16 = random_problem(np.random.default_rng(0), 2, 3, 2, a_width=16)
    with pytest.raises(ValueError) as info:
        plan(int16, 2, 2, True)
    assert str(info.value).startswith("a must be in [-128, 127] (a_width 8), not ")


def test_init_dot_product_pe():
    """k_per_pe products per PE per clock: k_per_pe DSPs per PE (and per offset cell), an
    adder tree of log2(k_per_pe) registers in the latency, k_per_pe k-slices per input beat."""
    base = GemmCore(rows=2, cols=3, requantize=False)
    for k, levels in ((1, 0), (2, 1), (4, 2)):
        core = GemmCore(rows=2, cols=3, requantize=False, k_per_pe=k)
        assert core.parameters.macs == 6 * k
        assert core.multipliers == 6 * k
        assert core.parameters.tree_levels == levels
        assert core.latency == base.latency + levels
        assert core.row_read_delay == base.row_read_delay + levels
        # K counts k-slices, not beats: the worst-case sum is the same, so is max_k.
        assert core.max_k == base.max_k
        assert core.min_tile_cycles == base.min_tile_cycles
    layout = GemmCore(rows=2, cols=3, k_per_pe=4).i.payload.shape().members
    assert layout["a"].length == 2 and layout["a"].elem_shape.length == 4
    assert layout["a"].elem_shape.elem_shape == signed(8)
    assert layout["b"].length == 3 and layout["b"].elem_shape.elem_shape == signed(8)
    assert GemmCore(k_per_pe=2).multipliers == 4 * 4 * 2 + 4         # PEs, requantizer
    assert GemmCore(rows=2, cols=3, a_width=16, k_per_pe=2).multipliers == 12 + 6 + 4
    # The fit check counts the same products (the registry's resource estimate).
    from gen.blocks import get_block
    for kwargs, want in (({"k_per_pe": 4}, 2 * 3 * 4), ({"k_per_pe": 2, "a_width": 16}, 12 + 6)):
        need = get_block("gemm").resources({"rows": 2, "cols": 3, "requantize": False} | kwargs)
        assert sum(count for *_, count in need["multipliers"]) == want, kwargs


def test_plan_packs_k_per_pe_slices_and_pads_k_with_zeros():
    problem = GemmProblem(a=np.arange(10).reshape(2, 5), b=np.arange(10).reshape(5, 2) - 5,
                          a_offset=3)
    (tile,) = plan(problem, 2, 2, False, k_per_pe=2)
    assert [s["last"] for s in tile.slices] == [0, 0, 1]
    assert tile.slices[0]["a"] == [[0, 1], [5, 6]]          # a[r][j] = A[r, k + j]
    assert tile.slices[0]["b"] == [[-5, -3], [-4, -2]]      # b[c][j] = B[k + j, c]
    assert tile.slices[2]["a"] == [[4, 0], [9, 0]]          # K = 5 padded to 6 with zeros
    assert tile.slices[2]["b"] == [[3, 0], [4, 0]]
    (tile,) = plan(problem, 2, 2, False, k_per_pe=4)
    assert len(tile.slices) == 2 and tile.slices[1]["b"] == [[3, 0, 0, 0], [4, 0, 0, 0]]


def test_init_fabric_columns():
    """The last fabric_cols columns multiply in logic: the same products per clock and the same
    latency, fewer DSPs; the fit check counts the DSP products only and the manifest both."""
    from gen.blocks import get_block
    block = get_block("gemm")
    base = GemmCore(rows=3, cols=4)
    core = GemmCore(rows=3, cols=4, fabric_cols=2)
    p = core.parameters
    assert (p.macs, p.dsp_macs, p.fabric_macs) == (12, 6, 6)
    assert core.multipliers == 6 + 4 == base.multipliers - 6
    assert core.latency == base.latency and core.row_read_delay == base.row_read_delay
    figures = block.figures(core)
    assert (figures["macs"], figures["dsp_macs"], figures["fabric_macs"]) == (12, 6, 6)
    wide = GemmParams(rows=2, cols=3, a_width=16, k_per_pe=2, fabric_cols=3)
    assert (wide.dsp_macs, wide.fabric_macs, wide.multipliers) == (0, 12, 6 + 4)
    need, base_need = (block.resources({"rows": 3, "cols": 4, "fabric_cols": f})
                       for f in (2, 0))
    assert sum(count for *_, count in need["multipliers"]) == 6 + 1      # PEs, requantizer
    # Each fabric product's multiplier in logic instead of a DSP.
    assert need["luts"] - base_need["luts"] == 6 * 129
    assert need["ffs"] - base_need["ffs"] == 6 * 48


def test_init_dsp_input_reg():
    """``dsp_input_reg="auto"`` gives the PEs' multipliers registers of their own above
    ``DSP_INPUT_REG_ABOVE`` (64) DSP products: the 12 x 12, not the 8 x 8 (whose netlist stays
    as measured); fabric products do not count. The register is one cycle more from a PE's
    operands to its product, so to its results and output."""
    assert DSP_INPUT_REG_ABOVE == 64
    assert not GemmParams(rows=12, cols=12).dsp_input_stage     # off unless asked for
    auto = {"dsp_input_reg": "auto"}
    assert not GemmParams(rows=8, cols=8, **auto).dsp_input_stage
    assert GemmParams(rows=12, cols=12, **auto).dsp_input_stage
    assert GemmParams(rows=8, cols=8, k_per_pe=2, **auto).dsp_input_stage
    assert not GemmParams(rows=8, cols=10, fabric_cols=2, **auto).dsp_input_stage
    assert GemmParams(rows=8, cols=10, fabric_cols=1, **auto).dsp_input_stage
    assert not GemmParams(rows=12, cols=12, dsp_input_reg="off").dsp_input_stage
    assert GemmParams(rows=1, cols=1, dsp_input_reg="on").dsp_input_stage
    for kwargs in ({"rows": 2, "cols": 3}, {"rows": 6, "cols": 2, "k_per_pe": 2}):
        on = GemmParams(**kwargs, dsp_input_reg="on")
        off = GemmParams(**kwargs, dsp_input_reg="off")
        assert on.row_read_delay == off.row_read_delay + 1
        assert on.latency == off.latency + 1


def test_init_is_keyword_only():
    with pytest.raises(TypeError):
        GemmCore(4, 4)


def test_requantizer_init_wrong():
    with pytest.raises(ValueError) as info:
        Requantizer(lanes=0)
    assert str(info.value) == "lanes must be in [1, 64], not 0"
    with pytest.raises(ValueError) as info:
        Requantizer(lanes=1, out_width=12)
    assert str(info.value) == "out_width must be one of 8, 16, 32, not 12"
    with pytest.raises(TypeError) as info:
        Requantizer(lanes=1, far_dsps=1)
    assert str(info.value) == "far_dsps must be a bool, not 1"


def test_pipelined_multiplier_init_wrong():
    with pytest.raises(ValueError) as info:
        PipelinedMultiplier(a_width=8, b_width=8, latency=4)
    assert str(info.value) == "latency must be in [2, 3], not 4"


# ---- Amaranth simulation -----------------------------------------------------------------------

@pytest.mark.parametrize("latency", [2, 3])
def test_pipelined_multiplier_latency_with_stalls(latency):
    """Each product leaves ``latency`` enabled cycles after its operands, whatever the enable
    does in between (the generic form; the SB_MAC16 and MULT18X18D forms run the same cocotb
    regressions on their models)."""
    dut = PipelinedMultiplier(a_width=10, b_width=8, latency=latency)
    rng = np.random.default_rng(latency)
    pairs = [(int(rng.integers(-512, 512)), int(rng.integers(-128, 128))) for _ in range(200)]
    enables = rng.random(len(pairs) + 20) < 0.7
    got = []

    async def bench(ctx):
        presented = []
        for cycle, en in enumerate(enables):
            a, b = pairs[cycle % len(pairs)]
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.en, int(en))
            if en:
                presented.append(a * b)
                if len(presented) > latency:
                    # The product of the operands presented `latency` enabled cycles ago.
                    got.append((ctx.get(dut.p), presented[-1 - latency]))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(got) > 100
    for n, (p, want) in enumerate(got):
        assert p == want, f"product {n}: {p} != {want}"


def test_ice40_dsps_hold_the_stage_after_the_product():
    """Written for iCE40, the PE's product register and the requantizer's register after its
    partial products (``far_dsps``) are the SB_MAC16's own pipeline register
    (PIPELINE_16x16_MULT_REG1), not fabric flip-flops; the ECP5 and generic forms keep them in
    the fabric; the latency is the same."""
    from gen.verilog import convert
    core = GemmCore(rows=2, cols=3)
    ice40 = convert(core, "gemm", primitives="ice40")
    assert ice40.count("SB_MAC16 #(") == ice40.count(".PIPELINE_16x16_MULT_REG1(32'd1)") == 6 + 4
    for text in (convert(core, "gemm", primitives="ecp5"), convert(core, "gemm")):
        assert "pp_hh_from_dsp_d1" in text and "pe1_2_product" in text
    assert "pp_hh_from_dsp_d1" not in ice40
    assert not re.search(r"always @\(posedge clk\)[^;]*pe1_2_product <=", ice40)




@pytest.mark.parametrize("out_width, far_dsps", [(8, False), (16, False), (RAW_WIDTH, False),
                                                 (8, True), (RAW_WIDTH, True)])
def test_requantizer_matches_golden_with_stalls(out_width, far_dsps):
    """Every lane against the golden model; ``RAW_WIDTH`` returns the unclamped int32
    ``MultiplyByQuantizedMultiplier`` and carries a ``tag`` through with each beat."""
    lanes, count = 2, 400
    raw = out_width == RAW_WIDTH
    dut = Requantizer(lanes=lanes, out_width=out_width, tag=signed(7) if raw else None,
                      far_dsps=far_dsps)
    top = 1 << (out_width - 1)
    rng = np.random.default_rng(5)
    acc = rng.integers(INT32_MIN, INT32_MAX + 1, (count, lanes))
    mult = rng.integers(INT32_MIN, INT32_MAX + 1, (count, lanes))
    shift = rng.integers(-31, 32, (count, lanes))
    acc[:30], mult[:15] = INT32_MIN, INT32_MIN                 # the saturating SRDHM case
    shift[:15:3], shift[1:15:3] = 0, rng.integers(-3, 0, (5, lanes))   # exponents 0 and 1-3
    acc[30:60] = rng.integers(-4, 5, (30, lanes)) << 20          # exact halves: ties
    mult[30:60], shift[30:60] = 1 << 30, rng.integers(-25, 1, (30, lanes))
    mult[60:200] = rng.integers(1 << 30, 1 << 31, (140, lanes))  # realistic Q31 multipliers
    shift[60:200] = rng.integers(-20, 2, (140, lanes))
    acc[60:200] = rng.integers(-(1 << 18), 1 << 18, (140, lanes))
    zp = rng.integers(-top, top, count)
    zp[:15:3] = top - 1                     # INT32_MAX + zero point, clamped to act_max
    lo, hi = rng.integers(-top, 0, count), rng.integers(0, top, count)
    # bounds in any order: TFLite's min(max(x, act_min), act_max) gives act_max when inverted
    lo[200:280], hi[200:280] = rng.integers(-top, top, (2, 80))
    lo[200:210], hi[200:210] = 10, -10
    # The requantizer compares the bounds' halves apart: pairs equal in one half, or across
    # the halves' boundary, each way round.
    k = 1 << (out_width // 2)
    pairs = [(k, k - 1), (k - 1, k), (-k, -k - 1), (-k - 1, -k), (k + 5, k + 3), (k + 3, k + 5),
             (-1, 0), (0, -1), (-top, top - 1), (top - 1, -top), (7, 7), (-k, -k)]
    lo[210:210 + len(pairs)], hi[210:210 + len(pairs)] = np.array(pairs).T
    assert (lo > hi).sum() >= 30
    beats = []

    async def producer(ctx):
        stalls = Stalls(0.3, seed=1)
        for n in range(count):
            beat = {"acc": acc[n].tolist(), "multiplier": mult[n].tolist(),
                    "shift": shift[n].tolist(), "last": n % 3 == 0}
            beat |= ({"tag": n % 128 - 64} if raw else
                     {"out_zero_point": int(zp[n]), "act_min": int(lo[n]),
                      "act_max": int(hi[n])})
            await stream_put(ctx, dut.i, beat, stalls)

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
        if raw:
            want = multiply_by_quantized_multiplier(acc[n], mult[n], shift[n]).tolist()
            assert beat["tag"] == n % 128 - 64, f"beat {n}: tag {beat['tag']}"
        else:
            want = requantize(acc[n], mult[n], shift[n], out_zero_point=zp[n], act_min=lo[n],
                              act_max=hi[n]).tolist()
        assert beat["data"] == want, f"beat {n}: {beat['data']} != {want}"
        assert beat["last"] == (n % 3 == 0), f"beat {n}: last {beat['last']}"


@pytest.mark.parametrize("far_dsps, latency", [(False, REQUANT_LATENCY),
                                               (True, REQUANT_LATENCY + 4)])
def test_requantizer_latency(far_dsps, latency):
    dut = Requantizer(lanes=1, far_dsps=far_dsps)
    assert dut.latency == latency
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
    assert seen == [latency], f"output valid at cycles {seen}"


def run_core(core: GemmCore, problems, *, stall_prob: float, seed: int):
    """Stream ``problems`` through ``core`` in the Amaranth simulator; return the results."""
    plans = [plan(p, core.rows, core.cols, core.requantize, a_width=core.a_width,
                  out_width=core.out_width, k_per_pe=core.k_per_pe) for p in problems]
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
    {"rows": 6, "cols": 2},                     # read-out in two stages (READOUT_GROUP)
    {"rows": 9, "cols": 3, "requantize": False, "out_lanes": 3},
    {"rows": 3, "cols": 2, "k_per_pe": 2},
    {"rows": 2, "cols": 3, "requantize": False, "k_per_pe": 4},
    {"rows": 4, "cols": 4, "requantize": False, "k_per_pe": 4, "acc_width": 24},
    {"rows": 6, "cols": 2, "k_per_pe": 2},      # dot products, two-stage read-out
    {"rows": 3, "cols": 4, "fabric_cols": 2},   # DSP and fabric PEs side by side
    {"rows": 2, "cols": 3, "requantize": False, "k_per_pe": 2, "fabric_cols": 3},
    {"rows": 2, "cols": 3, "block_ram": True},  # row and tile memories in block RAM
    {"rows": 6, "cols": 2, "requantize": False, "k_per_pe": 2, "acc_width": 28,
     "block_ram": True},
    {"rows": 3, "cols": 3, "requantize": False, "out_lanes": 3, "block_ram": True},
    {"rows": 3, "cols": 4, "fabric_cols": 1, "dsp_input_reg": "on"},
    {"rows": 6, "cols": 2, "k_per_pe": 2, "dsp_input_reg": "on"},
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


@pytest.mark.parametrize("seed, kwargs", list(enumerate([
    {"rows": 2, "cols": 3, "a_width": 16, "out_width": 16},
    {"rows": 3, "cols": 2, "a_width": 16, "out_lanes": 2},
    {"rows": 2, "cols": 3, "a_width": 16, "requantize": False, "out_lanes": 3},
    {"rows": 2, "cols": 2, "out_width": 16, "acc_width": 24},
    {"rows": 5, "cols": 2, "a_width": 16},      # two-stage read-out with the offset sums
    {"rows": 2, "cols": 3, "a_width": 16, "out_width": 16, "k_per_pe": 2},
    {"rows": 3, "cols": 2, "a_width": 16, "requantize": False, "k_per_pe": 4},
    {"rows": 5, "cols": 2, "a_width": 16, "k_per_pe": 2},
    {"rows": 2, "cols": 3, "a_width": 16, "out_width": 16, "fabric_cols": 1},
    {"rows": 5, "cols": 2, "a_width": 16, "k_per_pe": 2, "dsp_input_reg": "on"},
], start=10)))
def test_core_widths_match_golden_with_stalls(seed, kwargs):
    """int16 activations and/or int16 results, random stalls on all three streams."""
    core = GemmCore(**kwargs)
    widths = {"a_width": core.a_width, "out_width": core.out_width}
    rng = np.random.default_rng(seed)
    problems = [random_problem(rng, 2 * core.rows + 1, k, 2 * core.cols - 1, **widths)
                for k in (1, 7, 2)]
    problems[2].a_offset = 0                      # TFLite's int16 zero point
    problems.append(random_problem(rng, core.rows, 30, core.cols, extreme=True, **widths))
    results = run_core(core, problems, stall_prob=0.3, seed=seed)
    for n, (problem, got) in enumerate(zip(problems, results)):
        want = problem.expected(core.requantize)
        assert np.array_equal(got, want), f"problem {n} {problem.shape}:\n{got}\n!=\n{want}"


def _constant_problem(k: int, a: int, b: int, a_offset: int, bias) -> GemmProblem:
    return GemmProblem(a=np.full((2, k), a), b=np.full((k, 2), b), a_offset=a_offset,
                       bias=np.array(bias))


def test_core_int16_raw_accumulators_are_exact_up_to_max_k_and_wrap_beyond():
    core = GemmCore(rows=2, cols=2, requantize=False, a_width=16)
    k, term = core.max_k, 65535 * 128
    problems = [
        # (-32768 - 32767) * -128 = 65535 * 128 per k, max_k times: INT32_MAX with this bias.
        _constant_problem(k, -32768, -128, -32767, [INT32_MAX - k * term, 0]),
        # (32767 + 32768) * -128: the most negative term at the top of the offset range.
        _constant_problem(k, 32767, -128, 32768, [-5, 0]),
        # One more k-slice leaves int32: both the core and the golden model wrap modulo 2**32.
        _constant_problem(k + 1, -32768, -128, -32767, [0, 7]),
    ]
    got = run_core(core, problems, stall_prob=0.2, seed=3)
    assert got[0].tolist() == [[INT32_MAX, k * term]] * 2
    assert got[1].tolist() == [[-k * term - 5, -k * term]] * 2
    wrapped = (k + 1) * term - (1 << 32)
    assert got[2].tolist() == [[wrapped, wrapped + 7]] * 2
    for n, problem in enumerate(problems):
        assert np.array_equal(got[n], problem.expected(False)), f"problem {n}"


def test_core_int16_results_saturate_at_the_int16_clamp():
    core = GemmCore(rows=2, cols=2, a_width=16, out_width=16, out_lanes=2)
    rng = np.random.default_rng(4)
    problems = []
    for a, offset in ((-32768, -32767), (32767, 32768)):  # large sums of either sign
        problem = random_problem(rng, 2, 40, 2, a_width=16, out_width=16)
        problem.a, problem.b = np.full((2, 40), a), np.full((40, 2), -128)
        problem.a_offset = offset
        # A multiplier of ~1.0: |result| ~ 40 * 65535 * 128, far outside int16.
        problem.multiplier, problem.shift = np.full(2, INT32_MAX), np.full(2, 0)
        problem.out_zero_point, problem.act_min, problem.act_max = 0, -32768, 32767
        problems.append(problem)
    got = run_core(core, problems, stall_prob=0.3, seed=4)
    assert got[0].tolist() == [[32767, 32767]] * 2
    assert got[1].tolist() == [[-32768, -32768]] * 2
    p = problems[1]
    want = gemm(p.a, p.b, bias=p.bias, a_offset=32768, multiplier=INT32_MAX, shift=0,
                act_min=-32768, act_max=32767)
    assert np.array_equal(got[1], want)


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
    {"rows": 3, "cols": 2, "a_width": 16, "out_width": 16},
    {"rows": 3, "cols": 2, "k_per_pe": 2},
    {"rows": 4, "cols": 4, "requantize": False, "k_per_pe": 4},
    {"rows": 3, "cols": 4, "fabric_cols": 2},
    {"rows": 2, "cols": 3, "a_width": 16, "requantize": False, "k_per_pe": 2, "fabric_cols": 3},
    {"rows": 6, "cols": 2, "requantize": False, "k_per_pe": 2, "acc_width": 28,
     "block_ram": True},
    {"rows": 3, "cols": 2, "a_width": 16, "out_width": 16, "dsp_input_reg": "on"},
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
                                                              "requantize": False},
                                    {"rows": 2, "cols": 2, "a_width": 16, "out_width": 16},
                                    {"rows": 2, "cols": 2, "a_width": 16, "requantize": False,
                                     "k_per_pe": 2},
                                    {"rows": 2, "cols": 3, "fabric_cols": 1},
                                    {"rows": 2, "cols": 3, "block_ram": True},
                                    {"rows": 6, "cols": 2, "requantize": False, "k_per_pe": 2,
                                     "acc_width": 28, "block_ram": True},
                                    {"rows": 2, "cols": 3, "a_width": 16, "k_per_pe": 2,
                                     "fabric_cols": 1, "dsp_input_reg": "on"}],
                         ids=["2x3", "3x2-raw", "2x2-a16-out16", "2x2-a16-raw-k2", "2x3-fabric1",
                              "2x3-bram", "6x2-raw-k2-acc28-bram", "2x3-a16-k2-fabric1-dspreg"])
def test_cocotb_ecp5_primitives(params, simulator, tmp_path):
    """The Verilog written for ECP5 (MULT18X18D instances with their pipeline registers, and
    with ``block_ram`` DP16KD instances read through their output register, run on the
    behavioural models in sim/models) passes the same regression as the generic one."""
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
    # int16 activations: still one DSP per PE, plus one per column for the offset.
    wide = GemmCore(rows=2, cols=3, requantize=False, a_width=16)
    assert convert(wide, "gemm", primitives="ecp5").count("MULT18X18D ") == 6 + 3
    # Dot-product PEs: k_per_pe DSPs each (and per offset cell).
    dot = GemmCore(rows=2, cols=3, requantize=False, k_per_pe=4)
    assert convert(dot, "gemm", primitives="ecp5").count("MULT18X18D ") == 6 * 4
    wide_dot = GemmCore(rows=2, cols=3, requantize=False, a_width=16, k_per_pe=2)
    assert convert(wide_dot, "gemm", primitives="ecp5").count("MULT18X18D ") == (6 + 3) * 2


def test_block_ram_memories_are_dp16kd_read_through_their_output_register():
    """With block_ram the row memories (one per column, acc_width bits) and the tile memory
    (raw: cols x 32 bias bits) are DP16KDs of 18 bits each on ECP5, read through REGMODE_B
    OUTREG; the latency grows by that register; the fit check counts the same blocks."""
    from fpga.fit import estimate
    from fpga.targets import get_target
    from gen.blocks import get_block
    from gen.config import validate_params
    from gen.verilog import convert
    params = {"rows": 2, "cols": 3, "requantize": False, "acc_width": 28}
    core = GemmCore(**params, block_ram=True)
    blocks = 3 * -(-28 // 18) + -(-3 * 32 // 18)                 # 3 x 2 + 6
    text = convert(core, "gemm", primitives="ecp5")
    assert text.count("DP16KD ") == blocks
    assert text.count('.REGMODE_B("OUTREG")') == blocks
    assert "DP16KD" not in convert(GemmCore(**params), "gemm", primitives="ecp5")
    assert core.latency == GemmCore(**params).latency + 1
    config = validate_params(get_block("gemm"), {**params, "block_ram": True})
    assert estimate(config, get_target("ecp5-85f")[0])["brams"] == blocks
    lut_ram = validate_params(get_block("gemm"), params)
    assert estimate(lut_ram, get_target("ecp5-85f")[0])["brams"] == 0


@pytest.mark.parametrize("kwargs", [{"rows": 2, "cols": 2},
                                    {"rows": 2, "cols": 3, "requantize": False,
                                     "block_ram": True}], ids=["2x2", "2x3-raw-bram"])
def test_ice40_block_ram_writes_are_not_delayed(kwargs, tmp_path):
    """On iCE40 the row and tile memories are SB_RAM40_4K written straight from the core's
    write-data registers: Yosys does not keep a read-first behaviour (which the core does not
    need: it never reads a word in the cycle it is written) by delaying each write through
    flip-flops of its own and bypassing it (two flip-flops per memory bit). The tile memory's
    write enable is a flip-flop (the parameters' beat is registered before it): from the
    handshake's logic it was the UP5K 1 x 4's critical path."""
    from fpga.tools import run_tool
    from gen.verilog import convert_rtlil
    # (As lutra build reads it: Amaranth's RTLIL.)
    (tmp_path / "top.il").write_text(convert_rtlil(GemmCore(**kwargs), "gemm",
                                                   primitives="ice40"))
    run_tool("yosys", ["-q", "-p", "read_rtlil top.il; synth_ice40 -dsp -top gemm; "
                       "write_json net.json"], cwd=tmp_path, log=tmp_path / "yosys.log")
    cells = json.loads((tmp_path / "net.json").read_text())["modules"]["gemm"]["cells"]
    readers, drivers = {}, {}
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            table = drivers if cell["port_directions"][port] == "output" else readers
            for bit in bits:
                table.setdefault(bit, []).append((name, cell["type"], port))
    # (The output FIFO, Amaranth's SyncFIFOBuffered, keeps its memory's read-first behaviour.)
    rams = [cell for name, cell in cells.items() if cell["type"] == "SB_RAM40_4K"
            and name.startswith(("tile_mem", "row_mem"))]
    assert len(rams) >= 1 + kwargs["cols"], f"{len(rams)} SB_RAM40_4K for the core's memories"
    for ram in rams:
        for bit in ram["connections"]["WDATA"]:
            if isinstance(bit, str):
                continue
            kinds = [kind for _, kind, _ in drivers.get(bit, [])]    # none: an input port
            others = [(k, p) for _, k, p in readers[bit] if k != "SB_RAM40_4K"]
            assert not (any(k.startswith("SB_DFF") for k in kinds) and others), \
                f"write data bit {bit} is a flip-flop that also feeds {others}"
    enables = [bit for name, cell in cells.items() if cell["type"] == "SB_RAM40_4K"
               and name.startswith("tile_mem") for port in ("WE", "WCLKE")
               for bit in cell["connections"][port] if not isinstance(bit, str)]
    assert enables, "the tile memory's write enable is a constant"
    for bit in enables:
        kinds = [kind for _, kind, _ in drivers.get(bit, [])]
        assert kinds and all(k.startswith("SB_DFF") for k in kinds), \
            f"tile memory write enable bit {bit} is driven by {kinds}"


def test_ice40_accumulator_sums_drive_the_accumulator_alone(tmp_path):
    """Through ``lutra build``'s synthesis for the UP5K, every bit of each PE's accumulator
    sum drives one flip-flop, the accumulator's (the result register is loaded from the
    accumulator): nextpnr-ice40 packs a LUT with a flip-flop only when that is its one load,
    and with the result register loaded from the sum too both sat in LCs of their own, the
    routes to them the UP5K's critical paths."""
    module = build_netlist("gemm", {"rows": 2, "cols": 2}, "ice40-up5k", tmp_path)
    drivers, readers = connectivity(module)
    accs = [bit for name, net in module["netnames"].items()
            if re.fullmatch(r"block\.pe\d_\d_acc", name) for bit in net["bits"]]
    assert len(accs) == 4 * 32
    for bit in accs:
        ((ff, kind, _),) = drivers[bit]
        assert kind.startswith("SB_DFF"), kind
        (d,) = module["cells"][ff]["connections"]["D"]
        loads = [(k, port) for _, k, port in readers[d]]
        assert loads == [(kind, "D")], f"accumulator bit {bit}'s sum also feeds {loads}"


@pytest.mark.parametrize("kwargs", [{"rows": 3, "cols": 3, "dsp_input_reg": "on"},
                                    {"rows": 2, "cols": 3, "k_per_pe": 2, "a_width": 16,
                                     "requantize": False, "dsp_input_reg": "on"}],
                         ids=["3x3", "2x3-k2-a16-raw"])
def test_ecp5_pe_dsp_operands_come_from_registers_of_their_own(kwargs, tmp_path):
    """With ``dsp_input_reg`` on, through ``lutra build``'s synthesis
    for the 85F every operand bit of every PE's MULT18X18D (and offset cell's) is a flip-flop
    whose only load is that DSP, so that nextpnr may place it near a DSP far from its PE: the
    12 x 12 fills the 85F's DSP sites, and its worst path was a PE's operand register (which
    also feeds the neighbouring PE) to its DSP, 6.61 ns of routing (seed 1). Yosys merges a
    register into another that holds the same value, whatever its wires' names or ``keep``."""
    params = GemmParams(**kwargs)
    module = build_netlist("gemm", kwargs, "ecp5-85f", tmp_path)
    drivers, readers = connectivity(module)
    dsps = {name: cell for name, cell in module["cells"].items()
            if cell["type"] == "MULT18X18D"
            and re.match(r"block\.(pe\d+_\d+|offset\d+)_mul", name)}
    assert len(dsps) == params.dsp_macs + params.offset_multipliers
    for name, cell in dsps.items():
        for port, bits in cell["connections"].items():
            if port[0] not in "AB" or not port[1:].isdigit():
                continue
            for bit in bits:
                if isinstance(bit, str):            # constant (the upper bits of a 16-bit a)
                    continue
                ((ff, kind, _),) = drivers[bit]
                assert kind == "TRELLIS_FF", f"{name}.{port} is driven by {kind}"
                loads = {load for load, _, _ in readers[bit]}
                assert loads == {name}, f"{name}.{port}'s flip-flop {ff} also feeds {loads}"


def test_ice40_build_synthesis_keeps_each_sb_mac16_as_written(tmp_path):
    """``lutra build``'s synthesis for the UP5K (``fpga.flow._synth_script``, ``synth_ice40
    -dsp``) leaves every SB_MAC16 of the core as the Verilog writes it: Yosys' ice40_dsp pass
    used to rewrite them (operand, pipeline and product registers off, clock tied low, the
    accumulator's adder pulled in), so the netlist placed and timed computed something else."""
    from fpga.flow import _synth_script, build_primitives
    from fpga.ooc import OOC_TOP, OocWrapper
    from fpga.targets import DEVICES
    from fpga.tools import run_tool
    from gen.blocks import get_block
    from gen.config import build_component, validate_params
    from gen.verilog import convert, convert_rtlil, manifest
    device = DEVICES["ice40-up5k"]
    config = validate_params(get_block("gemm"), {"rows": 1, "cols": 2})
    core = build_component(config)
    primitives = build_primitives(device, False)
    written = convert(core, "blk", primitives=primitives)
    (tmp_path / "blk.il").write_text(convert_rtlil(core, "blk", primitives=primitives))
    wrapper = OocWrapper(module="blk", ports=manifest(config, core, primitives=primitives)["ports"])
    (tmp_path / f"{OOC_TOP}.v").write_text(convert(wrapper, OOC_TOP))
    (tmp_path / "synth.ys").write_text(_synth_script("blk", device, False))
    run_tool("yosys", ["-q", "synth.ys"], cwd=tmp_path, log=tmp_path / "yosys.log")
    cells = [cell for module in json.loads((tmp_path / "synth.json").read_text())["modules"]
             .values() for cell in module["cells"].values() if cell["type"] == "SB_MAC16"]
    assert len(cells) == written.count("SB_MAC16 #(") == 2 + 4
    for cell in cells:
        params = {k: int(v, 2) for k, v in cell["parameters"].items()}
        assert (params["A_REG"], params["B_REG"], params["PIPELINE_16x16_MULT_REG1"],
                params["PIPELINE_16x16_MULT_REG2"], params["TOPOUTPUT_SELECT"],
                params["BOTOUTPUT_SELECT"], params["TOPADDSUB_UPPERINPUT"]) == \
            (1, 1, 1, 1, 3, 3, 0), params
        assert cell["connections"]["CLK"] != ["0"], "clock tied low"


@pytest.mark.cocotb
def test_bench_reports_utilization_from_rtl_cycles(tmp_path, capsys):
    from sim.bench_gemm import main as bench_main
    from sim.runner import available
    if not available():
        pytest.skip("no simulator")
    simulator = "icarus" if "icarus" in available() else available()[0]
    assert bench_main(["--arrays", "2x2", "--shape", "4x40x4", "--simulator", simulator,
                       "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (result,) = json.loads((tmp_path / "gemm_bench.json").read_text())
    # 4 tiles of K = 40 back to back: 160 input cycles plus the pipeline's fill and drain.
    assert result["useful_macs"] == 4 * 40 * 4
    assert 160 <= result["cycles"] <= 160 + result["latency_cycles"] + 4 + 2
    assert result["utilization"] == result["useful_macs"] / (4 * result["cycles"])
    assert f"{100 * result['utilization']:.2f}%" in out


# ---- structure: no combinational net fans out across the array --------------------------------

#: Most flip-flop bits one combinational net may reach before a register stage, whatever the
#: array size: a PE's accumulator and result (2 x 32). (Before 2026-11-30 the row read-out's
#: select reached 32 bits per column, and the output sequencer's pop the whole row register.)
MAX_COMB_FANOUT = 64


def comb_fanout(verilog: str, top: str, tmp_path, *, registers: bool = False) -> dict[str, int]:
    """For every net driven by logic (not by a flip-flop, a memory or a top-level port other than
    ``clk``/``rst``), or with ``registers`` every flip-flop output instead, the number of
    flip-flop bits whose data, enable or reset it reaches through combinational cells only,
    from Yosys' coarse netlist (``proc; flatten; opt``, so
    equal logic is shared as synthesis shares it; no technology mapping, so the count does not depend on a vendor's LUT packing). A memory port
    counts as one register: a block RAM or LUT RAM has one enable per port."""
    from fpga.tools import run_tool
    (tmp_path / "top.v").write_text(verilog)
    run_tool("yosys", ["-q", "-p", f"read_verilog top.v; hierarchy -top {top}; proc; flatten; "
                       "opt -fast; write_json net.json"], cwd=tmp_path, log=tmp_path / "yosys.log")
    module = json.loads((tmp_path / "net.json").read_text())["modules"][top]
    sinks, outputs = {}, {}     # bit -> list of (cell, output bits) / flip-flop bits reached
    names = {}
    for name, net in module["netnames"].items():
        for bit in net["bits"]:
            names.setdefault(bit, name)
    regs, q_bits = {}, set()
    for cell_name, cell in module["cells"].items():
        ins = [bit for port, bits in cell["connections"].items()
               if cell["port_directions"][port] == "input" for bit in bits]
        outs = [bit for port, bits in cell["connections"].items()
                if cell["port_directions"][port] == "output" for bit in bits]
        if cell["type"].startswith("$mem"):
            for bit in ins:
                regs.setdefault(bit, set()).add((cell_name, 0))
        elif "dff" in cell["type"]:
            q_bits.update(bit for bit in cell["connections"]["Q"] if isinstance(bit, int))
            # A data bit reaches its own flip-flop; an enable or reset reaches all of them.
            width = len(cell["connections"]["Q"])
            for port, bits in cell["connections"].items():
                if cell["port_directions"][port] != "input" or port == "CLK":
                    continue
                for index, bit in enumerate(bits):
                    ffs = [index] if port == "D" else range(width)
                    regs.setdefault(bit, set()).update((cell_name, n) for n in ffs)
        else:
            for bit in ins:
                sinks.setdefault(bit, []).append(cell_name)
            outputs[cell_name] = outs
    reached: dict = {}

    def reach(bit):             # the logic is acyclic: memoised depth-first search
        if bit not in reached:
            found = set(regs.get(bit, ()))
            for cell in sinks.get(bit, ()):
                for out in outputs[cell]:
                    found |= reach(out)
            reached[bit] = found
        return reached[bit]

    if registers:
        sources = q_bits
    else:
        sources = {bit for outs in outputs.values() for bit in outs if isinstance(bit, int)}
        sources |= {bit for name, port in module["ports"].items() if port["direction"] == "input"
                    and name not in ("clk", "rst") for bit in port["bits"]}
    return {f"{names.get(bit, '?')} (bit {bit})": len(reach(bit))
            for bit in sorted(sources, key=str)}


@pytest.mark.parametrize("kwargs", [{"rows": 8, "cols": 8}, {"rows": 8, "cols": 8,
                                                             "requantize": False},
                                    {"rows": 4, "cols": 6, "out_lanes": 2, "a_width": 16},
                                    {"rows": 4, "cols": 4, "requantize": False, "k_per_pe": 4},
                                    {"rows": 4, "cols": 4, "fabric_cols": 2}],
                         ids=["8x8", "8x8-raw", "4x6-a16", "4x4-raw-k4", "4x4-fabric2"])
def test_no_combinational_net_fans_out_across_the_array(kwargs, tmp_path):
    """Control that reaches every row or column (tile start and end, parameter loads, the
    read-out) passes through registers: no net driven by logic, and no input port, reaches more
    than ``MAX_COMB_FANOUT`` flip-flop bits before a register, for an array of any size."""
    from gen.verilog import convert
    fanout = comb_fanout(convert(GemmCore(**kwargs), "gemm"), "gemm", tmp_path)
    worst = sorted(fanout.items(), key=lambda item: -item[1])[:5]
    assert worst[0][1] <= MAX_COMB_FANOUT, f"nets reaching most flip-flop bits: {worst}"


#: Most flip-flop bits one flip-flop may reach through logic in a requantized array, whatever its
#: size: one column of the output shifter (its acc, bias, multiplier and shift: 102 bits), or
#: a_offset into each row's edge adder (10 bits a row). (At 7635736, 8 x 8: the shifter's load
#: reached 888 bits, and the accumulator clear of an anti-diagonal's PEs, merged into one
#: register, 512; 768 at 12 x 12.)
MAX_REGISTER_FANOUT = 128


def test_no_register_fans_out_across_the_array(tmp_path):
    """Control registers that reach the whole array are replicated: one copy of the shifter's
    load per column, the PEs' flags one set per PE (not merged per anti-diagonal)."""
    from gen.verilog import convert
    fanout = comb_fanout(convert(GemmCore(rows=8, cols=8), "gemm"), "gemm", tmp_path,
                         registers=True)
    worst = sorted(fanout.items(), key=lambda item: -item[1])[:5]
    assert worst[0][1] <= MAX_REGISTER_FANOUT, f"registers reaching most flip-flop bits: {worst}"


def coarse_netlist(verilog: str, top: str, tmp_path) -> dict:
    """``top`` of Yosys' coarse netlist of ``verilog`` (``proc; flatten; opt -fast``), with
    every bit's drivers and readers: ``{"cells", "ports", "drivers", "readers"}``, where a
    driver or reader is ``(cell name, cell type, port)``."""
    from fpga.tools import run_tool
    (tmp_path / "top.v").write_text(verilog)
    from sim.runner import PRIMITIVE_MODELS
    (ccu2c,) = (path for path in PRIMITIVE_MODELS["ecp5"] if path.stem == "CCU2C")
    # Copied beside top.v: YoWASP's Yosys may not see absolute paths (a clone under /tmp).
    (tmp_path / ccu2c.name).write_text(ccu2c.read_text())
    run_tool("yosys", ["-q", "-p", f"read_verilog -lib +/ecp5/cells_bb.v; "
                       f"read_verilog -lib {ccu2c.name}; read_verilog top.v; "
                       f"hierarchy -top {top}; proc; flatten; opt -fast; write_json net.json"],
             cwd=tmp_path, log=tmp_path / "yosys.log")
    module = json.loads((tmp_path / "net.json").read_text())["modules"][top]
    drivers, readers = connectivity(module)
    return {"cells": module["cells"], "ports": module["ports"], "drivers": drivers,
            "readers": readers}


def test_ecp5_accumulator_sums_drive_the_accumulator_alone(tmp_path):
    """On ECP5 each PE's accumulator is one chain of CCU2C (its restart at a tile's first
    product in their LUTs), and every sum bit drives one flip-flop, the accumulator's: nextpnr
    then packs each beside its CCU2C half (a sum that also loads the result register is packed
    with one of the two or neither, and the 12 x 12's accumulators were placed away from their
    chains)."""
    from gen.verilog import convert
    core = GemmCore(rows=2, cols=3, acc_width=27)
    net = coarse_netlist(convert(core, "gemm", primitives="ecp5"), "gemm", tmp_path)
    chains = [cell for cell in net["cells"].values() if cell["type"] == "CCU2C"]
    assert len(chains) == 6 * 14
    sums = [bit for cell in chains for port in ("S0", "S1")
            for bit in cell["connections"][port]]
    used = [bit for bit in sums if bit in net["readers"]]
    assert len(used) == 6 * 27
    for bit in used:
        kinds = [kind for _, kind, _ in net["readers"][bit]]
        assert len(kinds) == 1 and "dff" in kinds[0], f"sum bit {bit} read by {kinds}"
    # Nothing in front of the chain: the accumulator and the product come straight from
    # flip-flops (the upper halves' product bits repeat its sign bit; bits past 27 are 0).
    for cell in chains:
        for port in ("A0", "A1", "B0", "B1", "C0", "C1"):
            for bit in cell["connections"][port]:
                if isinstance(bit, str):
                    continue
                kinds = {kind for _, kind, _ in net["drivers"][bit]}
                assert kinds and all("dff" in kind for kind in kinds), f"{port}: {kinds}"


def test_dsps_have_registers_on_both_sides():
    """Every MULT18X18D of the requantized core (PEs and the requantizer's partial products,
    ``far_dsps``) takes its operands straight from flip-flops and gives its product straight to
    flip-flops: the DSP may be placed anywhere (the 12 x 12 fills the 85F's DSP sites) and the
    routes to and from it have a cycle each."""
    import tempfile
    from pathlib import Path
    from gen.verilog import convert
    core = GemmCore(rows=2, cols=3)
    with tempfile.TemporaryDirectory() as tmp:
        net = coarse_netlist(convert(core, "gemm", primitives="ecp5"), "gemm", Path(tmp))
    dsps = [(name, cell) for name, cell in net["cells"].items() if cell["type"] == "MULT18X18D"]
    assert len(dsps) == core.multipliers == 6 + 4
    for name, cell in dsps:
        for port, bits in cell["connections"].items():
            if port[0] not in "ABP" or not port[1:].isdigit():
                continue
            for bit in bits:
                if isinstance(bit, str):            # constant (sign extension of A and B)
                    continue
                ends = (net["readers"].get(bit, []) if port[0] == "P"
                        else net["drivers"].get(bit, []))
                kinds = {kind for _, kind, _ in ends}
                # (A and B bits may repeat one flip-flop's sign bit; P bits may be unused.)
                assert all("dff" in kind for kind in kinds), f"{name}.{port}: {kinds}"


def test_input_handshake_is_one_lut_deep():
    """``i.ready`` and ``params.ready`` depend on flip-flops and on ``i.valid``, ``i.last``
    and ``params.valid`` only, with no arithmetic in between (the parameter load from the
    handshake was the requantized 4x4's critical path on ECP5)."""
    import tempfile
    from pathlib import Path
    from gen.verilog import convert
    core = GemmCore(rows=4, cols=4)
    with tempfile.TemporaryDirectory() as tmp:
        net = coarse_netlist(convert(core, "gemm"), "gemm", Path(tmp))
    ports = net["ports"]
    last_bit = ports["i__payload"]["bits"][-1]      # KSlice: a, b, then last
    allowed = {ports["i__valid"]["bits"][0], last_bit, ports["params__valid"]["bits"][0]}
    for output in ("i__ready", "params__ready"):
        seen, todo, cells = set(), list(ports[output]["bits"]), set()
        while todo:
            bit = todo.pop()
            if bit in seen or isinstance(bit, str):
                continue
            seen.add(bit)
            for name, kind, _ in net["drivers"].get(bit, []):
                if "dff" in kind:
                    continue
                assert kind in ("$and", "$or", "$not", "$mux", "$logic_not", "$reduce_and",
                                "$reduce_or", "$logic_and", "$logic_or", "$eq", "$xor"), \
                    f"{output} goes through {kind} ({name})"
                cells.add(name)
                cell = net["cells"][name]
                todo += [b for port, bits in cell["connections"].items()
                         if cell["port_directions"][port] == "input" for b in bits]
        port_bits = {bit for name, port in ports.items() if port["direction"] == "input"
                     for bit in port["bits"]}
        assert seen & port_bits <= allowed, f"{output} depends on other input port bits"
        assert len(cells) <= 4, f"{output}: {len(cells)} cells"


@pytest.mark.parametrize("kwargs", [{"rows": 4, "cols": 4},
                                    {"rows": 6, "cols": 2, "requantize": False, "k_per_pe": 2,
                                     "acc_width": 28, "block_ram": True}],
                         ids=["4x4", "6x2-raw-k2-bram"])
def test_input_valid_and_last_reach_no_arithmetic(kwargs):
    """From ``i.valid``, ``i.last`` and ``params.valid`` to the next registers there is logic
    and selection only: the tile end counts its rows into the reservation a cycle later (the
    input through the reservation's adder was the raw 8x8 block_ram core's critical path on
    ECP5)."""
    import tempfile
    from pathlib import Path
    from gen.verilog import convert
    with tempfile.TemporaryDirectory() as tmp:
        net = coarse_netlist(convert(GemmCore(**kwargs), "gemm"), "gemm", Path(tmp))
    ports = net["ports"]
    todo = [ports["i__valid"]["bits"][0], ports["i__payload"]["bits"][-1],
            ports["params__valid"]["bits"][0]]
    seen, kinds = set(), set()
    while todo:
        bit = todo.pop()
        if bit in seen or isinstance(bit, str):
            continue
        seen.add(bit)
        for name, kind, port in net["readers"].get(bit, []):
            if "dff" in kind:
                continue
            kinds.add(kind)
            cell = net["cells"][name]
            todo += [b for out, bits in cell["connections"].items()
                     if cell["port_directions"][out] == "output" for b in bits]
    arithmetic = kinds & {"$add", "$sub", "$alu", "$lt", "$le", "$gt", "$ge", "$mul"}
    assert not arithmetic, f"the input handshake reaches {sorted(arithmetic)}"


def test_fpga_bench_array_row_summarises_seeds():
    """``python -m fpga.bench gemm --arrays ... --seeds ...``: the block's logic cells are the
    whole design's minus the wrapper's, Fmax is summarised as median (min-max) over the seeds
    and peak GOPS is two operations per MAC per clock at the median."""
    from fpga.bench import array_row, array_table
    from gen.blocks import get_block
    from gen.config import validate_params
    config = validate_params(get_block("gemm"), {"rows": 4, "cols": 4, "requantize": False})

    def report(mhz):
        return {"synth": {"block": {"lut4": 1000, "ff": 2000}, "wrapper": {"comb": 5}},
                "figures": {"macs": 16}, "clocks": [{"achieved_mhz": mhz}],
                "resources": {"lc": {"used": 1605}, "dsp": {"used": 16}}}

    row = array_row(config, [report(150.0), report(100.0), report(160.0)], [1, 2, 3])
    assert (row["cells"], row["cells_per_mac"], row["ff_per_mac"]) == (1600, 100.0, 125.0)
    assert (row["fmax_median"], row["peak_gops"]) == (150.0, 2 * 16 * 150.0 / 1000)
    assert row["config"] == "rows=4 cols=4 requantize=False"
    assert "| rows=4 cols=4 requantize=False | 16 | 16 | 1,000 | 2,000 | 1,600 (100.0) | " \
           "125.0 | 150.0 (100.0-160.0) | 1,2,3 | 4.8 |" in array_table([row])


# ---- the fabric multiplier (PEs of the fabric_cols columns) ------------------------------------


def test_fabric_multiplier_init_wrong():
    with pytest.raises(ValueError) as info:
        FabricMultiplier(a_width=1, b_width=8)
    assert str(info.value) == "a_width must be in [2, 32], not 1"
    with pytest.raises(TypeError) as info:
        FabricMultiplier(a_width=10, b_width="8")
    assert str(info.value) == "b_width must be an integer, not '8'"
    mul = FabricMultiplier(a_width=10, b_width=8)
    assert (mul.a_width, mul.b_width, mul.latency, mul.digits) == (10, 8, 2, 4)
    assert mul.p.shape() == signed(18)


class _Multipliers(wiring.Component):
    """``lanes`` fabric multipliers side by side, so that one simulation checks many products
    per clock; their common enable is ``en``."""

    def __init__(self, a_width: int, b_width: int, lanes: int):
        self._muls = [FabricMultiplier(a_width=a_width, b_width=b_width) for _ in range(lanes)]
        super().__init__({"a": In(data.ArrayLayout(signed(a_width), lanes)),
                          "b": In(data.ArrayLayout(signed(b_width), lanes)),
                          "en": In(1),
                          "p": Out(data.ArrayLayout(signed(a_width + b_width), lanes))})

    def elaborate(self, platform):
        m = Module()
        for n, mul in enumerate(self._muls):
            m.submodules[f"mul{n}"] = mul
            m.d.comb += [mul.a.eq(self.a[n]), mul.b.eq(self.b[n]), mul.en.eq(self.en),
                         self.p[n].eq(mul.p)]
        return m


def check_fabric_products(a_width: int, b_width: int, pairs, *, lanes: int = 8,
                          enable=None) -> None:
    """Every ``(a, b)`` of ``pairs`` through fabric multipliers in the Amaranth simulator,
    ``lanes`` at a time, against Python's ``*``: the product of the operands presented at the
    n-th enabled clock is on ``p`` after the (n + 2)-th. ``enable(cycle)`` gives the clock
    enable of each cycle (default: always)."""
    dut = _Multipliers(a_width, b_width, lanes)
    groups = [pairs[n:n + lanes] for n in range(0, len(pairs), lanes)]
    groups[-1] = groups[-1] + [(0, 0)] * (lanes - len(groups[-1]))
    checked = []

    async def bench(ctx):
        pipeline = []       # products of the operands taken by enabled clocks, oldest first
        cycle = 0
        for group in groups + [[(0, 0)] * lanes] * 2:
            while True:
                en = 1 if enable is None else enable(cycle)
                cycle += 1
                ctx.set(dut.a, [a for a, _ in group])
                ctx.set(dut.b, [b for _, b in group])
                ctx.set(dut.en, en)
                await ctx.tick()
                if en:
                    pipeline.append([a * b for a, b in group])
                if len(pipeline) >= 2:
                    want = pipeline[-2]
                    got = list(ctx.get(dut.p))
                    assert got == want, f"cycle {cycle}: {got} != {want}"
                    if en:
                        checked.append(want)
                if en:
                    break

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(checked) == len(groups) + 1


def test_fabric_multiplier_is_exact_for_every_pe_operand():
    """Exhaustive over the int8 PE's operands: every 10-bit ``a + a_offset`` (the int8
    activations with every offset, [-384, 382], and more; every int8 among them) times every
    int8 weight."""
    pairs = [(a, b) for a in range(-512, 512) for b in range(-128, 128)]
    check_fabric_products(10, 8, pairs, lanes=32)


@pytest.mark.parametrize("a_width, b_width", [(3, 5), (5, 3), (2, 2), (4, 7)])
def test_fabric_multiplier_is_exact_for_other_widths(a_width, b_width):
    """Exhaustive for small operands, among them odd weight widths (a lone last Booth
    digit). (Every int8 x int8 pair is among the 10 x 8 ones above.)"""
    pairs = [(a, b) for a in range(-(1 << a_width - 1), 1 << a_width - 1)
             for b in range(-(1 << b_width - 1), 1 << b_width - 1)]
    check_fabric_products(a_width, b_width, pairs, lanes=32)


def test_fabric_multiplier_int16_random_with_stalls():
    """int16 activations (16 x 8): the extremes and random operands, with the clock enable low
    on random cycles (nothing moves then)."""
    rng = np.random.default_rng(16)
    extremes = [(a, b) for a in (-32768, -32767, -1, 0, 1, 32767) for b in (-128, -1, 0, 1, 127)]
    pairs = extremes + [(int(a), int(b)) for a, b in zip(rng.integers(-32768, 32768, 20000),
                                                         rng.integers(-128, 128, 20000))]
    stalls = rng.random(10000) < 0.3
    check_fabric_products(16, 8, pairs, lanes=16, enable=lambda n: not stalls[n % len(stalls)])


def test_fabric_pes_synthesize_without_dsps(tmp_path):
    """``synth_ecp5`` maps every ``*`` it sees onto a MULT18X18D: in the generic Verilog of a
    2 x 2 array with one fabric column only the other column's two PEs may get one, and the
    fabric multiplier alone gets none (it is all LUT4 and carry cells)."""
    from amaranth.back import verilog
    from fpga.tools import run_tool
    from gen.verilog import convert

    def cells(text: str, top: str) -> dict:
        (tmp_path / f"{top}.v").write_text(text)
        run_tool("yosys", ["-q", "-p", f"read_verilog {top}.v; synth_ecp5 -top {top}; "
                           f"tee -q -o {top}.json stat -json"], cwd=tmp_path,
                 log=tmp_path / f"{top}.log")
        return json.loads((tmp_path / f"{top}.json").read_text())["design"]["num_cells_by_type"]

    core = GemmCore(rows=2, cols=2, requantize=False, fabric_cols=1)
    assert cells(convert(core, "gemm"), "gemm").get("MULT18X18D", 0) == 2
    alone = cells(verilog.convert(FabricMultiplier(a_width=10, b_width=8), name="mul"), "mul")
    assert "MULT18X18D" not in alone and alone["LUT4"] > 0 and alone["CCU2C"] > 0
