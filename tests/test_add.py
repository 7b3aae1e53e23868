"""Residual adder: parameters, Amaranth simulation against the golden model, cocotb on the
generated Verilog."""

from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from gen.blocks import get_block
from hw.add import AddUnit, AddUnitParams
from sim.add_driver import (expected, from_beats, param_beat, plan_inputs, random_params,
                            random_tensor, zero_params)
from sim.golden.add import add_int
from sim.stalls import Stalls
from sim.streams import run_testbenches, stream_through
from sim.testing import SIMULATORS, cocotb_run

# ---- parameters --------------------------------------------------------------------------------


def test_init_defaults():
    block = AddUnit()
    assert (block.in_width, block.out_width, block.inputs, block.lanes) == (16, 16, 2, 1)
    assert block.parameters == AddUnitParams()
    cfg = block.parameters
    assert block.latency == cfg.latency == 19
    assert (cfg.left_shift, cfg.offset_width, cfg.beats_per_clock) == (15, 17, 1.0)
    assert AddUnitParams(in_width=8, inputs=3, lanes=4).left_shift == 20
    assert AddUnitParams(inputs=3, lanes=4).multipliers == 64
    assert AddUnitParams(lanes=4).elements_per_clock == 4


@pytest.mark.parametrize("kwargs, error, message", [
    ({"in_width": 12}, ValueError, "in_width must be one of 8, 16, not 12"),
    ({"in_width": 8.0}, TypeError, "in_width must be an integer, not 8.0"),
    ({"out_width": 32}, ValueError, "out_width must be one of 8, 16, not 32"),
    ({"inputs": 1}, ValueError, "inputs must be in [2, 3], not 1"),
    ({"inputs": 4}, ValueError, "inputs must be in [2, 3], not 4"),
    ({"inputs": True}, TypeError, "inputs must be an integer, not True"),
    ({"lanes": 0}, ValueError, "lanes must be in [1, 16], not 0"),
    ({"lanes": 17}, ValueError, "lanes must be in [1, 16], not 17"),
    ({"lanes": "4"}, TypeError, "lanes must be an integer, not '4'"),
])
def test_init_wrong(kwargs, error, message):
    for make in (AddUnit, AddUnitParams):
        with pytest.raises(error) as info:
            make(**kwargs)
        assert str(info.value) == message


def test_init_is_keyword_only_and_params_frozen():
    with pytest.raises(TypeError):
        AddUnit(16)
    with pytest.raises(FrozenInstanceError):
        AddUnitParams().lanes = 2


def test_block_params_come_from_the_dataclass():
    spec = get_block("add")
    in_width, inputs, lanes = (spec.param(n) for n in ("in_width", "inputs", "lanes"))
    assert in_width.choices == (8, 16) and (inputs.lo, inputs.hi) == (2, 3)
    assert (lanes.kind, lanes.default, lanes.lo, lanes.hi) == (int, 1, 1, 16)
    assert spec.defaults() == {"in_width": 16, "out_width": 16, "inputs": 2, "lanes": 1}


def test_resources_estimate():
    need = get_block("add").resources({"in_width": 8, "out_width": 16, "inputs": 3,
                                       "lanes": 2})
    # Four 17 x 17 products per requantized value: three legs and the output, per lane.
    assert len(need["multipliers"]) == AddUnitParams(inputs=3, lanes=2).multipliers == 32
    # One memory: the output queue, a place per beat in flight (latency 19, plus one, rounded
    # up to a power of two) of two 16-bit lanes and ``last``.
    assert need["memories"] == [(32, 2 * 16 + 1)]


def test_param_beat_checks_left_shift():
    p = zero_params(2, 16, 16)
    assert param_beat(p, 16)["out"] == {"out_multiplier": 0, "out_shift": 0, "out_offset": 0}
    with pytest.raises(ValueError) as info:
        param_beat(p, 8)
    assert str(info.value) == "left_shift must be 20 for in_width 8, not 15"


