"""Output directories: Lutra writes only what it owns (gen/outputs.py) in every command."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fpga import bench as fpga_bench
from fpga import flow
from fpga.ooc import OOC_TOP
from fpga.tools import ToolError
from gen.blocks import get_block
from gen.cli import main
from gen.config import validate_params
from gen.outputs import MARKER, OutputDir, OutputError, write_file

ROOT = Path(__file__).resolve().parents[1]


def lutra(*argv) -> int:
    return main([str(a) for a in argv])


def one_line_error(capsys, *needles, progress: bool = False) -> str:
    """The one error line on stderr; ``progress``: a failure after work started may follow
    the command's plain progress lines (``lutra build gemm: ...``), nothing else."""
    err = capsys.readouterr().err
    if progress:
        lines = err.splitlines(keepends=True)
        assert all(line.startswith("lutra build ") for line in lines[:-1]), err
        err = lines[-1] if lines else ""
    assert err.count("\n") == 1 and err.startswith("lutra: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def debris(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".lutra-tmp-*"))


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


# ---- generate ---------------------------------------------------------------------------------

def test_foreign_files_survive_generate_with_force(tmp_path, capsys):
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    (rtl / "top.v").write_text("module top; endmodule\n")
    assert lutra("generate", "gemm", "--out", rtl) == 2
    one_line_error(capsys, f"{rtl}: directory is not empty", "--force")
    assert sorted(p.name for p in rtl.iterdir()) == ["top.v"]

    assert lutra("generate", "--config", ROOT / "configs/default.toml", "--out", rtl,
                 "--force") == 0
    assert (rtl / "top.v").read_text() == "module top; endmodule\n"
    assert (rtl / "gemm" / "lutra_gemm.v").exists()
    owners = json.loads((rtl / MARKER).read_text())["owners"]
    assert "top.v" not in owners["generate"] and "gemm" in owners["generate"]
    # Once Lutra has written there, no --force is needed; stale outputs of the last run go.
    assert lutra("generate", "gemm", "--rows", "2", "--out", rtl) == 0
    assert sorted(p.name for p in rtl.iterdir()) == [MARKER, "lutra_gemm.json", "lutra_gemm.v",
                                                     "top.v"]
    assert json.loads((rtl / "lutra_gemm.json").read_text())["config"]["rows"] == 2


def test_out_is_a_file(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for extra in ([], ["--force"]):
        assert lutra("generate", "gemm", "--out", notes, *extra) == 2
        one_line_error(capsys, f"{notes}: exists and is not a directory")
        assert notes.read_text() == "mine\n"
    assert lutra("generate", "gemm", "--out", notes / "sub") == 2
    one_line_error(capsys, f"{notes}: exists and is not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_out_dot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert lutra("generate", "gemm", "--out", ".") == 0
    assert lutra("generate", "gemm", "--rows", "3", "--out", ".") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [MARKER, "lutra_gemm.json",
                                                          "lutra_gemm.v"]
    assert "./lutra_gemm.v" not in capsys.readouterr().err


def test_foreign_file_with_an_output_name_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    assert lutra("generate", "gemm", "--out", out) == 0
    (out / "lutra_softmax.v").write_text("hand-written\n")
    assert lutra("generate", "softmax", "--out", out) == 2
    one_line_error(capsys, "lutra_softmax.v: exists and was not written by Lutra")
    assert (out / "lutra_softmax.v").read_text() == "hand-written\n"
    assert (out / "lutra_gemm.v").exists() and not debris(out)
    assert lutra("generate", "softmax", "--out", out, "--force") == 0
    assert "module lutra_softmax" in (out / "lutra_softmax.v").read_text()


def test_empty_existing_directory_needs_no_force(tmp_path):
    (tmp_path / "o").mkdir()
    assert lutra("generate", "gemm", "--out", tmp_path / "o") == 0


def test_unreadable_marker_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    assert lutra("generate", "gemm", "--out", out) == 0
    (out / MARKER).write_text("{not json")
    assert lutra("generate", "gemm", "--out", out) == 2
    one_line_error(capsys, "unreadable marker")
    assert lutra("generate", "gemm", "--out", out, "--force") == 0
    assert json.loads((out / MARKER).read_text())["owners"]["generate"]


@pytest.mark.parametrize("escape", ["relative", "absolute", "link"])
def test_marker_naming_paths_outside_is_refused(tmp_path, capsys, escape):
    """A marker (forged or corrupted) that names a path outside its directory does not make
    Lutra remove or write there: it is refused like an unreadable one, ignored with --force."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("a user's file\n")
    out = tmp_path / "o"
    assert lutra("generate", "gemm", "--out", out) == 0
    name = {"relative": "../mine/thesis.tex", "absolute": str(mine / "thesis.tex"),
            "link": "old"}[escape]
    if escape == "link":
        (out / "old").symlink_to(mine)
    (out / MARKER).write_text(json.dumps({"lutra_outputs": 1, "owners": {
        "generate": ["lutra_gemm.json", "lutra_gemm.v", name]}}))
    assert lutra("generate", "gemm", "--rows", "2", "--out", out) == 2
    one_line_error(capsys, f"{out / MARKER}: marker of Lutra's outputs names {name!r}",
                   "--force")
    assert (mine / "thesis.tex").read_text() == "a user's file\n"
    assert json.loads((out / "lutra_gemm.json").read_text())["config"]["rows"] == 4
    assert lutra("generate", "gemm", "--rows", "2", "--out", out, "--force") == 0
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    assert (mine / "thesis.tex").read_text() == "a user's file\n"
    assert json.loads((out / "lutra_gemm.json").read_text())["config"]["rows"] == 2
    assert name not in json.loads((out / MARKER).read_text())["owners"]["generate"]


def test_claim_does_not_write_through_a_link_leading_out(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    out = tmp_path / "o"
    out.mkdir()
    (out / "sim").symlink_to(mine)
    for force in (False, True):
        with pytest.raises(OutputError, match="is a link to outside"), \
                OutputDir(out, owner="sim", force=force, shared=True) as directory:
            directory.claim("sim")
    assert not list(mine.iterdir())


def test_disk_full_keeps_previous_outputs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "o"
    assert lutra("generate", "gemm", "--out", out) == 0
    before = snapshot(out)
    write_text = Path.write_text

    def full(self, data, *args, **kwargs):
        if self.suffix == ".json" and ".lutra-tmp-" in str(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    assert lutra("generate", "gemm", "--rows", "2", "--out", out) == 2
    one_line_error(capsys, "No space left on device")
    assert snapshot(out) == before and not debris(out)
    # A new directory is not left behind half-made.
    assert lutra("generate", "gemm", "--out", tmp_path / "new" / "deeper") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_failure_in_commit_keeps_outputs_recognised(tmp_path, monkeypatch, capsys):
    out = tmp_path / "o"
    assert lutra("generate", "gemm", "--out", out) == 0
    replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if Path(dst).name == "lutra_gemm.v":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return replace(src, dst)

    monkeypatch.setattr("gen.outputs.os.replace", flaky)
    assert lutra("generate", "gemm", "--rows", "2", "--out", out) == 2
    one_line_error(capsys, "output not written")
    monkeypatch.setattr("gen.outputs.os.replace", replace)
    assert lutra("generate", "gemm", "--rows", "2", "--out", out) == 0
    assert not debris(out)


SLOW_GENERATE = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    # Ctrl-C as from a terminal: a suite started in the background (`make test &` from a script)
    # hands its children SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import gen.verilog
    from gen.cli import main
    convert = gen.verilog.convert

    def slow(*args, **kwargs):
        text = convert(*args, **kwargs)
        Path(sys.argv[1]).write_text("started")
        time.sleep(60)
        return text

    gen.verilog.convert = slow
    sys.exit(main(["generate", "gemm", "--rows", "2", "--out", sys.argv[2]]))
""")


def _interrupt(tmp_path, out, sig) -> subprocess.CompletedProcess:
    flag = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_GENERATE, str(flag), str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the subprocess never started writing"
        time.sleep(0.05)
    proc.send_signal(sig)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_ctrl_c_keeps_previous_outputs_and_leaves_no_debris(tmp_path):
    out = tmp_path / "o"
    assert lutra("generate", "gemm", "--out", out) == 0
    before = snapshot(out)
    result = _interrupt(tmp_path, out, signal.SIGINT)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(out) == before and not debris(out)


def test_killed_run_leaves_debris_the_next_run_removes_and_names(tmp_path, capsys):
    out = tmp_path / "o"
    assert lutra("generate", "gemm", "--out", out) == 0
    before = snapshot(out)
    result = _interrupt(tmp_path, out, signal.SIGKILL)
    assert result.returncode == -signal.SIGKILL
    left = debris(out)
    assert snapshot(out) == before and left
    capsys.readouterr()
    assert lutra("generate", "gemm", "--out", out) == 0
    err = capsys.readouterr().err
    assert f"removed {out / left[0]}, left by an interrupted run" in err, err
    assert not debris(out)


def test_concurrent_runs_keep_each_others_staging(tmp_path):
    # A staging directory whose process is alive (here: pid 1) is not debris.
    out = tmp_path / "o"
    out.mkdir()
    live = out / ".lutra-tmp-1-abcdef00"
    live.mkdir()
    with OutputDir(out, owner="t") as staged:
        (staged.stage / "a.txt").write_text("a")
    assert live.exists() and (out / "a.txt").read_text() == "a"


def test_output_dir_api(tmp_path):
    out = tmp_path / "o"
    with OutputDir(out, owner="one") as staged:
        (staged.stage / "sub").mkdir()
        (staged.stage / "sub" / "x").write_text("1")
        (staged.stage / "f").write_text("f")
    with OutputDir(out, owner="two", prune=False) as staged:
        (staged.stage / "g").write_text("g")
    with OutputDir(out, owner="one") as staged:     # replaces sub/, removes stale f
        (staged.stage / "sub").mkdir()
        (staged.stage / "sub" / "y").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "g", "sub"]
    assert [p.name for p in (out / "sub").iterdir()] == ["y"]
    owners = json.loads((out / MARKER).read_text())["owners"]
    assert owners == {"one": ["sub"], "two": ["g"]}
    with pytest.raises(RuntimeError), OutputDir(out, owner="one") as staged:
        (staged.stage / "sub").mkdir()
        raise RuntimeError("failed run")
    assert [p.name for p in (out / "sub").iterdir()] == ["y"] and not debris(out)


def test_write_file(tmp_path):
    target = tmp_path / "table.md"
    (tmp_path / "mine.txt").write_text("x")
    write_file(target, "a\n", owner="report")
    write_file(target, "b\n", owner="report")
    assert target.read_text() == "b\n" and (tmp_path / "mine.txt").read_text() == "x"
    with pytest.raises(OutputError, match="mine.txt: exists and was not written by Lutra"):
        write_file(tmp_path / "mine.txt", "y", owner="report")
    with pytest.raises(OutputError, match="is a directory"):
        write_file(tmp_path, "y", owner="report")
    write_file(tmp_path / "mine.txt", "y", owner="report", force=True)
    assert (tmp_path / "mine.txt").read_text() == "y"


# ---- sim, demo, report --------------------------------------------------------------------------

def test_sim_and_demo_refuse_bad_directories_before_running(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep").write_text("k")
    for argv, where in [(["sim", "gemm", "--build-dir", notes], notes),
                        (["sim", "gemm", "--build-dir", mine], mine),
                        (["demo", "--out", notes], notes), (["demo", "--out", mine], mine)]:
        assert lutra(*argv) == 2
        one_line_error(capsys, str(where))
    assert notes.read_text() == "mine\n" and sorted(p.name for p in mine.iterdir()) == ["keep"]


def _fake_report(tmp_path) -> Path:
    report = {"lutra_report": 1, "block": "gemm", "config": {"rows": 1}, "defaults": {},
              "target": "ice40-up5k", "kind": "ooc", "timing_met": True,
              "clocks": [{"requested_mhz": 50.0, "achieved_mhz": 60.0}],
              "resources": {k: {"used": 1, "available": 2, "percent": 50.0}
                            for k in ("lc", "dsp", "bram")}}
    builds = tmp_path / "builds" / "b"
    builds.mkdir(parents=True)
    (builds / "report.json").write_text(json.dumps(report))
    return builds.parent


def test_report_out(tmp_path, capsys):
    builds = _fake_report(tmp_path)
    table = tmp_path / "table.md"
    assert lutra("report", builds, "--out", table) == 0
    assert lutra("report", builds, "--csv", "--out", table) == 0
    assert table.read_text().startswith("block,config")
    capsys.readouterr()
    (tmp_path / "notes.md").write_text("mine")
    assert lutra("report", builds, "--out", tmp_path / "notes.md") == 2
    one_line_error(capsys, "notes.md: exists and was not written by Lutra")
    assert (tmp_path / "notes.md").read_text() == "mine"
    assert lutra("report", builds, "--out", builds) == 2
    one_line_error(capsys, "is a directory")
    assert lutra("report", builds, "--out", tmp_path / "notes.md" / "x") == 2
    one_line_error(capsys, "notes.md: exists and is not a directory")
    assert not debris(tmp_path)


# ---- build and bench, with stand-in tools -------------------------------------------------------

@pytest.fixture
def fake_tools(monkeypatch):
    """Yosys and nextpnr stand-ins that write the files the flow reads, in milliseconds."""
    calls = {"fail": None}

    def run_tool(tool, args, *, cwd, log, tick=None):
        cwd = Path(cwd)
        log.write_text(f"{tool} ran\n")
        if calls["fail"] == tool:
            (cwd / "pnr.log").write_text("ERROR: stand-in failure\n")
            raise ToolError(f"{tool} failed (exit 1): ERROR: stand-in failure")
        if tool == "yosys":
            cells = {"SB_LUT4": 10, "SB_DFF": 5, "SB_MAC16": 1}
            block = next(p.stem for p in cwd.glob("lutra_*.v") if p.stem != OOC_TOP)
            (cwd / "stat.json").write_text(json.dumps({"modules": {
                f"\\{block}": {"num_cells_by_type": cells},
                f"\\{OOC_TOP}": {"num_cells_by_type": {"SB_DFF": 3, block: 1}}}}))
            (cwd / "synth.json").write_text("{}")
        else:
            (cwd / "nextpnr.json").write_text(json.dumps({
                "utilization": {"ICESTORM_LC": {"used": 20, "available": 5280},
                                "ICESTORM_DSP": {"used": 1, "available": 8}},
                "fmax": {"clk": {"achieved": 60.0, "constraint": 50.0}},
                "critical_paths": []}))
        return 0.01

    monkeypatch.setattr(flow, "run_tool", run_tool)
    monkeypatch.setattr(flow, "tool_version", lambda tool: f"{tool} stand-in")
    return calls


BUILD = ["build", "gemm", "--rows", "1", "--cols", "1", "--target", "ice40-up5k"]


def test_build_out(tmp_path, fake_tools, capsys):
    out = tmp_path / "b"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert lutra(*BUILD, "--out", out) == 2
    one_line_error(capsys, "directory is not empty")
    assert lutra(*BUILD, "--out", out, "--force") == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "report.json").read_text())["block"] == "gemm"
    owned = json.loads((out / MARKER).read_text())["owners"]["build"]
    assert "report.json" in owned and "synth.json" in owned and "notes.txt" not in owned
    before = snapshot(out)
    fake_tools["fail"] = "nextpnr-ice40"                # a failed build keeps the last one
    assert lutra(*BUILD, "--seed", "7", "--out", out) == 2
    one_line_error(capsys, "place and route failed", "b-failed-pnr.log", progress=True)
    assert snapshot(out) == before and not debris(tmp_path)
    assert (tmp_path / "b-failed-pnr.log").read_text() == "ERROR: stand-in failure\n"
    fake_tools["fail"] = None
    assert lutra(*BUILD, "--seed", "7", "--out", out) == 0
    assert json.loads((out / "report.json").read_text())["seed"] == 7
    capsys.readouterr()                                 # the successful build's progress
    file = tmp_path / "f"
    file.write_text("x")
    assert lutra(*BUILD, "--out", file) == 2
    one_line_error(capsys, "exists and is not a directory")


