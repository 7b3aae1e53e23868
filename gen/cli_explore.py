"""``lutra explore``: builds of a block over parameters x targets x seeds on Ray Tune
(:mod:`fpga.explore`), with a results table, the Pareto front and its plot.

Its ``COMMANDS`` table is joined into :data:`gen.cli.COMMANDS`. Bad input is a one-line error
with exit status 2; a run that does not fit or fails is a row of the results (exit status 0).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cli_common import Parser, UsageError, add_force, mhz, seed_number
from .progress import Progress

__all__ = ["add_explore_parser", "default_jobs", "run_explore"]

#: Memory one nextpnr run may need (the largest ECP5-85F builds measured here).
_GB_PER_JOB = 2


def default_jobs() -> int:
    """Runs at once when ``--jobs`` is not given: one per core, at most one per 2 GB."""
    cores = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return cores
    return max(1, min(cores, int(memory // _GB_PER_JOB)))


def add_explore_parser(sub) -> argparse.ArgumentParser:
    """The ``explore`` subcommand's flags (block parameters are parsed later, as ranges)."""
    p = sub.add_parser(
        "explore", help="build a block over parameter ranges x targets x seeds (Ray Tune), "
                        "with a results table and the Pareto front",
        usage="lutra explore BLOCK --PARAM RANGE ... --target T1,T2 [--seeds N] "
              "[--objective A,B] [--search grid|random|bayes] [--samples N] [--jobs N] "
              "[--address ray://HOST:PORT] --out DIR\n       lutra explore --config STUDY.toml "
              "[--out DIR] [--jobs N] [--address ...]")
    p.add_argument("block", nargs="?", help="block name (see 'lutra list')")
    p.add_argument("--config", type=Path, help="TOML study (an [explore] table)")
    p.add_argument("--target", help="comma-separated targets (see 'lutra build --list-targets')")
    p.add_argument("--seeds", type=int, help="nextpnr seeds 1..N per configuration (default 1)")
    p.add_argument("--objective", help="comma-separated objectives (default gops,luts): "
                                       "gops, fmax, luts, lcs, ffs, dsps, brams, comb_per_mac")
    p.add_argument("--search", choices=("grid", "random", "bayes"),
                   help="grid (default): every combination; random: --samples of them; "
                        "bayes: --samples chosen by Optuna's multi-objective TPE")
    p.add_argument("--samples", type=int, help="configurations tried by random and bayes")
    p.add_argument("--sample-seed", type=seed_number, help="seed of the random / bayes sampler")
    p.add_argument("--freq", type=mhz, help="requested clock in MHz (default: as lutra build)")
    p.add_argument("--allow-lut-multipliers", action="store_true",
                   help="build every multiplier from LUTs")
    p.add_argument("--jobs", type=int,
                   help=f"runs at once (default here: {default_jobs()}: one per core, one per "
                        f"{_GB_PER_JOB} GB of memory)")
    p.add_argument("--address", help="Ray cluster to run on (ray://HOST:PORT; default "
                                     "$RAY_ADDRESS, else a local Ray started for the study)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the runs whose row says 'failed'")
    p.add_argument("--out", type=Path, help="output directory (results.csv, results.md, "
                                            "pareto.png, runs/)")
    add_force(p)
    p.set_defaults(takes_params=True)
    return p


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _study_from_args(args):
    from fpga.explore import Study, parse_values

    from .blocks import blocks, get_block

    if args.block is None:
        raise UsageError("name a block (one of: " + ", ".join(blocks()) + ") or give --config")
    try:
        spec = get_block(args.block)
    except KeyError as error:
        raise UsageError(error.args[0]) from None
    parser = Parser(prog=f"lutra explore {spec.name}", add_help=False)
    for param in spec.params:
        parser.add_argument(param.flag, dest=param.name, metavar="RANGE")
    ranges = vars(parser.parse_args(args.params))
    space = {name: parse_values(spec.param(name), text) for name, text in ranges.items()
             if text is not None}
    if args.target is None:
        raise UsageError("--target is required (comma-separated; see "
                         "'lutra build --list-targets')")
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds: must be a positive integer, not {args.seeds!r}")
    return Study(block=spec.name, space=space, targets=_split(args.target),
                 seeds=tuple(range(1, (args.seeds or 1) + 1)),
                 objectives=_split(args.objective or "gops,luts"),
                 search=args.search or "grid", samples=args.samples,
                 sample_seed=args.sample_seed or 0, freq_mhz=args.freq,
                 allow_lut_multipliers=args.allow_lut_multipliers)


def run_explore(args) -> int:
    """Run the study the arguments describe; print where the results are and the front."""
    from fpga.explore import OBJECTIVES, ExploreError, front, load_study, run_study

    try:
        if args.config is not None:
            given = [f"--{k.replace('_', '-')}" for k in ("block", "target", "seeds",
                                                          "objective", "search", "samples",
                                                          "sample_seed", "freq")
                     if getattr(args, k) is not None] + args.params
            if given or args.allow_lut_multipliers:
                raise UsageError(f"--config describes the whole study; give only --out, "
                                 f"--jobs, --address, --force with it, not "
                                 f"{' '.join(given) or '--allow-lut-multipliers'}")
            study, options = load_study(args.config)
        else:
            study, options = _study_from_args(args), {}
        out = args.out or (Path(options["out"]) if "out" in options else None)
        if out is None:
            raise UsageError("--out is required (the study's directory)")
        address = args.address or options.get("address") or os.environ.get("RAY_ADDRESS")
        # On a cluster Ray uses every CPU unless told otherwise; locally, this machine's share.
        jobs = args.jobs if args.jobs is not None else options.get(
            "jobs", None if address else default_jobs())
        results = run_study(study, out, jobs=jobs, address=address, force=args.force,
                            retry_failed=args.retry_failed,
                            progress=lambda total: Progress(f"lutra explore {study.block}",
                                                            total=total))
    except ExploreError as error:
        raise UsageError(str(error)) from None
    counts = results.counts()
    out = Path(out)
    print(f"results: {out / 'results.csv'}, {out / 'results.md'} ({len(results.rows)} runs: "
          + ", ".join(f"{n} {status}" for status, n in counts.items()) + ")")
    best = front(study, list(results.rows.values()))
    if best:
        senses = ", ".join(f"{o} {OBJECTIVES[o].sense}" for o in study.objectives)
        print(f"Pareto front ({senses}; median over seeds):")
        for name, values in best:
            print(f"  {name:<48} " + "  ".join(f"{o} {v:g}" for o, v in
                                                zip(study.objectives, values)))
        if (out / "pareto.png").exists() and len(study.objectives) > 1:
            print(f"plot: {out / 'pareto.png'}")
    else:
        print("no run has all the objectives yet, so no Pareto front")
    if results.missing:
        print(f"lutra explore: stopped with {results.missing} runs not done; the same command "
              f"runs them (the recorded runs are skipped)", file=sys.stderr)
        return 1
    return 0


#: This group's subcommands, joined into ``gen.cli.COMMANDS``.
COMMANDS = {"explore": (add_explore_parser, run_explore)}
