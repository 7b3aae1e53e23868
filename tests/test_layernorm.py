"""LayerNorm block: parameters, Amaranth simulation against the golden model, cocotb on the
generated Verilog."""

from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from gen.blocks import get_block
from hw.layernorm import LayerNorm, LayerNormParams
from sim.layernorm_driver import (ChannelParams, expected, folded_params, from_beats,
                                  minilm_embedding_rows, plan_inputs, random_params, random_rows)
from sim.stalls import Stalls
from sim.streams import stream_through
from sim.testing import SIMULATORS, cocotb_run

# ---- parameters --------------------------------------------------------------------------------


def test_init_defaults():
    block = LayerNorm()
    assert (block.hidden, block.in_width, block.out_width, block.divider) == \
        (384, 16, 16, "iterative")
    assert block.parameters == LayerNormParams()
    cfg = block.parameters
    assert cfg.row_buffer_depth == cfg.param_memory_depth == 768
    assert cfg.stats_period == 34                     # the reciprocal's 32 steps + 2
    assert cfg.full_rate and cfg.elements_per_clock == 1.0
    assert block.latency == cfg.latency == 109


def test_derived_figures():
    small = LayerNormParams(hidden=1, in_width=8, divider="pipelined")
    assert small.stats_period == 1 and not small.full_rate
    assert small.pair_period == 1 + small.row_gap
    # A row must be at least as long as the row gap to stream at one element per clock.
    edge = LayerNormParams(hidden=92)
    assert edge.row_gap == 92 and edge.full_rate
    assert not LayerNormParams(hidden=91).full_rate
    assert LayerNormParams(hidden=68, in_width=8).full_rate       # int8: narrower statistics


@pytest.mark.parametrize("kwargs, error, message", [
    ({"hidden": 0}, ValueError, "hidden must be in [1, 1024], not 0"),
    ({"hidden": 1025}, ValueError, "hidden must be in [1, 1024], not 1025"),
    ({"hidden": 8.0}, TypeError, "hidden must be an integer, not 8.0"),
    ({"hidden": True}, TypeError, "hidden must be an integer, not True"),
    ({"in_width": 12}, ValueError, "in_width must be one of 8, 16, not 12"),
    ({"in_width": 8.0}, TypeError, "in_width must be an integer, not 8.0"),
    ({"out_width": 4}, ValueError, "out_width must be one of 8, 16, not 4"),
    ({"divider": "fast"}, ValueError,
     "divider must be one of 'iterative', 'pipelined', not 'fast'"),
])
def test_init_wrong(kwargs, error, message):
    for make in (LayerNorm, LayerNormParams):
        with pytest.raises(error) as info:
            make(**kwargs)
        assert str(info.value) == message


def test_init_takes_params_or_keywords_and_params_frozen():
    params = LayerNormParams(hidden=8, divider="pipelined")
    assert LayerNorm(params).parameters is params
    assert LayerNorm(hidden=8, divider="pipelined").parameters == params
    with pytest.raises(TypeError) as info:
        LayerNorm(384)
    assert str(info.value) == "parameters must be a LayerNormParams, not 384"
    with pytest.raises(TypeError) as info:
        LayerNorm(params, hidden=8)
    assert str(info.value) == "give either parameters or keyword parameters, not both"
    with pytest.raises(FrozenInstanceError):
        LayerNormParams().hidden = 8


def test_block_parameterscome_from_the_dataclass():
    spec = get_block("layernorm")
    hidden, in_width, divider = (spec.param(n) for n in ("hidden", "in_width", "divider"))
    assert (hidden.kind, hidden.default, hidden.lo, hidden.hi) == (int, 384, 1, 1024)
    assert in_width.choices == (8, 16) and divider.choices == ("iterative", "pipelined")
    assert spec.defaults() == {"hidden": 384, "in_width": 16, "out_width": 16,
                               "divider": "iterative"}