def test_build_out_dot_and_report(tmp_path, fake_tools, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert lutra(*BUILD, "--out", ".") == 0
    assert (tmp_path / "report.json").exists()
    capsys.readouterr()
    assert lutra("report", ".", "--out", "table.md") == 0
    assert "| gemm | rows=1 cols=1 | ice40-up5k | ooc |" in (tmp_path / "table.md").read_text()


def test_fpga_bench_out(tmp_path, fake_tools, monkeypatch, capsys):
    one = validate_params(get_block("gemm"), {"rows": 1, "cols": 1})
    monkeypatch.setattr(fpga_bench, "largest_candidates", lambda *args: [(one, False)])
    out = tmp_path / "bench"
    argv = ["gemm", "--skip-reference", "--targets", "ice40-up5k", "--out", str(out)]
    assert fpga_bench.main(argv) == 0
    assert "largest on ice40-up5k" in capsys.readouterr().out
    assert json.loads((out / MARKER).read_text())["owners"]["fpga-bench"] == ["ice40-up5k"]
    (built,) = (out / "ice40-up5k").iterdir()
    assert (built / "report.json").exists()
    assert fpga_bench.main(argv) == 0                     # a re-run needs no --force
    (out / "mine.txt").write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("x")
    assert fpga_bench.main([*argv[:-1], str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "directory is not empty" in err, err
    assert fpga_bench.main([*argv[:-1], str(out)]) == 0 and (out / "mine.txt").exists()


# ---- block and model benchmarks: report files in --out ------------------------------------------

#: Each benchmark in a cheap configuration, and the report files it writes into --out.
BENCHES = {
    "gemm": (["--arrays", "1x1", "--shape", "2x2x2"], ["gemm_bench.json"]),
    "gelu": (["--sentences", "1"], ["gelu_accuracy.md", "gelu_curves.png"]),
    "softmax": (["--sentences", "1"], ["softmax_error_vs_table_bytes.png"]),
    "attention": (["--batches", "1", "--batch", "6", "--engines", "1,2", "--cost", "8"],
                  ["attention_schedule.png"]),
    "attention_unit": (["--engines", "1", "--batches", "1", "--batch", "1", "--max-len", "8",
                        "--no-dense"], ["attention_unit_bench.json", "attention_unit_bench"]),
}


def _simulator() -> str:
    from sim.runner import available
    return "icarus" if "icarus" in available() else "verilator"


@pytest.mark.parametrize("bench", BENCHES)
def test_bench_keeps_a_users_file_of_an_output_name(tmp_path, capsys, bench):
    """A user's file with the name of one of the benchmark's outputs is refused before the
    benchmark's work starts (exit 2, one line naming it), and with --force only that name is
    replaced."""
    flags, names = BENCHES[bench]
    out = tmp_path / "reports"
    out.mkdir()
    for name in names:
        (out / "notes.md").write_text("mine")
        (out / name).write_text("a user's file")
        assert lutra("bench", bench, *flags, "--out", out) == 2
        one_line_error(capsys, str(out / name), "not written by Lutra", "--force")
        assert (out / name).read_text() == "a user's file"
        assert sorted(p.name for p in out.iterdir()) == sorted(["notes.md", name])
        (out / name).unlink()
    if bench == "attention":                    # the quickest one: --force replaces the file
        (out / names[0]).write_text("a user's file")
        assert lutra("bench", bench, *flags, "--out", out, "--force") == 0
        assert (out / names[0]).read_bytes().startswith(b"\x89PNG")
        assert (out / "notes.md").read_text() == "mine"


def test_encoder_bench_keeps_a_users_json(tmp_path, capsys):
    """``--json FILE`` of ``lutra bench encoder`` (and ``--rtl``): a user's file is refused
    before the work, and so is a directory."""
    mine = tmp_path / "figures.json"
    mine.write_text("a user's file")
    for flags in (["--defaults-only", "--sentences", 3], ["--rtl", "--model-only"]):
        assert lutra("bench", "encoder", *flags, "--json", mine) == 2
        one_line_error(capsys, str(mine), "not written by Lutra")
        assert mine.read_text() == "a user's file"
        assert lutra("bench", "encoder", *flags, "--json", tmp_path) == 2
        one_line_error(capsys, str(tmp_path), "is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures.json"]
    builds = tmp_path / "builds"                # --rtl's Verilator builds: as 'lutra run's
    builds.mkdir()
    (builds / "notes.md").write_text("mine")
    assert lutra("bench", "encoder", "--rtl", "--minilm-layers", 0, "--build-dir", builds) == 2
    one_line_error(capsys, str(builds), "directory is not empty")
    assert sorted(p.name for p in builds.iterdir()) == ["notes.md"]


@pytest.mark.parametrize("bench", ["attention", "gemm", "gelu", "softmax"])
def test_bench_reruns_into_its_own_directory(tmp_path, monkeypatch, capsys, bench):
    """The default directory (build/reports) is Lutra's own: a user's file of an output's
    name there needs no --force, and a second run replaces the first run's files."""
    flags, names = BENCHES[bench]
    if bench == "gemm":
        flags = [*flags, "--simulator", _simulator()]
    monkeypatch.chdir(tmp_path)
    reports = tmp_path / "build" / "reports"
    assert lutra("bench", bench, *flags) == 0
    first = {name: (reports / name).read_bytes() for name in names}
    assert json.loads((reports / MARKER).read_text())["owners"][f"bench-{bench}"] == names
    (reports / "notes.md").write_text("mine")
    assert lutra("bench", bench, *flags) == 0
    assert {name: (reports / name).read_bytes() for name in names} == first
    assert (reports / "notes.md").read_text() == "mine" and not debris(reports)
    out = tmp_path / "mine"                     # a directory of the user's: other files stay
    out.mkdir()
    (out / "notes.md").write_text("mine")
    assert lutra("bench", bench, *flags, "--out", out) == 0
    assert lutra("bench", bench, *flags, "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "notes.md", *names])


def test_fpga_bench_checks_its_table_before_building(tmp_path, monkeypatch, capsys):
    """``lutra bench fpga --arrays``: a user's file named like its table is refused before any
    build (it was found only when the sweep had finished)."""
    def build_ooc(*args, **kwargs):
        raise AssertionError("built although the table cannot be written")
    monkeypatch.setattr(fpga_bench, "build_ooc", build_ooc)
    out = tmp_path / "bench"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"lutra_outputs": 1, "owners": {}}))
    (out / "gemm-scaling.md").write_text("a user's table")
    assert fpga_bench.main(["gemm", "--arrays", "1x1", "--reference", "ice40-up5k", "--out",
                            str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out / "gemm-scaling.md") in err, err
    assert (out / "gemm-scaling.md").read_text() == "a user's table"


def test_bench_module_run_directly_keeps_a_users_file(tmp_path):
    """``python -m sim.bench_attention`` is ``lutra bench attention``: the same refusal, as one
    line and exit status 2 (not a traceback)."""
    (tmp_path / "attention_schedule.png").write_text("a user's file")
    run = subprocess.run([sys.executable, "-m", "sim.bench_attention", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "attention_schedule.png" in run.stderr, run.stderr
    assert (tmp_path / "attention_schedule.png").read_text() == "a user's file"
