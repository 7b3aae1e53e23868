"""FPGA figures of a block: the default configuration on a reference part, and the largest
configuration that fits and routes on each target, with its peak throughput.

``python -m fpga.bench gemm [--out build/fpga-bench] [--targets ...]`` builds them all
out-of-context and prints the ``lutra report`` table of what it built. The search for "largest"
is generic: grow the block's ``rows``/``cols`` (square, then one column wider) while the fit
check passes, then step down until nextpnr places and routes the design.

``python -m fpga.bench gemm --arrays 4x4,8x8,12x12 --seeds 1,2,3 [--set a_width=16 ...]
[--reference ecp5-85f,ice40-up5k]`` instead builds each array size (and each ``--set`` variant)
once per seed on each ``--reference`` target (an array the target cannot hold is skipped, with
the fit check's reason) and prints one row per configuration: MACs, DSPs, the block's LUT4 and
FF, its logic cells (what nextpnr places for the block alone: the whole design's minus the
wrapper's) per MAC, Fmax min / median / max over the seeds, and the peak GOPS at the median
(2 operations per MAC per clock). It writes the table (``<block>-scaling.md``) and a plot of Fmax
(median, min-max bars) and peak GOPS against MACs, one line per target and variant
(``<block>-scaling.png``), into ``--out``. With ``--reuse`` a seed already built there by this
bench (same configuration, target and seed) is read from its report instead of built again,
so one target's sweep can be built at a time and the table and plot drawn over all of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from gen.blocks import get_block
from gen.cli_common import int_list, seed_number, size_list
from gen.config import BlockConfig, ConfigError, validate_params
from gen.outputs import OutputDir, OutputError

from . import report as rpt
from .fit import FitError, check_fit
from .flow import BuildError, build_ooc
from .pareto import finish_png
from .targets import DEVICES, TargetError, get_target
from .tools import ToolError

__all__ = ["largest_candidates", "array_row", "array_table", "scaling_series", "plot_arrays",
           "main"]

DEFAULT_OUT = Path("build/fpga-bench")


def largest_candidates(block: str, target: str, base: dict | None = None) -> list[tuple[
        BlockConfig, bool]]:
    """Configurations to try for "largest that fits", biggest first, with whether LUT
    multipliers are needed (targets without DSPs)."""
    spec = get_block(block)
    device, _ = get_target(target)
    lut_mults = device.dsps == 0
    found = []
    hi = int(spec.param("rows").hi)
    for n in range(hi, 0, -1):
        for rows, cols in ((n, n + 1), (n, n)):
            try:
                config = validate_params(spec, {**(base or {}), "rows": rows, "cols": cols})
                check_fit(config, device, allow_lut_multipliers=lut_mults)
            except (ConfigError, FitError):
                continue
            found.append((config, lut_mults))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lutra bench fpga", description=__doc__)
    parser.add_argument("block", nargs="?", default="gemm")
    parser.add_argument("--out", type=Path, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--targets", nargs="*", default=list(DEVICES))
    parser.add_argument("--reference", default="ecp5-85f",
                        help="target for the default configuration (default ecp5-85f); with "
                             "--arrays, targets separated by commas (ecp5-85f,ice40-up5k)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--seed", type=seed_number, default=1)
    parser.add_argument("--arrays", type=size_list, metavar="RxC,...",
                        help="build these array sizes on --reference instead (e.g. 4x4,8x8)")
    parser.add_argument("--seeds", type=int_list, default=None, metavar="S,...",
                        help="nextpnr seeds for --arrays (default: --seed)")
    parser.add_argument("--set", action="append", default=[], metavar="PARAM=V,...",
                        help="with --arrays: a parameter and the values to build each array "
                             "with (repeatable; e.g. requantize=true,false a_width=8,16)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --arrays: take a configuration's report from an earlier "
                             "build of this bench in --out (same configuration, target and "
                             "seed) instead of building it again")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty directory Lutra has not written before")
    args = parser.parse_args(argv)
    args.force = args.force or args.out is None     # the default directory is Lutra's own
    args.out = args.out or DEFAULT_OUT
    name = f"{args.block}-scaling"
    try:
        out = OutputDir(args.out, owner="fpga-bench", force=args.force, prune=False)
        out.check([f"{name}.md", f"{name}.png"] if args.arrays else [])   # before the builds
        with out:
            if args.arrays:
                rows = _sweep(args, out)
                table = array_table(rows)
                (out.stage / f"{name}.md").write_text(table)
                plot_arrays(rows, out.stage / f"{name}.png",
                            title=f"{args.block}: Fmax and peak GOPS against MACs "
                                  f"(seeds {','.join(map(str, rows[0]['seeds']))})")
                print(table)
                print(f"table: {args.out / (name + '.md')}\nplot: {args.out / (name + '.png')}")
                return 0
            _run(args, out)
    except (KeyError, ConfigError, OutputError, TargetError, FitError, ToolError,
            BuildError) as error:
        print(f"{parser.prog}: error: {error.args[0] if error.args else error}",
              file=sys.stderr)
        return 2
    print(rpt.table(rpt.gather(args.out)))
    return 0


def _variants(settings: list[str]) -> list[dict]:
    """Every combination of the ``--set PARAM=V,...`` values (strings, as on the CLI)."""
    variants = [{}]
    for setting in settings:
        name, _, values = setting.partition("=")
        if not name or not values:
            raise ConfigError(f"--set expects PARAM=V1,V2, not {setting!r}")
        variants = [{**v, name: value} for v in variants for value in values.split(",")]
    return variants


def _sweep(args, out: OutputDir) -> list[dict]:
    """Build each array and variant once per seed on each of ``args.reference``'s targets;
    one row each. Arrays a target cannot hold are skipped with the fit check's reason."""
    spec = get_block(args.block)
    targets = [t for t in args.reference.split(",") if t]
    devices = [get_target(t)[0] for t in targets]     # every name checked before any build
    seeds = args.seeds or [args.seed]
    variants = _variants(args.set)
    rows = []
    for target, device in zip(targets, devices):
        for variant in variants:
            for r, c in args.arrays:
                config = validate_params(spec, {**_typed(spec, variant), "rows": r, "cols": c})
                try:
                    check_fit(config, device, label=config.key())
                except FitError as error:
                    print(f"{config.key()} on {target}: skipped: {error.args[0]}", flush=True)
                    continue
                reports = []
                for seed in seeds:
                    where = out.claim(target) / config.key() / f"seed{seed}"
                    report = _earlier(where, config, target, seed) if args.reuse else None
                    note = f" (earlier build of {report.get('source')})" if report else ""
                    if report is None:
                        report = build_ooc(config, device, where, seed=seed,
                                           target_name=target, force=args.force)
                    print(f"{config.key()} on {target} seed {seed}: "
                          f"{report['timing_summary']}{note}", flush=True)
                    reports.append(report)
                rows.append(array_row(config, reports, seeds))
    if not rows:
        raise FitError(f"none of the arrays fits {', '.join(targets)}")
    return rows


