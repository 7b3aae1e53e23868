"""The attention golden model from first principles: the block pattern, the schedule policy
worked by hand, and online-softmax execution of a schedule against dense masked attention."""

import math
import random

import numpy as np
import pytest

from sim.golden.attention import (
    block_mask,
    execute_schedule,
    key_block_valid,
    row_keys,
    rows_of,
    schedule,
    sparse_attention,
    token_mask,
    total_pairs,
)

# ---- the pattern -------------------------------------------------------------------------------


def test_block_mask_by_hand():
    # 40 tokens, blocks of 8: 5 blocks. Band |i - j| <= 1, block 0 global both ways.
    want = np.array([
        [1, 1, 1, 1, 1],     # global query block sees everything
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 0, 1, 1, 1],     # global key 0, band 2..4
        [1, 0, 0, 1, 1],
    ], dtype=bool)
    assert (block_mask(40, block=8, window=1, n_global=1) == want).all()
    causal = np.tril(want)
    assert (block_mask(40, block=8, window=1, n_global=1, causal=True) == causal).all()


def test_block_mask_no_global_is_a_band():
    mask = block_mask(33, block=4, window=2, n_global=0)          # 9 blocks
    i, j = np.indices(mask.shape)
    assert (mask == (abs(i - j) <= 2)).all()


@pytest.mark.parametrize("seed", range(5))
def test_pattern_symmetric_without_causal(seed):
    rng = random.Random(seed)
    pattern = {"block": rng.choice([1, 2, 8, 16]), "window": rng.randint(0, 3),
                   "n_global": rng.randint(0, 3)}
    length = rng.randint(1, 300)
    mask = block_mask(length, **pattern)
    assert (mask == mask.T).all()
    assert mask.diagonal().all()                       # every query block sees itself
    causal = block_mask(length, **pattern, causal=True)
    assert (causal == np.tril(mask)).all()


def test_work_is_linear_in_length():
    # Each non-global row has at most n_global + 2 window + 1 key blocks.
    for length in (64, 640, 6400):
        rows = rows_of(length, block=8, window=1, n_global=1)
        assert all(len(keys) <= 4 for keys in rows[1:])
    assert total_pairs([6400], block=8, window=1, n_global=1) < 5 * 800


def test_token_mask_by_hand():
    # 5 tokens, blocks of 2 (3 blocks), window 0, no globals: block-diagonal, last block 1 token.
    want = np.array([
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1],
    ], dtype=bool)
    assert (token_mask(5, block=2, window=0, n_global=0) == want).all()
    assert (token_mask(5, block=2, window=0, n_global=0, causal=True) == np.tril(want)).all()
    assert token_mask(1, block=8, window=1, n_global=1).tolist() == [[True]]


def test_key_block_valid():
    assert key_block_valid(20, 0, 8) == 0xFF
    assert key_block_valid(20, 2, 8) == 0x0F          # tokens 16..19
    assert key_block_valid(16, 1, 8) == 0xFF          # a full last block
    assert key_block_valid(1, 0, 8) == 0x01


