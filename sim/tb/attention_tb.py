"""cocotb regression of the generated attention scheduler Verilog against the golden schedule.

The configuration comes from the manifest (``LUTRA_MANIFEST``). Behavioural engines
(``sim.attention_driver.EngineModel``) sit on the command streams: with exact costs every
command must arrive in the golden cycle; with random engine and descriptor stalls the
invariants must hold. ``LUTRA_ATTN_COST`` sets the engines' cycles per command (default 3).
"""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from sim.attention_driver import EngineModel, Harness, check_invariants
from sim.cocotb_streams import decode, encode, load_manifest, seed, start_clock_reset
from sim.golden.attention import schedule
from sim.stalls import Stalls


def _cost() -> int:
    return int(os.environ.get("LUTRA_ATTN_COST", "3"))


class TB:
    """Owns the clock, reset, the descriptor source and one engine model per command stream."""

    def __init__(self, dut):
        self.dut = dut
        self.manifest = load_manifest()
        self.cfg = self.manifest["config"]
        self.engines = self.cfg["engines"]
        streams = self.manifest["streams"]
        self.desc_layout = streams["desc"]["layout"]
        self.cmd_layout = streams["cmd_0"]["layout"]
        self.desc_valid, self.desc_ready = dut.desc__valid, dut.desc__ready
        self.desc_payload = dut.desc__payload
        self.cmd = [(getattr(dut, f"cmd_{e}__valid"), getattr(dut, f"cmd_{e}__ready"),
                     getattr(dut, f"cmd_{e}__payload")) for e in range(self.engines)]
        self.done = [getattr(dut, f"done_{e}") for e in range(self.engines)]
        self.done_ready = [getattr(dut, f"done_ready_{e}") for e in range(self.engines)]
        self.desc_valid.value = 0
        for e in range(self.engines):
            self.cmd[e][1].value = 0
            self.done[e].value = 0

    @property
    def pattern(self) -> dict:
        return {k: self.cfg[k] for k in ("block", "window", "n_global", "causal")}

    async def start(self):
        await start_clock_reset(self.dut)

    async def run(self, lengths, *, stall_prob=0.0, desc_stall_prob=0.0, seed=0,
                  limit=100_000) -> Harness:
        """Feed ``lengths`` as descriptors (ids 0, 1, ...) until every engine is idle."""
        engines = [EngineModel(_cost(), stall_prob=stall_prob, seed=seed * 97 + e)
                   for e in range(self.engines)]
        harness = Harness(lengths, range(len(lengths)), engines,
                          Stalls(desc_stall_prob, 4, seed))
        cycle = 0
        while not harness.over:
            desc, ready, done = harness.drive(cycle)
            self.desc_valid.value = int(desc is not None)
            if desc is not None:
                self.desc_payload.value = encode(self.desc_layout, desc)
            for e in range(self.engines):
                self.cmd[e][1].value = int(ready[e])
                self.done[e].value = int(done[e])
            await ReadOnly()
            harness.observe(
                cycle, bool(self.desc_ready.value), [bool(c[0].value) for c in self.cmd],
                lambda e: decode(self.cmd_layout, int(self.cmd[e][2].value)),
                [bool(r.value) for r in self.done_ready])
            await RisingEdge(self.dut.clk)
            cycle += 1
            assert cycle < limit, f"no end after {limit} cycles"
        return harness

    def check_exact(self, harness: Harness, lengths) -> None:
        want = schedule(lengths, engines=self.engines, cost_per_pair=_cost(),
                        lookahead=self.cfg["lookahead"],
                        longest_first=self.cfg["longest_first"], **self.pattern)
        for e, (got, expected) in enumerate(zip(harness.commands(), want.engines)):
            for n, (g, w) in enumerate(zip(got, expected)):
                assert g == w, f"engine {e}, command {n}: {g} != {w}"
            assert len(got) == len(expected), f"engine {e}: {len(got)} != {len(expected)}"
        assert harness.makespan() == want.makespan, \
            f"makespan {harness.makespan()} != {want.makespan}"


def _lengths(rng: random.Random, n: int, max_len: int) -> list[int]:
    return [rng.randint(1, max_len) for _ in range(n)]


@cocotb.test()
async def exact_schedule(dut):
    """Exact-cost engines, descriptors back to back: every command in its golden cycle."""
    tb = TB(dut)
    await tb.start()
    rng = random.Random(seed())
    max_len = tb.cfg["max_len"]
    lengths = _lengths(rng, 14, max_len) + [max_len, 1]
    tb.check_exact(await tb.run(lengths), lengths)


@cocotb.test()
async def edge_batches(dut):
    """A batch of one at max_len, a single token, then a batch of ones."""
    tb = TB(dut)
    await tb.start()
    for lengths in ([tb.cfg["max_len"]], [1], [1] * 5):
        tb.check_exact(await tb.run(lengths), lengths)


@cocotb.test()
async def random_stalls(dut):
    """Engines and descriptor source stall at random: every pair once, rows whole and in key
    order, never to a busy engine, no lost descriptor (zero lengths are skipped)."""
    tb = TB(dut)
    await tb.start()
    rng = random.Random(seed() + 1)
    lengths = _lengths(rng, 16, tb.cfg["max_len"]) + [0, tb.cfg["max_len"], 0, 1]
    harness = await tb.run(lengths, stall_prob=0.4, desc_stall_prob=0.4, seed=seed())
    assert harness.sent == len(lengths)
    check_invariants(harness.engines, lengths, range(len(lengths)), **tb.pattern)
