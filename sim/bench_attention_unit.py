"""``lutra bench attention_unit``: cycles of the attention unit's RTL (Verilator) on batches of
real sequence lengths, against the MAC lower bound and padded dense attention.

For each number of engines P, batches of ``--batch`` sequences with lengths drawn from the
real-text distribution of ``lutra bench attention`` (standard-library docstring paragraphs
tokenized with all-MiniLM-L6-v2's tokenizer, capped at ``--max-len``) go through the generated
Verilog of the unit (random int8 Q, K, V, checked bit for bit against
``sim.golden.encoder.attention_int``). Printed per P:

* compute cycles: from the batch's last input word to its first output word;
* the lower bound ``total MACs / (P x block**2)``, total MACs = heads x sum over rows of
  ``2 x pairs x block**2 x head_dim`` (scores and P.V);
* padded dense attention on the same engines: every sequence padded to ``max_len`` and every
  block attended (the same unit built with ``window`` covering the sequence), same batch;
* with ``--probe``: each engine's K and V read requests and the cycles they waited for the
  round-robin arbiter, and where the engines' cycles go (``sim.tb.attention_unit_tb.
  BREAKDOWN``: k-slices into the GEMM core, slices the core did not take, waits for score
  operands, waits for probabilities or V, no row held), in % of engine cycles.

``--minilm N`` also runs layer 0 of all-MiniLM-L6-v2 on N sentences (12 heads of 32, dense)
through a unit with the model's own requantization and compares with the integer encoder's
context, every head.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

#: The benchmark's report in ``--out``, and its directory of simulations there.
REPORT = "attention_unit_bench.json"
WORK = "attention_unit_bench"


def _parser() -> argparse.ArgumentParser:
    from gen.cli_common import add_report_out, int_list
    p = argparse.ArgumentParser(prog="lutra bench attention_unit",
                                description=__doc__.split("\n")[0])
    p.add_argument("--engines", default=[1, 2, 4, 8], type=int_list,
                   help="comma-separated P values (default 1,2,4,8)")
    p.add_argument("--batch", type=int, default=8, help="sequences per batch")
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--block", type=int, default=4)
    p.add_argument("--window", type=int, default=1)
    p.add_argument("--n-global", type=int, default=1)
    p.add_argument("--softmax", default="recip")
    p.add_argument("--read-ports", type=int, default=1,
                   help="read ports of each Q, K, V memory (P when P is smaller)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe", action="store_true",
                   help="count each engine's read requests and arbiter waits (slower)")
    p.add_argument("--no-dense", action="store_true", help="skip the padded dense runs")
    p.add_argument("--minilm", type=int, default=0, metavar="N",
                   help="also check MiniLM layer 0 on N sentences, every head")
    p.add_argument("--simulator", default="verilator")
    add_report_out(p, f"{REPORT} and the simulations' directory {WORK}/")
    return p


def _run(params: dict, job: dict, work: Path, simulator: str) -> list[dict]:
    """One cocotb run of ``bench_batches`` on the Verilog of ``params``."""
    from gen.blocks import get_block
    from gen.config import validate_params

    from .runner import run_cocotb

    config = validate_params(get_block("attention_unit"), params)
    build_root = work / "sim"
    build_root.mkdir(parents=True, exist_ok=True)
    job_dir = work / f"job-{config.key()}"
    job_dir.mkdir(parents=True, exist_ok=True)
    job_path = job_dir / "job.json"
    job_path.write_text(json.dumps(job))
    result = run_cocotb(config, simulator, build_root=build_root, quiet=True,
                        testcase="bench_batches",
                        extra_env={"LUTRA_ATTN_UNIT_JOB": str(job_path)})
    if not result.passed:
        raise RuntimeError(f"simulation failed, see {result.build_dir / 'test.log'}")
    return json.loads((job_dir / "result.json").read_text())


def _pairs(lengths, pattern: dict) -> int:
    from .golden.attention import total_pairs
    return total_pairs(lengths, **pattern)


def measure(args, work: Path) -> dict:
    """Run the batches (and ``--minilm``) through the unit's RTL, simulating in ``work``."""
    from .attention_driver import draw_lengths

    rng = np.random.default_rng(args.seed)
    batches = [draw_lengths("real", rng, args.batch, args.max_len)
               for _ in range(args.batches)]
    n_blocks = -(-args.max_len // args.block)
    common = {"heads": args.heads, "head_dim": args.head_dim, "block": args.block,
              "max_len": args.max_len, "max_tokens": args.batch * args.max_len,
              "max_seqs": args.batch, "softmax": args.softmax,
              "lookahead": 16}
    sparse = {**common, "window": args.window, "n_global": args.n_global}
    dense = {**common, "window": n_blocks, "n_global": 0}
    pattern = {"block": args.block, "window": args.window, "n_global": args.n_global,
               "causal": False}
    dense_pattern = {"block": args.block, "window": n_blocks, "n_global": 0, "causal": False}
    work = work.resolve()               # the simulator runs elsewhere
    rows = []
    for p in args.engines:
        start = time.time()
        ports = {"engines": p, "read_ports": min(args.read_ports, p)}
        runs = _run({**sparse, **ports},
                    {"batches": batches, "seed": args.seed, "probe": args.probe}, work,
                    args.simulator)
        dense_runs = None if args.no_dense else _run(
            {**dense, **ports},
            {"batches": [[args.max_len] * len(b) for b in batches], "seed": args.seed,
             "check": False}, work, args.simulator)
        for n, (lengths, run) in enumerate(zip(batches, runs)):
            macs = args.heads * _pairs(lengths, pattern) * 2 * args.block ** 2 * args.head_dim
            row = {"engines": p, "batch": n, "tokens": sum(lengths),
                   "compute_cycles": run["compute_cycles"],
                   "bound_cycles": macs / (p * args.block ** 2),
                   "mismatches": run.get("mismatches")}
            row["ratio"] = row["compute_cycles"] / row["bound_cycles"]
            if dense_runs is not None:
                row["dense_cycles"] = dense_runs[n]["compute_cycles"]
                row["dense_bound_cycles"] = (
                    args.heads * _pairs([args.max_len] * len(lengths), dense_pattern) * 2
                    * args.head_dim / p)
                row["speedup"] = row["dense_cycles"] / row["compute_cycles"]
            if args.probe:
                row["request_cycles"] = run["request_cycles"]
                row["wait_cycles"] = run["wait_cycles"]
                row["engine_cycles"] = run["engine_cycles"]
            rows.append(row)
        print(f"  P={p}: simulated in {time.time() - start:.0f} s", file=sys.stderr)
    result = {"batches": batches, "params": {**sparse, "read_ports": args.read_ports},
              "rows": rows}
    if args.minilm:
        result["minilm"] = _minilm(args, work)
    return result


def _minilm(args, work: Path) -> dict:
    """MiniLM layer 0 through the unit (dense, the model's requantization), every head."""
    from .attention_unit_driver import minilm_case, quant_payload
    from .minilm import SENTENCES, token_ids

    sentences = sorted(SENTENCES, key=lambda s: len(token_ids(s)))
    step = max(1, len(sentences) // args.minilm)
    chosen = sentences[::step][:args.minilm]
    real = minilm_case(chosen, softmax=args.softmax)
    lengths = [len(c[0]) for c in real.cases]
    max_len = -(-max(lengths) // args.block) * args.block
    params = {"heads": real.heads, "head_dim": real.head_dim, "block": args.block,
              "max_len": max_len, "max_tokens": sum(lengths), "max_seqs": len(lengths),
              "engines": 4, "window": max_len // args.block, "n_global": 0,
              "softmax": args.softmax, "softmax_scale": real.layer.softmax_scale}
    work.mkdir(parents=True, exist_ok=True)
    data_path = work / "minilm_qkv.npz"
    np.savez(data_path, **{f"b0_s{s}_{t}": c[i] for s, c in enumerate(real.cases)
                           for i, t in enumerate("qkv")})
    quant = quant_payload(real.layer)
    run = _run(params, {"batches": [lengths], "data": str(data_path.resolve()),
                        "quant": quant}, work, args.simulator)[0]
    job_dir = next(work.glob("job-*heads=12*"))
    got = np.load(job_dir / "got_0.npy")
    encoder = np.concatenate([c[3] for c in real.cases])
    return {"lengths": lengths, "mismatches_vs_golden": run["mismatches"],
            "mismatches_vs_encoder": int((got != encoder).sum()), "heads": real.heads,
            "compute_cycles": run["compute_cycles"]}


def report(result: dict) -> str:
    lines = ["attention_unit RTL (Verilator) on real-length batches: "
             f"{json.dumps({k: v for k, v in result['params'].items() if k != 'max_tokens'})}",
             f"batches (lengths): {result['batches']}",
             "",
             f"{'P':>2} {'batch':>5} {'tokens':>6} {'cycles':>9} {'bound':>9} {'ratio':>6} "
             f"{'dense':>10} {'speed-up':>8} {'exact':>5}"]
    for r in result["rows"]:
        dense = f"{r['dense_cycles']:>10}" if "dense_cycles" in r else f"{'-':>10}"
        speed = f"{r['speedup']:>8.2f}" if "speedup" in r else f"{'-':>8}"
        exact = "yes" if r["mismatches"] == 0 else str(r["mismatches"])
        lines.append(f"{r['engines']:>2} {r['batch']:>5} {r['tokens']:>6} "
                     f"{r['compute_cycles']:>9} {r['bound_cycles']:>9.0f} {r['ratio']:>6.2f} "
                     f"{dense} {speed} {exact:>5}")
    probed = [r for r in result["rows"] if "wait_cycles" in r]
    if probed:
        kinds = list(probed[0]["engine_cycles"])
        lines += ["", "where the engines' cycles go, % of engine cycles (end of load to first "
                      "output):",
                  f"{'P':>2} {'batch':>5} " + " ".join(f"{kind:>11}" for kind in kinds)]
        for r in probed:
            total = sum(r["engine_cycles"].values()) or 1
            lines.append(f"{r['engines']:>2} {r['batch']:>5} " + " ".join(
                f"{100 * r['engine_cycles'][kind] / total:>11.1f}" for kind in kinds))
        lines += ["", "read requests / cycles waited for the arbiter, per engine (K, V):"]
        for r in probed:
            per = [f"e{e}: K {r['request_cycles'][f'{e}k']}/{r['wait_cycles'][f'{e}k']} "
                   f"V {r['request_cycles'][f'{e}v']}/{r['wait_cycles'][f'{e}v']}"
                   for e in range(r["engines"])]
            lines.append(f"P={r['engines']} batch {r['batch']}: " + ", ".join(per))
    if "minilm" in result:
        m = result["minilm"]
        lines += ["", f"MiniLM layer 0, {m['heads']} heads, lengths {m['lengths']}: "
                      f"{m['mismatches_vs_encoder']} mismatches against the encoder's context, "
                      f"{m['mismatches_vs_golden']} against attention_int "
                      f"({m['compute_cycles']} compute cycles on 4 engines)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from gen.outputs import report_files
    args = _parser().parse_args(argv)
    out = report_files(args.out, [REPORT, WORK], owner="bench-attention_unit", force=args.force)
    with out:
        result = measure(args, out.claim(WORK))
        print(report(result))
        (out.stage / REPORT).write_text(json.dumps(result, indent=1) + "\n")
    bad = [r for r in result["rows"] if r["mismatches"]]
    if "minilm" in result:
        bad += [result["minilm"]] if result["minilm"]["mismatches_vs_encoder"] else []
    return 1 if bad else 0


if __name__ == "__main__":      # as `lutra bench`: errors are one line, exit status 2
    from gen.cli import main as lutra
    sys.exit(lutra(["bench", "attention_unit", *sys.argv[1:]]))
