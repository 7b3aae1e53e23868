"""cocotb regression of the generated Winograd unit Verilog against the golden model.

The configuration comes from the manifest (``LUTRA_MANIFEST``); ``sim.winograd_driver`` tiles
whole feature maps into the unit's stream beats, exactly as in the Amaranth-simulator tests.
Each test compares the whole output feature map and the beat count.
"""

from __future__ import annotations


import cocotb
import numpy as np

from sim.cocotb_streams import (
    StreamSink, StreamSource, check_equal, load_manifest, seed, start_clock_reset,
)
from sim.golden.winograd import conv2d_direct, parse_tap_shifts
from sim.stalls import Stalls
from sim.winograd_driver import ConvProblem, assemble, plan, random_problem


class TB:
    """Owns the clock, reset and the four stream drivers of one WinogradUnit."""

    def __init__(self, dut, *, stall_prob: float, seed: int):
        self.dut = dut
        self.manifest = load_manifest()
        cfg = self.manifest["config"]
        self.m, self.mode = cfg["m"], cfg["mode"]
        n = self.m + 2
        self.in_channels = cfg["in_channels"]
        self.taps = cfg["taps_per_clock"] or n * n
        self.lanes = cfg["out_lanes"] or self.m
        self.requantize = cfg["requantize"]
        self.shifts = parse_tap_shifts(cfg["tap_shifts"], self.m) if self.mode == "tapwise" \
            else None
        self.figures = self.manifest["figures"]
        self.params = StreamSource(dut, self.manifest, "params", Stalls(stall_prob, 4, seed))
        self.weights = StreamSource(dut, self.manifest, "weights",
                                    Stalls(stall_prob, 4, seed + 1))
        self.tiles = StreamSource(dut, self.manifest, "i", Stalls(stall_prob, 4, seed + 2))
        self.out = StreamSink(dut, self.manifest, "o", Stalls(stall_prob, 4, seed + 3))

    async def start(self):
        await start_clock_reset(self.dut)

    async def run(self, problem: ConvProblem) -> np.ndarray:
        passes = plan(problem, m=self.m, mode=self.mode, taps_per_clock=self.taps,
                      requantize=self.requantize, tap_shifts=self.shifts)

        async def params_and_weights():
            for ps in passes:
                await self.params.send(ps.params)
                await self.weights.send_all(ps.weights)

        tile_count = sum(b["last"] for ps in passes for b in ps.tiles)
        feed = cocotb.start_soon(params_and_weights())
        tiles = cocotb.start_soon(self.tiles.send_all(b for ps in passes for b in ps.tiles))
        beats = [await self.out.recv()
                 for _ in range(tile_count * self.figures["output_beats_per_tile"])]
        await feed
        await tiles
        await self.out.expect_idle(self.figures["latency_cycles"] + 8)
        return assemble(beats, problem, m=self.m, lanes=self.lanes)

    def expected(self, problem: ConvProblem) -> np.ndarray:
        return problem.expected(m=self.m, mode=self.mode, requantize=self.requantize,
                                tap_shifts=self.shifts)


@cocotb.test()
async def feature_map(dut):
    """A ragged multi-channel feature map, both paddings, random stalls on every stream."""
    rng = np.random.default_rng(seed())
    tb = TB(dut, stall_prob=0.3, seed=seed())
    await tb.start()
    chans = min(3, tb.in_channels)
    for padding in (1, 0):
        problem = random_problem(rng, n_img=1, chans=chans, out_chans=2, height=7, width=6,
                                 padding=padding)
        got = await tb.run(problem)
        check_equal(got, tb.expected(problem), f"padding {padding}")
        if tb.mode == "exact" and not tb.requantize:
            check_equal(got, conv2d_direct(problem.x, problem.w, padding=padding,
                                      bias=problem.bias), "exact vs direct")


@cocotb.test()
async def extreme_tiles(dut):
    """-128 everywhere: the largest transformed values the unit can meet."""
    rng = np.random.default_rng(seed() + 1)
    tb = TB(dut, stall_prob=0.2, seed=seed() + 7)
    await tb.start()
    problem = random_problem(rng, n_img=1, chans=tb.in_channels, out_chans=1,
                             height=tb.m + 2, width=tb.m + 2, padding=0, extreme=True)
    got = await tb.run(problem)
    check_equal(got, tb.expected(problem), "extreme")
