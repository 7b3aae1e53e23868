"""Design-space exploration: out-of-context builds of one block over parameters x targets x
nextpnr seeds, scheduled by Ray Tune, with a results table and the Pareto front.

A :class:`Study` names the block, a list of values for each swept parameter, the targets, the
seeds, the objectives and the search (``grid``: every combination; ``random``: ``samples``
combinations drawn without replacement; ``bayes``: Optuna's multi-objective TPE through Ray
Tune). Every *run* is one :func:`fpga.flow.build_ooc` (configuration, target, seed); the fit
check is a pre-filter, so a configuration that cannot fit is a row "does not fit" and no tool
runs. :func:`run_study` writes ``results.csv`` and ``results.md`` (one row per run, rewritten
as each run ends), ``pareto.png`` and the build directories (``runs/``) under the output
directory; a re-run skips every run whose row is there, so an interrupted study resumes.

Ray starts locally (``jobs`` workers) or joins the cluster at ``address`` (``RAY_ADDRESS``);
Ray does the scheduling and the distribution, Lutra only the builds and the bookkeeping.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from gen.blocks import BlockSpec, Param, get_block
from gen.config import ConfigError, not_utf8, validate_params
from gen.outputs import OutputDir, write_file

from .fit import FitError, check_fit
from .pareto import pareto_front, plot_front
from .targets import TargetError, get_target

try:
    import tomllib
except ModuleNotFoundError:         # Python 3.10
    import tomli as tomllib

__all__ = ["OBJECTIVES", "SEARCHES", "ExploreError", "Objective", "Study", "front",
           "load_study", "parse_values", "plan", "row_from_report", "run_point", "run_study"]


class ExploreError(Exception):
    """A study that cannot run as described (one-line message naming the field)."""


@dataclass(frozen=True)
class Objective:
    """A column of the results table and whether larger (``max``) or smaller is better."""

    column: str
    sense: str
    label: str


#: Objectives by name: ``--objective gops,luts``.
OBJECTIVES = {
    "gops": Objective("peak_gops", "max", "peak GOPS (2 x MACs x Fmax)"),
    "fmax": Objective("fmax_mhz", "max", "Fmax (MHz)"),
    "luts": Objective("lut4", "min", "LUT4"),
    "lcs": Objective("lcs", "min", "logic cells (placed)"),
    "ffs": Objective("ff", "min", "flip-flops"),
    "dsps": Objective("dsp", "min", "DSPs"),
    "brams": Objective("bram", "min", "block RAMs"),
    "comb_per_mac": Objective("comb_per_mac", "min", "block comb cells per MAC"),
}
SEARCHES = ("grid", "random", "bayes")

#: Columns of the results table after the block's parameters.
FIGURES = ("target", "seed", "status", "fmax_mhz", "requested_mhz", "timing_met", "peak_gops",
           "macs", "lut4", "ff", "carry", "lcs", "lcs_pct", "dsp", "bram", "block_comb",
           "block_ff", "comb_per_mac", "synth_s", "pnr_s", "wall_s", "reason", "report")
#: Columns read back from the CSV as numbers: counts, and the rest.
_INTEGERS = {"seed", "macs", "lut4", "ff", "carry", "lcs", "dsp", "bram", "block_comb",
             "block_ff"}
_FLOATS = {"fmax_mhz", "requested_mhz", "peak_gops", "lcs_pct", "comb_per_mac", "synth_s",
           "pnr_s", "wall_s"}
OK, NO_FIT, FAILED, INVALID = "ok", "does not fit", "failed", "invalid"


# ---- the study --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Study:
    """What to explore. ``space`` maps each swept parameter to its values (every other
    parameter keeps its default); ``samples`` is the number of configurations (x targets)
    tried by ``random`` and ``bayes``."""

    block: str
    space: dict
    targets: tuple
    seeds: tuple = (1,)
    objectives: tuple = ("gops", "luts")
    search: str = "grid"
    samples: int | None = None
    sample_seed: int = 0
    freq_mhz: float | None = None
    allow_lut_multipliers: bool = False
    spec: BlockSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        try:
            spec = get_block(self.block)
        except KeyError as error:
            raise ExploreError(error.args[0]) from None
        object.__setattr__(self, "spec", spec)
        for name, values in self.space.items():
            param = _param(spec, name)
            if not values:
                raise ExploreError(f"{param.flag}: needs at least one value")
            for value in values:
                _check_value(param, value)
        if not self.targets:
            raise ExploreError("--target: name at least one target")
        for target in self.targets:
            try:
                get_target(target)
            except TargetError as error:
                raise ExploreError(str(error)) from None
        if not self.seeds or not all(isinstance(s, int) and s >= 1 for s in self.seeds):
            raise ExploreError(f"--seeds: must be positive integers, not {self.seeds!r}")
        if not self.objectives:
            raise ExploreError("--objective: name at least one objective")
        for name in self.objectives:
            if name not in OBJECTIVES:
                raise ExploreError(f"--objective: unknown objective {name!r} "
                                   f"(known: {', '.join(OBJECTIVES)})")
        if len(set(self.objectives)) != len(self.objectives):
            raise ExploreError(f"--objective: names an objective twice: "
                               f"{','.join(self.objectives)}")
        if self.search not in SEARCHES:
            raise ExploreError(f"--search: must be one of {', '.join(SEARCHES)}, "
                               f"not {self.search!r}")
        if self.search == "grid" and self.samples is not None:
            raise ExploreError("--samples: a grid search runs every combination; "
                               "use --search random or bayes to sample")
        if self.search != "grid" and (not isinstance(self.samples, int) or self.samples < 1):
            raise ExploreError(f"--samples: {self.search} search needs a positive number of "
                               f"samples, not {self.samples!r}")
        freq = self.freq_mhz
        if freq is not None and (isinstance(freq, bool) or not isinstance(freq, (int, float))
                                 or not (math.isfinite(freq) and freq > 0)):
            raise ExploreError(f"--freq: must be a positive number of MHz, not {freq!r}")
        if isinstance(self.sample_seed, bool) or not isinstance(self.sample_seed, int) \
                or self.sample_seed < 0:
            raise ExploreError(f"--sample-seed: must be a non-negative integer, not "
                               f"{self.sample_seed!r}")

    @property
    def columns(self) -> list[str]:
        """The results table's columns: run, the block's parameters, then :data:`FIGURES`."""
        return ["run", *(p.name for p in self.spec.params), *FIGURES]

    def configurations(self) -> int:
        """How many parameter combinations the space holds."""
        count = 1
        for values in self.space.values():
            count *= len(values)
        return count

    def run_key(self, params: dict, target: str, seed: int) -> str:
        """A run's name in the table and its build directory under ``runs/``."""
        try:
            config_key = validate_params(self.spec, params).key()
        except ConfigError:             # an invalid combination still needs a name
            config_key = "-".join([self.block, *(f"{k}={v}" for k, v in params.items())])
        key = f"{config_key}@{target}-seed{seed}"
        if self.freq_mhz is not None:
            key += f"-{self.freq_mhz:g}MHz"
        if self.allow_lut_multipliers:
            key += "-lutmul"
        return key.replace("/", "_")