# ---- Amaranth simulation -----------------------------------------------------------------------

def simulate(params: dict, plan, *, stall_prob: float, seed: int, sink_max_stall: int = 4):
    """Send ``plan`` through an ``AddUnit(**params)``; check it; return handshake cycles."""
    dut = get_block("add").build(params)
    w = params["in_width"]
    beats_in, count = plan_inputs(plan, w)
    beats, accepted, produced = stream_through(
        dut, beats_in, count,
        stalls={"i": Stalls(stall_prob, seed=seed), "params": Stalls(stall_prob, seed=seed + 2)},
        sink_stalls=Stalls(stall_prob, max_cycles=sink_max_stall, seed=seed + 1),
        drain=dut.latency + 4)
    want = expected(plan, params["inputs"], w, params["out_width"])
    for t, (got, ref) in enumerate(zip(from_beats(beats, plan), want)):
        bad = np.argwhere(got != ref)
        assert bad.size == 0, (f"tensor {t}: {len(bad)} mismatches, first at (beat, lane) "
                               f"{tuple(bad[0])}: got {got[tuple(bad[0])]} want "
                               f"{ref[tuple(bad[0])]}")
    return dut, accepted, produced


def config(**overrides) -> dict:
    return {**get_block("add").defaults(), **overrides}


CONFIGS = [
    config(in_width=8, inputs=3, lanes=1),
    config(in_width=8, inputs=3, lanes=3, out_width=8),
    config(in_width=16, inputs=2, lanes=4),
    config(in_width=16, inputs=2, lanes=1, out_width=8),
]


def _id(c: dict) -> str:
    return f"i{c['in_width']}x{c['inputs']}-o{c['out_width']}-l{c['lanes']}"


def random_plan(rng, params: dict, tensors: int) -> list:
    """Two tensors before any load, then loads between tensors (one with the extreme
    corners, two back to back) and tensors of every kind, 1..8 beats long."""
    n, w, ow, lanes = (params[k] for k in ("inputs", "in_width", "out_width", "lanes"))
    plan = [("tensor", random_tensor(rng, n, 2, lanes, w, 0)),
            ("tensor", random_tensor(rng, n, 1, lanes, w, 1))]
    for t in range(tensors):
        if t % 3 == 0:
            plan.append(("load", random_params(rng, n, w, ow, extreme=t == 3)))
        if t == 6:
            plan.append(("load", random_params(rng, n, w, ow)))
        plan.append(("tensor", random_tensor(rng, n, int(rng.integers(1, 9)), lanes, w, t)))
    return plan


@pytest.mark.parametrize("params", CONFIGS, ids=_id)
def test_matches_golden_with_stalls(params):
    """Random and extreme tensors with stalls on i, params and o and reloads between tensors
    (no reset)."""
    rng = np.random.default_rng(params["lanes"] * 7 + params["in_width"])
    simulate(params, random_plan(rng, params, 14), stall_prob=0.3, seed=params["lanes"])


def test_sink_held_off_for_long():
    """A sink that stalls up to 40 cycles at a time: every stage holds its beat, and the beats
    in flight keep the load they were accepted under while new loads arrive."""
    params = config(in_width=8, inputs=3, lanes=2)
    rng = np.random.default_rng(9)
    simulate(params, random_plan(rng, params, 10), stall_prob=0.5, seed=9, sink_max_stall=40)


