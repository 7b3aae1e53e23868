"""GELU unit: construction, Amaranth simulation against the golden model, cocotb on the Verilog."""

import numpy as np
import pytest
from sim.testing import SIMULATORS, cocotb_run

from gen.blocks import get_block
from hw.gelu import Gelu, GeluParams
from hw.gelu.shift import Divider, RowBuffer
from sim.gelu_driver import expected, from_beats, random_rows, to_beats
from sim.golden.gelu import i_gelu_constants, shift_gelu_constants
from sim.stalls import Stalls
from sim.streams import run_testbenches, stream_get, stream_put, stream_through

DEFAULTS = get_block("gelu").defaults()


def params_of(**overrides) -> dict:
    params = dict(DEFAULTS)
    params.update(overrides)
    return params


# ---- construction ------------------------------------------------------------------------------


def test_init_defaults():
    gelu = Gelu()
    assert (gelu.method, gelu.scale, gelu.in_width, gelu.lanes, gelu.n, gelu.out_bits,
            gelu.max_mode, gelu.max_row, gelu.divider) == \
        ("shift", 2.0 ** -4, 8, 1, 23, 8, "row", 1536, "pipelined")
    assert gelu.out_scale == 2.0 ** -4 / 128
    # y = x * sig with x in [-128, 127] and sig in [0, 127]: 15 signed bits.
    assert gelu.out_width == 15
    assert gelu.beat_period == 1
    assert gelu.row_buffer_depth == 1536 + 2
    assert gelu.constants == shift_gelu_constants(2.0 ** -4)


def test_init_other_methods():
    poly = Gelu(method="poly", in_width=16, scale=2.0 ** -10)
    assert poly.constants == i_gelu_constants(2.0 ** -10, in_width=16)
    assert poly.out_scale < 0 and poly.row_buffer_depth == 0
    lut = Gelu(method="lut", out_bits=1)
    assert lut.constants is None and lut.out_scale == 2.0 ** -4
    assert lut.out_width == 8                 # GELU of int8 codes at the input scale: [0, 127]
    iterative = Gelu(divider="iterative")
    assert iterative.beat_period == iterative.constants.quotient_bits + 1 == 24


@pytest.mark.parametrize("kwargs, error, message", [
    ({"method": "exp"}, ValueError, "method must be one of 'shift', 'poly', 'lut', not 'exp'"),
    ({"scale": "0.1"}, TypeError, "scale must be a number, not '0.1'"),
    ({"scale": True}, TypeError, "scale must be a number, not True"),
    ({"scale": 0.0}, ValueError, "scale must be in [2**-24, 16], not 0.0"),
    ({"scale": float("nan")}, ValueError, "scale must be in [2**-24, 16], not nan"),
    ({"in_width": 1}, ValueError, "in_width must be in [2, 16], not 1"),
    ({"method": "lut", "in_width": 13}, ValueError, "in_width must be in [2, 12], not 13"),
    ({"lanes": 0}, ValueError, "lanes must be in [1, 16], not 0"),
    ({"lanes": 2.0}, TypeError, "lanes must be an integer, not 2.0"),
    ({"n": 31}, ValueError, "n must be in [1, 30], not 31"),
    ({"out_bits": 0}, ValueError, "out_bits must be in [1, 16], not 0"),
    ({"max_mode": "col"}, ValueError, "max_mode must be one of 'row', 'static', not 'col'"),
    ({"max_row": 0}, ValueError, "max_row must be in [1, 65536], not 0"),
    ({"lanes": 4, "max_row": 10}, ValueError, "max_row must be a multiple of lanes (4), not 10"),
    ({"divider": "fast"}, ValueError,
     "divider must be one of 'pipelined', 'iterative', not 'fast'"),
])
def test_init_wrong(kwargs, error, message):
    with pytest.raises(error) as info:
        Gelu(**kwargs)
    assert str(info.value) == message


def test_init_is_keyword_only():
    with pytest.raises(TypeError):
        Gelu("shift")


def test_init_from_params():
    params = GeluParams(method="lut", lanes=2)
    gelu = Gelu(params)
    assert gelu.parameters is params and gelu.lanes == 2
    # the table's output scale S * 2**-(out_bits - 1); a table needs no row buffer
    assert params.out_scale == 2.0 ** -4 * 2.0 ** -7 and params.row_buffer_depth == 0
    with pytest.raises(TypeError) as info:
        Gelu(params, lanes=1)
    assert str(info.value) == "give either params or keyword parameters, not both"


def test_parts_init_wrong():
    k = shift_gelu_constants(2.0 ** -4)
    with pytest.raises(ValueError) as info:
        RowBuffer(lanes=1, width=8, depth=1)
    assert str(info.value) == "depth must be >= 2, not 1"
    with pytest.raises(ValueError) as info:
        Divider(constants=k, lanes=1, divider="radix4")
    assert str(info.value) == "divider must be one of 'pipelined', 'iterative', not 'radix4'"


# ---- Amaranth simulation -----------------------------------------------------------------------

CONFIGS = [
    {"max_row": 32},
    {"max_row": 32, "lanes": 2},
    {"max_row": 24, "lanes": 3, "scale": 0.002},       # x0 = -294: wide e, clamped divisor
    {"max_row": 32, "scale": 0.9, "in_width": 6},     # x0 = -1
    {"max_row": 32, "n": 6, "out_bits": 10},
    {"max_row": 16, "divider": "iterative"},
    {"max_mode": "static"},
    {"max_mode": "static", "lanes": 2, "divider": "iterative"},
    {"max_mode": "static", "in_width": 12, "scale": 2.0 ** -8},
    {"method": "poly", "in_width": 16, "scale": 2.0 ** -10},
    {"method": "poly", "lanes": 2},
    {"method": "lut"},
    {"method": "lut", "lanes": 4, "in_width": 10, "out_bits": 1, "scale": 0.01},
]


