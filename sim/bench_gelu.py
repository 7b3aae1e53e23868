"""``lutra bench gelu``: accuracy of the three GELU methods on real all-MiniLM-L6-v2 activations.

Every sentence of :data:`sim.minilm.SENTENCES` goes through the NumPy forward pass; each layer's
pre-GELU feed-forward activations (``[T, 1536]``) form one tensor, quantised symmetrically with
one scale per tensor: ``S8 = max|x| / 127``, ``q = clip(round(x / S8), -128, 127)`` (and
``S16 = max|x| / 32767`` for the 16-bit i-GELU input). Each method's integer output, dequantised
with its output scale, is compared with the exact erf GELU of the quantised input (the unit's own
error) and of the float activation (end to end), in units of ``S8``; then the output is
requantised to int8 at ``S8`` with the TFLite requantizer (``sim.golden.gemm.requantize``) and
compared again. The plot shows each method's curve and error over every int8 input code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .golden.gelu import gelu_exact, i_gelu, lut_gelu, shift_gelu
from .golden.gemm import quantize_multiplier, requantize

__all__ = ["METHODS", "collect_activations", "evaluate", "main"]

#: (label, method function of (q8, q16, s8, s16) -> (y, out_scale))
METHODS = (
    ("shift row (I-ViT, rows of 1536)",
     lambda q8, q16, s8, s16: shift_gelu(q8, s8, max_mode="row")),
    ("shift row, rows of 256",
     lambda q8, q16, s8, s16: _rows_of(q8, s8, 256)),
    ("shift static (m = 127)",
     lambda q8, q16, s8, s16: shift_gelu(q8, s8, max_mode="static")),
    ("poly (I-BERT) int8 input", lambda q8, q16, s8, s16: i_gelu(q8, s8, in_width=8)),
    ("poly (I-BERT) int16 input", lambda q8, q16, s8, s16: i_gelu(q16, s16, in_width=16)),
    ("lut int8 (out_bits 8)", lambda q8, q16, s8, s16: lut_gelu(q8, s8)),
)


def _rows_of(q8: np.ndarray, s8: float, length: int):
    rows = q8.reshape(q8.shape[0], -1, length)
    y, out_scale = shift_gelu(rows, s8, max_mode="row")
    return y.reshape(q8.shape), out_scale


def _quantise(x: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    hi = (1 << (bits - 1)) - 1
    scale = float(np.abs(x).max()) / hi
    return np.clip(np.rint(x / scale), -hi - 1, hi).astype(np.int64), scale


def collect_activations(count: int | None = None) -> list[np.ndarray]:
    """Per layer, the pre-GELU activations of every sentence stacked: float64 ``[sum T, 1536]``."""
    from .minilm import SENTENCES, forward
    layers: list[list[np.ndarray]] = []
    for sentence in SENTENCES[:count]:
        for layer, pre in enumerate(forward(sentence)["ffn_pre"]):
            if len(layers) <= layer:
                layers.append([])
            layers[layer].append(pre.astype(np.float64))
    return [np.concatenate(chunks) for chunks in layers]


def _requantise_int8(y: np.ndarray, out_scale: float, s8: float) -> np.ndarray:
    # i-GELU's output scale is negative: requantise -y at |out_scale|.
    sign = 1 if out_scale > 0 else -1
    multiplier, shift = quantize_multiplier(abs(out_scale) / s8)
    return requantize(sign * y, multiplier, shift)


def evaluate(layers: list[np.ndarray]) -> list[dict]:
    """Max / mean absolute errors in units of S8 per method, over every layer's activations."""
    stats = {label: {"unit": [], "float": [], "int8": []} for label, _ in METHODS}
    for x in layers:
        q8, s8 = _quantise(x, 8)
        q16, s16 = _quantise(x, 16)
        exact_float = gelu_exact(x)
        for label, method in METHODS:
            y, out_scale = method(q8, q16, s8, s16)
            grid = q16 * s16 if "int16" in label else q8 * s8
            exact_grid = gelu_exact(grid)
            y8 = _requantise_int8(y, out_scale, s8)
            stats[label]["unit"].append(np.abs(y * out_scale - exact_grid).ravel() / s8)
            stats[label]["float"].append(np.abs(y * out_scale - exact_float).ravel() / s8)
            stats[label]["int8"].append(np.abs(y8 * s8 - exact_grid).ravel() / s8)
    rows = []
    for label, _ in METHODS:
        row = {"method": label}
        for key, errors in stats[label].items():
            errors = np.concatenate(errors)
            row[f"{key}_max"], row[f"{key}_mean"] = float(errors.max()), float(errors.mean())
        rows.append(row)
    return rows


