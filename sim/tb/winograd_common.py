"""What the Winograd unit's and the feature-map block's cocotb testbenches share.

Both blocks take per-pass ``params`` and ``weights`` streams, an input stream ``i`` and give an
output stream ``o``, configured from the same manifest keys; only what goes into ``i`` and how
``o`` is put back together differ.
"""

from __future__ import annotations

import cocotb
import numpy as np

from sim.cocotb_streams import StreamSink, StreamSource, load_manifest, start_clock_reset
from sim.golden.winograd import parse_tap_shifts
from sim.stalls import Stalls
from sim.winograd_driver import ConvProblem

__all__ = ["WinogradTB"]


class WinogradTB:
    """Owns the clock, reset and the four stream drivers (random stalls on each)."""

    def __init__(self, dut, *, stall_prob: float, seed: int):
        self.dut = dut
        self.manifest = load_manifest()
        cfg = self.manifest["config"]
        self.config = cfg
        self.m, self.mode = cfg["m"], cfg["mode"]
        n = self.m + 2
        self.in_channels = cfg["in_channels"]
        self.taps = cfg["taps_per_clock"] or n * n
        self.requantize = cfg["requantize"]
        self.shifts = parse_tap_shifts(cfg["tap_shifts"], self.m) if self.mode == "tapwise" \
            else None
        self.figures = self.manifest["figures"]
        self.params = StreamSource(dut, self.manifest, "params", Stalls(stall_prob, 4, seed))
        self.weights = StreamSource(dut, self.manifest, "weights",
                                    Stalls(stall_prob, 4, seed + 1))
        self.source = StreamSource(dut, self.manifest, "i", Stalls(stall_prob, 4, seed + 2))
        self.out = StreamSink(dut, self.manifest, "o", Stalls(stall_prob, 4, seed + 3))

    async def start(self):
        await start_clock_reset(self.dut)

    async def stream_passes(self, passes, count: int, idle_cycles: int) -> list:
        """Send every pass's params, weights and input beats; return ``count`` output beats,
        then check that nothing more comes out for ``idle_cycles``."""
        async def params_and_weights():
            for ps in passes:
                await self.params.send(ps.params)
                await self.weights.send_all(ps.weights)

        feed = cocotb.start_soon(params_and_weights())
        inputs = cocotb.start_soon(self.source.send_all(b for ps in passes for b in ps.tiles))
        beats = [await self.out.recv() for _ in range(count)]
        await feed
        await inputs
        await self.out.expect_idle(idle_cycles)
        return beats

    def expected(self, problem: ConvProblem) -> np.ndarray:
        return problem.expected(m=self.m, mode=self.mode, requantize=self.requantize,
                                tap_shifts=self.shifts)
