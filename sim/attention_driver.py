"""Shared test and benchmark pieces for the attention scheduler.

* :class:`EngineModel`: a behavioural attention engine on the far side of one command stream:
  it takes a command, is busy ``cost`` cycles (plus random stalls if asked), and after a row's
  last command raises ``done``. With no stalls it is the exact-cost engine the golden
  ``schedule`` assumes, so recorded cycles can be compared one for one.
* :func:`check_invariants`: what must hold whatever the engines' timing.
* Length distributions of the benchmark: real English text (Python standard-library docstring
  paragraphs tokenized with all-MiniLM-L6-v2's tokenizer), uniform, bimodal.

Used by the Amaranth-simulator tests, the cocotb testbench and ``lutra bench attention``.
"""

from __future__ import annotations

import ast
import importlib.util
import random
import sys
from functools import cache

import numpy as np

from .golden.attention import Command, key_block_valid, rows_of
from .stalls import Stalls

__all__ = [
    "DISTRIBUTIONS",
    "EngineModel",
    "Harness",
    "check_invariants",
    "draw_lengths",
    "real_lengths",
]


class EngineModel:
    """One engine: ``ready``/``done`` as functions of the cycle, updated on handshakes.

    ``stall_prob``/``max_stall`` add a random number of extra busy cycles after a command and
    before a ``done`` (seeded, reproducible); 0 gives the exact-cost engine.
    """

    def __init__(self, cost: int, *, stall_prob: float = 0.0, max_stall: int = 6, seed: int = 0):
        self.cost = cost
        self.stall_prob = stall_prob
        self.max_stall = max_stall
        self._rng = random.Random(seed)
        self.ready_at = 0           # first cycle the command stream is ready again
        self.done_at = None         # first cycle ``done`` is raised, while a row is finishing
        self.commands: list[Command] = []
        self.done_cycles: list[int] = []

    def _extra(self) -> int:
        if self.stall_prob and self._rng.random() < self.stall_prob:
            return self._rng.randint(1, self.max_stall)
        return 0

    def ready(self, cycle: int) -> bool:
        return self.done_at is None and cycle >= self.ready_at

    def done(self, cycle: int) -> bool:
        return self.done_at is not None and cycle >= self.done_at

    def take(self, cycle: int, payload: dict) -> None:
        """A command was handshaken in ``cycle``."""
        assert self.ready(cycle), f"command {payload} handed to a busy engine in cycle {cycle}"
        cmd = Command(cycle, payload["seq"], payload["query_block"], payload["key_block"],
                      bool(payload["last"]), payload["valid"])
        self.commands.append(cmd)
        self.ready_at = cycle + self.cost + self._extra()
        if cmd.last:
            self.done_at = self.ready_at + self._extra()

    def finished(self, cycle: int) -> None:
        """``done`` was handshaken in ``cycle``."""
        assert self.done(cycle), f"done taken in cycle {cycle} while not raised"
        self.done_cycles.append(cycle)
        self.done_at = None


class Harness:
    """Cycle-by-cycle environment of one scheduler, independent of the simulator.

    Each cycle the testbench applies :meth:`drive` (descriptor offer, engines' ``ready`` and
    ``done``), samples the design's settled outputs and reports them to :meth:`observe`. The
    descriptor source waits random idle cycles between beats when given ``desc_stalls``.
    Cycles are counted from reset; ``origin`` is the cycle of the first descriptor handshake,
    cycle 0 of the golden schedule.
    """

    QUIET_CYCLES = 12       # idle cycles after the last done before the run is over

    def __init__(self, lengths, seq_ids, engines: list[EngineModel],
                 desc_stalls: Stalls | None = None):
        self.lengths, self.seq_ids = list(lengths), list(seq_ids)
        self.engines = engines
        self.desc_stalls = desc_stalls or Stalls()
        self.sent = 0
        self.origin = None
        self._hold = self.desc_stalls.cycles()
        self._quiet = 0

    def drive(self, cycle: int) -> tuple[dict | None, list[bool], list[bool]]:
        """(descriptor offered or None, each engine's command ``ready``, each ``done``)."""
        desc = None
        if self.sent < len(self.lengths) and self._hold == 0:
            desc = {"seq": self.seq_ids[self.sent], "length": self.lengths[self.sent]}
        return (desc, [e.ready(cycle) for e in self.engines],
                [e.done(cycle) for e in self.engines])

    def observe(self, cycle: int, desc_ready: bool, cmd_valid: list[bool], get_payload,
                done_ready: list[bool]) -> None:
        """Record this cycle's handshakes; ``get_payload(e)`` reads engine ``e``'s command."""
        desc, _, _ = self.drive(cycle)
        fired = False
        for e, engine in enumerate(self.engines):
            if cmd_valid[e] and engine.ready(cycle):
                engine.take(cycle, get_payload(e))
                fired = True
            if engine.done(cycle) and done_ready[e]:
                engine.finished(cycle)
                fired = True
        if self._hold:
            self._hold -= 1
        elif desc is not None and desc_ready:
            if self.origin is None:
                self.origin = cycle
            self.sent += 1
            self._hold = self.desc_stalls.cycles()
            fired = True
        idle = (self.sent == len(self.lengths)
                and all(e.done_at is None for e in self.engines))
        self._quiet = self._quiet + 1 if idle and not fired else 0

    @property
    def over(self) -> bool:
        """Every descriptor sent, every engine idle, and nothing issued for a while."""
        return self._quiet > self.QUIET_CYCLES

    def commands(self) -> list[list[Command]]:
        """Each engine's commands with cycles relative to ``origin``."""
        return [[c._replace(cycle=c.cycle - self.origin) for c in e.commands]
                for e in self.engines]

    def makespan(self) -> int:
        """Cycle of the last ``done`` relative to ``origin``."""
        return max(max(e.done_cycles, default=0) for e in self.engines) - self.origin


