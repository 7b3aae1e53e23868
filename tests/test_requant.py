"""Requantizer's early clamp (``early_clamp``, the iCE40 form): construction, Amaranth
simulation against the golden model at the clamp's edges, and which netlists it changes."""

import numpy as np
import pytest

from hw.common.requant import RAW_WIDTH, Requantizer, requant_latency
from sim.golden.gemm import INT32_MAX, INT32_MIN, requantize
from sim.stalls import Stalls
from sim.streams import stream_through


@pytest.mark.parametrize("kwargs, error, message", [
    ({"far_dsps": True, "early_clamp": 1}, TypeError, "early_clamp must be a bool, not 1"),
    ({"early_clamp": True}, ValueError, "early_clamp needs far_dsps"),
    ({"far_dsps": True, "out_width": RAW_WIDTH, "early_clamp": True}, ValueError,
     "early_clamp needs a clamp (out_width 8 or 16), not 32"),
])
def test_init_wrong_early_clamp(kwargs, error, message):
    with pytest.raises(error) as info:
        Requantizer(lanes=1, **kwargs)
    assert str(info.value) == message


def test_init_early_clamp():
    dut = Requantizer(lanes=1, far_dsps=True, early_clamp=True)
    assert dut.early_clamp is True
    assert dut.latency == requant_latency(True)
    assert Requantizer(lanes=1).early_clamp is None


def clamp_edge_inputs(out_width: int, count: int, seed: int):
    """Accumulators, multipliers, shifts, zero points and bounds whose rounded high word lands
    on the clamp's edges: either side of +-2**k for every k (so of the w + 1-bit window the
    compares use and of the rounding's 16-bit halves), ties, the rounding's carry into an
    all-ones upper half, and bounds in either order."""
    rng = np.random.default_rng(seed)
    top = 1 << (out_width - 1)
    # The multiplier 2**30 halves (rounding half away from zero), then the shift's exponent e
    # divides by 2**e again: the result is a chosen r from acc = r << (1 + e), plus a nudge
    # below half a step either way (the rounding's carry: -2**16 from -2**16 - 0.6), or of
    # exactly half a step (ties).
    edges = [s * (1 << k) + d for k in range(32) for s in (1, -1) for d in (-2, -1, 0, 1)]
    r = rng.choice(np.array(edges, dtype=np.int64), count)
    e = rng.integers(0, 8, count)
    half = np.left_shift(np.int64(1), e)             # half a step of the result, in acc
    nudge = rng.integers(-half + 1, half)
    tie = rng.random(count) < 0.3
    nudge[tie] = rng.choice([-1, 1], tie.sum()) * half[tie]
    acc = (r << (1 + e)) + nudge
    acc = np.clip(acc, INT32_MIN, INT32_MAX)
    mult = np.full(count, 1 << 30, dtype=np.int64)
    shift = -e
    # a share of random operands, and of the saturating INT32_MIN * INT32_MIN product
    rand = rng.random(count) < 0.2
    acc[rand] = rng.integers(INT32_MIN, INT32_MAX + 1, rand.sum())
    mult[rand] = rng.integers(INT32_MIN, INT32_MAX + 1, rand.sum())
    shift[rand] = rng.integers(-31, 32, rand.sum())
    acc[:6], mult[:6], shift[:6] = INT32_MIN, INT32_MIN, [0, 0, -1, -2, 0, -31]
    zp = rng.integers(-top, top, count)
    zp[rng.random(count) < 0.3] = 0
    lo, hi = np.sort(rng.integers(-top, top, (2, count)), axis=0)
    wide = rng.random(count) < 0.4                   # the full range: only the sign decides
    lo[wide], hi[wide] = -top, top - 1
    inverted = rng.random(count) < 0.1
    lo[inverted], hi[inverted] = hi[inverted], lo[inverted]
    return acc, mult, shift, zp, lo, hi