def _param(spec: BlockSpec, name: str) -> Param:
    try:
        return spec.param(name)
    except KeyError:
        raise ExploreError(f"{spec.name} has no parameter {name!r} (parameters: "
                           f"{', '.join(p.name for p in spec.params)})") from None


def _check_value(param: Param, value) -> None:
    kind = param.kind
    if kind is bool and not isinstance(value, bool) or kind is int and (
            not isinstance(value, int) or isinstance(value, bool)) or kind is float and (
            not isinstance(value, (int, float)) or isinstance(value, bool)) or kind is str and (
            not isinstance(value, str)):
        raise ExploreError(f"{param.flag}: must be {kind.__name__} values, not {value!r}")
    if param.choices is not None and value not in param.choices:
        raise ExploreError(f"{param.flag}: must be one of "
                           f"{', '.join(map(str, param.choices))}, not {value!r}")
    if kind in (int, float) and ((param.lo is not None and value < param.lo)
                                 or (param.hi is not None and value > param.hi)):
        raise ExploreError(f"{param.flag}: must be in [{param.lo}, {param.hi}], not {value!r}")


def parse_values(param: Param, text: str) -> tuple:
    """The values of ``param`` that ``text`` names: ``2..12`` (inclusive), ``2..12:2`` (a
    step), ``2,4,8``, ``true,false``, or one value."""
    values = []
    for piece in text.split(","):
        piece = piece.strip()
        try:
            if param.kind is int and ".." in piece:
                span, _, step = piece.partition(":")
                lo, _, hi = span.partition("..")
                step = int(step) if step else 1
                if step < 1:
                    raise ValueError
                values += range(int(lo), int(hi) + 1, step)
            elif param.kind is bool:
                if piece.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError
                values.append(piece.lower() in ("true", "1", "yes", "on"))
            else:
                values.append(param.kind(piece))
        except ValueError:
            form = "A..B[:STEP] or A,B,C" if param.kind is int else "A,B,C"
            raise ExploreError(f"{param.flag}: expected {form} of {param.kind.__name__} values, "
                               f"not {text!r}") from None
    if not values:
        raise ExploreError(f"{param.flag}: names no value: {text!r}")
    for value in values:
        _check_value(param, value)
    return tuple(dict.fromkeys(values))


