"""``lutra run encoder``: sentences through the simulated RTL of the encoder accelerator.

Its ``COMMANDS`` table is joined into :data:`gen.cli.COMMANDS`. The host tokenizes
(all-MiniLM-L6-v2's WordPiece tokenizer) and looks the embedding rows up (the design takes the
int16 embedding sums, ``docs/blocks/encoder.md``); the generated Verilog runs under Verilator
with a C++ harness as token source, external memory (the weight image) and output sink
(``sim/tb/encoder_harness.cpp``), or under Icarus with the cocotb testbench
(``sim/tb/encoder_tb.py``). Each sentence is its own batch, or with ``--batch`` all are one
(one pass over the weights). Per sentence: the embedding's
cosine to the float model, whether the pooled sums equal the integer specification
(``sim.golden.encoder.forward``, truncated to ``--layers``) bit for bit, and the cycles.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .cli_common import UsageError, add_force, parse_block_flags
from .outputs import OutputDir

__all__ = ["add_run_parser", "run_run", "run_config", "simulate", "evaluate", "demo",
           "DEMO_TEXTS", "DEMO_CONFIGS", "LAST_FMAX", "TARGET_MHZ"]

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
              "[--layers N] [--simulator verilator|icarus] [--batch] [--json] "
              "[--build-dir DIR [--force]] [--PARAM VALUE ...]")
    # Checked in run_run, not by choices: a flag before it is then reported as such.
    p.add_argument("block", help="the design to run (encoder)")
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
    p.add_argument("--batch", action="store_true",
                   help="run all sentences as one batch (one pass over the weights; at most "
                        "max_seqs sentences and max_tokens tokens)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--build-dir", type=Path, help=f"default {DEFAULT_RUN_DIR}")
    add_force(p)
    p.set_defaults(takes_params=True)
    return p


def run_config(model: str, layers: int, flags: dict):
    """The block configuration of a run: ``RUN_DEFAULTS``, no debug stream, ``max_tokens =
    max_len``, then the given parameter ``flags``. (``max_seqs`` is 2 unless a flag says
    otherwise: a one-entry length memory has a zero-width address Verilator rejects.)"""
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
        ids = _load_token_ids(args.token_ids)
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


_NPY_MAGIC = b"\x93NUMPY"
_NPY_EXPECTED = "expected a .npy file of integer token ids (numpy.save), 1-D or 2-D"


def _load_token_ids(path: Path) -> np.ndarray:
    """The array in the .npy file ``path``; anything else (text, a .npz archive, a damaged or
    pickled .npy) is a one-line error saying what is expected."""
    with open(path, "rb") as file:
        head = file.read(len(_NPY_MAGIC))
        if head != _NPY_MAGIC:
            what = "a .npz archive, not a .npy file" if head.startswith(b"PK") else \
                "not a NumPy .npy file"
            raise UsageError(f"{path}: {what}; {_NPY_EXPECTED}")
        file.seek(0)
        try:
            return np.load(file, allow_pickle=False)
        except (ValueError, EOFError) as error:
            raise UsageError(f"{path}: not a readable .npy file ({error}); "
                             f"{_NPY_EXPECTED}") from None


def _float_embedding(name: str, layers: int, text: str | None, ids: np.ndarray) -> np.ndarray:
    from sim.encoder_driver import float_weights
    from sim.golden.encoder import forward_float
    if name == "minilm" and not layers and text is not None:
        from sim.minilm import forward
        return forward(text)["embedding"]
    return forward_float(float_weights(name, layers), ids)["embedding"]


def simulate(config, model, params, seqs: list[np.ndarray], *, simulator: str, work: Path,
             batch: bool = False, progress=None) -> tuple[list[dict], dict]:
    """Run ``seqs`` through the RTL of ``config`` (its Verilog is written into ``work``), each
    its own batch or, with ``batch``, all in one (one pass over the weights).

    Returns per sequence ``cycles`` (of its batch), ``pooled`` and ``seconds`` (wall time of its
    batch), and the timing ``{"build": s, "cached": bool, "simulation": s}`` (Verilator; the
    Icarus run's build is inside its ``simulation``). ``progress`` (a ``gen.progress.Progress``)
    is told the steps and, per layer of the model, the passes done.
    """
    from sim.runner import missing_reason

    from .verilog import top_name, write_outputs
    reason = missing_reason(simulator)
    if reason is not None:
        raise UsageError(f"cannot run {simulator}: {reason}")
    if batch:
        _check_batch(params, seqs)
    batches = [list(seqs)] if batch else [[ids] for ids in seqs]
    if simulator == "icarus":
        return _simulate_icarus(config, batches, work), {}
    from sim.encoder_driver import build_harness, harness_exe, run_harness
    from sim.encoder_image import build_image
    info = write_outputs(config, work)
    verilog = work / info["verilog"]
    timing = {"cached": harness_exe(verilog, work).exists()}
    if progress is not None:
        progress.step("Verilator build" + (" (cached)" if timing["cached"] else ""))
    start = time.perf_counter()
    try:
        with _ticking(progress):
            exe = build_harness(verilog, top_name(config), work)
        timing["build"] = time.perf_counter() - start
        if progress is not None:
            progress.step(f"simulation, {len(batches)} batch{'es' if len(batches) > 1 else ''}")
        image = build_image(model, params)
        on_pass = None if progress is None else _layer_counter(image.descriptors(), progress)
        start = time.perf_counter()
        with _ticking(progress):
            results = run_harness(exe, model, params, batches, workdir=work, on_pass=on_pass,
                                  image=image)
        timing["simulation"] = time.perf_counter() - start
    except RuntimeError as error:
        raise UsageError(str(error)) from None
    per_seq = [r | {"pooled": [pooled]} for r in results for pooled in r["pooled"]]
    return per_seq, timing


def _ticking(progress):
    import contextlib
    return contextlib.nullcontext() if progress is None else progress.ticking()


def _layer_counter(descriptors: list[dict], progress):
    """``on_pass`` for :func:`sim.encoder_driver.run_harness`: reports ``layer N of M`` as each
    layer's first pass starts (a pass's layer is its debug tag // 16)."""
    from hw.encoder.params import EMBEDDING_LN_TAG, OPS
    layers = max(d["tag"] // 16 for d in descriptors
                 if d["op"] != OPS["end"] and d["tag"] < EMBEDDING_LN_TAG) + 1
    seen: set[int] = set()

    def on_pass(index: int, cycle: int) -> None:
        tag = descriptors[index]["tag"]
        if tag < EMBEDDING_LN_TAG and tag // 16 not in seen:
            seen.add(tag // 16)
            progress.status(f"layer {len(seen)} of {layers}, cycle {cycle:,}")
    return on_pass


def _simulate_icarus(config, batches: list[list[np.ndarray]], work: Path) -> list[dict]:
    from sim.runner import run_cocotb
    run_in, run_out = work / "run.json", work / "result.json"
    run_in.write_text(json.dumps([[ids.tolist() for ids in batch] for batch in batches]))
    run_out.unlink(missing_ok=True)
    start = time.perf_counter()
    result = run_cocotb(config, "icarus", build_root=work.parent, testcase="run_batches",
                        quiet=True, extra_env={"LUTRA_ENCODER_RUN": str(run_in.resolve()),
                                               "LUTRA_ENCODER_RESULT": str(run_out.resolve())})
    if not result.passed or not run_out.exists():
        raise UsageError(f"the icarus run failed (log: {result.build_dir / 'test.log'})")
    seconds = (time.perf_counter() - start) / len(batches)
    return [r | {"pooled": [pooled], "seconds": seconds}
            for r in json.loads(run_out.read_text()) for pooled in r["pooled"]]


def evaluate(name: str, layers: int, model, seqs: list[tuple[str | None, np.ndarray]],
             results: list[dict]) -> list[dict]:
    """Per sequence: ``text``, ``tokens``, ``cosine`` of the RTL embedding to the float model's,
    ``bit_exact`` (pooled sums equal the specification's), ``cycles``, ``seconds``, and the two
    unit embeddings ``rtl`` and ``float`` (float64 arrays)."""
    from sim.golden.encoder import forward
    out = []
    for (text, ids), r in zip(seqs, results):
        pooled = np.asarray(r["pooled"][0], np.int64)
        got = pooled / max(float(np.linalg.norm(pooled.astype(np.float64))), 1e-30)
        ref = _float_embedding(name, layers, text, ids).astype(np.float64)
        ref = ref / np.linalg.norm(ref)
        out.append({"text": text, "tokens": ids.tolist(), "cosine": float(got @ ref),
                    "bit_exact": bool(np.array_equal(pooled, forward(model, ids)["pooled"])),
                    "cycles": r["cycles"], "seconds": r["seconds"], "rtl": got, "float": ref})
    return out


def run_run(args) -> int:
    from sim.encoder_driver import load_model

    from .blocks import get_block
    from .blocks.encoder import encoder_model, encoder_params
    if args.block != "encoder":
        raise UsageError(f"argument block: invalid choice: {args.block!r} (choose from "
                         f"'encoder')")
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
    if args.batch:
        _check_batch(params, [ids for _, ids in seqs])     # before anything is written
    start = time.perf_counter()
    name = f"{config.key()}-{args.simulator}"
    # Lutra's default directory is its own; one the user names must pass the checks.
    with OutputDir(args.build_dir or DEFAULT_RUN_DIR, owner="run", prune=False,
                   force=args.force or args.build_dir is None) as out:
        # make cannot take a '=' in the path of its sources (config keys have them).
        work = out.claim(name.replace("=", "_"))
        if args.simulator == "icarus":
            out.claim(name)             # the cocotb runner's own directory, beside it
        results, _ = simulate(config, model, params, [ids for _, ids in seqs],
                              simulator=args.simulator, work=work, batch=args.batch)
    total = time.perf_counter() - start
    sentences = [{k: v for k, v in s.items() if k not in ("rtl", "float")}
                 for s in evaluate(args.model, args.layers, model, seqs, results)]
    layers = args.layers or full.num_layers
    summary = {"model": args.model, "layers": layers, "simulator": args.simulator,
               "batch": args.batch, "config": config.params, "seconds": total}
    if args.json:
        print(json.dumps({"sentences": sentences, **summary}))
    else:
        p = config.params
        print(f"encoder {args.model}, {layers} of {full.num_layers} layers, {p['rows']} x "
              f"{p['cols']} array, port {p['port_width']} bits, max_len {model.max_len}, "
              f"{args.simulator} ({total:.1f} s with the build)"
              + (", one batch" if args.batch else ""))
        for n, s in enumerate(sentences, 1):
            what = repr(s["text"]) if s["text"] is not None else "token ids"
            print(f"{n:>3}. {what}: {len(s['tokens'])} tokens, cosine {s['cosine']:.4f} to "
                  f"float, bit-exact {'yes' if s['bit_exact'] else 'NO'}, {s['cycles']:,} "
                  f"cycles ({s['seconds']:.2f} s wall)")
    return 0 if all(s["bit_exact"] for s in sentences) else 1


def _check_batch(params, seqs: list[np.ndarray]) -> None:
    tokens = sum(len(ids) for ids in seqs)
    if len(seqs) > params.max_seqs:
        raise UsageError(f"--batch: {len(seqs)} sentences; this configuration takes at most "
                         f"{params.max_seqs} (max_seqs)")
    if tokens > params.max_tokens:
        raise UsageError(f"--batch: {tokens} tokens; this configuration takes at most "
                         f"{params.max_tokens} (max_tokens)")


# ---- lutra demo: the encoder accelerator on two sentences -------------------------------------

#: The two sentences of ``lutra demo``: near in meaning, so their embeddings' cosine is high.
DEMO_TEXTS = ("The cat sat on the mat.", "A cat is sitting on a rug.")

#: Array configuration of ``lutra demo`` per model. MiniLM: the ECP5-85F build of
#: docs/blocks/encoder.md (8 x 8 array, 1 attention engine, max_len = max_tokens = 32), so the
#: cycles and the measured clock belong to one design.
DEMO_CONFIGS = {
    "minilm": {"model_max_len": 32, "max_tokens": 32, "rows": 8, "cols": 8, "engines": 1,
               "max_seqs": 8, "debug": False},
    "tiny": {"max_tokens": 32, "max_seqs": 2, "debug": False},
}

#: The last clock measured for a demo configuration on an FPGA: (MHz, what it is and where it
#: comes from). Update it with the next routed build of the same configuration.
LAST_FMAX = {
    "minilm": (55.1, "routed on the LFE5U-85F, seed 1, router2, commit df7b046, 2026-12-01 "
                     "(docs/blocks/encoder.md)"),
}


#: The clock the FPGA build aims at (issue 13), printed beside :data:`LAST_FMAX`.
TARGET_MHZ = 100.0


def _flags(params: dict) -> str:
    return " ".join(f"--{k.replace('_', '-')} {str(v).lower() if isinstance(v, bool) else v}"
                    for k, v in params.items())


def demo(model_name: str, out, *, progress) -> int:
    """``lutra demo``: generate the encoder for ``model_name`` into ``out`` (a
    ``gen.outputs.OutputDir``: Verilog, manifest, weight image), run :data:`DEMO_TEXTS` through
    its RTL under Verilator as one batch, print per sentence the cosine to the float model and
    bit-exactness, their cosine to each other, the cycles and the latency at :data:`LAST_FMAX`.
    Returns the exit status (1 if a sentence is not bit-exact)."""
    from sim.encoder_driver import load_model
    from sim.minilm import load_tokenizer, token_ids

    from .blocks.encoder import encoder_model, encoder_params
    from .progress import format_seconds
    wall = time.perf_counter()
    progress.step(f"generate the encoder for {model_name}")
    full = load_model(model_name)
    config = run_config(model_name, 0, DEMO_CONFIGS[model_name])
    model, params = encoder_model(config.params), encoder_params(config.params)
    vocab = model.embeddings.word.shape[0]
    seqs = [(text, token_ids(text) % vocab) for text in DEMO_TEXTS]
    work = out.claim(f"encoder-{model_name}")
    p = params
    print(f"== encoder accelerator for {model_name}: {p.layers} layers, hidden {p.hidden}, "
          f"{p.heads} heads, ffn {p.ffn}; {p.rows} x {p.cols} GEMM array, {p.engines} attention "
          f"engine{'s' if p.engines > 1 else ''}, max_len {p.max_len}, {p.port_width}-bit "
          f"weight port", flush=True)
    results, timing = simulate(config, model, params, [ids for _, ids in seqs],
                               simulator="verilator", work=work, batch=True, progress=progress)
    size = (work / "image.bin").stat().st_size
    size_text = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"
    print(f"   generated {work}/: lutra_encoder.v, lutra_encoder.json (manifest), image.bin "
          f"(weight image, {size_text}; layout: docs/blocks/encoder.md)")
    print(f"   Verilator build {format_seconds(timing['build'])}"
          + (" (cached: same Verilog)" if timing["cached"] else "")
          + f", simulation {format_seconds(timing['simulation'])}")
    progress.step("float model and specification")
    sentences = evaluate(model_name, 0, model, seqs, results)
    cycles = results[0]["cycles"]
    tokens = sum(len(s["tokens"]) for s in sentences)
    print(f"== {len(sentences)} sentences as one batch ({tokens} tokens; each weight tile read "
          f"once for both), {full.num_layers} layers, RTL under Verilator")
    tokenizer = load_tokenizer()
    for n, s in enumerate(sentences, 1):
        words = " ".join(tokenizer.encode(s["text"]).tokens)
        print(f"{n:>3}. {s['text']!r}: {len(s['tokens'])} tokens: {words}"
              + ("" if model_name == "minilm" else f" (ids mod {vocab}: {s['tokens']})"))
        print(f"     cosine to the float model {s['cosine']:.4f}, bit-exact to the integer "
              f"specification: {'yes' if s['bit_exact'] else 'NO'}")
    a, b = sentences[:2]
    print(f"   cosine between the two sentences: RTL {a['rtl'] @ b['rtl']:.4f}, float "
          f"{a['float'] @ b['float']:.4f}")
    seconds = results[0]["seconds"]
    print(f"   cycles: {cycles:,} for the batch ({format_seconds(seconds)} of simulation, "
          f"{cycles / seconds:,.0f} cycles/s)")
    if model_name in LAST_FMAX:
        mhz, what = LAST_FMAX[model_name]
        for clock in (mhz, TARGET_MHZ):
            latency = cycles / (clock * 1e6)
            print(f"   at {clock:g} MHz: {latency * 1e3:.0f} ms for the batch, "
                  f"{len(sentences) / latency:.1f} sentences/s")
        print(f"   ({mhz} MHz: {what}; {TARGET_MHZ:g} MHz: the issue's target clock)")
        build = {"model": model_name, **DEMO_CONFIGS[model_name]}
        print(f"== FPGA build of this configuration (not run here: about 40 minutes on 2 "
              f"cores):\n   lutra build encoder {_flags(build)} --target ecp5-85f --freq 100 "
              f"--seed 1 --router router2")
    else:
        print("   (no FPGA clock measured for this configuration)")
    exact = all(s["bit_exact"] for s in sentences)
    print(f"== {'all bit-exact' if exact else 'NOT bit-exact'}; demo took "
          f"{format_seconds(time.perf_counter() - wall)}")
    return 0 if exact else 1


#: This group's subcommands, joined into ``gen.cli.COMMANDS``.
COMMANDS = {"run": (add_run_parser, run_run)}