def simulate(params: dict, rows: list[np.ndarray], *, stall_prob: float, seed: int):
    """Stream ``rows`` through a ``Gelu(**params)``; return output rows and handshake cycles."""
    dut = get_block("gelu").build(params)
    beats_in = to_beats(rows, params["lanes"])
    beats, accepted, produced = stream_through(
        dut, beats_in, len(beats_in), stalls=Stalls(stall_prob, seed=seed),
        sink_stalls=Stalls(stall_prob, seed=seed + 1), drain=dut.latency + 8)
    return from_beats(beats, [len(r) for r in rows], params["lanes"]), accepted, produced


def check(params: dict, rows, got) -> None:
    for r, (row, out, want) in enumerate(zip(rows, got, expected(params, rows))):
        bad = np.flatnonzero(out != want)
        assert bad.size == 0, (f"row {r}: {bad.size} mismatches, first at {bad[0]}: "
                               f"x={row[bad[0]]} got {out[bad[0]]} want {want[bad[0]]}")


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in
                                                                      c.items()))
def test_matches_golden_with_stalls(overrides):
    params = params_of(**overrides)
    rng = np.random.default_rng(len(str(overrides)))
    rows = random_rows(rng, params, 18, max_len=24)
    got, _, _ = simulate(params, rows, stall_prob=0.3, seed=3)
    check(params, rows, got)


def test_sink_held_off_for_long():
    """A sink that stalls for many cycles at a time: the full row buffer and every pipeline
    stage hold their beats."""
    params = params_of(max_row=8, lanes=2)
    rows = random_rows(np.random.default_rng(9), params, 30)
    beats_in = to_beats(rows, 2)
    dut = get_block("gelu").build(params)
    beats = []

    async def producer(ctx):
        for beat in beats_in:
            await stream_put(ctx, dut.i, beat)

    async def consumer(ctx):
        stalls = Stalls(0.5, max_cycles=60, seed=4)
        for _ in beats_in:
            beats.append(await stream_get(ctx, dut.o, stalls))

    run_testbenches(dut, producer, consumer)
    check(params, rows, from_beats(beats, [len(r) for r in rows], 2))


@pytest.mark.parametrize("overrides", [
    {"max_row": 8}, {"max_row": 16, "lanes": 2}, {"max_mode": "static"},
    {"max_mode": "static", "lanes": 4, "divider": "iterative"}, {"max_row": 8,
                                                                 "divider": "iterative"},
    {"method": "poly", "lanes": 2}, {"method": "lut", "lanes": 3},
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_full_rate_and_latency(overrides):
    """Unstalled, rows of the longest length back to back: one beat of ``lanes`` elements per
    clock in and out (``beat_period`` with the iterative divider), latency as stated."""
    params = params_of(**overrides)
    gelu = GeluParams(**params)
    lanes = params["lanes"]
    row_len = min(params["max_row"], 8 * lanes)
    rng = np.random.default_rng(5)
    rows = [rng.integers(-128, 128, row_len) for _ in range(5)]
    got, accepted, produced = simulate(params, rows, stall_prob=0.0, seed=0)
    check(params, rows, got)
    total = 5 * row_len // lanes
    period = gelu.beat_period
    assert len(accepted) == len(produced) == total
    # The pipeline ahead of an iterative divider takes the first beats faster; after that the
    # input never waits longer than one period, and the output is evenly spaced throughout.
    assert np.diff(accepted).max() == period, f"input cycles {accepted}"
    assert produced[-1] - produced[0] == (total - 1) * period, f"output cycles {produced}"
    first = accepted[row_len // lanes - 1] if gelu.buffers_rows else accepted[0]
    assert produced[0] - first == gelu.latency


@pytest.mark.parametrize("lanes", [1, 2])
def test_full_rate_one_beat_rows(lanes):
    """Rows of a single beat, back to back, also stream at one beat per clock."""
    params = params_of(max_row=8, lanes=lanes)
    rows = list(np.random.default_rng(6).integers(-128, 128, (40, lanes)))
    got, accepted, produced = simulate(params, rows, stall_prob=0.0, seed=0)
    check(params, rows, got)
    assert accepted[-1] - accepted[0] == 39, f"input cycles {accepted}"
    assert produced[-1] - produced[0] == 39, f"output cycles {produced}"


def test_row_buffer_holds_a_whole_row_of_max_row():
    """Rows of exactly ``max_row`` elements fill the buffer; longer-than-one-beat rows of every
    length up to it pass through unchanged."""
    params = params_of(max_row=12, lanes=2)
    rows = [np.arange(-n, n + 2) for n in range(0, 6)] * 2
    got, _, _ = simulate(params, rows, stall_prob=0.0, seed=0)
    check(params, rows, got)


# ---- cocotb on the generated Verilog -----------------------------------------------------------

COCOTB_CONFIGS = [
    {"max_row": 32, "lanes": 2},                                    # shift, row buffer
    {"max_mode": "static", "divider": "iterative"},                 # shift, no buffer
    {"method": "poly", "in_width": 12, "scale": 2.0 ** -8},
    {"method": "lut"},
]


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("params", COCOTB_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v
                                                                          in c.items()))
def test_cocotb(params, simulator, tmp_path):
    cocotb_run("gelu", params, simulator, tmp_path, LUTRA_GELU_ROWS=16)