def check_invariants(engines: list[EngineModel], lengths, seq_ids, **pattern) -> None:
    """Every row of every sequence issued exactly once, whole, to one engine, key blocks in
    increasing order with the right token masks; a row only starts on an engine after the
    ``done`` of its previous row."""
    block = pattern["block"]
    want = {}
    for seq, length in zip(seq_ids, lengths):
        if length == 0:
            continue                    # consumed without work
        for qb, keys in enumerate(rows_of(length, **pattern)):
            want[(seq, qb)] = [(kb, key_block_valid(length, kb, block)) for kb in keys]
    seen = {}
    for e, engine in enumerate(engines):
        rows, current = [], []
        for cmd in engine.commands:
            current.append(cmd)
            if cmd.last:
                rows.append(current)
                current = []
        assert not current, f"engine {e}: row {current[0][1:3]} never finished"
        assert len(engine.done_cycles) == len(rows), \
            f"engine {e}: {len(engine.done_cycles)} done for {len(rows)} rows"
        for n, row in enumerate(rows):
            ident = (row[0].seq, row[0].query_block)
            assert all((c.seq, c.query_block) == ident for c in row), \
                f"engine {e}: row {ident} interleaved with another row"
            assert ident in want, f"engine {e}: row {ident} does not exist"
            assert ident not in seen, f"row {ident} issued twice (engines {seen.get(ident)}, {e})"
            seen[ident] = e
            got = [(c.key_block, c.valid) for c in row]
            assert got == want[ident], f"row {ident}: keys/masks {got} != {want[ident]}"
            if n:
                assert row[0].cycle > engine.done_cycles[n - 1], \
                    f"engine {e}: row {ident} started before the previous row's done"
    missing = sorted(set(want) - set(seen))
    assert not missing, f"{len(missing)} rows never issued, first {missing[:3]}"


# ---- length distributions --------------------------------------------------------------

@cache
def real_lengths() -> tuple[int, ...]:
    """Token counts (with [CLS] and [SEP]) of the paragraphs of the module docstrings of the
    Python standard library, tokenized with all-MiniLM-L6-v2's tokenizer, uncapped.

    Docstrings are read from the source files with ``ast`` (nothing is imported), modules in
    sorted order, paragraphs split at blank lines with whitespace collapsed.
    """
    from .minilm import load_tokenizer

    paragraphs = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_"):
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        try:
            with open(spec.origin, encoding="utf-8") as source:
                doc = ast.get_docstring(ast.parse(source.read())) or ""
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        paragraphs += [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
    encodings = load_tokenizer().encode_batch(paragraphs)
    return tuple(len(enc.ids) for enc in encodings)


def _real(rng: np.random.Generator, n: int, max_len: int) -> np.ndarray:
    return np.minimum(rng.choice(np.array(real_lengths()), n), max_len)


def _uniform(rng: np.random.Generator, n: int, max_len: int) -> np.ndarray:
    return rng.integers(1, max_len + 1, n)


def _bimodal(rng: np.random.Generator, n: int, max_len: int) -> np.ndarray:
    """75 % short (max_len/32 .. max_len/5), 25 % long (3/4 max_len .. max_len)."""
    short = rng.integers(max(1, max_len // 32), max(2, max_len // 5) + 1, n)
    long = rng.integers(max(1, 3 * max_len // 4), max_len + 1, n)
    return np.where(rng.random(n) < 0.75, short, long)


DISTRIBUTIONS = {"real": _real, "uniform": _uniform, "bimodal": _bimodal}


def draw_lengths(distribution: str, rng: np.random.Generator, n: int, max_len: int) -> list[int]:
    """``n`` sequence lengths in 1..``max_len`` from one of :data:`DISTRIBUTIONS`."""
    return [int(x) for x in DISTRIBUTIONS[distribution](rng, n, max_len)]
