"""LayerNorm block: parameters, the golden model from first principles, Amaranth simulation
against it, cocotb on the generated Verilog."""

import math
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from amaranth.sim import Simulator
from conftest import SIMULATORS, cocotb_run

from gen.blocks import get_block
from hw.layernorm import LayerNorm, LayerNormParams
from sim.golden.layernorm import (BIAS_LIMIT, MAX_HIDDEN, fold_layer_norm, isqrt,
                                  layer_norm_int, layer_norm_stages, norm_scale)
from sim.layernorm_driver import (ChannelParams, expected, folded_params, from_beats,
                                  minilm_embedding_rows, plan_inputs, random_params, random_rows)
from sim.stalls import Stalls
from sim.streams import handshake_monitor, stream_get, stream_put

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


def test_init_is_keyword_only_and_params_frozen():
    with pytest.raises(TypeError):
        LayerNorm(384)
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
    # The statistics FIFO, the row buffer and the parameter memory (two banks).
    assert sorted(need["memories"]) == [(3, 49), (768, 16), (768, 79)]


# ---- the golden model from first principles ----------------------------------------------------

def _ln(x, *, multiplier=1 << 30, shift=-12, bias=0, negate=False, zp=0, out_bits=8):
    return layer_norm_int(np.asarray(x), multiplier=multiplier, shift=shift, bias=bias,
                          negate=negate, out_zero_point=zp, out_bits=out_bits)


def test_golden_hand_checked_row():
    # total 10, mean floor(24 / 8) = 3, y = [-2, -1, 0, 1], var 6, std 2, recip 2**30,
    # norm = y * 2**19; times 0.5 * 2**-12: y * 64.
    s = layer_norm_stages(np.array([1, 2, 3, 4]))
    assert (s.total[0], s.mean[0], s.var[0], s.std[0], s.recip[0]) == (10, 3, 6, 2, 1 << 30)
    assert list(s.norm) == [-(1 << 20), -(1 << 19), 0, 1 << 19]
    assert list(_ln([1, 2, 3, 4])) == [-128, -64, 0, 64]
    assert list(_ln([1, 2, 3, 4], negate=True, zp=3)) == [127, 67, 3, -61]


def test_golden_isqrt_exact():
    v = np.concatenate([np.arange(0, 5000), np.array([(1 << 42) - 1, (1 << 40), 2 ** 41 + 7])])
    want = np.array([math.isqrt(int(k)) for k in v])
    assert (isqrt(v) == want).all()


@pytest.mark.parametrize("value", [-32768, -128, 0, 5, 127, 32767])
def test_golden_constant_row_gives_beta(value):
    hidden = 16
    bias = np.arange(-8, 8) * 1000
    out = _ln(np.full(hidden, value), bias=bias, shift=-5)
    want = np.clip(np.round(bias / 64.0 + 1e-9 * np.sign(bias)), -128, 127)
    assert (out == want).all(), f"{out} != {want}"
    assert (layer_norm_stages(np.full(hidden, value)).norm == 0).all()


def test_golden_one_outlier():
    x = np.zeros(64, np.int64)
    x[17] = 32767
    s = layer_norm_stages(x)
    # mean = round(32767 / 64) = 512; the outlier is sqrt(63) standard deviations out.
    assert s.mean[0] == 512 and s.var[0] == 63 * 512 ** 2 + (32767 - 512) ** 2
    # The floor square root and the floor reciprocal each lose less than their own LSB.
    exact = (32767 - 512) / math.sqrt(s.var[0])
    std = int(s.std[0])
    assert abs(s.norm[17] / (1 << 20) - exact) <= exact * (1 / std + std / 2 ** 31) + 2 ** -20
    assert (s.norm[np.arange(64) != 17] == s.norm[0]).all() and s.norm[0] < 0


