"""Golden model of Lutra's block-sparse attention pattern and length-aware scheduler.

This module is the specification of issue 6 (length-aware sparse attention, after Peng et al.,
"A Length Adaptive Algorithm-Hardware Co-design of Transformer on FPGA Through Sparse
Attention and Dynamic Pipelining", DAC 2022, whose exact pattern is not public; the pattern
below is the one the issue defines).

Pattern
-------
A sequence of ``length`` tokens is cut into ``n_blocks = ceil(length / block)`` blocks. Query
block ``i`` attends key block ``j`` when ``|i - j| <= window`` or ``j < n_global`` or
``i < n_global``; ``causal`` additionally requires ``j <= i`` (and, token by token, key
position <= query position, so the diagonal block is lower-triangular). Tokens at positions
``>= length`` of the last block are masked. Each non-global query block sees at most
``n_global + 2 * window + 1`` key blocks, so the work is linear in ``length``.

Scheduler
---------
The unit of work is a *row*: (sequence, query block) with its key blocks in increasing order,
issued to one engine so that an online softmax accumulates across them. An engine takes
``cost_per_pair`` cycles per (query block, key block) pair. The policy, cycle by cycle, with
cycle 0 the cycle in which the first sequence descriptor is accepted:

1. Rows are generated in descriptor order, query blocks ascending, at most one per cycle from
   cycle 1 on. A row generated in cycle ``t`` is staged (registered) in cycle ``t + 1``, enters
   the dispatch window at the end of that cycle and can be dispatched from cycle ``t + 2``. A
   row can be generated in cycle ``t`` only while the rows waiting in the window at the start
   of cycle ``t`` (before this cycle's dispatches) plus the staged row, if any, are fewer than
   ``lookahead``: room made by a dispatch in cycle ``t`` is used from cycle ``t + 1``, and the
   window never holds more than ``lookahead`` rows. Descriptors are offered back to back;
   the next one is accepted in the cycle its predecessor's last row is generated, so rows of
   consecutive sequences follow each other without a gap.
2. The window is ordered by priority: with ``longest_first`` by number of key blocks,
   most first, ties by generation order; otherwise by generation order alone (descriptor
   order). In every cycle, the engines that are free (never used, or whose ``done`` is
   accepted in this cycle) take the first rows of the window: the free engine with the lowest
   index the first row, and so on, as many as there are rows (several per cycle). There is no
   barrier between sequences.
3. An engine given a row in cycle ``t`` receives the row's ``k``-th command (``k = 0, 1, ...``)
   in cycle ``t + 1 + k * cost_per_pair`` (its command stream is ready again ``cost_per_pair``
   cycles after each handshake) and, after a row of ``n`` pairs, signals ``done`` in cycle
   ``t + 1 + n * cost_per_pair``, which frees it in that same cycle.

The makespan is the cycle of the last ``done``. Every row costs its engine ``n * cost_per_pair
+ 1`` cycles (the extra cycle is the registered hand-over from ``done`` to the next command).

Stalling neighbours
-------------------
The same policy with engines and a descriptor source that stall (``schedule``'s
``engine_stalls`` and ``desc_gaps``): after the handshake of each command in cycle ``c``, an
engine's command stream is ready again in cycle ``c + cost_per_pair + x`` and, after a row's
last command, it raises ``done`` ``x'`` cycles after that (``x``, ``x'`` >= 0 drawn in that
order from the engine's stall source); ``done`` is taken, and the engine freed, in the cycle
it is raised. Descriptor ``n >= 1`` is offered ``g_n`` idle cycles after the cycle following
its predecessor's acceptance, and is accepted in the later of that cycle and the cycle its
predecessor's last row is generated; its first row can be generated from the cycle after.
With no stalls this is the schedule above.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "Command",
    "Schedule",
    "block_mask",
    "execute_schedule",
    "key_block_valid",
    "row_keys",
    "rows_of",
    "schedule",
    "sparse_attention",
    "token_mask",
    "total_pairs",
]


#: Longest sequence the reference functions accept (their masks are dense NumPy matrices).
MAX_LENGTH = 1 << 16


def _check_pattern(block: int, window: int, n_global: int, causal: bool) -> None:
    for name, value, lo in (("block", block, 1), ("window", window, 0),
                            ("n_global", n_global, 0)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if value < lo:
            raise ValueError(f"{name} must be >= {lo}, not {value!r}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, not {causal!r}")


def _check_length(name: str, length) -> None:
    if not isinstance(length, (int, np.integer)) or isinstance(length, bool):
        raise TypeError(f"{name} must be an integer, not {length!r}")
    if length < 1:
        raise ValueError(f"{name} must be >= 1, not {length!r}")
    if length > MAX_LENGTH:
        raise ValueError(f"{name} must be <= {MAX_LENGTH}, not {length!r}")


def block_mask(length: int, *, block: int = 8, window: int = 1, n_global: int = 1,
               causal: bool = False) -> np.ndarray:
    """Boolean ``(n_blocks, n_blocks)`` matrix: query block ``i`` attends key block ``j``."""
    _check_pattern(block, window, n_global, causal)
    _check_length("length", length)
    n = -(-int(length) // block)
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    mask = (np.abs(i - j) <= window) | (j < n_global) | (i < n_global)
    if causal:
        mask &= j <= i
    return mask


def token_mask(length: int, *, block: int = 8, window: int = 1, n_global: int = 1,
               causal: bool = False) -> np.ndarray:
    """Boolean ``(length, length)`` matrix: query token ``a`` attends key token ``b``.

    The block pattern expanded to tokens; positions past ``length`` do not exist. With
    ``causal`` the key position must also not exceed the query position.
    """
    blocks = block_mask(length, block=block, window=window, n_global=n_global, causal=causal)
    pos = np.arange(int(length)) // block
    mask = blocks[pos[:, None], pos[None, :]]
    if causal:
        mask &= np.arange(int(length))[None, :] <= np.arange(int(length))[:, None]
    return mask


def row_keys(length: int, query_block: int, **pattern) -> list[int]:
    """Key blocks of one row, increasing."""
    if isinstance(query_block, bool) or not isinstance(query_block, (int, np.integer)):
        raise TypeError(f"query_block must be an integer, not {query_block!r}")
    mask = block_mask(length, **pattern)
    n_blocks = mask.shape[0]
    if not 0 <= query_block < n_blocks:
        raise ValueError(f"query_block must be in [0, {n_blocks - 1}], not {query_block!r}")
    return [int(j) for j in np.flatnonzero(mask[query_block])]


def rows_of(length: int, **pattern) -> list[list[int]]:
    """Key-block lists of every query block of a sequence, in query-block order."""
    mask = block_mask(length, **pattern)
    return [[int(j) for j in np.flatnonzero(row)] for row in mask]


def total_pairs(lengths, **pattern) -> int:
    """(query block, key block) pairs of a batch: the work, in units of ``cost_per_pair``."""
    return sum(int(block_mask(length, **pattern).sum()) for length in lengths)


def key_block_valid(length: int, key_block: int, block: int) -> int:
    """Bit ``t`` set when token ``t`` of the key block lies inside the sequence."""
    _check_length("length", length)
    for name, value, lo in (("key_block", key_block, 0), ("block", block, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if not lo <= value <= MAX_LENGTH:
            raise ValueError(f"{name} must be in [{lo}, {MAX_LENGTH}], not {value!r}")
    valid = max(0, min(block, int(length) - key_block * block))
    return (1 << valid) - 1


class Command(NamedTuple):
    """One (query block, key block) pair as issued to an engine, with its handshake cycle."""

    cycle: int
    seq: int
    query_block: int
    key_block: int
    last: bool
    valid: int          # key-block token mask, bit t = token t exists


class Schedule(NamedTuple):
    """Per-engine command lists (in issue order) and the cycle of the last ``done``."""

    engines: list[list[Command]]
    makespan: int


def schedule(lengths, *, engines: int, block: int = 8, window: int = 1, n_global: int = 1,
             causal: bool = False, cost_per_pair: int, lookahead: int = 16,
             longest_first: bool = True, engine_stalls=None, desc_gaps=None) -> Schedule:
    """Run the scheduler policy of this module's docstring on a batch of sequence lengths.

    Sequence ids are the indices in ``lengths``. ``lookahead`` is the dispatch window (rows
    held ready for free engines). Exact command for command and cycle for cycle with the RTL
    when every engine takes exactly ``cost_per_pair`` cycles per command.

    ``engine_stalls``, one zero-argument callable per engine, and ``desc_gaps``, the idle
    cycles before each descriptor after the first, describe stalling neighbours (the module
    docstring's last section); by default none stall.
    """
    _check_pattern(block, window, n_global, causal)
    for name, value in (("engines", engines), ("cost_per_pair", cost_per_pair),
                        ("lookahead", lookahead)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, not {value!r}")
    if not isinstance(longest_first, bool):
        raise TypeError(f"longest_first must be a bool, not {longest_first!r}")
    lengths = list(lengths)
    if not lengths:
        raise ValueError("lengths must not be empty")
    for n, length in enumerate(lengths):
        _check_length(f"lengths[{n}]", length)
    if engine_stalls is None:
        engine_stalls = [lambda: 0] * engines
    engine_stalls = list(engine_stalls)
    if len(engine_stalls) != engines or not all(callable(f) for f in engine_stalls):
        raise TypeError(f"engine_stalls must be {engines} callables, not {engine_stalls!r}")
    gaps = [0] * (len(lengths) - 1) if desc_gaps is None else list(desc_gaps)
    if len(gaps) != len(lengths) - 1 or not all(
            isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gaps):
        raise ValueError(f"desc_gaps must be {len(lengths) - 1} integers >= 0, not {desc_gaps!r}")
    pattern = {"block": block, "window": window, "n_global": n_global, "causal": causal}

    rows = [(seq, qb, keys, int(length)) for seq, length in enumerate(lengths)
            for qb, keys in enumerate(rows_of(length, **pattern))]
    accepted = [0] + [None] * (len(lengths) - 1)   # each descriptor's acceptance cycle
    out: list[list[Command]] = [[] for _ in range(engines)]
    free_at = [0] * engines            # cycle from which each engine is free
    pending: list[int] = []            # the dispatch window: indices into `rows`, by priority
    staged = None                      # the row generated in the previous cycle
    next_row = 0
    t = 0
    while True:
        # The generator's room check sees the window before this cycle's dispatches.
        room = len(pending) + (staged is not None) < lookahead
        free = [e for e in range(engines) if free_at[e] <= t]
        for e, r in zip(free, pending):
            seq, qb, keys, length = rows[r]
            cycle = t + 1
            for k, kb in enumerate(keys):
                out[e].append(Command(cycle, seq, qb, kb, k == len(keys) - 1,
                                      key_block_valid(length, kb, block)))
                cycle += cost_per_pair + engine_stalls[e]()
            free_at[e] = cycle + engine_stalls[e]()
        del pending[:len(free)]
        if staged is not None:
            size = len(rows[staged][2])
            # Behind every row of the window that is at least as long (stable), or at the end.
            pos = len(pending)
            if longest_first:
                pos = sum(len(rows[r][2]) >= size for r in pending)
            pending.insert(pos, staged)
            staged = None
        # A row is generated from the cycle after its descriptor is accepted (the descriptor
        # is registered); the next descriptor is accepted with the last row, or when offered.
        if next_row < len(rows) and room and t > accepted[rows[next_row][0]]:
            staged = next_row
            seq = rows[next_row][0]
            next_row += 1
            if seq + 1 < len(lengths) and (next_row == len(rows) or rows[next_row][0] != seq):
                accepted[seq + 1] = max(t, accepted[seq] + 1 + gaps[seq])
        if next_row == len(rows) and not pending and staged is None:
            return Schedule(out, max(free_at))
        if staged is not None or (next_row < len(rows) and len(pending) < lookahead):
            t += 1                      # a row enters the window or is generated next cycle
        else:
            # Nothing changes until an engine frees: skip ahead (keeps long batches fast).
            t = max(t + 1, min(free_at))


def sparse_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, length: int,
                     **pattern) -> np.ndarray:
    """Float reference: softmax(q k^T / sqrt(d)) v over the first ``length`` tokens, with
    scores outside :func:`token_mask` excluded. Returns ``(length, d_v)``."""
    length = int(length)
    mask = token_mask(length, **pattern)
    q, k, v = (np.asarray(x, dtype=np.float64)[:length] for x in (q, k, v))
    scores = q @ k.T / math.sqrt(q.shape[1])
    scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ v


def execute_schedule(sched: Schedule, qs, ks, vs, lengths, *, block: int,
                     causal: bool = False) -> list[np.ndarray]:
    """Execute every engine's commands with an online softmax (Milakov & Gimelshein 2018;
    FlashAttention's running max / running sum), as an engine would: one row at a time, key
    blocks in issue order, the row finished on its ``last`` command. Returns each sequence's
    ``(length, d_v)`` output; rows never issued stay NaN so a lost row is visible.
    """
    outs = [np.full((int(n), np.asarray(v).shape[1]), np.nan) for n, v in zip(lengths, vs)]
    for commands in sched.engines:
        state = None
        for cmd in commands:
            length = int(lengths[cmd.seq])
            q0 = cmd.query_block * block
            q = np.asarray(qs[cmd.seq], dtype=np.float64)[q0:min(q0 + block, length)]
            k0 = cmd.key_block * block
            bits = [(cmd.valid >> t) & 1 for t in range(block)]
            keys = [t for t in range(block) if bits[t] and k0 + t < length]
            kk = np.asarray(ks[cmd.seq], dtype=np.float64)[[k0 + t for t in keys]]
            vv = np.asarray(vs[cmd.seq], dtype=np.float64)[[k0 + t for t in keys]]
            if state is None:
                state = (np.full(len(q), -np.inf), np.zeros(len(q)),
                         np.zeros((len(q), vv.shape[1])))
            run_max, run_sum, acc = state
            s = q @ kk.T / math.sqrt(q.shape[1])
            if causal:
                qpos = np.arange(q0, q0 + len(q))[:, None]
                kpos = np.array([k0 + t for t in keys])[None, :]
                s = np.where(kpos <= qpos, s, -np.inf)
            new_max = np.maximum(run_max, s.max(axis=1, initial=-np.inf))
            # A row whose keys so far are all masked keeps max -inf: scale by 0, not NaN.
            safe = np.where(np.isfinite(new_max), new_max, 0.0)
            scale = np.where(np.isfinite(run_max), np.exp(run_max - safe), 0.0)
            p = np.exp(s - safe[:, None])
            state = (new_max, run_sum * scale + p.sum(axis=1), acc * scale[:, None] + p @ vv)
            if cmd.last:
                _, run_sum, acc = state
                outs[cmd.seq][q0:q0 + len(q)] = acc / run_sum[:, None]
                state = None
    return outs
