"""The lutra command line: generation, configuration errors, atomic outputs, sim, lint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gen.blocks import blocks, get_block
from gen.cli import main
from gen.config import ConfigError, load_config, validate_params
from sim.runner import VERILATOR_WAIVERS, missing_reason, verilator_bin


def test_generate_block_with_flags(tmp_path, capsys):
    out = tmp_path / "gemm"
    assert main(["generate", "gemm", "--rows", "2", "--cols", "3", "--out", str(out)]) == 0
    manifest = json.loads((out / "lutra_gemm.json").read_text())
    assert manifest["config"]["rows"] == 2 and manifest["config"]["cols"] == 3
    verilog = (out / "lutra_gemm.v").read_text()
    assert "module lutra_gemm" in verilog
    names = {p["name"] for p in manifest["ports"]}
    for port in ("clk", "rst", "i__valid", "i__ready", "i__payload", "params__payload",
                 "o__valid", "o__ready", "o__payload"):
        assert port in names, f"manifest lacks port {port}"
        assert port in verilog, f"Verilog lacks port {port}"
    i_payload = next(p for p in manifest["ports"] if p["name"] == "i__payload")
    assert i_payload["width"] == 2 * 8 + 3 * 8 + 1
    fields = {f["name"]: f for f in manifest["streams"]["i"]["fields"]}
    assert fields["a[1]"] == {"name": "a[1]", "offset": 8, "width": 8, "signed": True}
    assert fields["last"]["offset"] == 40
    assert manifest["figures"]["latency_cycles"] > 0
    assert "lutra_gemm.v" in capsys.readouterr().out


def test_generate_from_config_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[gemm]\nrows = 3\nrequantize = false\n")
    assert main(["generate", "--config", str(config), "--out", str(tmp_path / "o")]) == 0
    manifest = json.loads((tmp_path / "o" / "gemm" / "lutra_gemm.json").read_text())
    assert manifest["config"]["rows"] == 3 and manifest["config"]["requantize"] is False


def test_default_config_lists_every_block_validly():
    configs = load_config("configs/default.toml")
    assert sorted(c.name for c in configs) == sorted(blocks())


@pytest.mark.parametrize("text, message", [
    ("[gemm]\nrows = 0\n", "gemm.rows: must be in [1, 32], not 0"),
    ("[gemm]\nrows = \"4\"\n", "gemm.rows: must be an integer, not '4'"),
    ("[gemm]\nrowz = 4\n", "gemm.rowz: unknown key"),
    ("[gemm]\nrequantize = 1\n", "gemm.requantize: must be true or false, not 1"),
    ("[gemm]\ncols = 4\nout_lanes = 3\n", "gemm: out_lanes must divide cols (4), not 3"),
    ("[nope]\n", "nope: unknown block"),
    ("gemm = 3\n", "gemm: must be a table"),
    ("[gemm\n", "invalid TOML"),
    ("", "no block tables"),
])
def test_bad_config_is_one_line_exit_2_nothing_written(tmp_path, capsys, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    out = tmp_path / "out"
    assert main(["generate", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize("command", [["generate", "--out", "o"], ["sim"], ["build", "--target",
                                     "ecp5-25f"], ["explore", "--out", "o"], ["prove"],
                                     ["demo", "--block", "gemm"]])
def test_config_that_is_not_utf8_is_one_line_exit_2(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_bytes(b"\xff\xfe[\x00g\x00e\x00m\x00m\x00]\x00")     # UTF-16, say
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(command + ["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == (f"lutra: error: {config}: not UTF-8 text (byte 0xff at offset 0); "
                   f"a TOML file must be UTF-8\n"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_report_skips_a_report_json_that_is_not_utf8(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "report.json").write_bytes(b'{"lutra_report": 1, "block": "\xff"}')
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"lutra: error: {tmp_path}: no build reports (report.json) found\n", err


@pytest.mark.parametrize("argv, message", [
    (["generate", "gemm", "--rows", "0"], "gemm.rows: must be in [1, 32], not 0"),
    (["generate", "gemm", "--rowz", "3"], "unrecognized arguments: --rowz 3"),
    (["generate", "foo"], "unknown block 'foo'"),
    (["generate", "gemm", "--requantize", "maybe"], "expected true or false, not 'maybe'"),
    (["generate"], "name a block"),
    (["sim", "gemm", "--simulator", "xcelium"], "invalid choice: 'xcelium'"),
    (["bench", "nope"], "unknown block 'nope'"),
    (["bench", "gemm", "--arrays", "4x"], "expected RxC sizes separated by commas (e.g. 4x4,8x8), "
                                          "not '4x'"),
    (["bench", "gemm", "--arrays", "4x4,0x2"], "not '4x4,0x2'"),
    (["bench", "gemm", "--shape", "64x256"], "expected 3 positive integers joined by x"),
    (["bench", "attention", "--engines", "1,x"], "expected positive integers separated by "
                                                 "commas (e.g. 1,2,4), not '1,x'"),
    (["bench", "attention_unit", "--engines", "0"], "not '0'"),
])
def test_bad_flags(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)] if argv[0] == "generate" else argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["generate", "--rows", "4", "gemm", "--out", "my dir"],
     "lutra generate gemm --rows 4 --out 'my dir'"),
    (["generate", "--out", "o", "--requantize", "false", "gemm"],
     "lutra generate gemm --out o --requantize false"),
    (["sim", "--rows", "2", "gemm"], "lutra sim gemm --rows 2"),
    (["build", "--rows", "2", "gemm", "--target", "ice40-up5k"],
     "lutra build gemm --rows 2 --target ice40-up5k"),
    (["prove", "--rows", "2", "gemm"], "lutra prove gemm --rows 2"),
    (["explore", "--rows", "2..4", "gemm", "--target", "ecp5-25f", "--out", "o"],
     "lutra explore gemm --rows 2..4 --target ecp5-25f --out o"),
    (["soak", "--rows", "2", "gemm"], "lutra soak gemm --rows 2"),
    (["run", "--max-tokens", "8", "encoder", "--model", "tiny"],
     "lutra run encoder --max-tokens 8 --model tiny"),
    (["generate", "--rows", "4", "--out", "o"], "lutra generate BLOCK --rows 4 --out o (BLOCK: "
                                                f"one of {', '.join(blocks())})"),
])
def test_flags_before_the_block_name(tmp_path, monkeypatch, capsys, no_runs, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"lutra: error: the block name comes first, then its parameter flags: " \
                  f"{message}\n", err
    assert not list(tmp_path.iterdir())


def test_failed_generation_keeps_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "gemm"
    assert main(["generate", "gemm", "--out", str(out)]) == 0
    before = (out / "lutra_gemm.v").read_text()

    def explode(*args, **kwargs):
        raise RuntimeError("synthetic failure")

    monkeypatch.setattr("gen.verilog.convert", explode)
    with pytest.raises(RuntimeError):
        main(["generate", "gemm", "--rows", "2", "--out", str(out)])
    assert (out / "lutra_gemm.v").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemm"]


def test_validate_params_reports_key():
    with pytest.raises(ConfigError) as info:
        validate_params(get_block("gemm"), {"acc_width": 64})
    assert str(info.value) == "gemm.acc_width: must be in [18, 32], not 64"


def test_console_script_runs(tmp_path):
    lutra = Path(sys.executable).parent / "lutra"      # the venv's console script
    result = subprocess.run([str(lutra), "generate", "gemm", "--rows", "0", "--out",
                             str(tmp_path / "x")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "lutra: error: gemm.rows: must be in [1, 32], not 0"


@pytest.mark.cocotb
def test_sim_command_runs_a_regression(tmp_path, capsys):
    simulator = "icarus" if missing_reason("icarus") is None else "verilator"
    status = main(["sim", "gemm", "--rows", "1", "--cols", "1", "--simulator", simulator,
                   "--build-dir", str(tmp_path), "--waves"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "1 passed, 0 failed" in out
    assert "waves:" in out


@pytest.mark.parametrize("params", [{}, {"rows": 3, "cols": 5, "requantize": False}])
def test_verilog_lints_clean_with_named_waivers(tmp_path, params):
    reason = missing_reason("verilator")
    if reason is not None:
        pytest.skip(reason)
    args = ["generate", "gemm", "--out", str(tmp_path)]
    for key, value in params.items():
        args += [f"--{key.replace('_', '-')}", str(value).lower()]
    assert main(args) == 0
    waivers = [f"-Wno-{name}" for name in VERILATOR_WAIVERS]
    result = subprocess.run([str(verilator_bin() / "verilator"), "--lint-only", *waivers,
                             str(tmp_path / "lutra_gemm.v")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "%Warning" not in result.stderr, result.stderr


def test_encoder_longest_sequence_follows_the_batch_memory(tmp_path, capsys):
    """Without ``--model-max-len`` the model's longest sequence is lowered to ``max_tokens``
    (MiniLM's 512 would not fit a batch of 32 tokens), so ``--model X`` alone generates; an
    explicit longer one is still a one-line error."""
    assert main(["generate", "encoder", "--model-layers", "1", "--max-tokens", "8",
                 "--out", str(tmp_path / "a")]) == 0
    manifest = json.loads((tmp_path / "a" / "lutra_encoder.json").read_text())
    assert manifest["figures"]["model"]["max_len"] == 8          # the tiny model's own is 16
    assert main(["generate", "encoder", "--model-layers", "1", "--out", str(tmp_path / "b")]) == 0
    manifest = json.loads((tmp_path / "b" / "lutra_encoder.json").read_text())
    assert manifest["figures"]["model"]["max_len"] == 16
    capsys.readouterr()
    assert main(["generate", "encoder", "--model-layers", "1", "--model-max-len", "16",
                 "--max-tokens", "8", "--out", str(tmp_path / "c")]) == 2
    assert "max_tokens must be >= max_len (16), not 8" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@pytest.fixture
def no_runs(monkeypatch):
    """Builds, studies and soaks that fail the test if reached (the checks come first)."""
    def reached(*args, **kwargs):
        raise AssertionError("bad input reached a build, study or soak")

    for target in ("fpga.flow.build_ooc", "fpga.bench.build_ooc", "fpga.explore.run_study",
                   "gen.cli_soak.soak_block", "gen.cli_prove.prove_block", "gen.cli.run_sims"):
        monkeypatch.setattr(target, reached)


BUILD = ["build", "gemm", "--target", "ecp5-25f"]
EXPLORE = ["explore", "gemm", "--target", "ecp5-25f"]


@pytest.mark.parametrize("argv, message", [
    *[(BUILD + ["--freq", f], f"argument --freq: expected a positive number of MHz (e.g. 50), "
                              f"not '{f}'") for f in ("0", "-5", "nan", "inf", "1e400", "x")],
    (BUILD + ["--seed", "-1"], "argument --seed: expected a non-negative integer, not '-1'"),
    *[(EXPLORE + ["--freq", f], "argument --freq: expected a positive number of MHz")
      for f in ("0", "-1", "nan", "inf")],
    (EXPLORE + ["--search", "random", "--samples", "2", "--sample-seed", "-1"],
     "argument --sample-seed: expected a non-negative integer, not '-1'"),
    (["soak", "gemm", "--seed", "-1"], "argument --seed: expected a non-negative integer"),
    (["bench", "fpga", "--seed", "-1"], "argument --seed: expected a non-negative integer"),
    (["bench", "fpga", "--arrays", "2x2", "--seeds", "1,-2"], "not '1,-2'"),
    (["sim", "gemm", "--seed", "-1"], "argument --seed: expected a non-negative integer"),
    *[(["prove", "gemm", "--timeout", t], f"--timeout must be a positive number of seconds, "
                                          f"not {t}") for t in ("nan", "inf", "0", "-1")],
])
def test_bad_clock_and_seed_values_are_refused(tmp_path, capsys, no_runs, argv, message):
    out = tmp_path / "out"
    assert main(argv + (["--out", str(out)] if argv[0] not in ("soak", "sim") else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("lutra: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not out.exists()


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0", "-3", "true", '"fast"'])
def test_bad_clock_in_an_explore_study_is_refused(tmp_path, capsys, no_runs, value):
    study = tmp_path / "study.toml"
    study.write_text(f'[explore]\nblock = "gemm"\ntargets = ["ecp5-25f"]\nfreq = {value}\n')
    assert main(["explore", "--config", str(study), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{study}: --freq: must be a positive number of MHz" in err, err
    assert err.count("\n") == 1
