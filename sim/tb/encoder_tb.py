"""cocotb regression of the generated encoder accelerator against the integer encoder
specification (``sim.golden.encoder.forward``), every stage boundary through the debug stream.

The configuration comes from the manifest (``LUTRA_MANIFEST``): the model is rebuilt from it
as ``lutra generate`` built it (``gen.blocks.encoder.encoder_model``), its weight image laid
out for the array (``sim.encoder_image.build_image``) and served behind the read port with
random latency and gaps. ``LUTRA_ENCODER_LENGTHS`` (comma-separated) sets the batch's sequence lengths.
``refused_batches`` sends the batch check's refusals (``refused_lengths``) before that batch.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge, with_timeout

from hw.encoder.params import EncoderParams
from sim.cocotb_streams import StreamSink, StreamSource, load_manifest, seed, start_clock_reset
from gen.blocks.encoder import encoder_model, encoder_params
from sim.encoder_driver import compare, expected, random_batch
from sim.encoder_image import ExternalMemory, build_image, embedding_sums
from sim.stalls import Stalls


class TB:
    """Owns the clock, reset, the token and output streams and the external memory."""

    def __init__(self, dut, *, stall_prob: float, seed: int):
        self.dut = dut
        self.manifest = load_manifest()
        config = self.manifest["config"]
        self.model, self.params = encoder_model(config), encoder_params(config)
        self.memory = ExternalMemory(build_image(self.model, self.params), latency=(1, 6),
                                     gap_prob=stall_prob, seed=seed)
        m = self.manifest
        self.seq = StreamSource(dut, m, "seq", Stalls(stall_prob, 3, seed))
        self.x = StreamSource(dut, m, "x", Stalls(stall_prob, 3, seed + 1))
        self.req = StreamSink(dut, m, "req", Stalls(stall_prob, 3, seed + 2))
        self.rdata = StreamSource(dut, m, "rdata")
        self.o = StreamSink(dut, m, "o", Stalls(stall_prob, 3, seed + 3))
        self.dbg = (StreamSink(dut, m, "dbg", Stalls(stall_prob, 3, seed + 4))
                    if self.params.debug else None)
        self.err = StreamSink(dut, m, "err", Stalls(stall_prob, 3, seed + 5))
        self.cycles = 0

    async def serve(self):
        """The external memory: each request answered in order after a random latency."""
        while True:
            beat = await self.req.recv()
            for _ in range(self.memory.delay()):
                await RisingEdge(self.dut.clk)
            for word in self.memory.read(beat["addr"], beat["length"]):
                for _ in range(self.memory.gap()):
                    await RisingEdge(self.dut.clk)
                await self.rdata.send(word)

    async def count(self):
        while True:
            await RisingEdge(self.dut.clk)
            self.cycles += 1

    async def run(self, batch, refused=()) -> dict:
        await start_clock_reset(self.dut)
        cocotb.start_soon(self.serve())
        cocotb.start_soon(self.count())
        return await self.next_batch(batch, refused)

    async def next_batch(self, batch, refused=()) -> dict:
        """Stream ``batch`` in and collect its outputs (after :meth:`run` started the TB);
        before it, the batches of sequence lengths ``refused`` with distinct garbage on ``x``
        (a write of it would show on ``dbg`` or in the pooled sums)."""
        debug = []

        async def watch():
            while True:
                b = await self.dbg.recv()
                debug.append((b["tag"], b["token"], b["channel"], b["data"]))

        if self.dbg is not None:
            cocotb.start_soon(watch())

        async def send_lengths(lengths):
            for n, length in enumerate(lengths):
                await self.seq.send({"length": length, "last": int(n == len(lengths) - 1)})

        async def feed():
            for lengths in refused:
                await send_lengths(lengths)
                await self.x.send_all(12345 - v for v in range(sum(lengths) * self.params.hidden))
            await send_lengths([len(ids) for ids in batch])
            for ids in batch:
                await self.x.send_all(int(v) for v in embedding_sums(self.model, ids).ravel())

        cocotb.start_soon(feed())
        pooled, vector = [], []
        while len(pooled) < len(batch):
            beat = await self.o.recv()
            vector.append(beat["data"])
            if beat["last"]:
                pooled.append(vector)
                vector = []
        for _ in range(4):
            await RisingEdge(self.dut.clk)
        return {"debug": debug, "pooled": pooled, "cycles": self.cycles}


def batch_flags(lengths, params: EncoderParams) -> dict:
    """The ``BatchError`` flags of a batch of sequence ``lengths``, from the bounds it must
    keep: at most ``max_seqs`` sequences and ``max_tokens`` tokens, each length in
    ``[1, max_len]`` (``program`` never: the image writer's program keeps the readers' rule)."""
    return {"seqs": int(len(lengths) > params.max_seqs),
            "tokens": int(sum(lengths) > params.max_tokens),
            "length": int(any(n == 0 or n > params.max_len for n in lengths)), "program": 0}


def refused_lengths(params: EncoderParams) -> list[list[int]]:
    """Batches the check must refuse: one over each bound alone where the bounds allow it, a
    length 0, and where ``seq.length`` can carry it a length over ``max_len`` alone and in a
    batch over all three bounds."""
    S, T, L = params.max_seqs, params.max_tokens, params.max_len
    split = -(-(T + 1) // L)                    # sequences of at most L tokens summing to T + 1
    batches = [[1] * (S + 1)] if S < T else []
    batches += [[(T + 1) // split + (n < (T + 1) % split) for n in range(split)]] \
        if split <= S else []
    batches.append([0])
    if (L + 1).bit_length() == L.bit_length():  # seq.length carries max_len + 1
        batches += [[L + 1], [L + 1] + [1] * S]
    return batches


def _lengths(default: str) -> list[int]:
    return [int(n) for n in os.environ.get("LUTRA_ENCODER_LENGTHS", default).split(",")]


@cocotb.test()
async def batch_with_stalls(dut):
    """A batch of random sequences, random stalls on the token, read and output streams: every
    stage boundary, the beat counts and the pooled sums bit-exact."""
    tb = TB(dut, stall_prob=0.2, seed=seed())
    rng = np.random.default_rng(seed())
    batch = random_batch(rng, tb.model, _lengths("3,5"))
    result = await tb.run(batch)
    compare(expected(tb.model, batch), result["debug"], result["pooled"])
    dut._log.info(f"{len(batch)} sequences, {sum(map(len, batch))} tokens: "
                  f"{result['cycles']} cycles")


@cocotb.test()
async def refused_batches(dut):
    """Batches over ``max_seqs`` / ``max_tokens`` or with a length 0 or over ``max_len``, then a
    good batch, random stalls on every stream including ``err``: one ``err`` beat per refused
    batch with exactly its flags, in order; no memory write (debug beat) or ``o`` beat for
    them; the good batch bit-exact at every stage boundary; then no further beat."""
    tb = TB(dut, stall_prob=0.2, seed=seed())
    refused = refused_lengths(tb.params)
    want = [batch_flags(lengths, tb.params) for lengths in refused]
    assert {k for f in want for k, v in f.items() if v} == {"seqs", "tokens", "length"}, want
    errors = []

    async def watch_err():
        while True:
            errors.append(await tb.err.recv())

    cocotb.start_soon(watch_err())
    batch = random_batch(np.random.default_rng(seed()), tb.model, _lengths("3,5"))
    # At most 100,000 cycles: the refusals and the good batch take 10,581 ("1,1") and 14,931
    # ("3,5") with these stalls.
    result = await with_timeout(tb.run(batch, refused), 1_000_000, "ns")
    await tb.o.expect_idle(50)
    assert errors == want, f"err beats {errors} != {want}"
    compare(expected(tb.model, batch), result["debug"], result["pooled"])
    dut._log.info(f"{len(refused)} refused batches, then {len(batch)} sequences, "
                  f"{sum(map(len, batch))} tokens: {result['cycles']} cycles")


@cocotb.test(skip="LUTRA_ENCODER_RUN" not in os.environ)
async def run_batches(dut):
    """``lutra run encoder --simulator icarus``: the batches of ``LUTRA_ENCODER_RUN`` (JSON: a
    list of batches of token-id lists) one after the other, no stalls; the pooled sums and
    cycles per batch written to ``LUTRA_ENCODER_RESULT``."""
    import json
    from pathlib import Path
    batches = json.loads(Path(os.environ["LUTRA_ENCODER_RUN"]).read_text())
    tb = TB(dut, stall_prob=0.0, seed=seed())
    tb.memory.latency = (1, 1)
    results = []
    for n, batch in enumerate(batches):
        start = tb.cycles
        result = await (tb.run if n == 0 else tb.next_batch)([np.asarray(b) for b in batch])
        results.append({"cycles": result["cycles"] - start, "pooled": result["pooled"]})
    Path(os.environ["LUTRA_ENCODER_RESULT"]).write_text(json.dumps(results))
