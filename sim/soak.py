"""Soak: a long random-stall run of one block's generated Verilog against its golden model.

The cocotb test :func:`soak` streams at least ``LUTRA_SOAK_BEATS`` input beats through the
design named by the manifest (``LUTRA_MANIFEST``): random data with the extremes mixed in, random
stalls on every stream (the stall probability changes every few hundred beats, from none to
heavy), and new run-time parameters where the block takes them. A per-block *workload* makes the
input in chunks, each with its expected output beats from the golden model, and the existing
manifest-driven drivers stream them. The :class:`Scoreboard` compares every output beat, in
order, with the expected ones and tells a wrong beat from a lost or a repeated one. The counts
go to the JSON file named by ``LUTRA_SOAK_REPORT``; ``lutra soak`` prints them.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cocotb
import numpy as np

__all__ = ["BEATS_ENV", "REPORT_ENV", "WORKLOADS", "Chunk", "Scoreboard", "PhasedStalls",
           "soak"]

BEATS_ENV = "LUTRA_SOAK_BEATS"
REPORT_ENV = "LUTRA_SOAK_REPORT"

#: A repeated or lost beat is recognised when the stream is this many beats out of step at most.
RESYNC_WINDOW = 4


@dataclass
class Chunk:
    """Input beats of one piece of work and the output beats the golden model expects.

    ``feeds`` holds one list of ``(stream, payload)`` per feeder: a feeder sends its beats in
    order (a parameter load before the data it applies to), feeders run concurrently.
    ``expected`` output beats are compared with the received ones on their own keys.
    """

    feeds: list[list[tuple[str, dict]]]
    expected: list[dict] = field(default_factory=list)
    #: Plain (non-stream) inputs, set before reset and held: the first chunk's only.
    inputs: dict[str, int] = field(default_factory=dict)

    @property
    def beats_in(self) -> int:
        return sum(len(feed) for feed in self.feeds)


class Scoreboard:
    """Ordered comparison of output beats with the expected ones.

    A received beat equal to the expected one is a match. Otherwise, equal to the beat just
    matched, it is a *repeated* beat (the expected one is still awaited); equal to one of the
    next ``RESYNC_WINDOW`` expected beats, the ones in between are *lost*; else a *mismatch*.
    Beats still expected at the end are lost; beats beyond the expected ones are repeated.
    """

    def __init__(self) -> None:
        self.expected: deque[dict] = deque()
        self.previous: dict | None = None
        self.received = 0
        self.matched = 0
        self.mismatches = 0
        self.lost = 0
        self.repeated = 0
        self.first_error: str | None = None

    def expect(self, beats: list[dict]) -> None:
        self.expected.extend(beats)

    @staticmethod
    def _same(got: dict, want: dict) -> bool:
        return all(got.get(key) == value for key, value in want.items())

    def _note(self, what: str) -> None:
        if self.first_error is None:
            self.first_error = what

    def push(self, got: dict) -> None:
        n = self.received
        self.received += 1
        if not self.expected:
            self.repeated += 1
            self._note(f"output beat {n}: {got} after the last expected beat")
            return
        want = self.expected[0]
        if self._same(got, want):
            self.previous = self.expected.popleft()
            self.matched += 1
            return
        if self.previous is not None and self._same(got, self.previous):
            self.repeated += 1
            self._note(f"output beat {n}: {got} repeats the previous beat")
            return
        for skip in range(1, min(RESYNC_WINDOW, len(self.expected) - 1) + 1):
            if self._same(got, self.expected[skip]):
                self._note(f"output beat {n}: {skip} expected beat(s) lost, e.g. {want}")
                for _ in range(skip):
                    self.expected.popleft()
                self.lost += skip
                self.previous = self.expected.popleft()
                self.matched += 1
                return
        self.mismatches += 1
        self._note(f"output beat {n}: {got} != {want}")
        self.previous = self.expected.popleft()

    def finish(self) -> None:
        """Count what was never received as lost."""
        if self.expected:
            self._note(f"{len(self.expected)} expected beat(s) never came, first {self.expected[0]}")
        self.lost += len(self.expected)
        self.expected.clear()

    @property
    def clean(self) -> bool:
        return self.mismatches == 0 and self.lost == 0 and self.repeated == 0


class PhasedStalls:
    """Random idle cycles before each beat, with a probability redrawn every ``phase`` beats
    from ``levels`` (no stalls, some, heavy), so full-rate and throttled stretches alternate."""

    def __init__(self, seed: int, *, levels=(0.0, 0.1, 0.3, 0.7), phase: int = 400,
                 max_cycles: int = 6):
        self._rng = random.Random(seed)
        self._levels, self._phase, self._max = levels, phase, max_cycles
        self._left = 0
        self._prob = 0.0

    def cycles(self) -> int:
        if self._left == 0:
            self._prob = self._rng.choice(self._levels)
            self._left = self._rng.randint(1, 2 * self._phase)
        self._left -= 1
        if self._prob and self._rng.random() < self._prob:
            return self._rng.randint(1, self._max)
        return 0


# ---- workloads: per block, an endless iterator of chunks --------------------------------------

def _beats_of(rows: list[np.ndarray], lanes: int) -> list[dict]:
    """Row-major beats of ``lanes`` values, ``last`` on each row's final beat."""
    from .gelu_driver import to_beats
    return to_beats([np.asarray(r, np.int64) for r in rows], lanes)