def load_study(path: str | Path) -> tuple[Study, dict]:
    """A study from a TOML file, and the run options it gives (``jobs``, ``out``,
    ``address``). The file holds one ``[explore]`` table::

        [explore]
        block = "gemm"
        targets = ["ecp5-45f", "ecp5-85f"]
        seeds = 3                  # seeds 1..3
        objectives = ["gops", "luts"]
        search = "grid"            # or "random" / "bayes" with samples = N
        out = "build/explore/gemm"
        jobs = 2
        [explore.params]
        rows = "2..12"             # the command line's form, or a list: [2, 4, 8]
        cols = [2, 4]
    """
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ExploreError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ExploreError(f"{path}: {not_utf8(error)}") from None
    except tomllib.TOMLDecodeError as error:
        raise ExploreError(f"{path}: invalid TOML ({error})") from None
    table = document.get("explore")
    if not isinstance(table, dict):
        raise ExploreError(f"{path}: needs an [explore] table")
    known = {"block", "targets", "seeds", "objectives", "search", "samples", "sample_seed",
             "freq", "allow_lut_multipliers", "out", "jobs", "address", "params"}
    for key in table:
        if key not in known:
            raise ExploreError(f"{path}: explore.{key}: unknown key (known: "
                               f"{', '.join(sorted(known))})")
    try:
        spec = get_block(table.get("block", ""))
    except KeyError as error:
        raise ExploreError(f"{path}: explore.block: {error.args[0]}") from None
    params = table.get("params") or {}
    if not isinstance(params, dict):
        raise ExploreError(f"{path}: explore.params: must be a table ([explore.params]), not "
                           f"{params!r}")
    space = {}
    for name, values in params.items():
        param = _param(spec, name)
        if isinstance(values, str) and param.kind is not str:
            space[name] = parse_values(param, values)
        else:
            space[name] = tuple(values) if isinstance(values, list) else (values,)
    seeds = table.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ExploreError(f"{path}: explore.seeds: must be a positive integer, not {seeds!r}")
    targets = _names(path, "targets", table.get("targets", []))
    objectives = _names(path, "objectives", table.get("objectives", ["gops", "luts"]))
    for key in ("out", "address"):
        if key in table and not isinstance(table[key], str):
            raise ExploreError(f"{path}: explore.{key}: must be a string, not {table[key]!r}")
    try:
        study = Study(block=spec.name, space=space, targets=targets,
                      seeds=tuple(range(1, seeds + 1)), objectives=objectives,
                      search=table.get("search", "grid"), samples=table.get("samples"),
                      sample_seed=table.get("sample_seed", 0), freq_mhz=table.get("freq"),
                      allow_lut_multipliers=bool(table.get("allow_lut_multipliers", False)))
    except ExploreError as error:
        raise ExploreError(f"{path}: {error}") from None
    options = {k: table[k] for k in ("out", "jobs", "address") if k in table}
    return study, options