def test_load_applies_from_the_next_cycle():
    """A load and an input beat handshaken in the same cycle: that beat keeps the previous
    load; the beat accepted in the next cycle gets the new one."""
    params = config(in_width=16, inputs=2, lanes=1)
    dut = get_block("add").build(params)
    rng = np.random.default_rng(3)
    first, second = random_params(rng, 2, 16, 16), random_params(rng, 2, 16, 16)
    x = random_tensor(rng, 2, 3, 1, 16, 0)
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.params.payload, param_beat(first, 16))
        ctx.set(dut.params.valid, 1)
        await ctx.tick()
        ctx.set(dut.params.payload, param_beat(second, 16))
        for b, beat in enumerate(x.transpose(1, 0, 2)):       # beats 0, 1, 2 back to back
            ctx.set(dut.i.payload, {"data": beat.tolist(), "last": int(b == 2)})
            ctx.set(dut.i.valid, 1)
            assert ctx.get(dut.i.ready) and ctx.get(dut.params.ready)
            await ctx.tick()
            ctx.set(dut.params.valid, 0)                       # second load: with beat 0 only
        ctx.set(dut.i.valid, 0)
        for _ in range(dut.latency + 3):
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload.data[0]))
            await ctx.tick()

    run_testbenches(dut, bench)
    want = [add_int(list(x[:, :1]), first)[0, 0]] + add_int(list(x[:, 1:]), second)[:, 0].tolist()
    assert got == want, f"{got} != {want}"


def test_stalled_sink_does_not_stall_the_pipeline():
    """A sink that takes nothing: the block still accepts at least ``latency + 1`` beats back
    to back (its pipeline runs on into the output queue), then holds ``i.ready`` low; released,
    the beats come out in order and exact."""
    params = config(in_width=16, inputs=2, lanes=1)
    dut = get_block("add").build(params)
    rng = np.random.default_rng(4)
    load = random_params(rng, 2, 16, 16)
    x = random_tensor(rng, 2, 40, 1, 16, 0)
    accepted, got = [], []

    async def bench(ctx):
        ctx.set(dut.params.payload, param_beat(load, 16))
        ctx.set(dut.params.valid, 1)
        await ctx.tick()
        ctx.set(dut.params.valid, 0)
        beats = x.transpose(1, 0, 2)
        for cycle in range(3 * dut.latency):
            ctx.set(dut.i.payload, {"data": beats[len(accepted)].tolist(), "last": 0})
            ctx.set(dut.i.valid, 1)
            if ctx.get(dut.i.ready):
                accepted.append(cycle)
            await ctx.tick()
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        while ctx.get(dut.o.valid):
            got.append(ctx.get(dut.o.payload.data[0]))
            await ctx.tick()

    run_testbenches(dut, bench)
    places = len(accepted)
    assert accepted == list(range(places)), f"accepted in cycles {accepted}"
    assert dut.latency + 1 <= places < 2 * dut.latency, places
    want = add_int(list(x[:, :places]), load)[:, 0].tolist()
    assert got == want, f"{got} != {want}"


@pytest.mark.parametrize("params", [CONFIGS[0], CONFIGS[2]], ids=_id)
def test_rate_and_latency(params):
    """Unstalled beats back to back: one per clock in and out, each ``latency`` cycles after
    its input."""
    rng = np.random.default_rng(2)
    n, w, lanes = params["inputs"], params["in_width"], params["lanes"]
    plan = [("load", random_params(rng, n, w, params["out_width"])),
            ("tensor", random_tensor(rng, n, 30, lanes, w, 0))]
    dut, accepted, produced = simulate(params, plan, stall_prob=0.0, seed=0)
    assert {o - i for i, o in zip(accepted, produced)} == {dut.latency}
    assert accepted[-1] - accepted[0] == len(accepted) - 1 == 29
    assert produced[-1] - produced[0] == len(produced) - 1


# ---- cocotb on the generated Verilog -----------------------------------------------------------

COCOTB_CONFIGS = [
    {"in_width": 8, "inputs": 3, "lanes": 1},                       # embedding sum, int16 out
    {"in_width": 16, "inputs": 2, "lanes": 2, "out_width": 8},      # residual, 2 lanes
]


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("params", COCOTB_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v
                                                                          in c.items()))
def test_cocotb(params, simulator, tmp_path):
    cocotb_run("add", params, simulator, tmp_path, LUTRA_ADD_TENSORS=18)