def _gemm(manifest: dict, rng: np.random.Generator) -> Iterator[Chunk]:
    """Single-tile problems (no padding), each with its own K (1 .. 2 * output beats, and
    sometimes a long one) and its own parameters: a parameter change on every tile."""
    from .gemm_driver import plan, random_problem
    cfg, figures = manifest["config"], manifest["figures"]
    rows, cols, lanes = cfg["rows"], cfg["cols"], cfg["out_lanes"]
    widths = {"a_width": cfg["a_width"], "out_width": cfg["out_width"]}
    per_tile = figures["output_beats_per_tile"]
    n = 0
    while True:
        n += 1
        kind = n % 16
        if kind == 7:
            k = int(rng.integers(per_tile, min(figures["max_k"], 300) + 1))
        else:
            k = int(rng.integers(1, 2 * per_tile + 1))
        problem = random_problem(rng, rows, k, cols, extreme=kind == 5, **widths)
        if kind == 9:                   # saturating requantization
            problem.multiplier = np.full(cols, (1 << 31) - 1)
            problem.shift = np.full(cols, 31)
        (tile,) = plan(problem, rows, cols, cfg["requantize"], **widths,
                       k_per_pe=cfg["k_per_pe"])
        want = problem.expected(cfg["requantize"]).reshape(-1, lanes)
        yield Chunk([[("i", s) for s in tile.slices], [("params", tile.params)]],
                    [{"data": [int(v) for v in beat], "last": int(b == len(want) - 1)}
                     for b, beat in enumerate(want)])


def _gelu(manifest: dict, rng: np.random.Generator) -> Iterator[Chunk]:
    from .gelu_driver import expected, random_rows, to_beats
    cfg = manifest["config"]
    while True:
        rows = random_rows(rng, cfg, 6, max_len=256)
        yield Chunk([[("i", b) for b in to_beats(rows, cfg["lanes"])]],
                    _beats_of(expected(cfg, rows), cfg["lanes"]))


def _softmax(manifest: dict, rng: np.random.Generator) -> Iterator[Chunk]:
    from .tb.softmax_tb import golden
    cfg = manifest["config"]
    bits, max_len = cfg["in_bits"], cfg["max_len"]
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    n = 0
    while True:
        n += 1
        length = int(rng.integers(1, max_len + 1))
        kind = n % 8
        if kind == 1:
            row = np.full(length, lo)                   # all equal, at the minimum
        elif kind == 2:
            row = np.array([hi - 1] + [lo] * (length - 1))
        elif kind == 3:
            row = np.full(1, int(rng.integers(lo, hi)))  # length 1
        elif kind == 4:
            row = rng.choice([lo, hi - 1], length)
        else:
            row = rng.integers(lo, hi, length)
        beats = [{"data": int(v), "last": int(j == len(row) - 1)} for j, v in enumerate(row)]
        want = golden(row, cfg)
        yield Chunk([[("i", b) for b in beats]],
                    [{"data": int(v), "last": int(j == len(want) - 1)}
                     for j, v in enumerate(want)])


def _add(manifest: dict, rng: np.random.Generator) -> Iterator[Chunk]:
    """Tensors of every kind, 1..9 beats; a parameter reload before about one in three."""
    from .add_driver import expected, param_beat, random_params, random_tensor, tensor_beats
    cfg = manifest["config"]
    n, w, ow, lanes = cfg["inputs"], cfg["in_width"], cfg["out_width"], cfg["lanes"]
    params = random_params(rng, n, w, ow)
    t = 0
    first = True
    while True:
        t += 1
        feed = []
        if first or rng.random() < 0.35:
            params = random_params(rng, n, w, ow, extreme=t % 5 == 0)
            feed.append(("params", param_beat(params, w)))
            first = False
        x = random_tensor(rng, n, int(rng.integers(1, 10)), lanes, w, t)
        feed += [("i", b) for b in tensor_beats(x)]
        (want,) = expected([("load", params), ("tensor", x)], n, w, ow)
        yield Chunk([feed], [{"data": [int(v) for v in beat], "last": int(b == len(want) - 1)}
                             for b, beat in enumerate(want)])


