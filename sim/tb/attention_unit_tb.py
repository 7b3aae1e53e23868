"""cocotb regression of the generated attention unit Verilog against
``sim.golden.encoder.attention_int``.

The configuration comes from the manifest (``LUTRA_MANIFEST``). ``test_random_batches``
streams batches of random sequences (random lengths 1..max_len, random int8 Q, K, V, random
requantization) with random stalls on every stream and checks every output word and ``last``.
``bench_batches`` (run by ``lutra bench attention_unit``) reads a job file
(``LUTRA_ATTN_UNIT_JOB``: batches of lengths, optionally their Q, K, V and the requantization)
without stalls and writes each batch's cycle counts, the per-engine request counts and read
waits, and the outputs next to it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import cocotb
import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.triggers import ReadOnly, RisingEdge

from hw.attention.engine import Quant
from sim.attention_unit_driver import (expected_context, from_words, quant_payload,
                                       random_layer, random_qkv, to_words)
from sim.cocotb_streams import (StreamSink, StreamSource, check_equal, load_manifest, seed,
                                start_clock_reset)
from sim.golden.encoder import Requant
from sim.stalls import Stalls


def pack_quant(payload: dict) -> int:
    bits = 0
    for name, field in Quant:
        bits |= (int(payload[name]) & ((1 << field.width) - 1)) << field.offset
    return bits


class TB:
    """Owns the clock, reset, the four input sources and the output sink."""

    def __init__(self, dut, stall: float = 0.0, rng_seed: int = 0):
        self.dut = dut
        self.manifest = load_manifest()
        self.cfg = SimpleNamespace(**self.manifest["config"])
        c = self.cfg
        self.hidden = c.heads * c.head_dim
        self.pattern = {"block": c.block, "window": c.window, "n_global": c.n_global,
                        "causal": c.causal}
        stalls = [Stalls(stall, 4, rng_seed * 31 + n) for n in range(5)]
        self.sources = {name: StreamSource(dut, self.manifest, name, stalls[n])
                        for n, name in enumerate(("desc", "q", "k", "v"))}
        self.sink = StreamSink(dut, self.manifest, "o", stalls[4])

    @property
    def cycle(self) -> int:
        """Clock cycles since time 0 (10 ns clock)."""
        return round(get_sim_time("ns")) // 10

    async def start(self, layer) -> None:
        self.dut.quant.value = pack_quant(quant_payload(layer))
        await start_clock_reset(self.dut)

    async def send(self, batch) -> None:
        """Offer one batch (``[(q, k, v), ...]``) on all input streams at once."""
        lengths = [len(x[0]) for x in batch]
        tasks = [cocotb.start_soon(self.sources["desc"].send_all(
            [{"length": n, "last": int(i == len(lengths) - 1)} for i, n in enumerate(lengths)]))]
        for index, name in enumerate(("q", "k", "v")):
            words = [w for x in batch for w in to_words(x[index], self.cfg.block)]
            tasks.append(cocotb.start_soon(self.sources[name].send_all(words)))
        for task in tasks:
            await task

    async def receive(self, tokens: int) -> np.ndarray:
        n_words = tokens * self.hidden // self.cfg.block
        words = []
        for n in range(n_words):
            beat = await self.sink.recv()
            assert beat["last"] == int(n == n_words - 1), f"word {n}: last {beat['last']}"
            words.append(beat["data"])
        return from_words(words, tokens, self.hidden)


def _random_batch(rng: np.random.Generator, cfg) -> list[int]:
    lengths, total = [], 0
    while len(lengths) < cfg.max_seqs:
        n = int(rng.integers(1, cfg.max_len + 1))
        if total + n > cfg.max_tokens:
            break
        lengths.append(n)
        total += n
    return lengths or [1]


@cocotb.test()
async def test_random_batches(dut):
    """Random batches with random stalls on every stream, bit-exact, ``last`` on the end."""
    rng = np.random.default_rng(seed())
    tb = TB(dut, stall=0.3, rng_seed=seed())
    cfg = tb.cfg
    layer = random_layer(rng, cfg.head_dim, softmax_scale=cfg.softmax_scale)
    await tb.start(layer)
    batches = [[cfg.max_len], [1]]
    batches += [_random_batch(rng, cfg)
                for _ in range(int(os.environ.get("LUTRA_ATTN_UNIT_BATCHES", "2")))]
    for n, lengths in enumerate(batches):
        batch = [random_qkv(rng, t, tb.hidden) for t in lengths]
        want = np.concatenate([expected_context(q, k, v, layer, heads=cfg.heads,
                                                softmax=cfg.softmax, pattern=tb.pattern)
                               for q, k, v in batch])
        sender = cocotb.start_soon(tb.send(batch))
        got = await tb.receive(sum(lengths))
        await sender
        check_equal(got, want, f"batch {n} (lengths {lengths})")
        dut._log.info(f"batch {n} (lengths {lengths}) bit-exact, cycle {tb.cycle}")
    await tb.sink.expect_idle(20)


#: What an engine does in a cycle (``bench_batches`` with ``probe``), summed over engines.
BREAKDOWN = ("mac", "core_busy", "scores_wait", "pv_wait", "no_row")


def _engine_cycle(valid: bool, ready: bool, tile_pv: bool, started: bool, back_busy: bool):
    """The :data:`BREAKDOWN` class of one engine cycle: a k-slice entered its GEMM core
    (``mac``); one was offered and not taken (``core_busy``: draining results, or no tile
    announced yet); none was ready, for a score tile (``scores_wait``: Q/K fetch, commands) or
    for P.V (``pv_wait``: the softmax's probabilities, V; also while only the back row is
    held); the engine holds no row (``no_row``)."""
    if valid and ready:
        return "mac"
    if valid:
        return "core_busy"
    if not (started or back_busy):
        return "no_row"
    return "pv_wait" if tile_pv or not started else "scores_wait"


def _signal(dut, path: str):
    obj = dut
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@cocotb.test(skip="LUTRA_ATTN_UNIT_JOB" not in os.environ)
async def bench_batches(dut):
    """Cycle counts of the batches of a job file (no stalls); outputs written beside it."""
    job_path = Path(os.environ["LUTRA_ATTN_UNIT_JOB"])
    job = json.loads(job_path.read_text())
    tb = TB(dut)
    cfg = tb.cfg
    rng = np.random.default_rng(job.get("seed", 0))
    if "quant" in job:
        q = job["quant"]
        layer = SimpleNamespace(
            scores=Requant(np.int64(q["scores_multiplier"]), np.int64(q["scores_shift"]),
                           q["scores_zero_point"]),
            softmax_scale=cfg.softmax_scale,
            context=Requant(np.int64(q["context_multiplier"]), np.int64(q["context_shift"]),
                            q["context_zero_point"]))
    else:
        layer = random_layer(rng, cfg.head_dim, softmax_scale=cfg.softmax_scale)
    await tb.start(layer)
    data = np.load(job["data"]) if "data" in job else None
    engines = cfg.engines
    # Each engine's K and V request handshake, probed inside the engine modules (Verilator
    # and Icarus expose them with cocotb's default public access). Amaranth names a port after
    # the signal that drives it: K's valid is the engine's ``k_issuing`` register.
    names = {"k": ("k_issuing", "k_req__ready"), "v": ("v_req__valid", "v_req__ready")}
    probing = job.get("probe", False)
    probes = [(e, t, _signal(dut, f"engine_{e}.{valid}"), _signal(dut, f"engine_{e}.{ready}"))
              for e in range(engines) for t, (valid, ready) in names.items()] \
        if probing else []
    # Where each engine's cycles go: its GEMM core's k-slice handshake, the kind of the tile
    # being sliced, and whether it holds a row (front row started, back row busy).
    states = [tuple(_signal(dut, f"engine_{e}.{name}") for name in
                    ("gemm.i__valid", "gemm.i__ready", "tile_pv", "started", "back_busy"))
              for e in range(engines)] if probing else []
    results = []
    for n, lengths in enumerate(job["batches"]):
        if data is not None:
            batch = [tuple(data[f"b{n}_s{s}_{t}"] for t in "qkv") for s in range(len(lengths))]
        else:
            batch = [random_qkv(rng, t, tb.hidden) for t in lengths]
        sent_at = {}

        async def send_and_mark():
            await tb.send(batch)
            sent_at["cycle"] = tb.cycle
        sender = cocotb.start_soon(send_and_mark())
        waits = {(e, name): 0 for e in range(engines) for name in ("k", "v")}
        requests = dict(waits)
        breakdown = {kind: 0 for kind in BREAKDOWN}
        if probing:
            # every cycle from the end of the load to the first output word (slow: Python
            # samples each engine's K and V request handshake)
            while True:
                await ReadOnly()
                if bool(dut.o__valid.value):
                    break
                if "cycle" in sent_at:
                    for e, name, valid, ready in probes:
                        if bool(valid.value):
                            requests[(e, name)] += 1
                            waits[(e, name)] += not bool(ready.value)
                    for signals in states:
                        breakdown[_engine_cycle(*(bool(x.value) for x in signals))] += 1
                await RisingEdge(dut.clk)
        else:
            await ReadOnly()                # values after the previous batch's last edge
            while not bool(dut.o__valid.value):
                await RisingEdge(dut.o__valid)
                await ReadOnly()
        first_out = tb.cycle
        await RisingEdge(dut.clk)           # out of the read-only phase before driving
        await sender
        got = await tb.receive(sum(lengths))
        entry = {"lengths": lengths, "compute_cycles": first_out - sent_at["cycle"],
                 "load_cycles": sent_at["cycle"] - (results[-1]["end"] if results else 0),
                 "end": tb.cycle,
                 "request_cycles": {f"{e}{name}": requests[(e, name)] for e, name in waits},
                 "wait_cycles": {f"{e}{name}": waits[(e, name)] for e, name in waits},
                 "engine_cycles": breakdown}
        if job.get("check", True):
            want = np.concatenate([expected_context(q, k, v, layer, heads=cfg.heads,
                                                    softmax=cfg.softmax, pattern=tb.pattern)
                                   for q, k, v in batch])
            entry["mismatches"] = int((got != want).sum())
        if data is not None:
            np.save(job_path.with_name(f"got_{n}.npy"), got)
        results.append(entry)
    job_path.with_name("result.json").write_text(json.dumps(results, indent=1) + "\n")
