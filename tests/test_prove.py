"""``lutra prove`` and :mod:`fpga.formal`: the harness fails a broken stream, passes a correct one.

The whole file runs in well under a minute on two cores; ``lutra prove --all`` (docs/formal.md)
proves every block.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from fpga.formal import SOLVERS, Flow, StreamHarness, comb_paths, properties, run_sby, sby_env
from gen.blocks import get_block
from gen.cli import main
from gen.cli_prove import PLANS, prove_block
from gen.config import validate_params

BEAT = data.StructLayout({"data": 8, "last": 1})


class ToyRegister(wiring.Component):
    """A one-beat stream register; ``bug`` picks a deliberate violation of the contract.

    ``"drop"``: loads a new beat (or drops valid) while the sink stalls; ``"comb"``: ``ready``
    waits for the input's ``valid``; ``"ghost"``: emits beats with no input.
    """

    def __init__(self, bug: str | None = None):
        self.bug = bug
        super().__init__({"i": In(stream.Signature(BEAT)), "o": Out(stream.Signature(BEAT))})

    def elaborate(self, platform):
        m = Module()
        room = ~self.o.valid | self.o.ready
        if self.bug == "drop":
            room = 1
        if self.bug == "comb":
            room = room & self.i.valid
        m.d.comb += self.i.ready.eq(room)
        with m.If(room):
            m.d.sync += [self.o.valid.eq(self.i.valid | (self.bug == "ghost")),
                         self.o.payload.eq(self.i.payload)]
        return m


FLOWS = (Flow("i", "o", latency=(1, 0)),)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return sby_env(tmp_path_factory.mktemp("shims"))


def prove(component, check, tmp_path, env, depth=6, solver="boolector"):
    harness = StreamHarness(component, check, flows=FLOWS, depth=depth)
    return run_sby(harness, tmp_path / check.replace(":", "_").replace(">", "_"),
                   mode="prove", depth=depth, timeout=120, env=env, solver=solver)


def test_properties():
    assert properties(ToyRegister(), FLOWS) == ["stable:o", "count:i>o", "latency:i>o",
                                                "reach:o", "reach:i>o"]


def test_harness_wrong_check():
    with pytest.raises(ValueError, match=r"check must be one of stable:o, count:i>o, "
                                         r"latency:i>o, reach:o, reach:i>o, not 'stable:i'"):
        StreamHarness(ToyRegister(), "stable:i", flows=FLOWS)


@pytest.mark.parametrize("solver", SOLVERS)
def test_stable_proved(tmp_path, env, solver):
    outcome = prove(ToyRegister(), "stable:o", tmp_path, env, solver=solver)
    assert outcome.status == "pass", outcome


@pytest.mark.parametrize("solver", SOLVERS)
def test_stable_fails_when_valid_dropped(tmp_path, env, solver):
    outcome = prove(ToyRegister("drop"), "stable:o", tmp_path, env, solver=solver)
    assert outcome.status == "fail", outcome
    assert outcome.trace is not None and outcome.trace.is_file(), outcome
    assert outcome.step is not None and outcome.step >= 2, outcome


def test_unknown_solver(tmp_path, env):
    harness = StreamHarness(ToyRegister(), "stable:o", flows=FLOWS, depth=4)
    with pytest.raises(ValueError, match=r"solver must be one of yices, boolector, not 'z3'"):
        run_sby(harness, tmp_path, mode="prove", depth=4, timeout=60, env=env, solver="z3")


def test_count_and_latency_hold(tmp_path, env):
    for check in ("count:i>o", "latency:i>o"):
        outcome = prove(ToyRegister(), check, tmp_path, env)
        assert outcome.status in ("pass", "bounded"), (check, outcome)


def test_count_fails_on_output_without_input(tmp_path, env):
    outcome = prove(ToyRegister("ghost"), "count:i>o", tmp_path, env)
    assert outcome.status == "fail", outcome


def test_latency_fails_when_bound_too_short(tmp_path, env):
    flows = (Flow("i", "o", latency=(0, 0)),)
    harness = StreamHarness(ToyRegister(), "latency:i>o", flows=flows, depth=6)
    outcome = run_sby(harness, tmp_path / "short", mode="bmc", depth=6, timeout=120, env=env)
    assert outcome.status == "fail", outcome


def test_reach(tmp_path, env):
    for check, step in (("reach:o", 2), ("reach:i>o", 2)):
        harness = StreamHarness(ToyRegister(), check, flows=FLOWS, depth=6)
        outcome = run_sby(harness, tmp_path / check.replace(":", "_").replace(">", "_"),
                          mode="cover", depth=6, timeout=120, env=env)
        assert (outcome.status, outcome.step) == ("pass", step), (check, outcome)


def test_comb_paths(tmp_path):
    good = dict(comb_paths(ToyRegister(), tmp_path / "good"))
    assert {k: v.status for k, v in good.items()} == {"comb:i.ready": "pass",
                                                      "comb:o.valid": "pass"}
    bad = dict(comb_paths(ToyRegister("comb"), tmp_path / "bad"))
    assert bad["comb:i.ready"].status == "fail"
    assert bad["comb:i.ready"].detail == "i__valid -> i__ready through logic only"


def test_every_block_has_a_plan():
    from gen.blocks import blocks
    missing = sorted(set(blocks()) - set(PLANS))
    assert not missing, f"blocks without a proof plan: {missing}"


def test_prove_gelu(tmp_path, env):
    """The cheapest block, end to end: every property holds."""
    config = validate_params(get_block("gelu"), PLANS["gelu"].config)
    results = dict(prove_block(config, tmp_path, env=env, echo=lambda line: None))
    # reach:o is skipped: stable:o is proved by induction, so it is not vacuous.
    assert set(results) == {"stable:o", "count:i>o", "latency:i>o", "reach:i>o",
                            "comb:i.ready", "comb:o.valid"}
    bad = {k: v for k, v in results.items() if v.status not in ("pass", "bounded")}
    assert not bad, bad
    assert results["stable:o"].status == "pass"


def test_prove_gemm_reach_follows_latency(tmp_path, env):
    """The default depth follows the latency figure: the GEMM's first tile leaves within it
    (with a fixed depth of 24 the reach cover failed once the pipeline grew to 23 cycles)."""
    config = validate_params(get_block("gemm"), PLANS["gemm"].config)
    latency = config.block.figures(config.block.build(config.params))["latency_cycles"]
    lines = []
    results = dict(prove_block(config, tmp_path, only="reach", env=env, echo=lines.append))
    assert results["reach:i>o"].status == "pass", lines
    assert results["reach:i>o"].step > latency, lines


def test_prove_layernorm_stability(tmp_path, env):
    """Output stability needs no latency: a 4-step induction proves the LayerNorm's (whose
    latency bound is 80 cycles) in seconds."""
    config = validate_params(get_block("layernorm"), PLANS["layernorm"].config)
    lines = []
    results = dict(prove_block(config, tmp_path, only="stable", env=env, echo=lines.append))
    assert results["stable:o"].status == "pass", results
    assert "proved (k-induction, k=4)" in lines[0], lines


def test_prove_encoder_stability(tmp_path, env):
    """The encoder's outputs leave through one-beat output registers: the stability of the
    read requests, the pooled sums, the batch refusals and the debug stream closes by a 4-step
    induction, whatever the sequencer's state (it did not close at 4, 6 or 12 steps when req
    and o were decoded from the state machine and two combinational memory reads)."""
    config = validate_params(get_block("encoder"), PLANS["encoder"].config)
    lines = []
    results = dict(prove_block(config, tmp_path, only="stable", env=env, echo=lines.append))
    assert set(results) == {"stable:req", "stable:o", "stable:err", "stable:dbg"}, results
    assert all(o.status == "pass" for o in results.values()), lines
    assert all("proved (k-induction, k=4)" in line for line in lines), lines


def test_prove_falls_back_to_full_depth(tmp_path, env):
    """The scheduler's command stability does not close by induction at 4 steps: it is then
    checked to the plan's full depth and reported bounded there."""
    config = validate_params(get_block("attention"), PLANS["attention"].config)
    lines = []
    results = dict(prove_block(config, tmp_path, only="stable", env=env, echo=lines.append))
    assert results["stable:cmd_0"].status == "bounded", results
    assert f"bounded-only (depth {PLANS['attention'].depth})" in lines[0], lines