@pytest.mark.parametrize("out_width", [8, 16])
def test_early_clamp_matches_golden_at_the_edges(out_width):
    """``early_clamp`` (the iCE40 form of ``far_dsps``, simulated here with generic
    multipliers) is bit-exact against ``sim.golden.gemm.requantize`` with stalls on both
    sides, beat count and ``last`` included."""
    lanes, count = 2, 600
    dut = Requantizer(lanes=lanes, out_width=out_width, far_dsps=True, early_clamp=True)
    acc, mult, shift, zp, lo, hi = clamp_edge_inputs(out_width, count * lanes, seed=out_width)
    acc, mult, shift = (x.reshape(count, lanes) for x in (acc, mult, shift))
    zp, lo, hi = zp[:count], lo[:count], hi[:count]
    want = [requantize(acc[n], mult[n], shift[n], out_zero_point=zp[n], act_min=lo[n],
                       act_max=hi[n]).tolist() for n in range(count)]
    # the edges are hit: results at each bound and strictly between them
    flat = np.array(want)
    assert (flat == lo[:, None]).sum() > 50 and (flat == hi[:, None]).sum() > 50
    assert ((flat > lo[:, None]) & (flat < hi[:, None])).sum() > 100
    beats_in = [{"acc": acc[n].tolist(), "multiplier": mult[n].tolist(),
                 "shift": shift[n].tolist(), "last": n % 5 == 0, "out_zero_point": int(zp[n]),
                 "act_min": int(lo[n]), "act_max": int(hi[n])} for n in range(count)]
    beats, _, _ = stream_through(dut, beats_in, count, stalls=Stalls(0.3, seed=3),
                                 sink_stalls=Stalls(0.3, seed=4), drain=dut.latency + 5)
    assert len(beats) == count
    for n, beat in enumerate(beats):
        assert beat["data"] == want[n], f"beat {n}: {beat['data']} != {want[n]}"
        assert beat["last"] == (n % 5 == 0), f"beat {n}: last {beat['last']}"


@pytest.mark.parametrize("out_width", [8, 16])
def test_early_clamp_is_the_ice40_default_only(out_width):
    """By default the early clamp is in the iCE40 Verilog of the ``far_dsps`` form alone: the
    ECP5 and generic Verilog is what ``early_clamp=False`` writes (the netlist before the
    option), and the iCE40 Verilog is what ``early_clamp=True`` writes."""
    from gen.verilog import convert

    def verilog(primitives, **kwargs):
        return convert(Requantizer(lanes=1, out_width=out_width, **kwargs), "rq",
                       primitives=primitives)

    for primitives in ("generic", "ecp5"):
        text = verilog(primitives, far_dsps=True)
        assert text == verilog(primitives, far_dsps=True, early_clamp=False), primitives
        assert "l0_top_zero" not in text and "l0_above_low" not in text
    ice40 = verilog("ice40", far_dsps=True)
    assert ice40 == verilog("ice40", far_dsps=True, early_clamp=True)
    assert "l0_top_zero" in ice40 and "l0_above_low" in ice40
    assert "l0_top_zero" not in verilog("ice40")                     # the shallow form


def logic_depth(module: dict, bit, drivers: dict, memo: dict) -> tuple[int, int]:
    """(LUTs, carries) on the deepest path into ``bit`` from a flip-flop, DSP or port of a
    ``synth_ice40`` netlist ``module``."""
    if bit in memo:
        return memo[bit]
    found = drivers.get(bit)
    depth = (0, 0)
    if found:
        ((name, kind, _),) = found
        inputs = {"SB_LUT4": ("I0", "I1", "I2", "I3"), "SB_CARRY": ("I0", "I1", "CI")}.get(kind)
        if inputs is not None:
            conns = module["cells"][name]["connections"]
            below = [logic_depth(module, b, drivers, memo) for port in inputs
                     for b in conns.get(port, []) if not isinstance(b, str)]
            luts, carries = max(below, default=(0, 0))
            depth = (luts + (kind == "SB_LUT4"), carries + (kind == "SB_CARRY"))
    memo[bit] = depth
    return depth


@pytest.mark.parametrize("out_width", [8, 16])
def test_ice40_clamp_decision_is_one_lut_from_registers(out_width, tmp_path):
    """Synthesised for iCE40 (``synth_ice40 -dsp``), the clamp's ``below`` and ``above``
    flip-flops of the ``far_dsps`` form are one LUT from registers, with no carry chain
    before them: the compare from the rounded register through a carry chain was the
    requantized 1 x 4 GEMM's critical path on the UP5K (20.2 ns)."""
    import json

    from gen.verilog import convert
    from fpga.tools import run_tool
    (tmp_path / "rq.v").write_text(convert(Requantizer(lanes=1, out_width=out_width,
                                                       far_dsps=True), "rq", primitives="ice40"))
    run_tool("yosys", ["-q", "-p", "read_verilog rq.v; synth_ice40 -dsp -top rq; "
                       "write_json net.json"], cwd=tmp_path, log=tmp_path / "yosys.log")
    module = json.loads((tmp_path / "net.json").read_text())["modules"]["rq"]
    drivers = {}
    for name, cell in module["cells"].items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"][port] == "output":
                for bit in bits:
                    drivers.setdefault(bit, []).append((name, cell["type"], port))
    memo = {}
    for flag in ("l0_below", "l0_above"):
        (bit,) = module["netnames"][flag]["bits"]
        ((ff, kind, _),) = drivers[bit]
        assert kind.startswith("SB_DFF"), f"{flag} is driven by {kind}"
        (d,) = module["cells"][ff]["connections"]["D"]
        luts, carries = logic_depth(module, d, drivers, memo)
        assert luts <= 1 and carries == 0, f"{flag}: {luts} LUTs, {carries} carries deep"
