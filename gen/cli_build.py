"""``lutra build`` and ``lutra report``: FPGA builds of a block and the table of their reports.

Its ``COMMANDS`` table is joined into :data:`gen.cli.COMMANDS`. Bad input, an
unknown target, a configuration that cannot fit, a missing tool or a design nextpnr cannot place
are one-line errors with exit status 2; a missed timing target is a result (exit status 0) that
the report states.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fpga.flow import ROUTERS

from .cli_common import UsageError, add_force, configs_from_args, mhz, seed_number
from .outputs import OutputDir
from .progress import Progress

__all__ = ["add_build_parser", "add_report_parser", "run_build", "run_report"]


def add_build_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "build", help="synthesise, place and route a block (out-of-context or board self-test)",
        usage="lutra build [BLOCK] [--config FILE] [--PARAM VALUE ...] --target TARGET "
              "[--bitstream] [--out DIR]")
    p.add_argument("block", nargs="?", help="block name (see 'lutra list')")
    p.add_argument("--config", type=Path, help="TOML file with one [block] table per block")
    p.add_argument("--target", help="device or board (see --list-targets)")
    p.add_argument("--list-targets", action="store_true",
                   help="list devices and boards with their resources, then exit")
    p.add_argument("--speed", type=int, help="ECP5 speed grade (6, 7 or 8; default 6)")
    p.add_argument("--freq", type=mhz,
                   help="requested clock in MHz (default 50 iCE40, 150 ECP5; board self-test: "
                        "the board's clock)")
    p.add_argument("--seed", type=seed_number, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--router", choices=ROUTERS, default=ROUTERS[0],
                   help="nextpnr's router (default router1; router2 is often faster on large "
                        "designs)")
    p.add_argument("--bitstream", action="store_true",
                   help="build the self-test top for a board down to a bitstream")
    p.add_argument("--allow-lut-multipliers", action="store_true",
                   help="build every multiplier from LUTs instead of refusing a DSP shortfall")
    p.add_argument("--out", type=Path, help="output directory (default build/<target>/<config>)")
    add_force(p)
    p.set_defaults(takes_params=True)
    return p


def run_build(args) -> int:
    from fpga.fit import FitError
    from fpga.flow import BuildError, build_ooc
    from fpga.selftest import build_selftest
    from fpga.targets import TargetError, get_target, list_targets
    from fpga.tools import ToolError

    if args.list_targets:
        print(list_targets())
        return 0
    if args.target is None:
        raise UsageError("--target is required (see 'lutra build --list-targets')")
    configs = configs_from_args(args, "lutra build")
    if len(configs) != 1:
        raise UsageError(f"build one block at a time; {args.config} has {len(configs)} "
                         f"(name one, e.g. 'lutra build gemm --config FILE')")
    config = configs[0]
    force = args.force or args.out is None      # the default directory is Lutra's own
    try:
        device, board = get_target(args.target, speed=args.speed)
        if args.bitstream:
            if board is None:
                raise UsageError(f"--bitstream needs a board target (icebreaker, ulx3s, "
                                 f"orangecrab), not the bare device {args.target!r}")
            if config.block.selftest is None:
                raise UsageError(f"block {config.name!r} has no self-test vectors yet")
            out = args.out or Path("build") / args.target / f"{config.key()}-selftest"
            OutputDir(out, owner="build", force=force).check()     # refused before any work
            with Progress(f"lutra build {config.name}") as progress, progress.ticking():
                progress.step("self-test bitstream (yosys, nextpnr, packer)")
                report = build_selftest(config, board, out, seed=args.seed, freq_mhz=args.freq,
                                        force=force)
        else:
            out = args.out or Path("build") / args.target / config.key()
            OutputDir(out, owner="build", force=force).check()
            with Progress(f"lutra build {config.name}") as progress:
                report = build_ooc(config, device, out, freq_mhz=args.freq, seed=args.seed,
                                   allow_lut_multipliers=args.allow_lut_multipliers,
                                   target_name=args.target, router=args.router, force=force,
                                   progress=progress)
    except (TargetError, FitError, ToolError, BuildError) as error:
        raise UsageError(str(error)) from None
    print(summary(report))
    return 0


def summary(report: dict) -> str:
    """A few lines for the terminal; the full report is in ``report.md`` / ``report.json``."""
    head = (f"{report['block']} on {report['target']} ({report['device']}, {report['kind']}): "
            f"{report['timing_summary']}")
    lines = [head]
    res = report["resources"]
    lines.append("  " + ", ".join(f"{k} {r['used']:,}/{r['available']:,} ({r['percent']}%)"
                                  for k, r in res.items()))
    if report.get("synth"):
        block, wrapper = report["synth"]["block"], report["synth"]["wrapper"]
        lines.append(f"  block alone: {block['comb']:,} comb cells, {block['ff']:,} FF, "
                     f"{block['dsp']} DSP; wrapper: {wrapper['comb']:,} comb, "
                     f"{wrapper['ff']:,} FF")
    figures = report.get("figures") or {}
    if "macs" in figures:
        lines.append(f"  {figures['macs']} MACs: {figures['comb_per_mac']} comb cells/MAC, "
                     f"peak {figures['peak_gops']} GOPS (2 x MACs x Fmax)")
    path = report.get("critical_path")
    if path and not report["timing_met"]:
        lines.append(f"  critical path: {path['start']} -> {path['end']} ({path['delay_ns']} ns: "
                     f"{path['logic_ns']} logic, {path['routing_ns']} routing, "
                     f"{path['levels']} levels)")
    if report["kind"] == "selftest":
        lines.append(f"  bitstream: {Path(report['_path']) / report['selftest']['bitstream']}")
    lines.append(f"  report: {Path(report['_path']) / 'report.md'}")
    return "\n".join(lines)


def add_report_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="gather every build report under a directory into a table",
                       usage="lutra report DIR [--csv] [--out FILE]")
    p.add_argument("directory", type=Path, help="directory searched for report.json files")
    p.add_argument("--csv", action="store_true", help="CSV instead of Markdown")
    p.add_argument("--out", type=Path, help="write the table to FILE (atomically) too")
    p.add_argument("--force", action="store_true",
                   help="replace FILE even if Lutra did not write it")
    return p


def run_report(args) -> int:
    from fpga.report import gather, table

    from .outputs import write_file

    if not args.directory.is_dir():
        raise UsageError(f"{args.directory}: not a directory")
    reports = gather(args.directory)
    if not reports:
        raise UsageError(f"{args.directory}: no build reports (report.json) found")
    text = table(reports, fmt="csv" if args.csv else "markdown")
    if args.out is not None:
        write_file(args.out, text, owner="report", force=args.force)
    sys.stdout.write(text)
    return 0


#: This group's subcommands, joined into ``gen.cli.COMMANDS``.
COMMANDS = {"build": (add_build_parser, run_build),
            "report": (add_report_parser, run_report)}