@pytest.mark.parametrize("kwargs, error, message", [
    ({"length": 0}, ValueError, "length must be >= 1, not 0"),
    ({"length": 1 << 70}, ValueError, f"length must be <= 65536, not {1 << 70}"),
    ({"length": 4, "block": 0}, ValueError, "block must be >= 1, not 0"),
    ({"length": 4, "window": -1}, ValueError, "window must be >= 0, not -1"),
    ({"length": 4, "n_global": 1.5}, TypeError, "n_global must be an integer, not 1.5"),
    ({"length": 4, "causal": "no"}, TypeError, "causal must be a bool, not 'no'"),
])
def test_block_mask_wrong(kwargs, error, message):
    with pytest.raises(error) as info:
        block_mask(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("kwargs, error, message", [
    ({"lengths": [4, 0]}, ValueError, "lengths[1] must be >= 1, not 0"),
    ({"lengths": []}, ValueError, "lengths must not be empty"),
    ({"lengths": [4], "engines": 0}, ValueError, "engines must be >= 1, not 0"),
    ({"lengths": [4], "cost_per_pair": "2"}, TypeError,
     "cost_per_pair must be an integer, not '2'"),
    ({"lengths": [4], "lookahead": 0}, ValueError, "lookahead must be >= 1, not 0"),
    ({"lengths": [4], "longest_first": 1}, TypeError, "longest_first must be a bool, not 1"),
    ({"lengths": [4, 4], "desc_gaps": [-1]}, ValueError,
     "desc_gaps must be 1 integers >= 0, not [-1]"),
    ({"lengths": [4], "engine_stalls": [None, None]}, TypeError,
     "engine_stalls must be 2 callables, not [None, None]"),
])
def test_schedule_wrong(kwargs, error, message):
    args = {"engines": 2, "cost_per_pair": 2} | kwargs
    with pytest.raises(error) as info:
        schedule(args.pop("lengths"), **args)
    assert str(info.value) == message


# ---- the schedule, worked by hand from the policy -----------------------------------------------

def test_schedule_one_engine_by_hand():
    # 20 tokens: 3 blocks, every row sees blocks 0..2. Descriptor in cycle 0; rows generated in
    # cycles 1, 2, 3, staged in 2, 3, 4, dispatchable from 3, 4, 5; row 0 dispatched in 3,
    # commands 4, 7, 10, done 13; row 1 dispatched in 13, commands 14, 17, 20, done 23; row 2
    # commands 24, 27, 30, done 33.
    s = schedule([20], engines=1, cost_per_pair=3)
    got = [(c.cycle, c.query_block, c.key_block, c.last, c.valid) for c in s.engines[0]]
    want = []
    for qb, start in enumerate((4, 14, 24)):
        want += [(start + 3 * k, qb, k, k == 2, 0x0F if k == 2 else 0xFF) for k in range(3)]
    assert got == want
    assert s.makespan == 33


def test_schedule_two_engines_by_hand():
    # Rows A = (0, 0) [0, 1], B = (0, 1) [0, 1], C = (1, 0) [0], generated in cycles 1, 2, 3,
    # dispatchable from 3, 4, 5. A -> engine 0 in cycle 3 (commands 4, 6; done 8); B -> engine
    # 1 in 4 (5, 7; done 9); C waits for engine 0, dispatched in 8 (command 9, done 11).
    s = schedule([9, 1], engines=2, cost_per_pair=2)
    got = [[(c.cycle, c.seq, c.query_block, c.key_block, c.last) for c in e] for e in s.engines]
    assert got == [[(4, 0, 0, 0, False), (6, 0, 0, 1, True), (9, 1, 0, 0, True)],
                   [(5, 0, 1, 0, False), (7, 0, 1, 1, True)]]
    assert s.makespan == 11


def test_stalling_engines_and_descriptor_gap_by_hand():
    # The rows of test_schedule_two_engines_by_hand, with stalls. Descriptor 1 is offered 5
    # idle cycles after the cycle following descriptor 0's acceptance: in 6, so C = (1, 0) is
    # generated in 7, dispatchable from 9. Engine 0 draws 1, 0, 3, 0, 0: A's commands in 4 and
    # 4 + 2 + 1 = 7, ready again in 9, done 3 cycles later in 12. Engine 1 draws 0, 2, 1: B's
    # commands in 5 and 7, ready in 11, done in 12. C goes to engine 0, the lowest free index
    # in 12: command 13, done 15.
    draws = [iter([1, 0, 3, 0, 0]), iter([0, 2, 1])]
    s = schedule([9, 1], engines=2, cost_per_pair=2, desc_gaps=[5],
                 engine_stalls=[d.__next__ for d in draws])
    got = [[(c.cycle, c.seq, c.query_block, c.key_block, c.last) for c in e] for e in s.engines]
    assert got == [[(4, 0, 0, 0, False), (7, 0, 0, 1, True), (13, 1, 0, 0, True)],
                   [(5, 0, 1, 0, False), (7, 0, 1, 1, True)]]
    assert s.makespan == 15


def test_staged_rows_and_registered_room_by_hand():
    # A window of one row. Row R0 = (0, 0) is generated in cycle 1 and staged in 2; in 2 the
    # window is empty but R0 is staged, so nothing is generated. In 3 R0 waits in the window
    # (full) and engine 0 takes it (command 4, done 5); its room is only seen in 4, where
    # R1 = (1, 0) is generated; staged in 5, dispatchable in 6: engine 0 (the lowest free
    # index, free since 5) takes it, command 7, done 8.
    s = schedule([1, 1], engines=2, cost_per_pair=1, lookahead=1)
    got = [[(c.cycle, c.seq, c.query_block) for c in e] for e in s.engines]
    assert got == [[(4, 0, 0), (7, 1, 0)], []]
    assert s.makespan == 8


def test_longest_first_reorders_within_lookahead():
    # One engine, busy with row (0, 0) from cycle 3 to 8. Meanwhile (1, 0) with 1 pair and the
    # five rows of the 40-token sequence (5, 3, 4, 4, 3 pairs) arrive (all but (2, 4) by cycle
    # 8); longest first (stable) takes them as (2, 0), (2, 2), (2, 3), (2, 1), (2, 4), (1, 0).
    lengths = [1, 1, 40]
    order = [(c.seq, c.query_block) for c in
             schedule(lengths, engines=1, cost_per_pair=4).engines[0] if c.last]
    assert order == [(0, 0), (2, 0), (2, 2), (2, 3), (2, 1), (2, 4), (1, 0)]
    fifo = [(c.seq, c.query_block) for c in
            schedule(lengths, engines=1, cost_per_pair=4, longest_first=False).engines[0]
            if c.last]
    assert fifo == [(0, 0), (1, 0)] + [(2, qb) for qb in range(5)]
    # A window of one row is descriptor order whatever the priority.
    assert schedule(lengths, engines=1, cost_per_pair=4, lookahead=1) == \
        schedule(lengths, engines=1, cost_per_pair=4, lookahead=1, longest_first=False)


def test_length_one_and_batch_of_one():
    s = schedule([1], engines=4, cost_per_pair=5)
    assert s.engines[0] == [(4, 0, 0, 0, True, 1)]
    assert s.engines[1:] == [[], [], []]
    assert s.makespan == 4 + 5


def test_no_barrier_between_sequences():
    # 24 tokens: rows (0, 0), (0, 1), (0, 2) of 3 pairs, then (1, 0), dispatchable from cycles
    # 3, 4, 5, 6. Engine 0 takes (0, 0) in cycle 3 and (0, 2) in 7 (commands 8, 9, 10); engine
    # 1 takes (0, 1) in 4 and, freed in 8, sequence 1's row in 8 (command 9), while sequence 0
    # is still running.
    s = schedule([24, 8], engines=2, cost_per_pair=1)
    assert [(c.cycle, c.seq, c.query_block) for c in s.engines[0]][-3:] == \
        [(8, 0, 2), (9, 0, 2), (10, 0, 2)]
    assert [(c.cycle, c.seq, c.query_block) for c in s.engines[1]][-1] == (9, 1, 0)


def check_schedule(s, lengths, cost, **pattern):
    """Invariants of any schedule: every pair exactly once, rows whole on one engine, keys
    increasing, commands of an engine cost apart, rows back to back with one hand-over cycle."""
    seen = set()
    for commands in s.engines:
        row = []
        last_cycle = None
        for c in commands:
            if last_cycle is not None:
                gap = c.cycle - last_cycle
                assert gap == cost if row else gap >= cost + 1, f"{c}: gap {gap}"
            last_cycle = c.cycle
            row.append(c)
            if c.last:
                ident = (c.seq, c.query_block)
                assert all((r.seq, r.query_block) == ident for r in row)
                assert [r.key_block for r in row] == row_keys(lengths[c.seq], c.query_block,
                                                             **pattern)
                assert ident not in seen
                seen.add(ident)
                row = []
        assert not row
    assert len(seen) == sum(len(rows_of(n, **pattern)) for n in lengths)


@pytest.mark.parametrize("seed", range(6))
def test_schedule_invariants_and_bound(seed):
    """Greedy list scheduling never leaves an engine idle while a row waits, so the makespan is
    at most the busy time per engine plus one row plus the start-up of the row pipeline (rows
    of at least ``engines`` cycles, so that one new row per cycle keeps every engine fed, and
    of at least 3 cycles, the time from a dispatch to the next row that its window slot lets
    through: room seen a cycle later, then the staged row)."""
    rng = random.Random(seed)
    pattern = {"block": rng.choice([4, 8]), "window": rng.randint(0, 2),
                   "n_global": rng.randint(0, 2), "causal": rng.random() < 0.3}
    engines = rng.randint(1, 8)
    cost = rng.randint(max(engines, 2), 9)
    lengths = [rng.randint(1, 256) for _ in range(rng.randint(1, 40))]
    # A window of at least ``engines`` rows, so that engines freed together all get one.
    s = schedule(lengths, engines=engines, cost_per_pair=cost,
                 lookahead=rng.choice([engines, 32]), **pattern)
    check_schedule(s, lengths, cost, **pattern)
    rows = [len(keys) for n in lengths for keys in rows_of(n, **pattern)]
    busy = sum(k * cost + 1 for k in rows)
    assert s.makespan >= math.ceil(busy / engines)
    assert s.makespan <= busy / engines + max(rows) * cost + 1 + engines + 2


# ---- execution of the schedule with an online softmax -------------------------------------------

def dense_masked_attention(q, k, v, mask):
    """Per query, written out: softmax over the allowed keys only."""
    out = np.zeros((len(q), v.shape[1]))
    for a in range(len(q)):
        keys = np.flatnonzero(mask[a])
        s = np.array([q[a] @ k[b] for b in keys]) / math.sqrt(q.shape[1])
        p = np.exp(s - s.max())
        out[a] = (p / p.sum()) @ v[keys]
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_online_softmax_of_schedule_equals_dense_masked(causal):
    rng = np.random.default_rng(11)
    lengths = [1, 8, 9, 40, 71, 256]
    pattern = {"block": 8, "window": 1, "n_global": 1, "causal": causal}
    qs = [rng.normal(size=(n, 16)) * 2 for n in lengths]
    ks = [rng.normal(size=(n, 16)) * 2 for n in lengths]
    vs = [rng.normal(size=(n, 12)) for n in lengths]
    s = schedule(lengths, engines=3, cost_per_pair=4, **pattern)
    outs = execute_schedule(s, qs, ks, vs, lengths, block=8, causal=causal)
    for n, length in enumerate(lengths):
        want = dense_masked_attention(qs[n], ks[n], vs[n], token_mask(length, **pattern))
        assert np.abs(outs[n] - want).max() < 1e-6, f"sequence {n}"
        assert np.abs(sparse_attention(qs[n], ks[n], vs[n], length, **pattern) - want).max() \
            < 1e-9


def test_full_window_is_dense_attention():
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(30, 8)) for _ in range(3))
    got = sparse_attention(q, k, v, 30, block=8, window=4, n_global=0)
    s = q @ k.T / math.sqrt(8)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    assert np.abs(got - (p / p.sum(axis=1, keepdims=True)) @ v).max() < 1e-12


def test_lost_row_is_visible():
    s = schedule([16], engines=1, cost_per_pair=1)
    s.engines[0][:] = [c for c in s.engines[0] if c.query_block != 1]
    q = np.ones((16, 4))
    out = execute_schedule(s, [q], [q], [q], [16], block=8)[0]
    assert np.isnan(out[8:]).all() and not np.isnan(out[:8]).any()


def test_row_keys_and_key_block_valid_name_bad_arguments():
    with pytest.raises(ValueError) as info:
        row_keys(8, 5, block=4)
    assert str(info.value) == "query_block must be in [0, 1], not 5"
    with pytest.raises(TypeError) as info:
        key_block_valid(8, "a", 8)
    assert str(info.value) == "key_block must be an integer, not 'a'"
    assert key_block_valid(8, 3, 4) == 0                # a block past the sequence
