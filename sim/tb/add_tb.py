"""cocotb regression of the generated residual-adder Verilog against the golden model.

The configuration comes from the manifest (``LUTRA_MANIFEST``); plans of parameter loads and
tensors are built and checked by ``sim.add_driver``, exactly as in the Amaranth-simulator
tests. Every test compares every output, the beat count and the ``last`` flags;
``LUTRA_ADD_TENSORS`` shortens the random test.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np

from sim.add_driver import expected, from_beats, param_beat, random_params, random_tensor, \
    tensor_beats
from sim.cocotb_streams import (StreamSink, StreamSource, load_manifest, seed, start_clock_reset,
                                 watch_handshakes)
from sim.stalls import Stalls


class TB:
    """Owns the clock, reset and the three stream drivers of one adder."""

    def __init__(self, dut, *, stall_prob: float, seed: int):
        self.dut = dut
        self.manifest = load_manifest()
        cfg = self.manifest["config"]
        self.figures = self.manifest["figures"]
        self.inputs, self.lanes = cfg["inputs"], cfg["lanes"]
        self.in_width, self.out_width = cfg["in_width"], cfg["out_width"]
        self.source = StreamSource(dut, self.manifest, "i", Stalls(stall_prob, 4, seed))
        self.loader = StreamSource(dut, self.manifest, "params", Stalls(stall_prob, 4, seed + 2))
        self.sink = StreamSink(dut, self.manifest, "o", Stalls(stall_prob, 4, seed + 1))

    async def start(self):
        await start_clock_reset(self.dut)

    def random_plan(self, rng: np.random.Generator, tensors: int) -> list:
        """Tensors of every kind (lengths 1..9 beats) with a load before the first, loads
        between tensors (one of them with the extreme corners), and two tensors before any
        load."""
        n, w, ow, lanes = self.inputs, self.in_width, self.out_width, self.lanes
        plan = [("tensor", random_tensor(rng, n, 3, lanes, w, 0)),
                ("tensor", random_tensor(rng, n, 1, lanes, w, 2))]
        for t in range(tensors):
            if t % 3 == 0:
                plan.append(("load", random_params(rng, n, w, ow, extreme=t % 6 == 3)))
            plan.append(("tensor", random_tensor(rng, n, int(rng.integers(1, 10)), lanes, w,
                                                 t)))
        return plan

    async def run(self, plan) -> list[int]:
        """Send ``plan`` (loads and tensors, in order) and check every output beat."""
        async def feed():
            for kind, value in plan:
                if kind == "load":
                    await self.loader.send(param_beat(value, self.in_width))
                else:
                    await self.source.send_all(tensor_beats(value))

        count = sum(value.shape[1] for kind, value in plan if kind == "tensor")
        task = cocotb.start_soon(feed())
        beats = [await self.sink.recv() for _ in range(count)]
        await task
        await self.sink.expect_idle(self.figures["latency_cycles"] + 4)
        want = expected(plan, self.inputs, self.in_width, self.out_width)
        for t, (got, ref) in enumerate(zip(from_beats(beats, plan), want)):
            bad = np.argwhere(got != ref)
            assert bad.size == 0, (f"tensor {t}: {len(bad)} mismatches, first at (beat, lane) "
                                   f"{tuple(bad[0])}: got {got[tuple(bad[0])]} want "
                                   f"{ref[tuple(bad[0])]}")


@cocotb.test()
async def random_tensors_with_stalls(dut):
    """Random and extreme tensors, loads between them (never a reset), random stalls on i,
    params and o."""
    tb = TB(dut, stall_prob=0.3, seed=seed())
    await tb.start()
    rng = np.random.default_rng(seed())
    await tb.run(tb.random_plan(rng, int(os.environ.get("LUTRA_ADD_TENSORS", "24"))))


@cocotb.test()
async def full_rate_and_latency(dut):
    """Unstalled beats back to back: one beat per clock in and out, each output
    ``latency_cycles`` after its input."""
    tb = TB(dut, stall_prob=0.0, seed=seed() + 10)
    await tb.start()
    rng = np.random.default_rng(seed() + 10)
    n, w, lanes = tb.inputs, tb.in_width, tb.lanes
    plan = [("load", random_params(rng, n, w, tb.out_width)),
            ("tensor", random_tensor(rng, n, 40, lanes, w, 0))]
    watcher = cocotb.start_soon(watch_handshakes(dut, tb.manifest, 40))
    await tb.run(plan)
    accepted, produced = await watcher
    latencies = {o - i for i, o in zip(accepted, produced)}
    assert latencies == {tb.figures["latency_cycles"]}, (
        f"latencies {sorted(latencies)} != manifest {tb.figures['latency_cycles']}")
    assert accepted[-1] - accepted[0] == 39, f"40 beats took {accepted[-1] - accepted[0] + 1}"
