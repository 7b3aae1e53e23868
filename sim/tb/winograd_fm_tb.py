"""cocotb regression of the generated WinogradFeatureMap Verilog against the golden model.

The configuration comes from the manifest (``LUTRA_MANIFEST``). Whole input maps are streamed
row by row (NHWC, one value per beat, once per output channel) with random stalls on all four
streams; the output maps, the beat count and the ``last``/``end`` flags are compared exactly
with ``conv2d_winograd``.
"""

from __future__ import annotations

import cocotb
import numpy as np

from sim.cocotb_streams import (
    StreamSink, StreamSource, check_equal, load_manifest, seed, start_clock_reset,
)
from sim.golden.winograd import parse_tap_shifts
from sim.stalls import Stalls
from sim.winograd_driver import (
    ConvProblem, assemble_feature_map, feature_map_beats, plan_feature_map, random_problem,
)


class TB:
    """Owns the clock, reset and the four stream drivers of one WinogradFeatureMap."""

    def __init__(self, dut, *, stall_prob: float, seed: int):
        self.dut = dut
        self.manifest = load_manifest()
        cfg = self.manifest["config"]
        self.m, self.mode = cfg["m"], cfg["mode"]
        n = self.m + 2
        self.in_channels = cfg["in_channels"]
        self.taps = cfg["taps_per_clock"] or n * n
        self.requantize = cfg["requantize"]
        self.max_height, self.max_width = cfg["max_height"], cfg["max_width"]
        self.shifts = parse_tap_shifts(cfg["tap_shifts"], self.m) if self.mode == "tapwise" \
            else None
        self.figures = self.manifest["figures"]
        self.params = StreamSource(dut, self.manifest, "params", Stalls(stall_prob, 4, seed))
        self.weights = StreamSource(dut, self.manifest, "weights",
                                    Stalls(stall_prob, 4, seed + 1))
        self.pixels = StreamSource(dut, self.manifest, "i", Stalls(stall_prob, 4, seed + 2))
        self.out = StreamSink(dut, self.manifest, "o", Stalls(stall_prob, 4, seed + 3))

    async def start(self):
        await start_clock_reset(self.dut)

    async def run(self, problem: ConvProblem) -> np.ndarray:
        passes = plan_feature_map(problem, m=self.m, mode=self.mode, taps_per_clock=self.taps,
                                  requantize=self.requantize, tap_shifts=self.shifts)

        async def params_and_weights():
            for ps in passes:
                await self.params.send(ps.params)
                await self.weights.send_all(ps.weights)

        feed = cocotb.start_soon(params_and_weights())
        pixels = cocotb.start_soon(self.pixels.send_all(b for ps in passes for b in ps.tiles))
        beats = [await self.out.recv() for _ in range(feature_map_beats(problem))]
        await feed
        await pixels
        await self.out.expect_idle(self.figures["unit_latency_cycles"] + 16)
        return assemble_feature_map(beats, problem)

    def expected(self, problem: ConvProblem) -> np.ndarray:
        return problem.expected(m=self.m, mode=self.mode, requantize=self.requantize,
                                tap_shifts=self.shifts)


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