def _layernorm(manifest: dict, rng: np.random.Generator) -> Iterator[Chunk]:
    """A few rows at a time; the per-channel parameters reloaded before about one chunk in
    three (the first load before any row)."""
    from .layernorm_driver import expected, param_beats, random_params, random_rows, row_beats
    cfg = manifest["config"]
    hidden, w, ow = cfg["hidden"], cfg["in_width"], cfg["out_width"]
    params = None
    while True:
        feed = []
        if params is None or rng.random() < 0.35:
            params = random_params(rng, hidden, ow)
            feed += [("params", b) for b in param_beats(params)]
        rows = random_rows(rng, hidden, w, int(rng.integers(1, 4)))
        feed += [("i", b) for b in row_beats(rows)]
        want = expected([("load", params), ("rows", rows)], hidden, ow)
        yield Chunk([feed], [{"data": int(v), "last": int(j == hidden - 1)}
                             for row in want for j, v in enumerate(row)])


def _winograd_setup(cfg: dict) -> dict:
    """The keyword arguments of the Winograd driver's plans for this configuration."""
    from .golden.winograd import parse_tap_shifts
    m, mode = cfg["m"], cfg["mode"]
    return {"m": m, "mode": mode, "taps_per_clock": cfg["taps_per_clock"] or (m + 2) ** 2,
            "requantize": cfg["requantize"],
            "tap_shifts": parse_tap_shifts(cfg["tap_shifts"], m) if mode == "tapwise" else None}


def _winograd_problem(rng, n: int, *, chans: int, height: int, width: int, padding: int):
    """A random problem of one or two images and output channels; every eighth at -128."""
    from .winograd_driver import random_problem
    return random_problem(rng, n_img=int(rng.integers(1, 3)), chans=chans,
                          out_chans=int(rng.integers(1, 3)), height=height, width=width,
                          padding=padding, extreme=n % 8 == 5)


def _pass_feeds(passes, inputs: str) -> list[list[tuple[str, dict]]]:
    """Per pass its params beat then its weights on one feeder; the inputs on another."""
    control = [b for ps in passes for b in [("params", ps.params)]
               + [("weights", w) for w in ps.weights]]
    return [control, [(inputs, b) for ps in passes for b in ps.tiles]]


def _winograd(manifest: dict, rng: np.random.Generator) -> Iterator[Chunk]:
    """Whole feature maps whose output is a whole number of tiles (so every output beat has a
    golden value), both paddings; new per-pass parameters and weights on every pass."""
    from .winograd_driver import plan
    cfg = manifest["config"]
    kw = _winograd_setup(cfg)
    m = kw["m"]
    lanes = cfg["out_lanes"] or m
    per_tile = m * m // lanes
    n = 0
    while True:
        n += 1
        padding = int(rng.integers(0, 2))
        ty, tx = (int(v) for v in rng.integers(1, 4, 2))
        problem = _winograd_problem(rng, n, chans=int(rng.integers(1, cfg["in_channels"] + 1)),
                                    height=ty * m + 2 - 2 * padding,
                                    width=tx * m + 2 - 2 * padding, padding=padding)
        y = problem.expected(m=m, mode=kw["mode"], requantize=kw["requantize"],
                             tap_shifts=kw["tap_shifts"])
        n_img, k = y.shape[:2]
        tiles = y.reshape(n_img, k, ty, m, tx, m).transpose(1, 0, 2, 4, 3, 5)
        words = tiles.reshape(-1, lanes)
        yield Chunk(_pass_feeds(plan(problem, **kw), "i"),
                    [{"data": [int(v) for v in word], "last": int(b % per_tile == per_tile - 1)}
                     for b, word in enumerate(words)])


def _winograd_fm(manifest: dict, rng: np.random.Generator) -> Iterator[Chunk]:
    """Whole maps of random sizes up to the largest (output down to 1 x 1), both paddings; the
    frame shape and the per-pass parameters change on every pass."""
    from .winograd_driver import plan_feature_map
    cfg = manifest["config"]
    kw = _winograd_setup(cfg)
    n = 0
    while True:
        n += 1
        padding = int(rng.integers(0, 2))
        low = 3 - 2 * padding
        height = int(rng.integers(low, cfg["max_height"] + 1))
        width = int(rng.integers(low, cfg["max_width"] + 1))
        problem = _winograd_problem(rng, n, chans=cfg["in_channels"], height=height,
                                    width=width, padding=padding)
        y = problem.expected(m=kw["m"], mode=kw["mode"], requantize=kw["requantize"],
                             tap_shifts=kw["tap_shifts"])
        out_h, out_w = y.shape[2:]
        yield Chunk(_pass_feeds(plan_feature_map(problem, **kw), "i"),
                    [{"data": int(v), "last": int(col == out_w - 1),
                      "end": int(col == out_w - 1 and row == out_h - 1)}
                     for plane in y.reshape(-1, out_h, out_w)
                     for row in range(out_h) for col, v in enumerate(plane[row])])


