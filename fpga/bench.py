"""FPGA figures of a block: the default configuration on a reference part, and the largest
configuration that fits and routes on each target, with its peak throughput.

``python -m fpga.bench gemm [--out build/fpga-bench] [--targets ...]`` builds them all
out-of-context and prints the ``lutra report`` table of what it built. The search for "largest"
is generic: grow the block's ``rows``/``cols`` (square, then one column wider) while the fit
check passes, then step down until nextpnr places and routes the design.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty directory Lutra has not written before")
    args = parser.parse_args(argv)
    args.force = args.force or args.out is None     # the default directory is Lutra's own
    args.out = args.out or DEFAULT_OUT
    try:
        with OutputDir(args.out, owner="fpga-bench", force=args.force, prune=False) as out:
            _run(args, out)
    except (KeyError, ConfigError, OutputError, TargetError, FitError, ToolError,
            BuildError) as error:
        print(f"{parser.prog}: error: {error.args[0] if error.args else error}",
              file=sys.stderr)
        return 2
    print(rpt.table(rpt.gather(args.out)))
    return 0


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