def test_resources_estimate():
    need = get_block("layernorm").resources({"hidden": 384, "in_width": 16, "out_width": 8,
                                             "divider": "iterative"})
    # The square, two for (x - mean) * recip, four in the requantizer (mean * t is shift-add).
    assert len(need["multipliers"]) == 7
    # The statistics FIFO, the output queue (a place per element from its read to the
    # requantizer's output, 1 + 6 + 9, plus one, rounded up to a power of two; 8 bits and
    # ``last``), the row buffer and the parameter memory (two banks).
    assert sorted(need["memories"]) == [(3, 49), (32, 8 + 1), (768, 16), (768, 79)]


# ---- Amaranth simulation -----------------------------------------------------------------------

def simulate(params: dict, plan, *, stall_prob: float, seed: int, sink_max_stall: int = 4):
    """Send ``plan`` through a ``LayerNorm(**params)``; check it; return handshake cycles."""
    dut = get_block("layernorm").build(params)
    n = params["hidden"]
    beats_in, rows = plan_inputs(plan)
    beats, accepted, produced = stream_through(
        dut, beats_in, rows * n,
        stalls={"i": Stalls(stall_prob, seed=seed), "params": Stalls(stall_prob, seed=seed + 2)},
        sink_stalls=Stalls(stall_prob, max_cycles=sink_max_stall, seed=seed + 1),
        drain=dut.latency + 8)
    got = from_beats(beats, rows, n)
    for r, (out, want) in enumerate(zip(got, expected(plan, n, params["out_width"]))):
        bad = np.flatnonzero(out != want)
        assert bad.size == 0, (f"row {r}: {bad.size} mismatches, first at channel {bad[0]}: "
                               f"got {out[bad[0]]} want {want[bad[0]]}")
    return dut, accepted, produced


def config(**overrides) -> dict:
    return {**get_block("layernorm").defaults(), **overrides}


CONFIGS = [
    config(hidden=8, in_width=8),
    config(hidden=16, in_width=16, out_width=16),
    config(hidden=1, in_width=16, out_width=8),
    config(hidden=1, in_width=8, out_width=16, divider="pipelined"),
    config(hidden=5, in_width=16, out_width=8, divider="pipelined"),
    config(hidden=12, in_width=8, out_width=16, divider="pipelined"),
]


def _id(c: dict) -> str:
    return f"n{c['hidden']}-i{c['in_width']}-o{c['out_width']}-{c['divider']}"


@pytest.mark.parametrize("params", CONFIGS, ids=_id)
def test_matches_golden_with_stalls(params):
    """Random and extreme rows with stalls on i, params and o; rows before any load, loads
    between rows, two loads back to back while rows are still in flight."""
    rng = np.random.default_rng(params["hidden"] * 31 + params["in_width"])
    n, w, ow = params["hidden"], params["in_width"], params["out_width"]
    plan = [("rows", random_rows(rng, n, w, 2)),
            ("load", random_params(rng, n, ow)), ("rows", random_rows(rng, n, w, 7)),
            ("load", random_params(rng, n, ow)), ("rows", random_rows(rng, n, w, 1)),
            ("load", random_params(rng, n, ow)), ("load", random_params(rng, n, ow)),
            ("rows", random_rows(rng, n, w, 7))]
    simulate(params, plan, stall_prob=0.3, seed=params["hidden"])


def test_sink_held_off_for_long():
    """A sink that stalls for up to 60 cycles at a time: the full row buffer, the statistics
    FIFO and the output queue hold their beats."""
    params = config(hidden=6, in_width=8)
    rng = np.random.default_rng(4)
    plan = [("load", random_params(rng, 6, 8)), ("rows", random_rows(rng, 6, 8, 14)),
            ("load", random_params(rng, 6, 8)), ("rows", random_rows(rng, 6, 8, 7))]
    simulate(params, plan, stall_prob=0.5, seed=4, sink_max_stall=60)


