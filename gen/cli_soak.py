"""``lutra soak``: a long random-stall run of one block's generated Verilog (``sim.soak``).

Its ``COMMANDS`` table is joined into :data:`gen.cli.COMMANDS`. The block's Verilog
is simulated under Verilator (default) or Icarus with the cocotb test of :mod:`sim.soak`; the
command prints beats in and out, mismatches, lost and repeated beats, the wall time and the
simulated input beats per second. Exit status 0 when every output beat matched, 1 otherwise,
2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .cli_common import UsageError, add_force, configs_from_args, seed_number
from .config import BlockConfig
from .outputs import OutputDir
from .progress import Progress

__all__ = ["SOAK_BLOCKS", "SoakResult", "add_soak_parser", "run_soak", "soak_block"]

DEFAULT_SOAK_DIR = Path("build/soak")
DEFAULT_BEATS = 100_000

#: Blocks with a soak workload (``sim.soak.WORKLOADS``) and, for the others, why not.
SOAK_BLOCKS = ("gemm", "softmax", "gelu", "layernorm", "add", "winograd", "winograd_fm",
               "attention", "attention_unit", "encoder")
NOT_SOAKED: dict[str, str] = {}


@dataclass
class SoakResult:
    """What one soak run counted (``report`` is :mod:`sim.soak`'s JSON) and how long it took."""

    report: dict
    wall_seconds: float
    build_dir: Path

    @property
    def clean(self) -> bool:
        r = self.report
        return r["mismatches"] == 0 and r["lost"] == 0 and r["repeated"] == 0 \
            and not r.get("errors")

    def lines(self) -> list[str]:
        r = self.report
        rate = r["beats_in"] / r["sim_seconds"] if r["sim_seconds"] else 0.0
        out = [f"{r['block']}: beats in {r['beats_in']}, beats out {r['beats_out']} "
               f"(expected {r['expected_out']}), {r['cycles']} cycles",
               *([r["detail"]] if r.get("detail") else []),
               f"mismatches {r['mismatches']}, lost {r['lost']}, repeated {r['repeated']}"
               + (f", other errors {r['errors']}" if r.get("errors") else ""),
               f"wall time {self.wall_seconds:.1f} s (simulation {r['sim_seconds']:.1f} s), "
               f"{rate:.0f} simulated beats/s"]
        if r.get("first_error"):
            out.append(f"first error: {r['first_error']}")
        out.append("PASS" if self.clean else "FAIL")
        return out


def soak_block(config: BlockConfig, simulator: str, *, beats: int, seed: int = 1,
               build_root: Path = DEFAULT_SOAK_DIR,
               tb_module: str = "sim.soak") -> SoakResult:
    """Run ``tb_module``'s soak test on ``config`` for at least ``beats`` input beats."""
    from sim.runner import run_cocotb
    from sim.soak import BEATS_ENV, REPORT_ENV

    start = time.perf_counter()
    report_path = (Path(build_root) / f"{config.key()}-{simulator}" / "soak.json").resolve()
    report_path.unlink(missing_ok=True)
    result = run_cocotb(config, simulator, build_root=build_root, seed=seed, quiet=True,
                        tb_module=tb_module,
                        extra_env={BEATS_ENV: str(beats), REPORT_ENV: str(report_path)})
    wall = time.perf_counter() - start
    if not report_path.exists():
        raise RuntimeError(f"the soak wrote no report (log: {result.build_dir / 'test.log'})")
    return SoakResult(json.loads(report_path.read_text()), wall, result.build_dir)


def add_soak_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "soak", help="stream many random beats with random stalls through a block's Verilog and "
                     "compare every output beat with the golden model",
        usage="lutra soak BLOCK [--beats N] [--simulator verilator|icarus] [--seed S] "
              "[--PARAM VALUE ...]")
    p.add_argument("block", help=f"block name ({', '.join(SOAK_BLOCKS)})")
    p.add_argument("--beats", type=int, default=DEFAULT_BEATS,
                   help=f"input beats to stream at least (default {DEFAULT_BEATS})")
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
    p.add_argument("--seed", type=seed_number, default=1,
                   help="seed of the random data and stalls (default 1)")
    p.add_argument("--build-dir", type=Path, help=f"default {DEFAULT_SOAK_DIR}")
    add_force(p)
    p.set_defaults(takes_params=True, config=None)
    return p


def run_soak(args) -> int:
    from sim.runner import missing_reason
    if args.block in NOT_SOAKED:
        raise UsageError(f"block {args.block!r} has no soak: {NOT_SOAKED[args.block]}")
    if args.beats < 1:
        raise UsageError(f"--beats must be a positive integer, not {args.beats!r}")
    (config,) = configs_from_args(args, "lutra soak")
    if config.name not in SOAK_BLOCKS:
        raise UsageError(f"block {config.name!r} has no soak (soaked: {', '.join(SOAK_BLOCKS)})")
    reason = missing_reason(args.simulator)
    if reason is not None:
        raise UsageError(f"cannot run {args.simulator}: {reason}")
    build_dir = args.build_dir or DEFAULT_SOAK_DIR
    with OutputDir(build_dir, owner="soak", force=args.force or args.build_dir is None,
                   prune=False) as out:
        out.claim(f"{config.key()}-{args.simulator}")
        with Progress(f"lutra soak {config.name}") as progress, progress.ticking():
            progress.step(f"{args.beats} beats under {args.simulator}")
            result = soak_block(config, args.simulator, beats=args.beats, seed=args.seed,
                                build_root=build_dir)
    for line in result.lines():
        print(line)
    return 0 if result.clean else 1


#: This group's subcommands, joined into ``gen.cli.COMMANDS``.
COMMANDS = {"soak": (add_soak_parser, run_soak)}