def _attention_unit(manifest: dict, rng: np.random.Generator) -> Iterator[Chunk]:
    """Batches of sequences (a batch of one at max_len, of single tokens, then random ones up
    to ``max_tokens``) with int8 Q, K, V (uniform, or every fourth batch only -128 and 127);
    one random requantization of the scores and the context for the run (``quant`` is a plain
    input, held). Every output word is compared, ``last`` on the batch's final word."""
    from hw.attention.engine import Quant

    from .attention_unit_driver import (expected_context, quant_payload, random_layer,
                                        random_qkv, to_words)
    cfg = manifest["config"]
    hidden, block = cfg["heads"] * cfg["head_dim"], cfg["block"]
    pattern = {k: cfg[k] for k in ("block", "window", "n_global", "causal")}
    layer = random_layer(rng, cfg["head_dim"], softmax_scale=cfg["softmax_scale"])
    quant = quant_payload(layer)
    packed = 0
    for name, member in Quant:
        packed |= (quant[name] & ((1 << member.width) - 1)) << member.offset
    n = 0
    while True:
        n += 1
        if n % 8 == 1:
            lengths = [cfg["max_len"]]
        elif n % 8 == 2:
            lengths = [1] * cfg["max_seqs"]
        else:
            lengths, total = [], 0
            while len(lengths) < cfg["max_seqs"]:
                length = int(rng.integers(1, cfg["max_len"] + 1))
                if total + length > cfg["max_tokens"]:
                    break
                lengths.append(length)
                total += length
            lengths = lengths or [1]
        if n % 4 == 3:
            batch = [tuple(rng.choice([-128, 127], (t, hidden)) for _ in range(3))
                     for t in lengths]
        else:
            batch = [random_qkv(rng, t, hidden) for t in lengths]
        want = np.concatenate([expected_context(q, k, v, layer, heads=cfg["heads"],
                                                softmax=cfg["softmax"], pattern=pattern)
                               for q, k, v in batch])
        words = to_words(want, block)
        feeds = [[("desc", {"length": t, "last": int(i == len(lengths) - 1)})
                  for i, t in enumerate(lengths)]]
        feeds += [[(name, w) for x in batch for w in to_words(x[index], block)]
                  for index, name in enumerate("qkv")]
        yield Chunk(feeds, [{"data": w, "last": int(j == len(words) - 1)}
                            for j, w in enumerate(words)],
                    inputs={"quant": packed} if n == 1 else {})


#: block name -> ``workload(manifest, rng)``, an endless iterator of :class:`Chunk`.
WORKLOADS: dict[str, Callable[[dict, np.random.Generator], Iterator[Chunk]]] = {
    "gemm": _gemm,
    "gelu": _gelu,
    "softmax": _softmax,
    "add": _add,
    "layernorm": _layernorm,
    "winograd": _winograd,
    "winograd_fm": _winograd_fm,
    "attention_unit": _attention_unit,
}


# ---- the attention scheduler: a closed loop with stalling engines -------------------------------