def test_load_waits_for_rows_using_its_bank():
    """Three loads in a row while rows are in flight: each applies exactly to the rows after
    it, so a load must wait until no row reads the bank it overwrites."""
    params = config(hidden=4, in_width=8)
    rng = np.random.default_rng(7)
    loads = [random_params(rng, 4, 8) for _ in range(6)]
    plan = []
    for k, load in enumerate(loads):
        plan += [("load", load), ("rows", random_rows(rng, 4, 8, 1 + k % 3))]
    simulate(params, plan, stall_prob=0.0, seed=0)


@pytest.mark.parametrize("params", [
    config(hidden=1, divider="pipelined"), config(hidden=16, in_width=8),
    config(hidden=1, in_width=8), config(hidden=3, in_width=8),     # the statistics' period binds
    config(hidden=40, divider="pipelined"), config(hidden=92), config(hidden=96, in_width=8),
], ids=_id)
def test_rate_and_latency(params):
    """Unstalled rows back to back: the latency and the two-row period are as stated; a
    configuration that is ``full_rate`` (``hidden = 92`` is the int16 edge) takes one element
    per clock in and out."""
    rng = np.random.default_rng(2)
    n = params["hidden"]
    rows = random_rows(rng, n, params["in_width"], 8)
    plan = [("load", random_params(rng, n, params["out_width"])), ("rows", rows)]
    dut, accepted, produced = simulate(params, plan, stall_prob=0.0, seed=0)
    assert produced[0] - accepted[n - 1] == dut.latency
    starts = accepted[::n]
    pairs = {starts[k + 2] - starts[k] for k in range(2, len(starts) - 2)}
    assert pairs == {dut.pair_period}, f"two rows took {sorted(pairs)} cycles"
    if dut.parameters.full_rate:
        assert accepted[-1] - accepted[0] == len(accepted) - 1
        assert produced[-1] - produced[0] == len(produced) - 1


@pytest.mark.parametrize("in_width", [8, 16])
def test_widest_rows_at_the_extremes(in_width):
    """Rows of 1024 at the input extremes (alternating, constant, one outlier, random mixes of
    the two): every statistic at the top of its width, exact."""
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    rng = np.random.default_rng(in_width)
    rows = [np.where(np.arange(1024) % 2, lo, hi), np.full(1024, lo),
            np.where(np.arange(1024) == 5, hi, lo), rng.choice([lo, hi], 1024)]
    plan = [("load", random_params(rng, 1024, 16)), ("rows", rows)]
    simulate(config(hidden=1024, in_width=in_width), plan, stall_prob=0.0, seed=0)


def test_minilm_embedding_rows_in_amaranth():
    """Two tokens of a real sentence's embedding sums through a 384-wide block."""
    from sim.minilm import load_weights
    q, x, _ = minilm_embedding_rows("Tea or coffee?")
    w = load_weights()
    gamma, beta = w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"]
    y = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True) * gamma + beta
    load = folded_params(gamma, beta, out_scale=float(np.abs(y).max()) / 127)
    simulate(config(), [("load", load), ("rows", list(q[:2]))], stall_prob=0.2, seed=3)


def test_channel_parameterspayload_roundtrip():
    """The driver's parameter beats carry exactly what the golden model is given."""
    p = ChannelParams(np.array([1 << 30]), np.array([-3]), np.array([-5]), np.array([True]), 2)
    (name, beat), = plan_inputs([("load", p)])[0]
    assert name == "params" and beat == {"multiplier": 1 << 30, "shift": -3, "bias": -5,
                                         "negate": 1, "out_zero_point": 2}


# ---- cocotb on the generated Verilog -----------------------------------------------------------

COCOTB_CONFIGS = [
    {"hidden": 384},                                               # MiniLM, int16 -> int16
    {"hidden": 12, "in_width": 8, "out_width": 8, "divider": "pipelined"},
]


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("params", COCOTB_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v
                                                                          in c.items()))
def test_cocotb(params, simulator, tmp_path):
    cocotb_run("layernorm", params, simulator, tmp_path, LUTRA_LAYERNORM_ROWS=9)
