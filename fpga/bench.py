"""FPGA figures of a block: the default configuration on a reference part, and the largest
configuration that fits and routes on each target, with its peak throughput.

``python -m fpga.bench gemm [--out build/fpga-bench] [--targets ...]`` builds them all
out-of-context and prints the ``lutra report`` table of what it built. The search for "largest"
is generic: grow the block's ``rows``/``cols`` (square, then one column wider) while the fit
check passes, then step down until nextpnr places and routes the design.

``python -m fpga.bench gemm --arrays 4x4,8x8,12x12 --seeds 1,2,3 [--set a_width=16 ...]``
instead builds each array size (and each ``--set`` variant) once per seed on ``--reference``
and prints one row per configuration: MACs, DSPs, the block's LUT4 and FF, its logic cells
(what nextpnr places for the block alone: the whole design's minus the wrapper's) per MAC,
Fmax min / median / max over the seeds, and the peak GOPS at the median (2 operations per MAC
per clock).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from gen.blocks import get_block
from gen.config import BlockConfig, ConfigError, validate_params
from gen.outputs import OutputDir, OutputError

from . import report as rpt
from .fit import FitError, check_fit
from .flow import BuildError, build_ooc
from .targets import DEVICES, TargetError, get_target
from .tools import ToolError

__all__ = ["largest_candidates", "main"]

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
                        help="target for the default configuration (default ecp5-85f)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--arrays", type=_arrays, metavar="RxC,...",
                        help="build these array sizes on --reference instead (e.g. 4x4,8x8)")
    parser.add_argument("--seeds", type=_ints, default=None, metavar="S,...",
                        help="nextpnr seeds for --arrays (default: --seed)")
    parser.add_argument("--set", action="append", default=[], metavar="PARAM=V,...",
                        help="with --arrays: a parameter and the values to build each array "
                             "with (repeatable; e.g. requantize=true,false a_width=8,16)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty directory Lutra has not written before")
    args = parser.parse_args(argv)
    args.force = args.force or args.out is None     # the default directory is Lutra's own
    args.out = args.out or DEFAULT_OUT
    try:
        with OutputDir(args.out, owner="fpga-bench", force=args.force, prune=False) as out:
            if args.arrays:
                print(array_table(_sweep(args, out, parser.prog)))
                return 0
            _run(args, out)
    except (KeyError, ConfigError, OutputError, TargetError, FitError, ToolError,
            BuildError) as error:
        print(f"{parser.prog}: error: {error.args[0] if error.args else error}",
              file=sys.stderr)
        return 2
    print(rpt.table(rpt.gather(args.out)))
    return 0


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, not {text!r}")


def _arrays(text: str) -> list[tuple[int, int]]:
    try:
        return [tuple(int(n) for n in a.split("x", 1)) for a in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RxC sizes separated by commas (4x4,8x8), "
                                         f"not {text!r}")


def _variants(settings: list[str]) -> list[dict]:
    """Every combination of the ``--set PARAM=V,...`` values (strings, as on the CLI)."""
    variants = [{}]
    for setting in settings:
        name, _, values = setting.partition("=")
        if not name or not values:
            raise ConfigError(f"--set expects PARAM=V1,V2, not {setting!r}")
        variants = [{**v, name: value} for v in variants for value in values.split(",")]
    return variants


def _sweep(args, out: OutputDir, prog: str) -> list[dict]:
    """Build each array and variant once per seed on ``args.reference``; one row each."""
    spec = get_block(args.block)
    device, _ = get_target(args.reference)
    seeds = args.seeds or [args.seed]
    rows = []
    for variant in _variants(args.set):
        for r, c in args.arrays:
            config = validate_params(spec, {**_typed(spec, variant), "rows": r, "cols": c})
            reports = []
            for seed in seeds:
                where = out.claim(args.reference) / config.key() / f"seed{seed}"
                report = build_ooc(config, device, where, seed=seed, target_name=args.reference,
                                   force=args.force)
                print(f"{config.key()} seed {seed}: {report['timing_summary']}", flush=True)
                reports.append(report)
            rows.append(array_row(config, reports, seeds))
    return rows


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
    return {"config": " ".join(f"{k}={v}" for k, v in config.params.items()
                               if v != config.block.param(k).default or k in ("rows", "cols")),
            "macs": macs, "dsp": first["resources"]["dsp"]["used"], "lut4": block["lut4"],
            "ff": block["ff"], "cells": cells,
            "cells_per_mac": round(cells / macs, 1) if macs else "",
            "ff_per_mac": round(block["ff"] / macs, 1) if macs else "",
            "fmax": fmax, "seeds": seeds, "fmax_median": median,
            "peak_gops": round(2 * macs * median / 1000, 2)}


def array_table(rows: list[dict]) -> str:
    """Markdown table of :func:`array_row` results."""
    head = ("| configuration | MACs | DSP | LUT4 | FF | logic cells (per MAC) | FF/MAC | "
            "Fmax MHz median (min-max) | seeds | peak GOPS |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['macs']} | {r['dsp']} | {r['lut4']:,} | {r['ff']:,} | "
            f"{r['cells']:,} ({r['cells_per_mac']}) | {r['ff_per_mac']} | "
            f"{r['fmax_median']:.1f} ({min(r['fmax']):.1f}-{max(r['fmax']):.1f}) | "
            f"{','.join(map(str, r['seeds']))} | {r['peak_gops']} |")
    return "\n".join(lines) + "\n"


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