def _attention_lengths(rng: np.random.Generator, n: int, batch: int, cfg: dict) -> list[int]:
    """``n`` sequence lengths in 1..max_len: uniform, or (one batch kind in eight each) all
    the longest, all single tokens, around block boundaries, or bimodal (short and long)."""
    max_len, block = cfg["max_len"], cfg["block"]
    kind = batch % 8
    if kind == 1:
        return [max_len] * n
    if kind == 2:
        return [1] * n
    if kind == 3:
        edges = {max(1, min(max_len, block * k + d))
                 for k in range(-(-max_len // block) + 1) for d in (-1, 0, 1)}
        return [int(v) for v in rng.choice(sorted(edges), n)]
    if kind == 4:
        short = rng.integers(1, max(2, max_len // 8) + 1, n)
        long = rng.integers(max(1, 3 * max_len // 4), max_len + 1, n)
        return [int(v) for v in np.where(rng.random(n) < 0.7, short, long)]
    return [int(v) for v in rng.integers(1, max_len + 1, n)]


class _Gaps:
    """Descriptor gaps drawn in advance: the first call gives the wait before the first
    descriptor, each later one the gap after an acceptance (``sim.attention_driver.Harness``)."""

    def __init__(self, gaps: list[int]):
        self._gaps = deque(gaps)

    def cycles(self) -> int:
        return self._gaps.popleft() if self._gaps else 0


async def _soak_attention(dut, manifest: dict) -> dict:
    """Batches of descriptors through the scheduler, each engine a behavioural model that
    stalls its command stream and its ``done`` at random; the golden ``schedule``, given the
    same stall draws, predicts every command (fields, engine and cycle) and the makespan.

    A *beat in* is a handshake on an input stream: a descriptor, or an engine's ``done``
    (one per row). Output beats are the commands. Every engine's commands are compared in
    order on their fields (mismatched, lost or repeated) and then on their cycles (a command
    in the wrong cycle is a mismatch: the policy decides the cycle); the batch's makespan too.
    """
    from cocotb.triggers import ReadOnly, RisingEdge

    from .attention_driver import EngineModel, Harness, check_invariants
    from .cocotb_streams import decode, encode, seed, start_clock_reset
    from .golden.attention import schedule
    from .stalls import Stalls

    class Engine(EngineModel):
        """The driver's engine model with its extra busy cycles from a stall source."""

        def __init__(self, cost: int, stalls: Stalls):
            super().__init__(cost)
            self._stalls = stalls

        def _extra(self) -> int:
            return self._stalls.cycles()

    cfg = manifest["config"]
    engines = cfg["engines"]
    pattern = {k: cfg[k] for k in ("block", "window", "n_global", "causal")}
    policy = {"lookahead": cfg["lookahead"], "longest_first": cfg["longest_first"]}
    streams = manifest["streams"]
    desc_layout, cmd_layout = streams["desc"]["layout"], streams["cmd_0"]["layout"]
    cmd = [(getattr(dut, f"cmd_{e}__valid"), getattr(dut, f"cmd_{e}__ready"),
            getattr(dut, f"cmd_{e}__payload")) for e in range(engines)]
    done = [getattr(dut, f"done_{e}") for e in range(engines)]
    done_ready = [getattr(dut, f"done_ready_{e}") for e in range(engines)]
    dut.desc__valid.value = 0
    for e in range(engines):
        cmd[e][1].value = 0
        done[e].value = 0
    target = int(os.environ.get(BEATS_ENV, "1000"))
    base = seed()
    rng = np.random.default_rng(base)
    boards = [Scoreboard() for _ in range(engines)]
    counts = {"descriptors": 0, "rows": 0, "batches": 0, "timing": 0, "cycles": 0}
    errors: list[str] = []
    failed: list[str] = []          # how to rerun each failing batch (first 20)
    await start_clock_reset(dut)
    start = time.perf_counter()

    while counts["descriptors"] + counts["rows"] < target:
        batch = counts["batches"]
        n = int(rng.integers(1, 13))
        lengths = _attention_lengths(rng, n, batch, cfg)
        ids = [int(v) for v in rng.choice(1 << cfg["seq_width"], n, replace=False)]
        cost = int(rng.integers(1, 5))
        levels = (0.0, 0.1, 0.3, 0.7)
        probs = [float(rng.choice(levels)) for _ in range(engines + 1)]
        seeds = [int(v) for v in rng.integers(0, 1 << 30, engines + 1)]
        gap_stalls = Stalls(probs[engines], 6, seeds[engines])
        gaps = [gap_stalls.cycles() for _ in range(n)]
        want = schedule(lengths, engines=engines, cost_per_pair=cost, **pattern, **policy,
                        engine_stalls=[Stalls(probs[e], 6, seeds[e]).cycles
                                       for e in range(engines)], desc_gaps=gaps[1:])
        models = [Engine(cost, Stalls(probs[e], 6, seeds[e])) for e in range(engines)]
        harness = Harness(lengths, ids, models, _Gaps(gaps))
        limit = 4 * want.makespan + 500
        cycle = 0
        while not harness.over and cycle < limit:
            desc, ready, raised = harness.drive(cycle)
            dut.desc__valid.value = int(desc is not None)
            if desc is not None:
                dut.desc__payload.value = encode(desc_layout, desc)
            for e in range(engines):
                cmd[e][1].value = int(ready[e])
                done[e].value = int(raised[e])
            await ReadOnly()
            harness.observe(cycle, bool(dut.desc__ready.value),
                            [bool(c[0].value) for c in cmd],
                            lambda e: decode(cmd_layout, int(cmd[e][2].value)),
                            [bool(r.value) for r in done_ready])
            await RisingEdge(dut.clk)
            cycle += 1
        counts["cycles"] += cycle
        counts["batches"] += 1
        counts["descriptors"] += harness.sent
        counts["rows"] += sum(len(m.done_cycles) for m in models)
        if not harness.over:
            errors.append(f"batch {batch} {lengths}: no end after {limit} cycles")
        before = (len(errors), sum(b.mismatches + b.lost + b.repeated for b in boards))
        got = harness.commands() if harness.origin is not None else [[] for _ in models]
        for e, (board, mine, golden) in enumerate(zip(boards, got, want.engines)):
            fields = [{"seq": ids[c.seq], "query_block": c.query_block,
                       "key_block": c.key_block, "last": int(c.last), "valid": c.valid}
                      for c in golden]
            board.expect(fields)
            for c in mine:
                board.push({"seq": c.seq, "query_block": c.query_block,
                            "key_block": c.key_block, "last": int(c.last), "valid": c.valid})
            board.finish()
            if [c[1:] for c in mine] == [(ids[c.seq], *c[2:]) for c in golden]:
                late = [(g.cycle, w.cycle) for g, w in zip(mine, golden) if g.cycle != w.cycle]
                counts["timing"] += len(late)
                if late:
                    errors.append(f"batch {batch} engine {e}: {len(late)} commands off their "
                                  f"cycle, first at {late[0][0]} instead of {late[0][1]}")
        if harness.origin is not None and harness.over and harness.makespan() != want.makespan:
            errors.append(f"batch {batch}: makespan {harness.makespan()} != {want.makespan}")
        try:
            check_invariants(models, lengths, ids, **pattern)
        except AssertionError as error:
            errors.append(f"batch {batch}: {error}")
        after = (len(errors), sum(b.mismatches + b.lost + b.repeated for b in boards))
        if after != before and len(failed) < 20:
            failed.append(f"batch {batch}: lengths {lengths}, ids {ids}, cost {cost}, stall "
                          f"probabilities (engines, descriptors) {probs}, seeds {seeds}")
        if not harness.over:
            break                   # the design's state is unknown: stop here
    elapsed = time.perf_counter() - start
    other = len(errors)             # messages besides the scoreboards' (timing, makespan, ...)
    errors = [b.first_error for b in boards if b.first_error] + errors
    sums = {k: sum(getattr(b, k) for b in boards)
            for k in ("received", "matched", "mismatches", "lost", "repeated")}
    return {"block": "attention", "beats_in": counts["descriptors"] + counts["rows"],
            "beats_out": sums["received"],
            "expected_out": sums["matched"] + sums["mismatches"] + sums["lost"],
            "mismatches": sums["mismatches"] + counts["timing"],
            "lost": sums["lost"], "repeated": sums["repeated"],
            "cycles": counts["cycles"], "sim_seconds": round(elapsed, 3),
            "first_error": errors[0] if errors else None, "seed": base,
            "errors": other, "failed_batches": failed,
            "detail": f"{counts['batches']} batches, {counts['descriptors']} descriptors, "
                      f"{counts['rows']} rows (done beats), {sums['received']} commands, "
                      f"{counts['timing']} commands off their golden cycle"}


# ---- the encoder accelerator: token batches in, the weight image served behind its read port ----

def _encoder_lengths(rng: np.random.Generator, batch: int, cfg: dict) -> list[int]:
    """Sequence lengths of one batch, 1..max_len each, at most ``max_seqs`` sequences and
    ``max_tokens`` tokens: random, or (one batch in four each) as many max_len sequences as
    fit, single tokens, or one sequence at max_len."""
    max_len, max_seqs, max_tokens = cfg["max_len"], cfg["max_seqs"], cfg["max_tokens"]
    kind = batch % 4
    if kind == 1:
        return [max_len] * max(1, min(max_seqs, max_tokens // max_len))
    if kind == 2:
        return [1] * int(rng.integers(1, min(max_seqs, max_tokens) + 1))
    if kind == 3:
        return [max_len]
    lengths: list[int] = []
    for _ in range(int(rng.integers(1, max_seqs + 1))):
        room = max_tokens - sum(lengths)
        if room < 1:
            break
        lengths.append(int(rng.integers(1, min(max_len, room) + 1)))
    return lengths


async def _soak_encoder(dut, manifest: dict) -> dict:
    """Batches of random token sequences through the encoder accelerator, one after the
    other, its weight image served behind the read port by the testbench.

    *Beats in* are the handshakes on the input streams: the sequence descriptors (``seq``),
    the embedding sums (``x``, hidden beats per token), both counted as token beats, and the
    weight-read data words (``rdata``), counted apart. Every pooled word on ``o`` is compared
    in order (the :class:`Scoreboard`, ``last`` included) with ``sim.golden.encoder.forward``;
    with ``debug``, every stage boundary's elements on ``dbg`` too (``encoder_driver.compare``:
    a wrong, missing or twice-written element is a mismatch of the batch). Stalls: every
    stream (``seq``, ``x``, ``rdata`` sources; ``req``, ``o``, ``dbg`` sinks) has random idle
    cycles (:class:`PhasedStalls`); each request is answered after a random latency redrawn
    per batch (1, 1..6 or 10..40 cycles).
    """
    from cocotb.triggers import RisingEdge

    from gen.blocks.encoder import encoder_model, encoder_params

    from .cocotb_streams import StreamSink, StreamSource, seed, start_clock_reset
    from .encoder_driver import compare, expected
    from .encoder_image import ExternalMemory, build_image, embedding_sums

    model, params = encoder_model(manifest["config"]), encoder_params(manifest["config"])
    limits = {"max_len": params.max_len, "max_seqs": params.max_seqs,
              "max_tokens": params.max_tokens}
    target = int(os.environ.get(BEATS_ENV, "1000"))
    base = seed()
    rng = np.random.default_rng(base)
    memory = ExternalMemory(build_image(model, params), latency=(1, 6), gap_prob=0.0,
                            seed=base + 7)
    seq = StreamSource(dut, manifest, "seq", PhasedStalls(base + 1))
    x = StreamSource(dut, manifest, "x", PhasedStalls(base + 2))
    rdata = StreamSource(dut, manifest, "rdata", PhasedStalls(base + 3))
    req = StreamSink(dut, manifest, "req", PhasedStalls(base + 4))
    o = StreamSink(dut, manifest, "o", PhasedStalls(base + 5))
    dbg = (StreamSink(dut, manifest, "dbg", PhasedStalls(base + 6)) if params.debug
           else None)
    board = Scoreboard()
    debug: list[tuple] = []
    errors: list[str] = []
    counts = {"batches": 0, "sequences": 0, "tokens": 0, "cycles": 0, "requests": 0}
    H, vocab = params.hidden, model.embeddings.word.shape[0]

    async def serve():
        while True:
            beat = await req.recv()
            counts["requests"] += 1
            for _ in range(memory.delay()):
                await RisingEdge(dut.clk)
            for word in memory.read(beat["addr"], beat["length"]):
                await rdata.send(word)

    async def watch():
        while True:
            b = await dbg.recv()
            debug.append((b["tag"], b["token"], b["channel"], b["data"]))

    async def feed(batch):
        for n, ids in enumerate(batch):
            await seq.send({"length": len(ids), "last": int(n == len(batch) - 1)})
        for ids in batch:
            await x.send_all(int(v) for v in embedding_sums(model, ids).ravel())

    async def take(n_words, pooled):
        vector = []
        while len(pooled) * H + len(vector) < n_words:
            beat = await o.recv()
            board.push(beat)
            vector.append(beat["data"])
            if len(vector) == H:
                pooled.append(vector)
                vector = []

    await start_clock_reset(dut)
    cocotb.start_soon(serve())
    if dbg is not None:
        cocotb.start_soon(watch())
    start = time.perf_counter()
    give_up = 50_000                # cycles without a beat on any stream: lost or deadlocked
    while seq.sent + x.sent + rdata.sent < target:
        batch_no = counts["batches"]
        lengths = _encoder_lengths(rng, batch_no, limits)
        if batch_no % 5 == 4:       # extremes: only the first and the last token id
            batch = [rng.choice([0, vocab - 1], size=n) for n in lengths]
        else:
            batch = [rng.integers(0, vocab, size=n) for n in lengths]
        memory.latency = [(1, 1), (1, 6), (10, 40)][int(rng.integers(0, 3))]
        want = expected(model, batch)
        board.expect([{"data": int(v), "last": int(c == H - 1)}
                      for vec in want["pooled"] for c, v in enumerate(vec)])
        debug.clear()
        pooled: list[list[int]] = []
        taker = cocotb.start_soon(take(len(batch) * H, pooled))
        cocotb.start_soon(feed(batch))
        idle, progress = 0, -1
        while not taker.done() and idle < give_up:
            await RisingEdge(dut.clk)
            counts["cycles"] += 1
            now = seq.sent + x.sent + rdata.sent + o.received + (dbg.received if dbg else 0)
            idle = 0 if now != progress else idle + 1
            progress = now
        if not taker.done():
            taker.cancel()
            errors.append(f"batch {batch_no} {lengths}: no beat for {give_up} cycles")
            break                   # the design's state is unknown: stop here
        for _ in range(20):         # the last debug beat may follow the last pooled word
            await RisingEdge(dut.clk)
        counts["cycles"] += 20
        if dbg is not None:
            try:
                compare(want, debug, pooled)
            except AssertionError as error:
                errors.append(f"batch {batch_no} {lengths}: {error}")
        counts["batches"] += 1
        counts["sequences"] += len(batch)
        counts["tokens"] += sum(lengths)
    # After the last batch nothing more may leave o (a repeated beat would).
    if not errors:
        for _ in range(200):
            await RisingEdge(dut.clk)
            counts["cycles"] += 1
            if o.valid.value:
                board.push(await o.recv())
    elapsed = time.perf_counter() - start
    board.finish()
    return {"block": "encoder", "beats_in": seq.sent + x.sent + rdata.sent,
            "beats_out": board.received, "expected_out": board.matched + board.mismatches
            + board.lost, "mismatches": board.mismatches, "lost": board.lost,
            "repeated": board.repeated, "cycles": counts["cycles"],
            "sim_seconds": round(elapsed, 3),
            "first_error": board.first_error or (errors[0] if errors else None), "seed": base,
            "errors": len(errors),
            "detail": f"{counts['batches']} batches, {counts['sequences']} sequences, "
                      f"{counts['tokens']} tokens; token beats {seq.sent + x.sent} (seq "
                      f"{seq.sent}, x {x.sent}), weight-read data beats {rdata.sent} "
                      f"({counts['requests']} requests); pooled words {board.received}"
                      + (f", debug beats {dbg.received}" if dbg else "")}


# ---- the cocotb test ------------------------------------------------------------------------

async def _soak(dut) -> dict:
    from cocotb.triggers import ReadOnly, RisingEdge

    from .cocotb_streams import StreamSource, decode, load_manifest, seed, start_clock_reset

    manifest = load_manifest()
    block = manifest["block"]
    target = int(os.environ.get(BEATS_ENV, "1000"))
    base = seed()
    chunks = WORKLOADS[block](manifest, np.random.default_rng(base))
    inputs = [n for n, s in manifest["streams"].items() if s["direction"] == "in"]
    sources = {n: StreamSource(dut, manifest, n, PhasedStalls(base + 1 + k))
               for k, n in enumerate(inputs)}
    out = manifest["streams"]["o"]
    valid, ready = getattr(dut, out["valid"]), getattr(dut, out["ready"])
    payload, layout = getattr(dut, out["payload"]), out["layout"]
    ready.value = 0
    board = Scoreboard()
    queues: list[deque] = []
    state = {"generated": 0, "feeding": 0}

    def refill() -> bool:
        """Generate the next chunk into every feeder's queue; ``False`` once enough."""
        if state["generated"] >= target:
            return False
        chunk = next(chunks)
        assert not chunk.inputs or not state["generated"], "plain inputs change mid-run"
        for name, value in chunk.inputs.items():
            getattr(dut, name).value = value
        while len(queues) < len(chunk.feeds):
            queues.append(deque())
        for queue, feed in zip(queues, chunk.feeds):
            queue.extend(feed)
        board.expect(chunk.expected)
        state["generated"] += chunk.beats_in
        return True

    async def feeder(index: int) -> None:
        queue = queues[index]
        while queue or refill():
            if not queue:
                continue
            name, value = queue.popleft()
            await sources[name].send(value)
        state["feeding"] -= 1

    refill()                    # the first chunk's plain inputs are set before reset
    await start_clock_reset(dut)
    state["feeding"] = len(queues)
    start = time.perf_counter()
    tasks = [cocotb.start_soon(feeder(i)) for i in range(len(queues))]

    sink_stalls = PhasedStalls(base + 99)
    figures = manifest["figures"]
    latency = figures.get("latency_cycles") or 0
    quiet_after_done = 2 * latency + 200        # no extra beat may come in this window
    give_up = 20 * latency + 20000              # no progress at all: lost or deadlocked
    hold, idle, cycles, progress = sink_stalls.cycles(), 0, 0, -1
    while True:
        ready.value = 0 if hold else 1
        await ReadOnly()
        taken = hold == 0 and bool(valid.value)
        if taken:
            board.push(decode(layout, int(payload.value)))
        await RisingEdge(dut.clk)
        cycles += 1
        if hold:
            hold -= 1
        elif taken:
            hold = sink_stalls.cycles()
        now = board.received + sum(s.sent for s in sources.values())
        idle = 0 if now != progress else idle + 1
        progress = now
        if state["feeding"] == 0 and not board.expected and idle >= quiet_after_done:
            break
        if idle >= give_up:
            break
    ready.value = 0
    elapsed = time.perf_counter() - start
    for task in tasks:
        task.cancel()
    board.finish()
    return {"block": block, "beats_in": sum(s.sent for s in sources.values()),
            "beats_out": board.received, "expected_out": board.matched + board.mismatches
            + board.lost, "mismatches": board.mismatches, "lost": board.lost,
            "repeated": board.repeated, "cycles": cycles, "sim_seconds": round(elapsed, 3),
            "first_error": board.first_error, "seed": base}


@cocotb.test()
async def soak(dut):
    """At least LUTRA_SOAK_BEATS input beats with random data, stalls and parameters; every
    output beat compared in order with the golden model."""
    from .cocotb_streams import load_manifest
    manifest = load_manifest()
    if manifest["block"] == "attention":
        report = await _soak_attention(dut, manifest)
    elif manifest["block"] == "encoder":
        report = await _soak_encoder(dut, manifest)
    else:
        report = await _soak(dut)
    path = os.environ.get(REPORT_ENV)
    if path:
        Path(path).write_text(json.dumps(report) + "\n")
    assert report["mismatches"] == report["lost"] == report["repeated"] == 0 and not report.get(
        "errors"), (
        f"{report['mismatches']} mismatches, {report['lost']} lost, {report['repeated']} "
        f"repeated; first: {report['first_error']}")