def _names(path: Path, key: str, value) -> tuple[str, ...]:
    """A study's ``targets`` or ``objectives``: a name or a list of names."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ExploreError(f"{path}: explore.{key}: must be a name or a list of names, not "
                       f"{value!r}")


# ---- planning ---------------------------------------------------------------------------------

def plan(study: Study) -> list[tuple[dict, str, int]]:
    """Every run of a grid or random study, in order: ``(params, target, seed)``."""
    names = list(study.space)
    value_lists = [study.space[n] for n in names]
    total = study.configurations()
    if study.search == "random" and study.samples < total:
        import numpy as np
        chosen = sorted(np.random.default_rng(study.sample_seed).choice(
            total, size=study.samples, replace=False).tolist())
        combos = [_nth(value_lists, i) for i in chosen]
    else:
        combos = list(itertools.product(*value_lists))
    return [(dict(zip(names, combo)), target, seed)
            for combo in combos for target in study.targets for seed in study.seeds]


def _nth(value_lists: list, index: int) -> tuple:
    """The ``index``-th combination of ``itertools.product(*value_lists)``."""
    combo = []
    for values in reversed(value_lists):
        index, digit = divmod(index, len(values))
        combo.append(values[digit])
    return tuple(reversed(combo))


# ---- one run ----------------------------------------------------------------------------------

def _blank_row(study: Study, params: dict, target: str, seed: int) -> dict:
    row = dict.fromkeys(study.columns, "")
    row.update(study.spec.defaults())
    row.update(params)
    row.update(run=study.run_key(params, target, seed), target=target, seed=seed)
    return row


def prefilter(study: Study, params: dict, target: str, seed: int) -> dict | None:
    """The row of a run that needs no tool (invalid or does not fit), else ``None``."""
    row = _blank_row(study, params, target, seed)
    try:
        config = validate_params(study.spec, params)
    except ConfigError as error:
        return {**row, "status": INVALID, "reason": str(error)}
    device, _ = get_target(target)
    try:
        check_fit(config, device, allow_lut_multipliers=study.allow_lut_multipliers)
    except FitError as error:
        return {**row, "status": NO_FIT, "reason": str(error)}
    return None


def row_from_report(row: dict, report: dict) -> dict:
    """``row`` completed with the figures of a build report (``fpga.flow.build_ooc``)."""
    clock = report["clocks"][0] if report["clocks"] else {}
    res = report["resources"]
    block = (report.get("synth") or {}).get("block", {})
    figures = report.get("figures") or {}
    return {**row, "status": OK,
            "fmax_mhz": clock.get("achieved_mhz", ""),
            "requested_mhz": clock.get("requested_mhz", ""),
            "timing_met": "yes" if report["timing_met"] else "no",
            "peak_gops": figures.get("peak_gops", ""), "macs": figures.get("macs", ""),
            "lut4": res.get("lut4", {}).get("used", ""), "ff": res.get("ff", {}).get("used", ""),
            "carry": res.get("carry", {}).get("used", ""), "lcs": res["lc"]["used"],
            "lcs_pct": res["lc"]["percent"], "dsp": res["dsp"]["used"],
            "bram": res["bram"]["used"], "block_comb": block.get("comb", ""),
            "block_ff": block.get("ff", ""), "comb_per_mac": figures.get("comb_per_mac", ""),
            "synth_s": report["steps"].get("synth", ""), "pnr_s": report["steps"].get("pnr", ""),
            "report": str(Path(report["_path"]) / "report.md")}


def run_point(study: Study, params: dict, target: str, seed: int, runs_dir: Path) -> dict:
    """Build one run and return its row; every failure is a row with its reason."""
    from .flow import build_ooc

    start = time.monotonic()
    row = prefilter(study, params, target, seed)
    if row is not None:
        return row
    row = _blank_row(study, params, target, seed)
    config = validate_params(study.spec, params)
    device, _ = get_target(target)
    try:
        report = build_ooc(config, device, Path(runs_dir) / row["run"], freq_mhz=study.freq_mhz,
                           seed=seed, allow_lut_multipliers=study.allow_lut_multipliers,
                           fit_check=False, target_name=target)
        row = row_from_report(row, report)
    except Exception as error:      # noqa: BLE001 - a failed point is a row, not a crash
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        row = {**row, "status": FAILED, "reason": reason}
        if not str(error).startswith(("does not fit", "place and route failed", "synthesis")):
            row["reason"] = f"{type(error).__name__}: {reason}"
    row["wall_s"] = round(time.monotonic() - start, 1)
    return row


# ---- the results table ------------------------------------------------------------------------

def _read_rows(path: Path, columns: list[str]) -> dict[str, dict]:
    if not path.exists():
        return {}
    with open(path, newline="") as text:
        reader = csv.DictReader(text)
        if reader.fieldnames != columns:
            raise ExploreError(f"{path}: holds results of another study (columns "
                               f"{','.join(reader.fieldnames or [])}); choose another --out")
        rows = {}
        for row in reader:
            for key in (_INTEGERS | _FLOATS) & set(row):
                if row[key] != "":
                    row[key] = int(row[key]) if key in _INTEGERS else float(row[key])
            rows[row["run"]] = row
    return rows


def objective_values(study: Study, rows: list[dict]) -> list[tuple[str, list[float]]]:
    """Per configuration and target (over its seeds): the median of each objective over the
    runs that built, for the configurations where every objective has a value. Each is named
    by its swept parameters and target (``rows=2 cols=4 @ecp5-45f``)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["status"] == OK:
            groups.setdefault(row["run"].rsplit("-seed", 1)[0], []).append(row)
    points = []
    for key, group in groups.items():
        values = []
        for objective in study.objectives:
            column = OBJECTIVES[objective].column
            got = [float(r[column]) for r in group if r[column] not in ("", None)]
            if not got:
                break
            values.append(statistics.median(got))
        else:
            first = group[0]
            label = " ".join([*(f"{k}={first[k]}" for k in study.space), f"@{first['target']}"])
            points.append((label, key, values))
    labels = [label for label, _, _ in points]
    return [(label if labels.count(label) == 1 else key, values)
            for label, key, values in points]


