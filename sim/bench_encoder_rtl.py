"""``lutra bench encoder --rtl``: cycles of the encoder accelerator's RTL against its bounds.

For batches of 1, 8 and 32 sentences with the token lengths of ``sim.minilm.SENTENCES`` (cycled
in order; batch 1: the median-length sentence), prints cycles from the RTL (the generated Verilog
under Verilator, ``sim.encoder_driver.run_harness``) where simulation is affordable and from
:func:`cycle_model` otherwise, against both lower bounds: total MACs / array MACs per clock, and
weight bytes / read-port bytes per clock; where the design sits between them; the GEMM array
utilisation per stage. The model is checked against every RTL run it prints (``model err``).

The cycle model follows the sequencer (``hw/encoder/core.py``): a GEMM pass, per column tile of
``cols`` channels, fetches the tile's parameter rows and ``K`` weight rows into one of two banks
while the core streams ``ceil(T / rows)`` row tiles of ``K`` k-slices from the other, so a tile
costs about the larger of its fetch and its compute (:func:`gemm_pass`). Element passes take one
element per clock. The attention pass is fitted to RTL runs (``ATTENTION_FIT``; it is a few per
cent of a layer).

``--arrays`` adds MiniLM's figures (model) for other GEMM arrays, e.g. the largest the fit
check accepts on the ECP5-85F with fabric columns (``12x12+5e1``: 12 x 12 PEs, the last 5
columns multiplying in logic, 1 attention engine): the fabric columns leave every cycle
figure unchanged (same latency as the DSP PEs), so the array's size is all the model needs.
``--model-only`` skips the RTL runs.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import numpy as np

from gen.outputs import OutputDir, report_file

__all__ = ["cycle_model", "gemm_pass", "layernorm_pass", "bounds", "throughput", "float_rate",
           "main", "batch_lengths", "parse_array", "minilm_params", "array_figures"]

#: The readers' register stages after the block RAM (``hw/encoder/core.py``: the selected
#: memory's word, then the OR over the memories): cycles more per pass, before the first
#: element (GEMM, LayerNorm, ADD, GELU, pooling) or k-slice reaches its unit; the attention
#: pass restarts its reader per tensor (6 cycles, within its fit's residuals).
READ_REGISTER = 2
#: The pooling pass's second stage (the running sums' block RAM read, then the add).
POOL_STAGE = 1
#: Cycles of a GEMM column tile's fetch beyond its parameter and weight words (two read
#: requests' latency), of its compute beyond its k-slices (bank hand-over), and of a GEMM pass
#: beyond its descriptor's words, the core's latency and the last tile's output beats (see
#: :func:`gemm_pass`): from the RTL per-pass counts (tiny 4 x 4 at batches 1, 8, 32: compute-
#: bound; MiniLM 8 x 8 at batch 1: fetch-bound; port 32), within 5 cycles of every pass.
FETCH_OVERHEAD = 7
COMPUTE_OVERHEAD = 2
GEMM_PASS_OVERHEAD = 8 + READ_REGISTER
#: Attention pass of one layer: ``a * sum(t^2) + b * sum(t)`` cycles over the batch's sequence
#: lengths ``t``, by configuration (heads, head_dim, block, engines). MiniLM's: least squares
#: through the RTL per-pass counts (``_rtl_stages``) of layer 0 on batches (9), (14) and (9, 6)
#: tokens, re-fitted at f373fea (after the attention engines' earlier row hand-over, 97b6731):
#: 8 x 8, 2 engines: 20,933, 33,216 and 34,032 cycles (residuals under 270; the layers 528,709,
#: 562,133 and 567,174); 12 x 12 with 5 fabric columns, 1 engine (the ECP5-85F's builds):
#: 24,366, 39,355 and 39,040 (residuals under 470; the layers 528,182, 567,768 and 571,678).
#: The model is within 0.11 % of those six layer counts. The tiny model's is fitted on each run.
ATTENTION_FIT = {(12, 32, 4, 2): (15.7, 2154.7), (12, 32, 4, 1): (31.9, 2369.0)}

BATCHES = (1, 8, 32)
#: Clocks of the per-array table (``--arrays``), MHz: the issue's target, and about what the
#: GEMM core alone reaches on the ECP5-85F (docs/blocks/gemm.md). Neither is measured for the
#: encoder.
ARRAY_CLOCKS = (100.0, 150.0)
_ARRAY = re.compile(r"^(\d+)x(\d+)(?:\+(\d+))?(?:e(\d+))?$")
#: Batches of the throughput table: 2 is the most the ECP5-85F's activation memory holds
#: (max_tokens 32: two median-length sentences, 2 x 14 tokens).
THROUGHPUT_BATCHES = (1, 2, 8, 32)


def batch_lengths(lengths: list[int], size: int) -> list[int]:
    """``size`` sentence lengths: the median one for 1, else ``lengths`` cycled in order."""
    if size == 1:
        return [int(np.median(lengths))]
    return [lengths[n % len(lengths)] for n in range(size)]


def _gemms(p) -> list[tuple[str, int, int]]:
    h, f = p.hidden, p.ffn
    return [("q", h, h), ("k", h, h), ("v", h, h), ("attn_out", h, h), ("ffn1", h, f),
            ("ffn2", f, h)]


def gemm_pass(p, k: int, n: int, tokens: int) -> int:
    """Cycles of a ``K = k``, ``N = n`` GEMM pass over ``tokens`` on ``p``: column tiles through
    two banks. Tile ``j``'s fetch starts once tile ``j - 1``'s fetch has ended and its bank is
    free (tile ``j - 2`` computed); its compute once it is fetched and tile ``j - 1`` computed.
    The pass ends when the last tile's outputs have left the core (``GemmParams.latency`` of the
    encoder's core, then its ``rows x cols`` beats) and the next descriptor is read."""
    core = p.gemm
    drain = core.latency + core.beats_per_tile + p.descriptor_words + GEMM_PASS_OVERHEAD
    fetch = 3 * p.param_row_words + k * p.weight_row_words + FETCH_OVERHEAD
    compute = math.ceil(tokens / p.rows) * k + COMPUTE_OVERHEAD
    fetched, computed = [], []
    for j in range(n // p.cols):
        start = max(fetched[-1] if fetched else 0, computed[-2] if j >= 2 else 0)
        fetched.append(start + fetch)
        computed.append(max(fetched[-1], computed[-1] if computed else 0) + compute)
    return computed[-1] + drain


def layernorm_pass(p, tokens: int) -> int:
    """Cycles of a LayerNorm pass over ``tokens`` on ``p``: its channel records, the rows at the
    block's steady rate (``LayerNormParams.pair_period`` per two rows: one element per clock
    when ``hidden >= row_gap``, slower below), then its latency and the last row's output.
    Within 30 cycles of the RTL's passes (tiny at batches 1, 8, 32; MiniLM layer 0)."""
    ln = p.layernorm
    rows = max(tokens * p.hidden, math.ceil(tokens * ln.pair_period / 2))
    return p.hidden * p.ln_row_words + rows + p.hidden + ln.latency + READ_REGISTER


def cycle_model(p, lengths: list[int], attention: tuple[float, float]) -> dict:
    """Modelled cycles of one batch (sequence ``lengths``) on ``p`` (``EncoderParams``): per
    stage of a layer, per layer, and in all (input, embedding LayerNorm, layers, pooling)."""
    t = sum(lengths)
    stages = {name: gemm_pass(p, k, n, t) for name, k, n in _gemms(p)}
    a, b = attention
    stages["attention"] = sum(a * s * s + b * s for s in lengths)
    layernorm = layernorm_pass(p, t)
    stages["add"] = 2 * (t * p.hidden + 44 + READ_REGISTER)
    stages["layernorm"] = 2 * layernorm
    stages["gelu"] = t * p.ffn + 35 + READ_REGISTER
    layer = sum(stages.values())
    # Besides the layers: the embedding sums loaded (one per clock), the embedding LayerNorm
    # and the pooling pass.
    return {"stages": stages, "layer": layer,
            "total": p.layers * layer + t * p.hidden + layernorm + t * p.hidden + READ_REGISTER
            + POOL_STAGE}


def bounds(p, lengths: list[int]) -> dict:
    """Lower bounds of a batch: MACs / (rows x cols), weight bytes / port bytes per clock."""
    h, f = p.hidden, p.ffn
    per_token = 4 * h * h + 2 * h * f
    macs = p.layers * (sum(lengths) * per_token + sum(2 * s * s * h for s in lengths))
    weight_bytes = p.layers * per_token
    return {"macs": macs, "mac_bound": macs / p.gemm_macs,
            "weight_bytes": weight_bytes, "weight_bound": weight_bytes / (p.port_width / 8)}


def float_rate(sentences) -> float:
    """Sentences per second of the float NumPy forward (``sim.minilm.forward``, one BLAS
    thread) over ``sentences``, after one warm-up call (weights and tokenizer loaded)."""
    import time

    from .minilm import forward
    forward(sentences[0])
    start = time.perf_counter()
    for sentence in sentences:
        forward(sentence)
    return len(sentences) / (time.perf_counter() - start)


def throughput(p, lengths: list[int], attention, float_per_s: float) -> list[dict]:
    """Per batch size of :data:`THROUGHPUT_BATCHES` (1 and 2: median-length sentences; 8 and
    32: ``lengths`` cycled, as :func:`batch_lengths`): modelled cycles of MiniLM on ``p``,
    latency per batch and sentences/s at the last measured clock and at the target
    (``gen.cli_run.TARGET_MHZ``) against ``float_per_s``; printed as a table and returned."""
    from gen.cli_run import LAST_FMAX, TARGET_MHZ
    mhz, what = LAST_FMAX["minilm"]
    print(f"\nThroughput of all-MiniLM-L6-v2 (6 layers; cycles from the model) at {mhz} MHz "
          f"({what}) and at {TARGET_MHZ:.0f} MHz, against the float NumPy forward measured "
          f"in this run (sim.minilm.forward, one BLAS thread): {float_per_s:.1f} sentences/s\n")
    print(f"| batch | tokens | cycles | ms per batch at {mhz} MHz | sentences/s at {mhz} MHz | "
          f"x float | ms per batch at {TARGET_MHZ:.0f} MHz | sentences/s at "
          f"{TARGET_MHZ:.0f} MHz | x float |\n|---|---|---|---|---|---|---|---|---|")
    out = []
    for size in THROUGHPUT_BATCHES:
        batch = batch_lengths(lengths, 1) * size if size <= 2 else batch_lengths(lengths, size)
        cycles = cycle_model(p, batch, attention)["total"]
        row = {"batch": size, "tokens": sum(batch), "cycles": cycles,
               "float_sentences_per_s": float_per_s}
        cells = []
        for clock in (mhz, TARGET_MHZ):
            seconds = cycles / (clock * 1e6)
            rate = size / seconds
            row[f"at_{clock:g}_mhz"] = {"ms_per_batch": seconds * 1e3,
                                        "sentences_per_s": rate, "x_float": rate / float_per_s}
            cells += [f"{seconds * 1e3:,.0f}", f"{rate:.1f}", f"{rate / float_per_s:.2f}"]
        print(f"| {size} | {sum(batch)} | {cycles:,.0f} | " + " | ".join(cells) + " |")
        out.append(row)
    return out


def parse_array(text: str) -> dict:
    """``ROWSxCOLS[+FABRIC][eENGINES]`` (``8x8``, ``12x12+5e1``) as ``EncoderParams`` fields;
    2 engines unless given. ``ValueError`` (one line) for anything else."""
    match = _ARRAY.match(text)
    if not match:
        raise ValueError(f"an array is ROWSxCOLS[+FABRIC_COLS][eENGINES], e.g. 12x12+5e1, "
                         f"not {text!r}")
    rows, cols, fabric, engines = match.groups()
    return {"rows": int(rows), "cols": int(cols), "fabric_cols": int(fabric or 0),
            "engines": int(engines or 2)}


def minilm_params(**array):
    """``EncoderParams`` of all-MiniLM-L6-v2 (6 layers) on ``array`` (``rows``, ``cols``,
    ``fabric_cols``, ``engines``; port 32 bits) with activation memory for 32 sentences of up
    to 64 tokens: batches 8 and 32 do not fit an ECP5-85F's block RAM (its build holds 32
    tokens), so their rows are the model of a larger memory."""
    from hw.encoder.params import EncoderParams

    from .encoder_driver import load_model
    return EncoderParams.for_model(load_model("minilm", 0, 64), max_tokens=32 * 64,
                                   max_seqs=32, debug=False, **array)


def array_figures(p, lengths: list[int], float_per_s: float, *,
                  clocks=ARRAY_CLOCKS) -> list[dict]:
    """MiniLM (6 layers) on ``p`` at batches of :data:`BATCHES` (``batch_lengths``): modelled
    cycles, both bounds and sentences/s at ``clocks`` against the float forward's
    ``float_per_s``; printed as one table and returned. The attention pass of ``p``'s
    engine count must have a fit (:data:`ATTENTION_FIT`)."""
    attention = ATTENTION_FIT[(p.heads, p.head_dim, p.block, p.engines)]
    label = (f"{p.rows} x {p.cols}" + (f" ({p.fabric_cols} fabric cols)" if p.fabric_cols
                                       else "") + f", {p.engines} engine(s)")
    print(f"\nMiniLM, 6 layers, array {label}: {p.gemm_macs} MACs per clock "
          f"({p.fabric_macs} in logic); cycles from the model, port {p.port_width} bits\n")
    heads = " | ".join(f"sentences/s at {c:g} MHz | x float" for c in clocks)
    print(f"| batch | tokens | cycles | x MAC bound | x weight bound | {heads} |\n"
          + "|---" * (5 + 2 * len(clocks)) + "|")
    out = []
    for size in BATCHES:
        batch = batch_lengths(lengths, size)
        cycles = cycle_model(p, batch, attention)["total"]
        b = bounds(p, batch)
        row = {"array": label, "rows": p.rows, "cols": p.cols, "fabric_cols": p.fabric_cols,
               "engines": p.engines, "macs_per_clock": p.gemm_macs, "batch": size,
               "tokens": sum(batch), "cycles": cycles, "source": "model",
               "vs_mac_bound": cycles / b["mac_bound"],
               "vs_weight_bound": cycles / b["weight_bound"],
               "float_sentences_per_s": float_per_s}
        cells = []
        for clock in clocks:
            rate = size * clock * 1e6 / cycles
            row[f"sentences_per_s_at_{clock:g}_mhz"] = rate
            cells += [f"{rate:.1f}", f"{rate / float_per_s:.2f}"]
        print(f"| {size} | {sum(batch)} | {cycles:,.0f} | {row['vs_mac_bound']:.2f} | "
              f"{row['vs_weight_bound']:.2f} | " + " | ".join(cells) + " |")
        out.append(row)
    return out


def _rtl_stages(result: dict, descriptors: list[dict]) -> dict:
    """Cycles per pass of a harness run, summed by stage name over the layers."""
    from hw.encoder.params import OPS
    names = {v: k for k, v in OPS.items()}
    gemm_names = ("q", "k", "v", "attn_out", "ffn1", "ffn2")
    starts = [c for _, c in result["passes"]] + [result["cycles"]]
    out: dict[str, int] = {}
    gemm = 0
    for (index, cycle), end in zip(result["passes"], starts[1:]):
        op = names[descriptors[index]["op"]]
        if op == "gemm":
            op = gemm_names[gemm % 6]
            gemm += 1
        out[op] = out.get(op, 0) + end - cycle
    return out


def _run(model_name: str, layers: int, flags: dict, batches: list[list[int]],
         build: OutputDir):
    """RTL runs of ``batches`` (lists of lengths) on a configuration: (params, results); the
    Verilator build is a subdirectory ``build`` claims (the one 'lutra run' uses)."""
    from gen.blocks.encoder import encoder_model, encoder_params
    from gen.cli_run import run_config
    from gen.verilog import top_name, write_outputs

    from .encoder_driver import build_harness, random_batch, run_harness
    config = run_config(model_name, layers, flags)
    model, params = encoder_model(config.params), encoder_params(config.params)
    work = build.claim(f"{config.key()}-verilator".replace("=", "_"))
    info = write_outputs(config, work)
    exe = build_harness(work / info["verilog"], top_name(config), work)
    from .golden.encoder import forward
    rng = np.random.default_rng(1)
    ids = [random_batch(rng, model, b) for b in batches]
    results = run_harness(exe, model, params, ids, workdir=work)
    for batch, result in zip(ids, results):
        result["bit_exact"] = all(list(forward(model, seq)["pooled"]) == got
                                  for seq, got in zip(batch, result["pooled"]))
    return model, params, results


def _report(label: str, p, lengths, attention, rtl: dict | None, descriptors) -> dict:
    model = cycle_model(p, lengths, attention)
    b = bounds(p, lengths)
    cycles = rtl["cycles"] if rtl else model["total"]
    lo, hi = sorted((b["mac_bound"], b["weight_bound"]))
    row = {"label": label, "sentences": len(lengths), "tokens": sum(lengths),
           "cycles": cycles, "source": "RTL" if rtl else "model", "model": model["total"],
           **b, "vs_mac_bound": cycles / b["mac_bound"],
           "vs_weight_bound": cycles / b["weight_bound"],
           "vs_sum_of_bounds": cycles / (lo + hi)}
    err = f"{model['total'] / cycles - 1:+.1%}" if rtl else "-"
    if rtl:
        row["bit_exact"] = rtl["bit_exact"]
        label += "" if rtl["bit_exact"] else " (NOT bit-exact)"
    print(f"| {label} | {len(lengths)} | {sum(lengths)} | {cycles:,.0f} ({row['source']}) | "
          f"{err} | {b['mac_bound']:,.0f} | {b['weight_bound']:,.0f} | "
          f"{row['vs_mac_bound']:.2f} | {row['vs_weight_bound']:.2f} | "
          f"{row['vs_sum_of_bounds']:.2f} |")
    stages = (_rtl_stages(rtl, descriptors) if rtl else
              {name: c * p.layers for name, c in model["stages"].items()})
    t = sum(lengths)
    util = {name: t * k * n * p.layers / (stages[name] * p.gemm_macs)
            for name, k, n in _gemms(p) if stages.get(name)}
    row["gemm_utilisation"] = util
    row["stage_cycles"] = stages
    return row


HEADER = ("| run | sentences | tokens | cycles | model err | MAC bound | weight bound | "
          "x MAC bound | x weight bound | x (sum of bounds) |\n|---|---|---|---|---|---|---|"
          "---|---|---|")


def main(argv: list[str] | None = None) -> int:
    from gen.cli_run import DEFAULT_RUN_DIR

    from .minilm import SENTENCES, token_ids

    parser = argparse.ArgumentParser(prog="lutra bench encoder --rtl",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--minilm-layers", type=int, default=1,
                        help="MiniLM layers run through the RTL for batch 1 (0: none; a "
                             "layer is ~1 M cycles, ~30 s, after a ~8 minute Verilator build)")
    parser.add_argument("--build-dir", type=Path,
                        help="Verilator builds, shared with 'lutra run encoder' (default "
                             "build/run, Lutra's own)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--force", action="store_true",
                        help="replace a --json file, or write into a --build-dir, that Lutra "
                             "did not write")
    parser.add_argument("--arrays", default="",
                        help="comma-separated GEMM arrays for MiniLM's per-array table "
                             "(model): ROWSxCOLS[+FABRIC_COLS][eENGINES], e.g. "
                             "8x8,12x12+5e1 (engines default 2)")
    parser.add_argument("--model-only", action="store_true",
                        help="no RTL runs: the per-array tables (--arrays, default 8x8) and "
                             "the float forward only")
    args = parser.parse_args(argv)
    if not 0 <= args.minilm_layers <= 6:
        parser.error(f"--minilm-layers must be in [0, 6], not {args.minilm_layers}")
    texts = [t for t in args.arrays.split(",") if t] or (["8x8"] if args.model_only else [])
    specs = []
    for text in texts:
        try:
            specs.append(parse_array(text))
        except ValueError as error:
            parser.error(f"--arrays {text}: {error}")
    arrays = []
    for text, spec in zip(texts, specs):
        try:
            arrays.append(minilm_params(**spec))
        except (ValueError, TypeError) as error:
            parser.error(f"--arrays {text}: {error}")
    for p in arrays:
        if (p.heads, p.head_dim, p.block, p.engines) not in ATTENTION_FIT:
            parser.error(f"--arrays: no attention fit for {p.engines} engine(s) (measured: "
                         f"{', '.join(str(k[3]) for k in ATTENTION_FIT)})")
    # Claimed before the long work: the JSON file, and the builds' directory (Lutra's own by
    # default, like 'lutra run's).
    json_out = None if args.json is None else report_file(args.json, owner="bench-encoder",
                                                          force=args.force)
    builds = None if args.model_only else OutputDir(
        args.build_dir or DEFAULT_RUN_DIR, owner="run", prune=False,
        force=args.force or args.build_dir is None)
    if builds is not None:
        builds.check()
    lengths = [len(token_ids(s)) for s in SENTENCES]
    if args.model_only:
        float_per_s = float_rate(SENTENCES)
        print(f"float NumPy forward (sim.minilm.forward, one BLAS thread), measured in this "
              f"run: {float_per_s:.1f} sentences/s")
        figures = [row for p in arrays for row in array_figures(p, lengths, float_per_s)]
        _write_json(json_out, args.json, {"arrays": figures})
        return 0
    rows = []
    print("Cycles per batch against the lower bounds (sentence lengths of sim.minilm.SENTENCES; "
          "'x' = cycles / bound)\n")
    print(HEADER)

    # The tiny model (2 layers, hidden 32, 4 x 4 array): every batch through the RTL, lengths
    # clipped to its max_len of 16; the attention fit is made on these runs.
    tiny_batches = [[min(n, 16) for n in batch_lengths(lengths, b)] for b in BATCHES]
    tiny_flags = {"max_tokens": 16 * 32, "max_seqs": 32}
    with builds:
        model, p, results = _run("tiny", 0, tiny_flags, tiny_batches, builds)
    from .encoder_image import build_image
    descriptors = build_image(model, p).descriptors()
    att = [(sum(s * s for s in b), sum(b), _rtl_stages(r, descriptors)["attention"] / p.layers)
           for b, r in zip(tiny_batches, results)]
    fit = np.linalg.lstsq(np.array([[a, b] for a, b, _ in att], float),
                          np.array([c for _, _, c in att], float), rcond=None)[0]
    for size, batch, r in zip(BATCHES, tiny_batches, results):
        rows.append(_report(f"tiny, batch {size}", p, batch, tuple(fit), r, descriptors))

    # MiniLM (6 layers, 8 x 8 array, port 32, 2 engines).
    from .encoder_driver import load_model
    from hw.encoder.params import EncoderParams
    mini = EncoderParams.for_model(load_model("minilm", 0, 64), rows=8, cols=8, engines=2,
                                   max_tokens=32 * 64, max_seqs=32, debug=False)
    attention = ATTENTION_FIT[(mini.heads, mini.head_dim, mini.block, mini.engines)]
    if args.minilm_layers:
        batch = batch_lengths(lengths, 1)
        with builds:
            model1, p1, (r,) = _run("minilm", args.minilm_layers, {}, [batch], builds)
        rows.append(_report(f"MiniLM, {args.minilm_layers} layer(s), batch 1", p1, batch,
                            attention, r, build_image(model1, p1).descriptors()))
    for size in BATCHES:
        rows.append(_report(f"MiniLM, 6 layers, batch {size}", mini,
                            batch_lengths(lengths, size), attention, None, None))

    print("\nRTL runs are checked bit-exact (pooled sums) against the specification; the tiny "
          f"model's attention fit: {fit[0]:.1f} t^2 + {fit[1]:.1f} t cycles per sequence")
    print("\nGEMM array utilisation per stage (MACs / (cycles x rows x cols))\n")
    print("| run | " + " | ".join(g for g, _, _ in _gemms(mini)) + " |\n|---|"
          + "---|" * 6)
    for row in rows:
        print(f"| {row['label']} | "
              + " | ".join(f"{row['gemm_utilisation'].get(g, 0):.2f}" for g, _, _ in
                           _gemms(mini)) + " |")
    float_per_s = float_rate(SENTENCES)
    rates = throughput(mini, lengths, attention, float_per_s)
    figures = [row for p in arrays for row in array_figures(p, lengths, float_per_s)]
    _write_json(json_out, args.json, {"runs": rows, "throughput": rates, "arrays": figures})
    return 0


def _write_json(out: OutputDir | None, path: Path | None, figures: dict) -> None:
    if out is not None:
        import json
        with out:
            (out.stage / path.name).write_text(json.dumps(figures, indent=2, default=float)
                                               + "\n")


if __name__ == "__main__":      # as `lutra bench`: errors are one line, exit status 2
    from gen.cli import main as lutra
    sys.exit(lutra(["bench", "encoder", "--rtl", *sys.argv[1:]]))
