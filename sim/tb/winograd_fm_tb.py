"""cocotb regression of the generated WinogradFeatureMap Verilog against the golden model.

The configuration comes from the manifest (``LUTRA_MANIFEST``). Whole input maps are streamed
row by row (NHWC, one value per beat, once per output channel) with random stalls on all four
streams; the output maps, the beat count and the ``last``/``end`` flags are compared exactly
with ``conv2d_winograd``.
"""

from __future__ import annotations

import cocotb
import numpy as np

from sim.cocotb_streams import check_equal, seed
from sim.tb.winograd_common import WinogradTB
from sim.winograd_driver import (
    ConvProblem, assemble_feature_map, feature_map_beats, plan_feature_map, random_problem,
)


class TB(WinogradTB):
    """The feature-map block: whole maps in, row by row; output maps out, row by row."""

    def __init__(self, dut, *, stall_prob: float, seed: int):
        super().__init__(dut, stall_prob=stall_prob, seed=seed)
        self.max_height, self.max_width = self.config["max_height"], self.config["max_width"]

    async def run(self, problem: ConvProblem) -> np.ndarray:
        passes = plan_feature_map(problem, m=self.m, mode=self.mode, taps_per_clock=self.taps,
                                  requantize=self.requantize, tap_shifts=self.shifts)
        beats = await self.stream_passes(passes, feature_map_beats(problem),
                                         self.figures["unit_latency_cycles"] + 16)
        return assemble_feature_map(beats, problem)


@cocotb.test()
async def feature_maps(dut):
    """Maps of several sizes (multiples of m and not, the largest width, a 1 x 1 output),
    both paddings, random stalls on every stream."""
    rng = np.random.default_rng(seed())
    tb = TB(dut, stall_prob=0.3, seed=seed())
    await tb.start()
    shapes = [(tb.max_height, tb.max_width, 1), (tb.m + 3, tb.max_width - 1, 0), (3, 3, 0),
              (1, 2, 1)]
    for height, width, padding in shapes:
        problem = random_problem(rng, n_img=1, chans=tb.in_channels, out_chans=2,
                                 height=height, width=width, padding=padding)
        got = await tb.run(problem)
        check_equal(got, tb.expected(problem), f"{height}x{width} padding {padding}")


@cocotb.test()
async def extreme_map(dut):
    """-128 everywhere: the largest transformed values the unit can meet, through the tiler."""
    rng = np.random.default_rng(seed() + 1)
    tb = TB(dut, stall_prob=0.2, seed=seed() + 7)
    await tb.start()
    problem = random_problem(rng, n_img=1, chans=tb.in_channels, out_chans=1,
                             height=tb.m + 2, width=tb.m + 3, padding=1, extreme=True)
    got = await tb.run(problem)
    check_equal(got, tb.expected(problem), "extreme")
