"""cocotb regression of the generated GELU unit Verilog against the golden model.

The configuration comes from the manifest (``LUTRA_MANIFEST``); rows are cut into beats and
compared by ``sim.gelu_driver``, exactly as in the Amaranth-simulator tests. Every test compares
every output and the beat count; ``LUTRA_GELU_ROWS`` shortens the random test.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np

from sim.cocotb_streams import (StreamSink, StreamSource, load_manifest, seed, start_clock_reset,
                                 watch_handshakes)
from sim.gelu_driver import expected, from_beats, random_rows, to_beats
from sim.stalls import Stalls


class TB:
    """Owns the clock, reset and both stream drivers of one GELU unit."""

    def __init__(self, dut, *, stall_prob: float, seed: int):
        self.dut = dut
        self.manifest = load_manifest()
        self.params = self.manifest["config"]
        self.figures = self.manifest["figures"]
        self.lanes = self.params["lanes"]
        self.source = StreamSource(dut, self.manifest, "i", Stalls(stall_prob, 4, seed))
        self.sink = StreamSink(dut, self.manifest, "o", Stalls(stall_prob, 4, seed + 1))

    async def start(self):
        await start_clock_reset(self.dut)

    async def run(self, rows: list[np.ndarray]) -> list[np.ndarray]:
        """Stream ``rows`` through the unit; return the output rows (beats and flags checked)."""
        beats_in = to_beats(rows, self.lanes)
        feed = cocotb.start_soon(self.source.send_all(beats_in))
        beats = [await self.sink.recv() for _ in beats_in]
        await feed
        await self.sink.expect_idle(self.figures["latency_cycles"] + 8)
        return from_beats(beats, [len(r) for r in rows], self.lanes)

    def check(self, rows: list[np.ndarray], got: list[np.ndarray]) -> None:
        for r, (row, out, want) in enumerate(zip(rows, got, expected(self.params, rows))):
            bad = np.flatnonzero(out != want)
            assert bad.size == 0, (f"row {r}: {bad.size} mismatches, first at {bad[0]}: "
                                   f"x={row[bad[0]]} got {out[bad[0]]} want {want[bad[0]]}")


@cocotb.test()
async def random_rows_with_stalls(dut):
    """Random and extreme rows of random lengths, random stalls on both streams."""
    tb = TB(dut, stall_prob=0.3, seed=seed())
    await tb.start()
    count = int(os.environ.get("LUTRA_GELU_ROWS", "24"))
    rows = random_rows(np.random.default_rng(seed()), tb.params, count, max_len=24)
    tb.check(rows, await tb.run(rows))


@cocotb.test()
async def every_input_code(dut):
    """Every representable input (up to 4096 codes), cut into rows, no stalls."""
    tb = TB(dut, stall_prob=0.0, seed=seed() + 10)
    await tb.start()
    width, lanes = tb.params["in_width"], tb.lanes
    codes = np.arange(-(1 << (width - 1)), 1 << (width - 1))
    if codes.size > 4096:
        codes = np.random.default_rng(seed()).choice(codes, 4096, replace=False)
    row_len = lanes * max(1, min(tb.params["max_row"], 16) // lanes)
    codes = codes[:codes.size - codes.size % row_len]
    rows = list(codes.reshape(-1, row_len))
    tb.check(rows, await tb.run(rows))


@cocotb.test()
async def full_rate_and_latency(dut):
    """Unstalled rows of the longest length: the input takes a beat every ``beat_period``
    cycles, the output keeps pace, and the first latency matches the manifest."""
    tb = TB(dut, stall_prob=0.0, seed=seed() + 20)
    await tb.start()
    width, lanes = tb.params["in_width"], tb.lanes
    row_len = min(tb.params["max_row"], 8 * lanes)
    rng = np.random.default_rng(seed() + 20)
    rows = [rng.integers(-(1 << (width - 1)), 1 << (width - 1), row_len) for _ in range(6)]
    total = 6 * row_len // lanes
    watcher = cocotb.start_soon(watch_handshakes(dut, tb.manifest, total))
    got = await tb.run(rows)
    accepted, produced = await watcher
    tb.check(rows, got)
    period = tb.figures["beat_period_cycles"]
    # An iterative divider lets the pipeline ahead of it take the first beats faster.
    gap = max(b - a for a, b in zip(accepted, accepted[1:]))
    assert gap == period, f"input waited {gap} cycles between beats (period {period})"
    out_span = produced[-1] - produced[0]
    assert out_span == (total - 1) * period, f"{total} beats produced over {out_span + 1} cycles"
    first = accepted[row_len // lanes - 1] if tb.figures["row_buffer_beats"] else accepted[0]
    latency = produced[0] - first
    assert latency == tb.figures["latency_cycles"], (
        f"latency {latency} != manifest {tb.figures['latency_cycles']}")
