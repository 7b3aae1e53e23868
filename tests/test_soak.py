"""``lutra soak`` at a few hundred beats, its scoreboard, and a harness that can fail.

The 1e5-beat runs of every block are measurements (docs/soak.md), not tests.
"""

from __future__ import annotations

import re

import pytest

from gen.blocks import get_block
from gen.cli import main
from gen.cli_soak import soak_block
from gen.config import validate_params
from sim.runner import missing_reason
from sim.soak import Scoreboard


def _needs(simulator: str):
    reason = missing_reason(simulator)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    """One build directory for the file: the wrong-golden run reuses the GELU build."""
    return tmp_path_factory.mktemp("soak")


def _counts(text: str) -> dict[str, int]:
    return {name: int(value) for name, value in re.findall(
        r"(beats in|beats out|mismatches|lost|repeated) (\d+)", text)}


@pytest.mark.parametrize("block, simulator", [
    pytest.param("gelu", "verilator", marks=_needs("verilator")),
    pytest.param("softmax", "verilator", marks=_needs("verilator")),
    pytest.param("attention", "verilator", marks=_needs("verilator")),
    pytest.param("gelu", "icarus", marks=_needs("icarus")),
])
def test_soak_command(block, simulator, build_dir, capsys):
    status = main(["soak", block, "--beats", "300", "--simulator", simulator,
                   "--build-dir", str(build_dir), "--force"])
    out = capsys.readouterr().out
    counts = _counts(out)
    assert status == 0, out
    assert counts["beats in"] >= 300, out
    assert counts["beats out"] > 0, out
    assert (counts["mismatches"], counts["lost"], counts["repeated"]) == (0, 0, 0), out
    assert "beats/s" in out and out.rstrip().endswith("PASS"), out


WRONG_GOLDEN = """\
import numpy as np

import sim.gelu_driver

_expected = sim.gelu_driver.expected


def _wrong(params, rows):
    # the first value of every third row off by one
    out = [np.array(row, dtype=np.int64) for row in _expected(params, rows)]
    for row in out[::3]:
        row[0] += 1
    return out


sim.gelu_driver.expected = _wrong

from sim.soak import soak  # noqa: E402,F401
"""


def _soak_with_golden(build_dir, block: str, params: dict, module: str, source: str):
    """Soak ``block`` at 300 beats under Verilator through the test module ``source`` (a
    soak whose golden model has been replaced), written where cocotb imports test modules."""
    config = validate_params(get_block(block), params)
    test_dir = build_dir / f"{config.key()}-verilator"
    test_dir.mkdir(parents=True, exist_ok=True)
    (test_dir / f"{module}.py").write_text(source)
    return soak_block(config, "verilator", beats=300, build_root=build_dir, tb_module=module)


@_needs("verilator")
def test_wrong_golden_fails(build_dir):
    """A golden model that is wrong on some rows: the soak counts mismatches and fails."""
    result = _soak_with_golden(build_dir, "gelu", {}, "soak_wrong_golden", WRONG_GOLDEN)
    assert not result.clean
    assert result.report["mismatches"] > 0, result.report
    assert result.lines()[-1] == "FAIL"


WRONG_POLICY = """\
import sim.golden.attention

_schedule = sim.golden.attention.schedule


def _wrong(lengths, **kwargs):
    # the opposite window order: descriptor order instead of longest row first
    kwargs["longest_first"] = not kwargs["longest_first"]
    return _schedule(lengths, **kwargs)


sim.golden.attention.schedule = _wrong

from sim.soak import soak  # noqa: E402,F401
"""


@_needs("verilator")
def test_attention_wrong_policy_fails(build_dir):
    """The scheduler's soak compares the policy, not only the set of commands: a golden
    schedule with the other window order fails it (commands on other engines, in other
    cycles), while every command still comes exactly once."""
    result = _soak_with_golden(build_dir, "attention", {}, "soak_wrong_policy", WRONG_POLICY)
    assert not result.clean
    assert result.report["mismatches"] > 0, result.report
    assert result.lines()[-1] == "FAIL"


#: The encoder's soak configuration in the tests: one tiny random layer (hidden 32).
ENCODER_FLAGS = ["--model-layers", "1", "--max-tokens", "16", "--max-seqs", "2"]


@_needs("verilator")
def test_encoder_soak(build_dir, capsys):
    """A few hundred beats through the encoder accelerator (one batch: its token beats and
    the whole weight image read through the port), every pooled word and every stage
    boundary against the specification; then, on the same build (one Verilator build of the
    encoder per test run), a specification wrong in one pooled word per batch fails it."""
    status = main(["soak", "encoder", "--beats", "300", *ENCODER_FLAGS,
                   "--build-dir", str(build_dir), "--force"])
    out = capsys.readouterr().out
    counts = _counts(out)
    assert status == 0, out
    assert counts["beats in"] >= 300 and counts["beats out"] >= 32, out
    assert (counts["mismatches"], counts["lost"], counts["repeated"]) == (0, 0, 0), out
    token, weight = map(int, re.search(r"token beats (\d+) .*weight-read data beats (\d+)",
                                       out).groups())
    assert token > 0 and weight > 0 and token + weight == counts["beats in"], out
    assert out.rstrip().endswith("PASS"), out
    _encoder_wrong_specification_fails(build_dir)


WRONG_ENCODER = """\
import numpy as np

import sim.encoder_driver

_expected = sim.encoder_driver.expected


def _wrong(model, batch):
    # the first sequence's third pooled sum off by one
    want = _expected(model, batch)
    want["pooled"][0] = np.array(want["pooled"][0]) + (np.arange(len(want["pooled"][0])) == 2)
    return want


sim.encoder_driver.expected = _wrong

from sim.soak import soak  # noqa: E402,F401
"""


def _encoder_wrong_specification_fails(build_dir):
    """A specification wrong in one pooled word per batch: the encoder's soak counts it as a
    mismatch and fails."""
    result = _soak_with_golden(build_dir, "encoder",
                               {"model_layers": 1, "max_tokens": 16, "max_seqs": 2},
                               "soak_wrong_encoder", WRONG_ENCODER)
    assert not result.clean
    assert result.report["mismatches"] > 0, result.report
    assert result.lines()[-1] == "FAIL"


def test_scoreboard_tells_lost_from_repeated():
    board = Scoreboard()
    board.expect([{"data": n} for n in range(10)])
    for n in (0, 1, 1, 2, 4, 5, 99, 7, 8):          # 1 repeated, 3 lost, 6 -> 99 wrong
        board.push({"data": n, "last": 0})
    board.finish()                                    # 9 never came
    assert (board.matched, board.repeated, board.lost, board.mismatches) == (7, 1, 2, 1)
    assert not board.clean


@pytest.mark.parametrize("argv, message", [
    (["soak", "nosuch"], "nosuch"),
    (["soak", "encoder", "--model", "banana"], "encoder.model"),
    (["soak", "encoder", "--max-tokens", "4", "--model-max-len", "16"], "max_tokens"),
    (["soak", "gelu", "--beats", "0"], "--beats"),
    (["soak", "gelu", "--lanes", "banana"], "--lanes"),
])
def test_bad_input(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