@pytest.mark.parametrize("lo, hi", [(-128, 127), (-32768, 32767)])
@pytest.mark.parametrize("hidden", [1, 2, 1023, MAX_HIDDEN])
def test_golden_extremes_never_overflow(lo, hi, hidden):
    rng = np.random.default_rng(hidden)
    rows = np.stack([np.full(hidden, lo), np.full(hidden, hi),
                     np.where(np.arange(hidden) % 2, lo, hi), rng.choice([lo, hi], hidden),
                     np.where(np.arange(hidden) == 0, lo, hi)])
    s = layer_norm_stages(rows)
    assert (np.abs(s.total) <= 1 << 25).all() and (s.var < 1 << 42).all()
    assert (s.std < 1 << 21).all() and (s.recip <= 1 << 31).all()
    assert (np.abs(s.norm) <= 1 << 20).all()
    # The std bounds every |y|, so |y * recip| <= 2**31 exactly as the docstring proves.
    assert (np.abs(s.centered * s.recip) <= 1 << 31).all()
    assert (np.abs(s.norm) + BIAS_LIMIT < 1 << 31).all()
    if hidden == 1:
        assert (s.norm == 0).all()
    # int64 arithmetic agrees with Python's unbounded integers.
    for row, norm in zip(rows.tolist(), s.norm):
        n = len(row)
        mean = (2 * sum(row) + n) // (2 * n)
        std = math.isqrt(sum((v - mean) ** 2 for v in row))
        assert list(norm) == [(v - mean) * ((1 << 31) // max(std, 1)) >> 11 for v in row]


@pytest.mark.parametrize("out_bits", [8, 16])
def test_golden_close_to_float_layer_norm(out_bits):
    """Random int16 rows of 384 with random gamma/beta against float LayerNorm of the same
    integers. Error sources, in output steps: 0.5 of output rounding; the floor of ``norm``
    and the rounded folded beta, 1.5 units of ``|gamma| * S'``; the integer mean, off by up to
    half an input step, ``0.5 |gamma| / sigma``; the relative error of the floor square root
    and reciprocal (below ``1 / std + std / 2**31``, ~3e-5 here) times the output's
    magnitude. Under 0.6 steps at int8; under 5 steps of int16 (2.35 measured)."""
    rng = np.random.default_rng(out_bits)
    x = np.round(rng.normal(0, 3000, (32, 384)) + rng.normal(0, 500, (32, 1))).astype(np.int64)
    gamma, beta = rng.uniform(-2, 2, 384), rng.normal(0, 0.5, 384)
    xf = x.astype(np.float64)
    y = (xf - xf.mean(-1, keepdims=True)) / xf.std(-1, keepdims=True) * gamma + beta
    scale = np.abs(y).max() / ((1 << (out_bits - 1)) - 1)
    fold = fold_layer_norm(gamma, beta, out_scale=scale)
    got = layer_norm_int(x, multiplier=fold.multiplier, shift=fold.shift, bias=fold.bias,
                         negate=fold.negate, out_bits=out_bits)
    std = layer_norm_stages(x).std
    relative = float((1 / std + std / 2 ** 31).max())
    err = np.abs(got * scale - y) / scale
    unit = np.abs(gamma).max() * norm_scale(384) / scale
    sigma = std.min() / math.sqrt(384)
    mean_term = 0.5 * np.abs(gamma).max() / sigma / scale
    bound = 0.5 + 1.5 * unit + mean_term + relative * np.abs(y / scale).max() + 1e-3
    assert err.max() < bound, f"max error {err.max():.3f} steps (bound {bound:.3f})"
    assert bound < (0.6 if out_bits == 8 else 5), f"bound {bound:.3f}"


def test_golden_minilm_embeddings_close_to_float():
    """all-MiniLM-L6-v2's embedding LayerNorm of one sentence: int16 inputs by max-abs, int8
    outputs at the float output's max-abs scale: within 0.6 steps of float LayerNorm."""
    from sim.minilm import load_weights
    q, x, _ = minilm_embedding_rows("Where is the nearest train station?")
    w = load_weights()
    gamma, beta = w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"]
    y = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True) * gamma + beta
    scale = float(np.abs(y).max()) / 127
    p = folded_params(gamma, beta, out_scale=scale)
    got = layer_norm_int(q, multiplier=p.multiplier, shift=p.shift, bias=p.bias,
                         negate=p.negate)
    err = np.abs(got * scale - y) / scale
    assert err.max() < 0.6, f"max error {err.max():.3f} steps"


# ---- Amaranth simulation -----------------------------------------------------------------------

def simulate(params: dict, plan, *, stall_prob: float, seed: int, sink_max_stall: int = 4):
    """Send ``plan`` through a ``LayerNorm(**params)``; check it; return handshake cycles."""
    dut = get_block("layernorm").build(params)
    n = params["hidden"]
    beats_in, rows = plan_inputs(plan)
    beats, accepted, produced = [], [], []

    async def producer(ctx):
        stalls = {"i": Stalls(stall_prob, seed=seed), "params": Stalls(stall_prob, seed=seed + 2)}
        for name, beat in beats_in:
            await stream_put(ctx, getattr(dut, name), beat, stalls[name])

    async def consumer(ctx):
        stalls = Stalls(stall_prob, max_cycles=sink_max_stall, seed=seed + 1)
        for _ in range(rows * n):
            beats.append(await stream_get(ctx, dut.o, stalls))
        for _ in range(dut.latency + 8):                   # nothing more may come out
            assert not ctx.get(dut.o.valid), "extra output beat"
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(handshake_monitor(dut.i, dut.o, accepted, produced), background=True)
    sim.run()
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
    FIFO and every pipeline stage hold their beats."""
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
