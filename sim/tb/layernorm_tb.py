"""cocotb regression of the generated LayerNorm Verilog against the golden model.

The configuration comes from the manifest (``LUTRA_MANIFEST``); plans of parameter loads and
rows are built and checked by ``sim.layernorm_driver``, exactly as in the Amaranth-simulator
tests. Every test compares every output, the beat count and the ``last`` flags;
``LUTRA_LAYERNORM_ROWS`` shortens the random test.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np

from sim.cocotb_streams import (StreamSink, StreamSource, load_manifest, seed, start_clock_reset,
                                 watch_handshakes)
from sim.layernorm_driver import (expected, folded_params, from_beats, minilm_embedding_rows,
                                  param_beats, random_params, random_rows, row_beats)
from sim.stalls import Stalls


class TB:
    """Owns the clock, reset and the three stream drivers of one LayerNorm block."""

    def __init__(self, dut, *, stall_prob: float, seed: int):
        self.dut = dut
        self.manifest = load_manifest()
        self.params = self.manifest["config"]
        self.figures = self.manifest["figures"]
        self.hidden = self.params["hidden"]
        self.in_width = self.params["in_width"]
        self.out_width = self.params["out_width"]
        self.source = StreamSource(dut, self.manifest, "i", Stalls(stall_prob, 4, seed))
        self.loader = StreamSource(dut, self.manifest, "params", Stalls(stall_prob, 4, seed + 2))
        self.sink = StreamSink(dut, self.manifest, "o", Stalls(stall_prob, 4, seed + 1))

    async def start(self):
        await start_clock_reset(self.dut)

    async def run(self, plan) -> None:
        """Send ``plan`` (loads and rows, in order) and check every output row."""
        async def feed():
            for kind, value in plan:
                if kind == "load":
                    await self.loader.send_all(param_beats(value))
                else:
                    await self.source.send_all(row_beats(value))

        rows = sum(len(value) for kind, value in plan if kind == "rows")
        task = cocotb.start_soon(feed())
        beats = [await self.sink.recv() for _ in range(rows * self.hidden)]
        await task
        await self.sink.expect_idle(self.figures["latency_cycles"] + 8)
        got = from_beats(beats, rows, self.hidden)
        for r, (out, want) in enumerate(zip(got, expected(plan, self.hidden, self.out_width))):
            bad = np.flatnonzero(out != want)
            assert bad.size == 0, (f"row {r}: {bad.size} mismatches, first at channel {bad[0]}: "
                                   f"got {out[bad[0]]} want {want[bad[0]]}")


@cocotb.test()
async def random_rows_with_stalls(dut):
    """Random and extreme rows, three parameter loads (one before any row, two between rows),
    random stalls on i, params and o."""
    tb = TB(dut, stall_prob=0.3, seed=seed())
    await tb.start()
    rng = np.random.default_rng(seed())
    count = int(os.environ.get("LUTRA_LAYERNORM_ROWS", "14"))
    n, w, ow = tb.hidden, tb.in_width, tb.out_width
    third = max(1, count // 3)
    plan = [("rows", random_rows(rng, n, w, 2)),            # before any load: all zeros
            ("load", random_params(rng, n, ow)), ("rows", random_rows(rng, n, w, third)),
            ("load", random_params(rng, n, ow)), ("rows", random_rows(rng, n, w, third)),
            ("load", random_params(rng, n, ow)), ("load", random_params(rng, n, ow)),
            ("rows", random_rows(rng, n, w, count - 2 * third))]
    await tb.run(plan)


@cocotb.test()
async def minilm_embeddings(dut):
    """all-MiniLM-L6-v2's embedding sums of one sentence (int16 by max-abs, down-shifted for an
    int8 input) with ``embeddings.LayerNorm``'s gamma/beta folded at the scale of its float
    output; the first ``hidden`` channels when the block is narrower than 384."""
    from sim.minilm import load_weights
    tb = TB(dut, stall_prob=0.2, seed=seed() + 30)
    await tb.start()
    q, x, _ = minilm_embedding_rows("The quick brown fox jumps over the lazy dog.")
    n = tb.hidden
    q = q[:, :n] >> (16 - tb.in_width)
    weights = load_weights()
    gamma = weights["embeddings.LayerNorm.weight"][:n]
    beta = weights["embeddings.LayerNorm.bias"][:n]
    xs = x[:, :n]
    y = (xs - xs.mean(-1, keepdims=True)) / (xs.std(-1, keepdims=True) + 1e-12) * gamma + beta
    out_scale = float(np.abs(y).max()) / ((1 << (tb.out_width - 1)) - 1)
    await tb.run([("load", folded_params(gamma, beta, out_scale=out_scale)),
                  ("rows", list(q[:6]))])


@cocotb.test()
async def full_rate_and_latency(dut):
    """Unstalled rows back to back: the first output comes ``latency_cycles`` after the first
    row's last element, and two rows take ``pair_period_cycles``."""
    tb = TB(dut, stall_prob=0.0, seed=seed() + 20)
    await tb.start()
    rng = np.random.default_rng(seed() + 20)
    n = tb.hidden
    load = random_params(rng, n, tb.out_width)
    rows = random_rows(rng, n, tb.in_width, 8)
    watcher = cocotb.start_soon(watch_handshakes(dut, tb.manifest, 8 * n))
    await tb.run([("load", load), ("rows", rows)])
    accepted, produced = await watcher
    latency = produced[0] - accepted[n - 1]
    assert latency == tb.figures["latency_cycles"], (
        f"latency {latency} != manifest {tb.figures['latency_cycles']}")
    starts = accepted[::n]
    pairs = {starts[k + 2] - starts[k] for k in range(2, len(starts) - 2)}
    assert pairs == {tb.figures["pair_period_cycles"]}, (
        f"two rows took {sorted(pairs)} cycles, manifest {tb.figures['pair_period_cycles']}")
