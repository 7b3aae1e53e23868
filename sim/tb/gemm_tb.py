"""cocotb regression of the generated GEMM core Verilog against the golden model.

The design under test and its configuration come from the manifest (``LUTRA_MANIFEST``); the
tiling driver of ``sim.gemm_driver`` produces the stream beats, exactly as in the Amaranth
simulator tests. Every test compares the whole result and the beat count. The operand and
result widths (``a_width``, ``out_width``) come from the manifest too.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from sim.cocotb_streams import (
    StreamSink, StreamSource, check_equal, load_manifest, seed, start_clock_reset,
)
from sim.gemm_driver import GemmProblem, assemble, plan, random_problem
from sim.stalls import Stalls


class TB:
    """Owns the clock, reset and the three stream drivers of one GemmCore."""

    def __init__(self, dut, *, stall_prob: float, seed: int):
        self.dut = dut
        self.manifest = load_manifest()
        cfg = self.manifest["config"]
        self.rows, self.cols = cfg["rows"], cfg["cols"]
        self.lanes, self.requantize = cfg["out_lanes"], cfg["requantize"]
        self.widths = {"a_width": cfg["a_width"], "out_width": cfg["out_width"]}
        self.k_per_pe = cfg["k_per_pe"]         # k-slices per `i` beat
        self.figures = self.manifest["figures"]
        self.slices = StreamSource(dut, self.manifest, "i", Stalls(stall_prob, 4, seed))
        self.params = StreamSource(dut, self.manifest, "params", Stalls(stall_prob, 4, seed + 1))
        self.out = StreamSink(dut, self.manifest, "o", Stalls(stall_prob, 4, seed + 2))

    async def start(self):
        await start_clock_reset(self.dut)

    async def run(self, problems: list[GemmProblem]) -> list[np.ndarray]:
        """Stream every problem's tiles back to back; return each problem's result."""
        plans = [plan(p, self.rows, self.cols, self.requantize, **self.widths,
                      k_per_pe=self.k_per_pe) for p in problems]
        tiles = [t for tiles in plans for t in tiles]
        beats_total = len(tiles) * self.figures["output_beats_per_tile"]
        feed = cocotb.start_soon(self.slices.send_all(s for t in tiles for s in t.slices))
        params = cocotb.start_soon(self.params.send_all(t.params for t in tiles))
        beats = [await self.out.recv() for _ in range(beats_total)]
        await feed
        await params
        await self.out.expect_idle(self.figures["latency_cycles"] + 8)
        results, start = [], 0
        per_tile = self.figures["output_beats_per_tile"]
        for problem, tiles_of in zip(problems, plans):
            count = len(tiles_of) * per_tile
            m, _, n = problem.shape
            results.append(assemble(beats[start:start + count], (m, n), self.rows, self.cols,
                                    self.lanes))
            start += count
        return results

    def random_problem(self, rng, m: int, k: int, n: int, **kwargs) -> GemmProblem:
        """``sim.gemm_driver.random_problem`` for this core's operand and result widths."""
        return random_problem(rng, m, k, n, **self.widths, **kwargs)


@cocotb.test()
async def multi_tile_gemm(dut):
    """A whole ragged GEMM tiled onto the array, random stalls on every stream."""
    rng = np.random.default_rng(seed())
    tb = TB(dut, stall_prob=0.3, seed=seed())
    await tb.start()
    if tb.rows * tb.cols >= 16:
        m, k, n = 37, 100, 23          # the ragged example of the issue: 10 x 6 tiles on 4 x 4
    else:                              # small arrays: keep the tile count (and sim time) modest
        m, k, n = 2 * tb.rows + 1, 37, 2 * tb.cols + 1
    problem = tb.random_problem(rng, m, k, n)
    (got,) = await tb.run([problem])
    check_equal(got, problem.expected(tb.requantize), f"{m}x{k}x{n}")


@cocotb.test()
async def back_to_back_parameters(dut):
    """Single tiles with different K (including 1 and K < min_tile_cycles) and parameters."""
    rng = np.random.default_rng(seed() + 10)
    tb = TB(dut, stall_prob=0.2, seed=seed() + 10)
    await tb.start()
    ks = [1, 2, 1, tb.figures["min_tile_cycles"], 3, 17, 1, 64]
    problems = [tb.random_problem(rng, tb.rows, k, tb.cols) for k in ks]
    for k, problem, got in zip(ks, problems, await tb.run(problems)):
        check_equal(got, problem.expected(tb.requantize), f"tile with K={k}")


@cocotb.test()
async def extremes(dut):
    """Every input at its most negative over a long K, the largest offset, saturating
    requantization."""
    rng = np.random.default_rng(seed() + 20)
    tb = TB(dut, stall_prob=0.1, seed=seed() + 20)
    await tb.start()
    a_top = 1 << (tb.widths["a_width"] - 1)
    # int8: K = 600 (exact); int16: K = max_k, the longest sum that provably fits.
    k = 600 if a_top == 128 else tb.figures["max_k"]
    big = tb.random_problem(rng, tb.rows, k, tb.cols, extreme=True)
    big.a_offset = -a_top + 1                            # (a + offset) * b = (1 - 2 a_top) * -128
    clamp = tb.random_problem(rng, tb.rows, 5, tb.cols, extreme=True)
    clamp.multiplier = np.full(tb.cols, (1 << 31) - 1)   # -> saturates at act_max / act_min
    clamp.shift = np.full(tb.cols, 31)
    minimum = tb.random_problem(rng, tb.rows, 3, tb.cols)
    minimum.a = np.full_like(minimum.a, a_top - 1)
    minimum.b = np.full_like(minimum.b, -128)
    minimum.a_offset = a_top
    for what, problem, got in zip(("long K at -128", "saturating", "largest offset"),
                                  (big, clamp, minimum), await tb.run([big, clamp, minimum])):
        check_equal(got, problem.expected(tb.requantize), what)


@cocotb.test()
async def full_rate_and_latency(dut):
    """Unstalled back-to-back tiles: the input never waits, latency matches the manifest."""
    rng = np.random.default_rng(seed() + 30)
    tb = TB(dut, stall_prob=0.0, seed=seed() + 30)
    await tb.start()
    k = max(tb.figures["min_tile_cycles"], tb.figures["output_beats_per_tile"])  # beats
    problems = [tb.random_problem(rng, tb.rows, k * tb.k_per_pe, tb.cols) for _ in range(6)]
    total_slices = k * len(problems)

    accepted, first_out = [], []

    async def watch():
        cycle = 0
        while len(first_out) == 0 or len(accepted) < total_slices:
            await ReadOnly()
            if dut.i__valid.value and dut.i__ready.value:
                accepted.append(cycle)
            if dut.o__valid.value and not first_out:
                first_out.append(cycle)
            await RisingEdge(dut.clk)
            cycle += 1

    watcher = cocotb.start_soon(watch())
    results = await tb.run(problems)
    await watcher
    for n, (problem, got) in enumerate(zip(problems, results)):
        check_equal(got, problem.expected(tb.requantize), f"tile {n}")
    span = accepted[-1] - accepted[0] + 1
    assert span == total_slices, f"{total_slices} k-slices took {span} cycles (bubbles)"
    latency = first_out[0] - accepted[k - 1]
    assert latency == tb.figures["latency_cycles"], (
        f"first tile latency {latency} != manifest {tb.figures['latency_cycles']}")