def _earlier(where: Path, config: BlockConfig, target: str, seed: int) -> dict | None:
    """The report an earlier build left in ``where``, if it is of this configuration, target
    and seed."""
    try:
        report = json.loads((where / rpt.REPORT_NAME).read_text())
    except (OSError, ValueError):
        return None
    same = (report.get("config") == dict(config.params) and report.get("target") == target
            and report.get("seed") == seed)
    return report if same else None


def _typed(spec, variant: dict) -> dict:
    """``--set`` values converted as the block's own command line converts them."""
    typed = {}
    for name, value in variant.items():
        try:
            kind = spec.param(name).kind
        except KeyError:
            raise ConfigError(f"--set: {spec.name} has no parameter {name!r}") from None
        typed[name] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return typed


def array_row(config: BlockConfig, reports: list[dict], seeds: list[int]) -> dict:
    """One configuration's figures over its seeds (``reports`` in the order of ``seeds``)."""
    first = reports[0]
    block = first["synth"]["block"]
    wrapper = first["synth"]["wrapper"]
    macs = first["figures"].get("macs", 0)
    cells = first["resources"]["lc"]["used"] - wrapper["comb"]
    fmax = [r["clocks"][0]["achieved_mhz"] for r in reports]
    median = statistics.median(fmax)
    # The array size and every parameter off its default; the variant is the latter alone.
    shown = [(k, v) for k, v in config.params.items()
             if k in ("rows", "cols") or v != config.block.param(k).default]
    return {"config": " ".join(f"{k}={v}" for k, v in shown),
            "variant": " ".join(f"{k}={v}" for k, v in shown if k not in ("rows", "cols")),
            "target": first.get("target", ""), "macs": macs,
            "dsp": first["resources"]["dsp"]["used"], "lut4": block["lut4"],
            "ff": block["ff"], "cells": cells,
            "cells_per_mac": round(cells / macs, 1) if macs else "",
            "ff_per_mac": round(block["ff"] / macs, 1) if macs else "",
            "fmax": fmax, "seeds": seeds, "fmax_median": median,
            "peak_gops": round(2 * macs * median / 1000, 2)}


