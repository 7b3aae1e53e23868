"""Shared pieces of the encoder accelerator's tests, testbenches and benchmark.

* :func:`tiny_model`: the tiny random encoder of the tests (2 layers, hidden 32, 2 heads,
  ffn 64, max_len 16), quantized by the specification.
* :func:`expected`: what the accelerator must produce for a batch: per debug tag the tensor of
  every token of the batch (``sim.golden.encoder.forward``'s stage boundaries) and the pooled
  sums per sequence.
* :func:`simulate`: the accelerator in the Amaranth simulator, the weight image behind its read
  port (:class:`sim.encoder_image.ExternalMemory`), random stalls on every stream.
* :func:`build_harness` / :func:`run_harness`: the generated Verilog under Verilator with a C++
  harness (``sim/tb/encoder_harness.cpp``) as the token source, the external memory and the
  output sink: ``lutra run encoder`` and the RTL benchmark, where a MiniLM layer takes millions
  of cycles.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hw.encoder.params import EMBEDDING_LN_TAG, INPUT_TAG, EncoderParams, stage_tag

from .encoder_image import ExternalMemory, Image, build_image, embedding_sums
from .golden import encoder as enc
from .stalls import Stalls

__all__ = ["MODELS", "load_model", "tiny_model", "float_weights", "expected", "simulate",
           "random_batch", "DEBUG_STAGES", "harness_exe", "build_harness", "run_harness"]

#: Stage boundaries the debug stream carries (scores and probabilities stay inside the
#: attention unit; the tests compare its context output instead).
DEBUG_STAGES = ("q", "k", "v", "context", "attn_out", "resid1", "ln1", "ffn1", "gelu",
                "ffn2", "resid2", "ln2")


@functools.cache
def tiny_model(seed: int = 0, layers: int = 2) -> enc.QuantizedEncoder:
    """The tests' tiny random encoder, calibrated on three random sequences."""
    weights = enc.random_weights(layers=layers, seed=seed)
    rng = np.random.default_rng(seed)
    return enc.quantize(weights, [rng.integers(0, 100, size=n) for n in (5, 9, 16)])


MODELS = ("tiny", "minilm")


@functools.cache
def _full_model(name: str) -> enc.QuantizedEncoder:
    if name == "tiny":
        return tiny_model()
    if name == "minilm":
        from .minilm import CALIBRATION, load_weights, token_ids
        return enc.quantize(load_weights(), [token_ids(s) for s in CALIBRATION])
    raise ValueError(f"model must be one of {', '.join(MODELS)}, not {name!r}")


@functools.cache
def load_model(name: str, layers: int = 0, max_len: int = 0) -> enc.QuantizedEncoder:
    """The quantized encoder ``name`` (``tiny`` or ``minilm``: all-MiniLM-L6-v2 calibrated on
    ``sim.minilm.CALIBRATION``); ``layers`` > 0 keeps only its first ``layers`` layers (the
    specification truncated to them); ``max_len`` > 0 lowers the longest sequence (MiniLM's
    512 positions do not fit the on-chip activations)."""
    import dataclasses
    model = _full_model(name)
    if layers:
        model = dataclasses.replace(model, layers=model.layers[:layers])
    if max_len:
        if max_len > model.max_len:
            raise ValueError(f"max_len must be at most the model's {model.max_len}, "
                             f"not {max_len!r}")
        model = dataclasses.replace(model, max_len=max_len)
    return model


def float_weights(name: str, layers: int = 0) -> dict:
    """The float weights of model ``name`` (``layers`` > 0: only the first ``layers``), for
    ``sim.golden.encoder.forward_float``."""
    if name == "tiny":
        weights = enc.random_weights(layers=2, seed=0)      # tiny_model()'s
    else:
        from .minilm import load_weights
        weights = dict(load_weights())
    if layers:
        weights = {k: v for k, v in weights.items() if not k.startswith("encoder.layer.")
                   or int(k.split(".")[2]) < layers}
    return weights


def random_batch(rng: np.random.Generator, model, lengths) -> list[np.ndarray]:
    vocab = model.embeddings.word.shape[0]
    return [rng.integers(0, vocab, size=n) for n in lengths]