def front(study: Study, rows: list[dict]) -> list[tuple[str, list[float]]]:
    """The Pareto front of :func:`objective_values` (seed medians), best first by the first
    objective."""
    points = objective_values(study, rows)
    if not points:
        return []
    senses = [OBJECTIVES[o].sense for o in study.objectives]
    chosen = [points[i] for i in pareto_front([v for _, v in points], senses)]
    sign = -1 if senses[0] == "max" else 1
    return sorted(chosen, key=lambda p: sign * p[1][0])


class Results:
    """``results.csv`` / ``results.md`` of a study: rows read back for resuming, rewritten
    (atomically, as files Lutra owns) whenever a row is added."""

    def __init__(self, study: Study, out: Path, *, force: bool = False) -> None:
        self.study = study
        self.out = Path(out)
        self.force = force
        self.rows = _read_rows(self.out / "results.csv", study.columns)
        #: Runs of this session left without a row (the study was stopped).
        self.missing = 0

    def add(self, row: dict) -> None:
        """Record ``row`` (replacing a row of the same run) and rewrite both tables."""
        self.rows[row["run"]] = row
        self.write()

    def write(self) -> None:
        """Write ``results.csv`` and ``results.md`` (refused if Lutra did not write them)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.study.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows.values())
        write_file(self.out / "results.csv", buf.getvalue(), owner="explore", force=self.force)
        write_file(self.out / "results.md", self.markdown(), owner="explore", force=self.force)

    def counts(self) -> dict[str, int]:
        """Rows per status."""
        counts = dict.fromkeys((OK, NO_FIT, FAILED, INVALID), 0)
        for row in self.rows.values():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return counts

    def markdown(self) -> str:
        """The study, its counts, the Pareto front and every row, as Markdown."""
        study = self.study
        swept = list(study.space)
        shown = ["run", *swept, "target", "seed", "status", "fmax_mhz", "peak_gops", "lut4",
                 "ff", "lcs", "lcs_pct", "dsp", "bram", "comb_per_mac", "synth_s", "pnr_s",
                 "wall_s", "reason"]
        counts = self.counts()
        lines = [f"# lutra explore {study.block}", "",
                 f"- search: {study.search}" + (f" ({study.samples} samples, sample seed "
                                                f"{study.sample_seed})" if study.samples else ""),
                 "- space: " + ", ".join(f"{k} = {', '.join(map(str, v))}"
                                         for k, v in study.space.items()),
                 f"- targets: {', '.join(study.targets)}; nextpnr seeds: "
                 f"{', '.join(map(str, study.seeds))}"
                 + (f"; requested {study.freq_mhz:g} MHz" if study.freq_mhz else ""),
                 "- runs: " + ", ".join(f"{n} {status}" for status, n in counts.items()),
                 "- columns: every figure of each run's report is in results.csv; report.md "
                 "of each build is under runs/", "",
                 "## Pareto front", ""]
        best = front(study, list(self.rows.values()))
        names = [f"{o} ({OBJECTIVES[o].sense})" for o in study.objectives]
        if best:
            lines += ["Median over the seeds that built, per configuration and target; "
                      "plot: pareto.png.", "",
                      "| configuration @ target | " + " | ".join(names) + " |",
                      "|---|" + "---:|" * len(names)]
            lines += [f"| {name} | " + " | ".join(f"{v:g}" for v in values) + " |"
                      for name, values in best]
        else:
            lines.append("No run has all the objectives yet.")
        lines += ["", "## Runs", "", "| " + " | ".join(shown) + " |",
                  "|" + "---|" * len(shown)]
        for row in self.rows.values():
            lines.append("| " + " | ".join(str(row.get(c, "")).replace("|", "/")
                                           for c in shown) + " |")
        return "\n".join(lines) + "\n"

    def plot(self) -> Path | None:
        """``pareto.png`` (every configuration's seed medians, the front marked); ``None``
        with fewer than two objectives or no complete point."""
        study = self.study
        points = objective_values(study, list(self.rows.values()))
        if len(study.objectives) < 2 or not points:
            return None
        png = io.BytesIO()
        plot_front([v for _, v in points], [OBJECTIVES[o].sense for o in study.objectives],
                   [OBJECTIVES[o].label for o in study.objectives], png,
                   labels=[name for name, _ in points],
                   title=f"lutra explore {study.block}: {', '.join(study.targets)}")
        return write_file(self.out / "pareto.png", png.getvalue(), owner="explore",
                          force=self.force)


# ---- running a study on Ray -------------------------------------------------------------------

def _penalty(objective: str) -> float:
    return 0.0 if OBJECTIVES[objective].sense == "max" else 1e12


def _trial(config: dict, *, study: Study, runs_dir: str, done: dict) -> None:
    """One Ray Tune trial: a configuration on a target, for each of its seeds a run (or its
    row from an earlier session), each reported as it ends."""
    from ray import tune

    params = {**config.get("fixed", {}), **config.get("params", {})}
    target = config["target"]
    rows = []
    for seed in config["seeds"]:
        key = study.run_key(params, target, seed)
        row = done.get(key) or run_point(study, params, target, seed, Path(runs_dir))
        rows.append(row)
        # Every row so far: the last report alone carries them all (see _run_trials).
        metrics = {"rows": json.dumps(rows)}
        for objective in study.objectives:   # for the searcher: the median so far
            column = OBJECTIVES[objective].column
            got = [float(r[column]) for r in rows if r["status"] == OK and r[column] != ""]
            metrics[f"obj_{objective}"] = statistics.median(got) if got else _penalty(objective)
        tune.report(metrics)


def _quiet_ray() -> None:
    # Ray Tune's own console tables and its auto-loggers (TensorBoard, CSV per trial) are
    # replaced by Lutra's table and progress line.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")    # the C++ core's retry warnings
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1e9")
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _start_ray(jobs: int, address: str | None) -> None:
    import ray

    _quiet_ray()
    if address:
        # Every node runs the builds itself: Lutra installed from the same requirements.lock.
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                     runtime_env={"env_vars": {"AMARANTH_USE_YOSYS": "builtin"}})
        except (ConnectionError, RuntimeError, ValueError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ExploreError(f"--address {address}: cannot join the Ray cluster ({first})"
                               ) from None
    else:
        # "local": a Ray of its own even when a `ray start` cluster runs on this machine.
        ray.init(address="local", num_cpus=jobs, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, configure_logging=True)


def run_study(study: Study, out: str | Path, *, jobs: int | None = 1,
              address: str | None = None, force: bool = False, progress=None,
              retry_failed: bool = False) -> Results:
    """Run the runs of ``study`` whose rows ``out/results.csv`` does not hold yet.

    ``jobs`` caps the runs at once (a local Ray gets that many CPUs); ``address`` joins an
    existing Ray cluster, where ``jobs=None`` lets Ray use every CPU of it. ``progress``, if
    given, is called with the number of runs to do and returns a
    :class:`gen.progress.Progress`, told each run's result, the runs running and failed and the
    best so far. ``retry_failed`` runs the failed runs again. Returns the :class:`Results`.
    Raises ``ExploreError``, or ``OutputError`` for an output directory Lutra must not write.
    """
    if jobs is None and not address:
        raise ExploreError("--jobs: a local Ray needs a number of jobs")
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise ExploreError(f"--jobs: must be a positive integer, not {jobs!r}")
    out = Path(out).resolve()
    with OutputDir(out, owner="explore", force=force, prune=False) as directory:
        runs_dir = directory.claim("runs")
        results = Results(study, out, force=force)
        if retry_failed:
            for key in [k for k, r in results.rows.items() if r["status"] == FAILED]:
                del results.rows[key]
        results.write()                 # refuses a results file Lutra did not write
        tracker = _Tracker(study, results, progress)
        if study.search == "bayes":
            tracker.start(study.samples * len(study.seeds))
            _run_bayes(study, results, tracker, directory, runs_dir, jobs, address)
        else:
            pending = []
            for params, target, seed in plan(study):
                if study.run_key(params, target, seed) in results.rows:
                    continue
                pending.append((params, target, seed))
            tracker.start(len(pending))
            trials = []
            for params, target, seed in pending:
                row = prefilter(study, params, target, seed)
                if row is not None:
                    tracker.finished(row)
                else:
                    trials.append({"params": params, "target": target, "seeds": [seed]})
            if trials:
                _run_trials(study, trials, None, results, tracker, directory, runs_dir, jobs,
                            address)
            # Runs without a row: the study was stopped (Ctrl-C) before they ran.
            results.missing = sum(study.run_key(*run) not in results.rows for run in pending)
        results.plot()
        tracker.close("stopped" if results.missing else "done")
    return results


def _run_bayes(study, results, tracker, directory, runs_dir, jobs, address) -> None:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    swept = {k: v for k, v in study.space.items() if len(v) > 1}
    space = {"params": {k: tune.choice(list(v)) for k, v in swept.items()},
             "fixed": {k: v[0] for k, v in study.space.items() if len(v) == 1},
             "target": tune.choice(list(study.targets)) if len(study.targets) > 1
             else study.targets[0],
             "seeds": list(study.seeds)}
    searcher = OptunaSearch(
        metric=[f"obj_{o}" for o in study.objectives],
        mode=[OBJECTIVES[o].sense for o in study.objectives],
        sampler=optuna.samplers.TPESampler(seed=study.sample_seed))
    _run_trials(study, space, searcher, results, tracker, directory, runs_dir, jobs, address)


def _run_trials(study, trials, searcher, results, tracker, directory, runs_dir, jobs,
                address) -> None:
    import ray
    from ray import tune

    _start_ray(jobs, address)
    try:
        storage = directory.claim("ray")
        shutil.rmtree(storage / "latest", ignore_errors=True)
        if searcher is None:
            param_space, samples = {"run": tune.grid_search(trials)}, 1
        else:
            param_space, samples = {"run": trials}, study.samples
        trainable = tune.with_parameters(_unwrap, study=study, runs_dir=str(runs_dir),
                                         done=dict(results.rows))
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=param_space,
            tune_config=tune.TuneConfig(num_samples=samples, max_concurrent_trials=jobs,
                                        search_alg=searcher, reuse_actors=False),
            run_config=tune.RunConfig(storage_path=str(storage), name="latest", verbose=0,
                                      callbacks=[_make_callback(tracker)],
                                      failure_config=tune.FailureConfig(max_failures=0)))
        grid = tuner.fit()
        # Through Ray Client (ray://) the Tuner runs on the cluster, where the callback has no
        # tracker: the rows arrive here, with the trials' last reports, when the study ends.
        for result in grid:
            for row in json.loads((result.metrics or {}).get("rows", "[]")):
                tracker.collect(row)
    finally:
        ray.shutdown()


def _unwrap(config: dict, **kwargs) -> None:
    _trial(config["run"], **kwargs)


class _Tracker:
    """Counts for the progress display, and the rows as they arrive."""

    def __init__(self, study: Study, results: Results, progress) -> None:
        self.study, self.results, self.progress = study, results, progress
        self.running = self.failed = 0

    def start(self, total: int) -> None:
        if self.progress is not None:
            self.progress = self.progress(total)

    def trial_started(self) -> None:
        self.running += 1
        self._status()

    def trial_ended(self) -> None:
        self.running = max(self.running - 1, 0)
        self._status()

    def finished(self, row: dict) -> None:
        recorded = self.results.rows.get(row["run"]) == row   # bayes: replayed, not run
        if not recorded:
            self.results.add(row)
            self.failed += row["status"] != OK
        if self.progress is not None:
            self.progress.advance(1, f"{row['run']}: {row['status']}"
                                  + (" (recorded earlier)" if recorded else "")
                                  + (f" ({row['reason'][:60]})" if row["reason"] else ""))
            self._status()

    def collect(self, row: dict) -> None:
        """A row from the end of the study: counted only if no callback recorded it."""
        if row["run"] not in self.results.rows:
            self.finished(row)

    def best(self) -> str:
        objective = self.study.objectives[0]
        column, sense = OBJECTIVES[objective].column, OBJECTIVES[objective].sense
        rows = [r for r in self.results.rows.values() if r["status"] == OK and r[column] != ""]
        if not rows:
            return ""
        pick = (max if sense == "max" else min)(rows, key=lambda r: float(r[column]))
        return f"best {objective} {pick[column]} ({pick['run']})"

    def _status(self) -> None:
        if self.progress is not None:
            parts = [f"{self.running} running", f"{self.failed} failed", self.best()]
            self.progress.status(", ".join(p for p in parts if p))

    def close(self, message: str) -> None:
        if self.progress is not None:
            self.progress.close(message)


def _callback_class():
    from ray import tune

    class Callback(tune.Callback):
        def __init__(self, tracker: _Tracker) -> None:
            self.tracker = tracker

        # Ray Tune pickles its run configuration (to restore an experiment); the tracker
        # (open files, a progress display) stays with this process.
        def __getstate__(self):
            return {}

        def __setstate__(self, state):
            self.tracker = None

        def on_trial_start(self, iteration, trials, trial, **info):
            if self.tracker is not None:
                self.tracker.trial_started()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if self.tracker is not None and "rows" in result:
                self.tracker.finished(json.loads(result["rows"])[-1])

        def on_trial_complete(self, iteration, trials, trial, **info):
            if self.tracker is not None:
                self.tracker.trial_ended()

        def on_trial_error(self, iteration, trials, trial, **info):
            # run_point turns every build failure into a row; this is Ray losing the trial
            # (a worker killed, out of memory): each of its runs without a row gets one.
            if self.tracker is None:
                return
            self.tracker.trial_ended()
            run = trial.config["run"]
            params = {**run.get("fixed", {}), **run.get("params", {})}
            for seed in run["seeds"]:
                key = self.tracker.study.run_key(params, run["target"], seed)
                if key not in self.tracker.results.rows:
                    row = _blank_row(self.tracker.study, params, run["target"], seed)
                    self.tracker.finished({**row, "status": FAILED,
                                           "reason": f"Ray trial error: {_trial_error(trial)}"})

    return Callback


def _trial_error(trial) -> str:
    try:
        text = Path(trial.error_file).read_text().strip().splitlines()
        return text[-1] if text else "unknown"
    except (OSError, TypeError, AttributeError):
        return "unknown (see the Ray logs)"


def _make_callback(tracker: _Tracker):
    return _callback_class()(tracker)