def array_table(rows: list[dict]) -> str:
    """Markdown table of :func:`array_row` results."""
    head = ("| configuration | MACs | DSP | LUT4 | FF | logic cells (per MAC) | FF/MAC | "
            "Fmax MHz median (min-max) | seeds | peak GOPS | target |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['macs']} | {r['dsp']} | {r['lut4']:,} | {r['ff']:,} | "
            f"{r['cells']:,} ({r['cells_per_mac']}) | {r['ff_per_mac']} | "
            f"{r['fmax_median']:.1f} ({min(r['fmax']):.1f}-{max(r['fmax']):.1f}) | "
            f"{','.join(map(str, r['seeds']))} | {r['peak_gops']} | {r.get('target', '')} |")
    return "\n".join(lines) + "\n"


def scaling_series(rows: list[dict]) -> dict[str, dict[str, list]]:
    """:func:`array_row` results as the plot's lines, one per target and ``--set`` variant,
    in MACs order: ``macs``, Fmax ``median`` with its distance to the slowest and the fastest
    seed (``fmax_low``, ``fmax_high``), and peak ``gops`` at the median with the same spread
    (``gops_low``, ``gops_high``: 2 operations per MAC per clock)."""
    series: dict[str, dict[str, list]] = {}
    for row in sorted(rows, key=lambda r: r["macs"]):
        label = " ".join(filter(None, [row.get("target", ""), row.get("variant", "")]))
        line = series.setdefault(label or "design", {k: [] for k in (
            "macs", "median", "fmax_low", "fmax_high", "gops", "gops_low", "gops_high")})
        low, high = row["fmax_median"] - min(row["fmax"]), max(row["fmax"]) - row["fmax_median"]
        per_mhz = 2 * row["macs"] / 1000
        for key, value in (("macs", row["macs"]), ("median", row["fmax_median"]),
                           ("fmax_low", low), ("fmax_high", high), ("gops", row["peak_gops"]),
                           ("gops_low", per_mhz * low), ("gops_high", per_mhz * high)):
            line[key].append(value)
    return series


def plot_arrays(rows: list[dict], path, *, title: str = "") -> dict[str, dict[str, list]]:
    """PNG at ``path`` (a file name or a binary file) of :func:`array_row` results: Fmax
    (median, bars from the slowest to the fastest seed) and peak GOPS against MACs, one line
    per target and ``--set`` variant (:func:`scaling_series`, which it returns)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    series = scaling_series(rows)
    figure = Figure(figsize=(11, 4.4))
    FigureCanvasAgg(figure)
    fmax_ax, gops_ax = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for n, (label, line) in enumerate(series.items()):
        fmax_ax.errorbar(line["macs"], line["median"],
                         yerr=[line["fmax_low"], line["fmax_high"]], fmt="o-", capsize=4,
                         color=f"C{n}", label=label)
        gops_ax.errorbar(line["macs"], line["gops"], yerr=[line["gops_low"], line["gops_high"]],
                         fmt="s-", capsize=4, color=f"C{n}", label=label)
    fmax_ax.set_ylabel("Fmax (MHz): median, min-max over seeds")
    gops_ax.set_ylabel("peak GOPS (2 x MACs x median Fmax)")
    for ax in (fmax_ax, gops_ax):
        ax.set_xlabel("MACs (rows x cols)")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
    finish_png(figure, (fmax_ax, gops_ax), path, title)
    return series


def _run(args, out: OutputDir) -> None:
    spec = get_block(args.block)
    if not args.skip_reference:
        config = validate_params(spec, {})
        device, _ = get_target(args.reference)
        report = build_ooc(config, device, out.claim(args.reference) / config.key(),
                           seed=args.seed, target_name=args.reference, force=args.force)
        print(f"{config.key()} on {args.reference}: {report['timing_summary']}", flush=True)
    for target in args.targets:
        device, _ = get_target(target)
        for config, lut_mults in largest_candidates(args.block, target):
            where = out.claim(target) / f"largest-{config.key()}"
            try:
                report = build_ooc(config, device, where, seed=args.seed, target_name=target,
                                   allow_lut_multipliers=lut_mults, force=args.force)
            except BuildError as error:
                print(f"{config.key()} on {target}: {error}; trying smaller", flush=True)
                continue
            print(f"largest on {target}: {config.key()}: {report['timing_summary']}, "
                  f"{report['figures'].get('peak_gops')} GOPS peak", flush=True)
            break


if __name__ == "__main__":
    sys.exit(main())