def table(rows: list[dict], elements: int, scales: list[float]) -> str:
    """The accuracy table as Markdown."""
    lines = [
        f"GELU accuracy on all-MiniLM-L6-v2 feed-forward pre-activations: {elements} values "
        f"(6 layers), one scale per layer, S8 = max|x| / 127 in "
        f"[{min(scales):.4f}, {max(scales):.4f}]. Errors in units of S8.",
        "",
        "| method | max err | mean err | max err vs float x | mean err vs float x "
        "| max err, int8 out | mean err, int8 out |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['unit_max']:.3f} | {r['unit_mean']:.4f} | "
                     f"{r['float_max']:.3f} | {r['float_mean']:.4f} | {r['int8_max']:.3f} | "
                     f"{r['int8_mean']:.4f} |")
    return "\n".join(lines)


def plot(path: Path, scale: float, row_max: int) -> None:
    """Each method's curve and error over every int8 code at input scale ``scale``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codes = np.arange(-128, 128)
    x = codes * scale
    exact = gelu_exact(x)
    # Row mode: each code in a row whose maximum is max(code, row_max), a typical real maximum.
    pairs = np.stack([codes, np.full_like(codes, row_max)], axis=1)
    q16 = np.clip(np.rint(x / (scale * 127 / 32767)), -32768, 32767).astype(np.int64)
    curves = {
        f"shift row (row max {row_max})": shift_gelu(pairs, scale)[0][:, 0]
        * (scale / 128),
        "shift static": shift_gelu(codes, scale, max_mode="static")[0] * (scale / 128),
        "poly int8 (off scale)": np.multiply(*i_gelu(codes, scale, in_width=8)),
        "poly int16": np.multiply(*i_gelu(q16, scale * 127 / 32767, in_width=16)),
        "lut": lut_gelu(codes, scale)[0] * (scale / 128),
    }
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    top.plot(x, exact, "k-", linewidth=2.5, label="exact erf GELU")
    for label, y in curves.items():
        top.plot(x, y, linewidth=1, label=label)
        bottom.plot(x, (y - exact) / scale, linewidth=1, label=label)
    # i-GELU on int8 codes at this scale is off by hundreds of steps: keep the axes on the others.
    top.set_ylim(exact.min() - 1, exact.max() + 1)
    bottom.set_yscale("symlog", linthresh=1.0)
    top.set_ylabel("GELU(x)")
    top.set_title(f"Integer GELU methods over the int8 input range (S = {scale:.4f})")
    top.legend(fontsize=8)
    top.grid(alpha=0.3)
    bottom.set_ylabel("error (input steps S, symlog)")
    bottom.set_xlabel("x = code * S")
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from gen.cli_common import add_report_out
    from gen.outputs import report_files
    parser = argparse.ArgumentParser(prog="lutra bench gelu", description=__doc__.split("\n")[0])
    add_report_out(parser, "gelu_accuracy.md and gelu_curves.png")
    parser.add_argument("--sentences", type=int, default=None,
                        help="use only the first N sentences (default: all)")
    args = parser.parse_args(argv)
    if args.sentences is not None and args.sentences < 1:
        parser.error(f"--sentences must be >= 1, not {args.sentences}")
    out = report_files(args.out, ["gelu_accuracy.md", "gelu_curves.png"], owner="bench-gelu",
                       force=args.force)
    layers = collect_activations(args.sentences)
    scales = [float(np.abs(x).max()) / 127 for x in layers]
    text = table(evaluate(layers), sum(x.size for x in layers), scales)
    print(text)
    # The curve plot uses the median layer scale and the median row maximum in its codes.
    median = int(np.argsort(scales)[len(scales) // 2])
    q8 = np.clip(np.rint(layers[median] / scales[median]), -128, 127)
    with out:
        (out.stage / "gelu_accuracy.md").write_text(text + "\n")
        plot(out.stage / "gelu_curves.png", scales[median], int(np.median(q8.max(axis=1))))
    print(f"\nwrote {out.path / 'gelu_accuracy.md'} and {out.path / 'gelu_curves.png'}")
    return 0