def expected(model, batch) -> dict:
    """``{"tags": {tag: int array [tokens, width]}, "pooled": [per sequence]}`` for ``batch``
    (a list of token-id arrays), tokens of the batch in order."""
    outs = [enc.forward(model, ids) for ids in batch]
    tags: dict[int, list] = {INPUT_TAG: [embedding_sums(model, ids) for ids in batch],
                             EMBEDDING_LN_TAG: [o["embeddings"]["ln"] for o in outs]}
    for n in range(model.num_layers):
        for stage in DEBUG_STAGES:
            tags[stage_tag(n, stage)] = [o["layers"][n][stage] for o in outs]
    return {"tags": {t: np.concatenate(v) for t, v in tags.items()},
            "pooled": [np.asarray(o["pooled"], np.int64) for o in outs]}


def tag_name(tag: int) -> str:
    from .golden.encoder import STAGES
    if tag == INPUT_TAG:
        return "input"
    if tag == EMBEDDING_LN_TAG:
        return "embeddings.ln"
    return f"layer{tag // 16}.{STAGES[tag % 16]}"


def compare(want: dict, debug: list[tuple], pooled: list[list[int]], *,
            partial: bool = False) -> None:
    """Assert the debug beats ``(tag, token, channel, value)`` and the pooled sums equal the
    specification, beat counts included."""
    got: dict[int, dict] = {}
    for tag, token, channel, value in debug:
        cell = got.setdefault(tag, {})
        assert (token, channel) not in cell, f"{tag_name(tag)}[{token}, {channel}] written twice"
        cell[(token, channel)] = value
    if debug:
        if not partial:
            assert set(got) == set(want["tags"]), \
                f"tags {sorted(map(tag_name, got))} != {sorted(map(tag_name, want['tags']))}"
        for tag, tensor in want["tags"].items():
            if partial and tag not in got:
                continue
            cells = got[tag]
            assert len(cells) == tensor.size, \
                f"{tag_name(tag)}: {len(cells)} elements != {tensor.size}"
            for (token, channel), value in cells.items():
                assert value == tensor[token, channel], \
                    f"{tag_name(tag)}[{token}, {channel}]: {value} != {tensor[token, channel]}"
    if partial:
        return
    assert len(pooled) == len(want["pooled"]), f"{len(pooled)} sequences pooled"
    for n, (g, w) in enumerate(zip(pooled, want["pooled"])):
        assert list(g) == [int(v) for v in w], f"sequence {n}: pooled {g} != {list(w)}"


def stream_taker(port, stalls: Stalls, sink: Callable, done: Callable[[], bool]):
    """An Amaranth testbench process taking every beat of the stream ``port`` (ready held low
    for ``stalls``' cycles) into ``sink`` (as Python values) until ``done()``."""
    from .streams import to_python

    async def take(ctx):
        while not done():
            ready = stalls.cycles() == 0
            ctx.set(port.ready, ready)
            *_, valid, payload = await ctx.tick().sample(port.valid, port.payload)
            if ready and valid:
                sink(to_python(payload))
    return take


def read_port_answers(dut, memory: ExternalMemory, pending: list[tuple[int, int]],
                      done: Callable[[], bool]):
    """The external memory's side of ``dut``'s read port, as an Amaranth testbench process:
    answers the requests queued in ``pending`` (``(addr, length)``, appended by whoever takes
    ``dut.req``) in order on ``dut.rdata``, with ``memory``'s latency and gaps, until
    ``done()``."""
    async def answers(ctx):
        words: list[int] = []
        wait = 0
        while not done():
            if not words and pending:
                addr, length = pending.pop(0)
                words, wait = list(memory.read(addr, length)), memory.delay()
            offer = bool(words) and wait == 0
            ctx.set(dut.rdata.valid, offer)
            if offer:
                ctx.set(dut.rdata.payload, words[0])
            *_, ready = await ctx.tick().sample(dut.rdata.ready)
            if offer and ready:
                words.pop(0)
                wait = memory.gap()
            elif wait:
                wait -= 1
    return answers