@pytest.mark.parametrize("argv, message", [
    (["prove", "nosuch"], "unknown block 'nosuch'"),
    (["prove", "gelu", "--depth", "0"], "--depth must be a positive integer, not 0"),
    (["prove", "gelu", "--timeout", "-1"], "--timeout must be a positive number of seconds, "
                                           "not -1.0"),
    (["prove", "--all", "gelu"], "--all takes no block, --config or parameter flags"),
    (["prove", "gelu", "--lanes", "0"], "lanes"),
])
def test_cli_bad_input(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lutra: error:") and message in err, err


def test_cli_prove(capsys, tmp_path):
    assert main(["prove", "gelu", "--only", "stable", "--depth", "4",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "stable:o" in out and "proved (k-induction, k=4)" in out, out
    assert out.splitlines()[-1] == "1 proved, 0 bounded-only, 0 failed", out


def test_sby_env_puts_an_absolute_shim_directory_on_path(tmp_path, monkeypatch):
    # `lutra prove --out rel` gives a relative directory; sby runs its tools from its own work
    # directory, so a relative PATH entry would find no yosys there.
    monkeypatch.chdir(tmp_path)
    env = sby_env(Path("rel") / "bin")
    first = env["PATH"].split(os.pathsep)[0]
    assert first == str(tmp_path / "rel" / "bin") and (Path(first) / "yosys").exists()
