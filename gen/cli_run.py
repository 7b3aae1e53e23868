"""``lutra run encoder``: sentences through the simulated RTL of the encoder accelerator.

Its ``COMMANDS`` table is joined into :data:`gen.cli.COMMANDS`. The host tokenizes
(all-MiniLM-L6-v2's WordPiece tokenizer) and looks the embedding rows up (the design takes the
int16 embedding sums, ``docs/blocks/encoder.md``); the generated Verilog runs under Verilator
with a C++ harness as token source, external memory (the weight image) and output sink
(``sim/tb/encoder_harness.cpp``), or under Icarus with the cocotb testbench
(``sim/tb/encoder_tb.py``). Each sentence is its own batch. Per sentence: the embedding's
cosine to the float model, whether the pooled sums equal the integer specification
(``sim.golden.encoder.forward``, truncated to ``--layers``) bit for bit, and the cycles.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .cli_common import UsageError, parse_block_flags

__all__ = ["add_run_parser", "run_run", "run_config"]

DEFAULT_RUN_DIR = Path("build/run")

#: Array configuration of each model's run unless flags say otherwise. MiniLM: the ECP5-85F
#: configuration of docs/blocks/encoder.md (8 x 8 array, 2 attention engines) with
#: ``max_len`` 64, which holds every sentence of ``sim.minilm.SENTENCES`` (at most 63 tokens).
RUN_DEFAULTS = {
    "tiny": {},
    "minilm": {"model_max_len": 64, "rows": 8, "cols": 8, "engines": 2},
}


def add_run_parser(sub):
    p = sub.add_parser(
        "run", help="run sentences through the simulated RTL of the encoder accelerator",
        usage="lutra run encoder [--text TEXT ...] [--token-ids FILE.npy] [--model minilm|tiny] "
              "[--layers N] [--simulator verilator|icarus] [--json] [--PARAM VALUE ...]")
    p.add_argument("block", choices=("encoder",), help="the design to run (encoder)")
    p.add_argument("--text", action="append", default=[], help="a sentence (repeatable)")
    p.add_argument("--token-ids", type=Path,
                   help="token ids instead of text: a .npy of one sequence (1-D) or of equal-"
                        "length sequences (2-D)")
    p.add_argument("--model", choices=("minilm", "tiny"), default="minilm",
                   help="all-MiniLM-L6-v2 (default) or the tests' tiny random encoder (its "
                        "100-word vocabulary takes the MiniLM token ids modulo 100)")
    p.add_argument("--layers", type=int, default=0,
                   help="run the first N layers only (0: all); bit-exactness is then against "
                        "the specification truncated to N layers")
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--build-dir", type=Path, help=f"default {DEFAULT_RUN_DIR}")
    p.set_defaults(takes_params=True)
    return p


def run_config(model: str, layers: int, flags: dict):
    """The block configuration of a run: ``RUN_DEFAULTS``, no debug stream, ``max_tokens =
    max_len``, then the given parameter ``flags``. (Each sentence is its own batch; ``max_seqs``
    stays 2, as a one-entry length memory has a zero-width address Verilator rejects.)"""
    from .blocks import get_block
    from .config import validate_params
    params = {"model": model, "model_layers": layers, "debug": False, "max_seqs": 2,
              **RUN_DEFAULTS[model], **flags}
    if "max_tokens" not in flags:
        from sim.encoder_driver import load_model
        params["max_tokens"] = load_model(model, 0, params.get("model_max_len", 0)).max_len
    return validate_params(get_block("encoder"), params)


def _sequences(args, model) -> list[tuple[str | None, np.ndarray]]:
    """``(text, token ids)`` of every sentence asked for, checked against ``model``."""
    out: list[tuple[str | None, np.ndarray]] = []
    vocab = model.embeddings.word.shape[0]
    for n, text in enumerate(args.text, 1):
        if not text.strip():
            raise UsageError(f"--text {n}: empty sentence")
        from sim.minilm import token_ids
        out.append((text, token_ids(text) % vocab))
    if args.token_ids is not None:
        try:
            ids = np.load(args.token_ids, allow_pickle=False)
        except (ValueError, EOFError) as error:
            raise UsageError(f"{args.token_ids}: not a NumPy .npy file ({error})") from None
        if ids.dtype.kind not in "iu" or ids.ndim not in (1, 2) or ids.size == 0:
            raise UsageError(f"{args.token_ids}: expected a non-empty 1-D or 2-D integer array, "
                             f"not {ids.dtype} of shape {ids.shape}")
        if ids.min() < 0 or ids.max() >= vocab:
            raise UsageError(f"{args.token_ids}: token ids must be in [0, {vocab - 1}]")
        out += [(None, row.astype(np.int64)) for row in np.atleast_2d(ids)]
    if not out:
        raise UsageError("give at least one --text or --token-ids")
    for n, (text, ids) in enumerate(out, 1):
        if len(ids) > model.max_len:
            raise UsageError(f"sentence {n} is {len(ids)} tokens long; this configuration takes "
                             f"at most {model.max_len} (max_len)")
    return out


def _float_embedding(name: str, layers: int, text: str | None, ids: np.ndarray) -> np.ndarray:
    from sim.encoder_driver import float_weights
    from sim.golden.encoder import forward_float
    if name == "minilm" and not layers and text is not None:
        from sim.minilm import forward
        return forward(text)["embedding"]
    return forward_float(float_weights(name, layers), ids)["embedding"]


def _simulate(config, model, params, seqs, simulator: str, build_dir: Path) -> list[dict]:
    """One batch per sequence through the RTL: ``cycles``, ``pooled`` and ``seconds`` each."""
    from sim.runner import missing_reason

    from .verilog import top_name, write_outputs
    reason = missing_reason(simulator)
    if reason is not None:
        raise UsageError(f"cannot run {simulator}: {reason}")
    # make cannot take a '=' in the path of its sources (config keys have them).
    work = build_dir / f"{config.key()}-{simulator}".replace("=", "_")
    work.mkdir(parents=True, exist_ok=True)
    if simulator == "verilator":
        from sim.encoder_driver import build_harness, run_harness
        info = write_outputs(config, work)
        try:
            exe = build_harness(work / info["verilog"], top_name(config), work)
            return run_harness(exe, model, params, [[ids] for ids in seqs], workdir=work)
        except RuntimeError as error:
            raise UsageError(str(error)) from None
    from sim.runner import run_cocotb
    run_in, run_out = work / "run.json", work / "result.json"
    run_in.write_text(json.dumps([[ids.tolist()] for ids in seqs]))
    run_out.unlink(missing_ok=True)
    start = time.perf_counter()
    result = run_cocotb(config, simulator, build_root=build_dir, testcase="run_batches",
                        quiet=True, extra_env={"LUTRA_ENCODER_RUN": str(run_in.resolve()),
                                               "LUTRA_ENCODER_RESULT": str(run_out.resolve())})
    if not result.passed or not run_out.exists():
        raise UsageError(f"the {simulator} run failed (log: {result.build_dir / 'test.log'})")
    seconds = (time.perf_counter() - start) / len(seqs)
    return [r | {"seconds": seconds} for r in json.loads(run_out.read_text())]


def run_run(args) -> int:
    from sim.encoder_driver import load_model
    from sim.golden.encoder import forward

    from .blocks import get_block
    from .blocks.encoder import encoder_model, encoder_params
    if args.layers < 0:
        raise UsageError(f"--layers must be >= 0, not {args.layers}")
    flags = parse_block_flags(get_block("encoder"), args.params, "lutra run")
    if {"model", "model_layers"} & set(flags):
        raise UsageError("use --model and --layers to choose the model")
    full = load_model(args.model)
    if args.layers > full.num_layers:
        raise UsageError(f"--layers must be at most {full.num_layers} for {args.model}, "
                         f"not {args.layers}")
    config = run_config(args.model, args.layers, flags)
    model, params = encoder_model(config.params), encoder_params(config.params)
    seqs = _sequences(args, model)
    start = time.perf_counter()
    results = _simulate(config, model, params, [ids for _, ids in seqs], args.simulator,
                        args.build_dir or DEFAULT_RUN_DIR)
    total = time.perf_counter() - start
    sentences = []
    for (text, ids), r in zip(seqs, results):
        pooled = np.asarray(r["pooled"][0], np.int64)
        want = forward(model, ids)["pooled"]
        got = pooled / max(float(np.linalg.norm(pooled.astype(np.float64))), 1e-30)
        ref = _float_embedding(args.model, args.layers, text, ids).astype(np.float64)
        cosine = float(got @ ref / np.linalg.norm(ref))
        sentences.append({"text": text, "tokens": ids.tolist(), "cosine": cosine,
                          "bit_exact": bool(np.array_equal(pooled, want)),
                          "cycles": r["cycles"], "seconds": r["seconds"]})
    layers = args.layers or full.num_layers
    summary = {"model": args.model, "layers": layers, "simulator": args.simulator,
               "config": config.params, "seconds": total}
    if args.json:
        print(json.dumps({"sentences": sentences, **summary}))
    else:
        p = config.params
        print(f"encoder {args.model}, {layers} of {full.num_layers} layers, {p['rows']} x "
              f"{p['cols']} array, port {p['port_width']} bits, max_len {model.max_len}, "
              f"{args.simulator} ({total:.1f} s with the build)")
        for n, s in enumerate(sentences, 1):
            what = repr(s["text"]) if s["text"] is not None else "token ids"
            print(f"{n:>3}. {what}: {len(s['tokens'])} tokens, cosine {s['cosine']:.4f} to "
                  f"float, bit-exact {'yes' if s['bit_exact'] else 'NO'}, {s['cycles']:,} "
                  f"cycles ({s['seconds']:.2f} s wall)")
    return 0 if all(s["bit_exact"] for s in sentences) else 1


#: This group's subcommands, joined into ``gen.cli.COMMANDS``.
COMMANDS = {"run": (add_run_parser, run_run)}
