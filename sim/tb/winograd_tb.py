"""cocotb regression of the generated Winograd unit Verilog against the golden model.

The configuration comes from the manifest (``LUTRA_MANIFEST``); ``sim.winograd_driver`` tiles
whole feature maps into the unit's stream beats, exactly as in the Amaranth-simulator tests.
Each test compares the whole output feature map and the beat count.
"""

from __future__ import annotations

import cocotb
import numpy as np

from sim.cocotb_streams import check_equal, seed
from sim.golden.winograd import conv2d_direct
from sim.tb.winograd_common import WinogradTB
from sim.winograd_driver import ConvProblem, assemble, plan, random_problem


class TB(WinogradTB):
    """The Winograd unit: tiles in, output tiles out."""

    def __init__(self, dut, *, stall_prob: float, seed: int):
        super().__init__(dut, stall_prob=stall_prob, seed=seed)
        self.lanes = self.config["out_lanes"] or self.m

    async def run(self, problem: ConvProblem) -> np.ndarray:
        passes = plan(problem, m=self.m, mode=self.mode, taps_per_clock=self.taps,
                      requantize=self.requantize, tap_shifts=self.shifts)
        tile_count = sum(b["last"] for ps in passes for b in ps.tiles)
        beats = await self.stream_passes(
            passes, tile_count * self.figures["output_beats_per_tile"],
            self.figures["latency_cycles"] + 8)
        return assemble(beats, problem, m=self.m, lanes=self.lanes)


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