def simulate(params: EncoderParams, model, batch, *, stall_prob: float = 0.0, seed: int = 0,
             memory: ExternalMemory | None = None, max_cycles: int = 2_000_000,
             refused: list[list[int]] = ()) -> dict:
    """Run ``batch`` through the accelerator in the Amaranth simulator; returns the debug beats,
    pooled sums, the beats of the ``err`` stream and the cycle count.

    ``refused``: the lengths of batches to send before ``batch`` that the accelerator must refuse
    (each with ``sum(lengths) x hidden`` arbitrary ``x`` beats, which it drops)."""
    from amaranth.sim import Simulator

    from hw.encoder import EncoderAccelerator

    from .streams import stream_get, stream_put

    dut = EncoderAccelerator(params)
    image = build_image(model, params)
    memory = memory or ExternalMemory(image, gap_prob=stall_prob, seed=seed,
                                      latency=(1, 6) if stall_prob else (1, 1))
    stalls = [Stalls(stall_prob, 3, seed + k) for k in range(5)]
    hidden = params.hidden
    result = {"debug": [], "pooled": [], "err": [], "cycles": 0, "done": False}
    n_out = len(batch) * hidden
    pending: list[tuple[int, int]] = []

    async def feed(ctx):
        for lengths in refused:
            for n, length in enumerate(lengths):
                await stream_put(ctx, dut.seq, {"length": length,
                                                "last": int(n == len(lengths) - 1)}, stalls[0])
            for v in range(sum(lengths) * hidden):
                await stream_put(ctx, dut.x, 12345 - v, stalls[0])
        for n, ids in enumerate(batch):
            await stream_put(ctx, dut.seq, {"length": len(ids), "last": int(n == len(batch) - 1)},
                             stalls[0])
        for ids in batch:
            for value in embedding_sums(model, ids).ravel():
                await stream_put(ctx, dut.x, int(value), stalls[0])

    # The read port's and debug stream's processes run until the last pooled sum has left.
    def done():
        return result["done"]

    requests = stream_taker(dut.req, stalls[1],
                            lambda beat: pending.append((beat["addr"], beat["length"])), done)
    debug = stream_taker(dut.dbg, stalls[2], lambda beat: result["debug"].append(
        (beat["tag"], beat["token"], beat["channel"], beat["data"])), done)
    errors = stream_taker(dut.err, stalls[4], result["err"].append, done)
    answers = read_port_answers(dut, memory, pending, done)

    async def outputs(ctx):
        vector = []
        for _ in range(n_out):
            beat = await stream_get(ctx, dut.o, stalls[3])
            vector.append(beat["data"])
            if beat["last"]:
                result["pooled"].append(vector)
                vector = []
        result["done"] = True

    async def clock(ctx):
        while not result["done"]:
            await ctx.tick()
            result["cycles"] += 1
            if result["cycles"] > max_cycles:
                raise TimeoutError(f"no result after {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_testbench(requests)
    sim.add_testbench(answers)
    sim.add_testbench(errors)
    if params.debug:
        sim.add_testbench(debug)
    sim.add_testbench(outputs)
    sim.add_testbench(clock)
    sim.run()
    result["memory"] = memory
    return result


# ---- Verilator with a C++ harness -------------------------------------------------------------

HARNESS = Path(__file__).parent / "tb" / "encoder_harness.cpp"


#: C++ optimisation of the harness, per part of Verilator's output (``verilated.mk``'s make
#: variables, given in MAKEFLAGS so they override the makefile's own): the per-cycle code
#: (OPT_FAST) at -O1; the initialisation and settle code (OPT_SLOW: run once, yet 4.4 MB of the
#: MiniLM design's 7.1 MB of C++) at -O0; Verilator's runtime library (OPT_GLOBAL) at -O1.
#: MiniLM 8 x 8 (max_len 32) on 2 cores: 25 s of CPU to build (12 s wall when idle), ~150,000
#: cycles/s; ``-CFLAGS -O1``, which also applied -O1 to the settle code, took 51 s of CPU.
HARNESS_OPT = ("OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O1")


def harness_exe(verilog: Path, build_dir: Path) -> Path:
    """Where :func:`build_harness` puts (or finds) the executable for ``verilog``: named by a
    hash of the Verilog, the harness source and the build flags."""
    digest = hashlib.sha256(Path(verilog).read_bytes() + HARNESS.read_bytes()
                            + " ".join(HARNESS_OPT).encode()).hexdigest()[:16]
    return Path(build_dir) / f"harness-{digest}"


def build_harness(verilog: Path, top: str, build_dir: Path) -> Path:
    """Verilate ``verilog`` (top module ``top``) with the C++ harness into ``build_dir``; an
    executable built from the same Verilog, harness and flags is reused. Returns its path.
    ``build_dir`` must not contain ``=`` (make takes it for an assignment)."""
    from .runner import VERILATOR_MAKE_FIX, VERILATOR_WAIVERS, verilator_bin

    exe = harness_exe(verilog, build_dir)
    if exe.exists():
        return exe
    obj = exe.with_name(exe.name.replace("harness-", "obj-"))
    env = dict(os.environ, PATH=f"{verilator_bin()}{os.pathsep}{os.environ['PATH']}",
               MAKEFLAGS=" ".join(filter(None, [os.environ.get("MAKEFLAGS"),
                                                VERILATOR_MAKE_FIX, *HARNESS_OPT])))
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", str(os.cpu_count() or 1),
           "--top-module", top, "--prefix", "Vtop", "-Mdir", str(obj),
           "-o", str(exe.resolve()), *[f"-Wno-{name}" for name in VERILATOR_WAIVERS],
           str(Path(verilog).resolve()), str(HARNESS)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        log = Path(build_dir) / "harness-build.log"
        log.write_text(done.stdout + done.stderr)
        raise RuntimeError(f"Verilator build failed (log: {log})")
    return exe


def run_harness(exe: Path, model, params: EncoderParams, batches: list[list[np.ndarray]], *,
                latency: int = 1, max_cycles: int = 2_000_000_000, workdir: Path,
                on_pass: Callable[[int, int], None] | None = None,
                image: Image | None = None) -> list[dict]:
    """Run ``batches`` (lists of token-id arrays) one after the other through the harness;
    the weight image is written to ``workdir / "image.bin"``.

    Per batch: ``cycles`` (from its first offered beat to its last pooled element taken),
    ``words`` and ``requests`` read from the image, ``passes`` (``(descriptor index, cycle of
    its fetch)``), ``pooled`` (per sequence) and ``seconds`` (wall time of the batch).
    ``on_pass(index, cycle)`` is called as each pass starts (its descriptor is fetched).
    ``image``: ``build_image(model, params)`` if the caller has it already."""
    image = image or build_image(model, params)
    workdir = Path(workdir)
    image_path = workdir / "image.bin"
    image_path.write_bytes(image.to_bytes())
    lines = [str(len(batches))]
    for batch in batches:
        xs = np.concatenate([embedding_sums(model, ids).ravel() for ids in batch])
        lines += [f"{len(batch)} " + " ".join(str(len(ids)) for ids in batch), str(xs.size),
                  " ".join(map(str, xs.tolist()))]
    inputs = workdir / "batches.txt"
    inputs.write_text("\n".join(lines) + "\n")
    seq_last_bit = params.max_len.bit_length()     # SequenceIn: length, then last
    cmd = [str(exe), str(image_path), str(params.port_width // 8), str(seq_last_bit),
           str(latency), str(max_cycles), str(len(image.descriptors()))]
    results: list[dict] = []
    passes: list[tuple[int, int]] = []
    with inputs.open() as stdin, subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE,
                                                  stderr=subprocess.PIPE, text=True) as proc:
        start = time.perf_counter()
        for line in proc.stdout:
            word, *values = line.split()
            if word == "batch":
                now = time.perf_counter()
                cycles, words, requests = map(int, values)
                results.append({"cycles": cycles, "words": words, "requests": requests,
                                "passes": passes, "pooled": [], "seconds": now - start})
                start, passes = now, []
            elif word == "pass":
                passes.append((int(values[0]), int(values[1])))
                if on_pass is not None:
                    on_pass(*passes[-1])
            elif word == "pooled":
                results[-1]["pooled"].append([int(v) for v in values])
        error = proc.stderr.read()
        if proc.wait() != 0 or len(results) != len(batches):
            raise RuntimeError(f"the Verilator harness failed: {error.strip() or proc.returncode}")
    return results
