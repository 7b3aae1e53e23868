"""Accuracy of the softmax engine on real attention scores (``lutra bench softmax``).

Pre-softmax scores Q.K^T / sqrt(d) of every layer and head of all-MiniLM-L6-v2 (NumPy forward
pass of :mod:`sim.minilm` on its sentences) are quantised to int8, ``x = clip(round(s / S))``,
two ways: with ONE scale ``S`` for every layer and head (default 1/8: one generated engine), and
with a power-of-two scale per layer and head that clips nothing.
Each configuration's golden model (bit-exact to the RTL) is compared with

* the exact softmax of the dequantised int8 inputs ``x * S``: the engine's own error;
* the float softmax of the original scores: what a user sees (adds the int8 quantisation);

in output LSB (``2**-out_bits`` for recip/lut2d, ``2**-(out_bits-1)`` for ShiftMax, its own
output scale), plus argmax agreement with float and table bytes. A sweep of table sizes is
plotted as error versus table bytes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.golden.softmax import LUT_DEFAULTS, lut_softmax, shiftmax, table_bytes

__all__ = ["main", "minilm_scores", "quantised_scores", "measure", "SWEEP", "METHOD_PARAMS"]

#: The benchmark's one file in ``--out``.
PLOT = "softmax_error_vs_table_bytes.png"

#: Configurations plotted against table bytes (the defaults are among them).
SWEEP = (
    [("recip", {"exp_bits": e, "recip_index_bits": r, "recip_bits": r + 3})
     for e, r in ((8, 4), (10, 5), (10, 6), (12, 6), (12, 7), (12, 8), (14, 8), (14, 9),
                  (16, 10))]
    + [("lut2d", {"exp_bits": e, "frac_bits": f, "log_steps": ls, "pow_index_bits": p,
                  "pow_steps": ps, "pow_bits": pb})
       for e, f, ls, p, ps, pb in ((8, 10, 5, 3, 3, 10), (10, 10, 5, 4, 3, 10),
                                   (10, 11, 6, 5, 3, 11), (11, 12, 6, 5, 3, 11),
                                   (12, 12, 7, 4, 4, 12), (12, 12, 7, 6, 4, 12),
                                   (14, 12, 7, 6, 4, 12), (12, 12, 7, 8, 2, 12),
                                   (14, 14, 8, 9, 3, 14))]
)

#: Parameters of each LUT method (the rest belong to the other method).
METHOD_PARAMS = {"recip": ("exp_bits", "recip_index_bits", "recip_bits"),
                 "lut2d": ("exp_bits", "frac_bits", "log_steps", "pow_index_bits", "pow_steps",
                           "pow_bits")}


@dataclass
class Scores:
    """Rows sharing one input scale: int8 ``x`` and float ``s``, each [rows, T]."""

    groups: list[tuple[np.ndarray, np.ndarray, float]]
    clipped: float

    @property
    def scales(self) -> list[float]:
        return sorted({scale for _, _, scale in self.groups})


def minilm_scores(sentences: int | None = None) -> list[np.ndarray]:
    """Float scores [6 layers][12, T, T] of each sentence, flattened to a list of layers."""
    from sim.minilm import SENTENCES, forward

    return [s.astype(np.float64) for sentence in SENTENCES[:sentences]
            for s in forward(sentence)["scores"]]


def quantised_scores(layers: list[np.ndarray], scale: float | None) -> Scores:
    """int8 scores with one ``scale`` for everything, or (``None``) one power-of-two scale per
    layer and head, the smallest that clips nothing: ``2**ceil(log2(max|s| / 127))``."""
    groups, clipped, total = [], 0, 0
    if scale is None:
        peak = np.zeros((6, 12))
        for n, s in enumerate(layers):
            peak[n % 6] = np.maximum(peak[n % 6], np.abs(s).max(axis=(1, 2)))
        head_scales = 2.0 ** np.ceil(np.log2(peak / 127))
    for n, s in enumerate(layers):
        parts = [(s.reshape(-1, s.shape[-1]), scale)] if scale is not None else [
            (s[h], float(head_scales[n % 6, h])) for h in range(s.shape[0])]
        for rows, sc in parts:
            q = np.round(rows / sc)
            clipped += int(((q < -128) | (q > 127)).sum())
            total += q.size
            groups.append((np.clip(q, -128, 127).astype(np.int64), rows, sc))
    return Scores(groups, clipped / total)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Result:
    method: str
    params: dict
    table_bytes: int
    max_exact: float
    max_unsaturated: float
    mean_exact: float
    max_float: float
    mean_float: float
    argmax: float
    over_one: int


def measure(method: str, params: dict, scores: Scores) -> Result:
    """Errors of one configuration over every row of ``scores``."""
    out_bits = 8
    max_exact = max_float = max_unsat = 0.0
    sum_exact = sum_float = 0.0
    n = agree = rows = over = 0
    for x, s, scale in scores.groups:
        if method == "shiftmax":
            q, out_scale = shiftmax(x, scale, out_bits=out_bits)
        else:
            q = lut_softmax(x, scale=scale, method=method, out_bits=out_bits, **params)
            out_scale = 2.0 ** -out_bits
        lsb = 1.0 / out_scale
        exact = _softmax(x * scale) * lsb
        e1 = np.abs(q - exact)
        # where the exact value is above the largest code (1.0 - 1 LSB) the output saturates
        # and errs by up to 1 LSB whatever the method: the rest shows the method's own margin
        max_unsat = max(max_unsat, float(np.where(exact <= lsb - 1, e1, 0).max()))
        ref = _softmax(s) * lsb
        e2 = np.abs(q - ref)
        max_exact, max_float = max(max_exact, e1.max()), max(max_float, e2.max())
        sum_exact += e1.sum()
        sum_float += e2.sum()
        n += q.size
        # agreement: the float argmax gets the row's largest output (ties allowed)
        top = np.take_along_axis(q, ref.argmax(axis=-1)[:, None], axis=-1)[:, 0]
        agree += int((top == q.max(axis=-1)).sum())
        rows += q.shape[0]
        over += int((q.sum(axis=-1) > lsb).sum())
    size = max(table_bytes(method, scale=sc, **params) for sc in scores.scales)
    return Result(method, params, size, float(max_exact), max_unsat, sum_exact / n, float(max_float),
                  sum_float / n, agree / rows, over)


def _describe(method: str, params: dict) -> str:
    if method == "recip":
        return (f"exp {params['exp_bits']}b, recip idx {params['recip_index_bits']}+1b x "
                f"{params['recip_bits']}b")
    if method == "lut2d":
        return (f"exp {params['exp_bits']}b, log {params['log_steps']} steps, exp2 "
                f"{1 << params['pow_index_bits']} x {params['pow_bits']}b + "
                f"{params['pow_steps']} steps, {params['frac_bits']} fraction bits")
    return "n = 15"


def _row(label: str, r: Result) -> str:
    return (f"| {label} | {r.table_bytes} | {r.max_exact:.3f} | {r.max_unsaturated:.3f} | "
            f"{r.mean_exact:.3f} | "
            f"{r.max_float:.3f} | {r.mean_float:.3f} | {100 * r.argmax:.2f} % | {r.over_one} |")


HEADER = ("| configuration | table bytes | max err vs exact(int8) | same, unsaturated | mean | "
          "max err vs float | mean | argmax agreement | rows summing > 1 |\n"
          "|---|---|---|---|---|---|---|---|---|")


def _plot(sweep: list[Result], shift: Result, path: Path, scale: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, marker, color in (("recip", "o", "tab:blue"), ("lut2d", "s", "tab:green")):
        pts = sorted((r.table_bytes, r.max_exact, r.mean_exact, r.max_unsaturated)
                     for r in sweep if r.method == method)
        b = [p[0] for p in pts]
        ax.plot(b, [p[1] for p in pts], marker=marker, color=color, label=f"{method}: max")
        ax.plot(b, [p[3] for p in pts], marker=marker, color=color, linestyle=":",
                fillstyle="none", label=f"{method}: max where 1.0 does not saturate")
        ax.plot(b, [p[2] for p in pts], marker=marker, color=color, linestyle="--",
                label=f"{method}: mean")
    ax.axhline(shift.max_exact, color="grey", linestyle=":",
               label=f"shiftmax (0 bytes): max {shift.max_exact:.1f} LSB of 2^-7")
    ax.axhline(1.0, color="red", linewidth=0.8, label="1 LSB target")
    ax.axvline(700, color="black", linewidth=0.8, linestyle="-.", label="700 bytes")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("table bytes")
    ax.set_ylabel("|error| vs exact softmax of int8 inputs (LSB of 2^-8)")
    ax.set_title(f"Softmax engine on all-MiniLM-L6-v2 attention (int8, S = {scale:g})")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", linewidth=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> int:
    from gen.cli_common import add_report_out
    from gen.outputs import report_files
    parser = argparse.ArgumentParser(prog="lutra bench softmax", description=__doc__.split("\n")[0])
    add_report_out(parser, PLOT)
    parser.add_argument("--scale", type=float, default=0.125,
                        help="int8 scale of the scores, for every layer and head (default 1/8)")
    parser.add_argument("--sentences", type=int, default=None,
                        help="use only the first N sentences (default all)")
    args = parser.parse_args(argv)
    if not args.scale > 0:
        parser.error(f"--scale must be positive, not {args.scale!r}")
    out = report_files(args.out, [PLOT], owner="bench-softmax", force=args.force)
    started = time.monotonic()
    layers = minilm_scores(args.sentences)
    fixed = quantised_scores(layers, args.scale)
    rows = sum(x.shape[0] for x, _, _ in fixed.groups)
    elements = sum(x.size for x, _, _ in fixed.groups)
    print(f"all-MiniLM-L6-v2 attention scores: {len(layers) // 6} sentences x 6 layers x 12 "
          f"heads = {rows} rows, {elements} elements.")
    defaults = {k: v for k, v in LUT_DEFAULTS.items() if k != "in_bits"}
    configs = {
        "recip (default)": ("recip", {k: defaults[k] for k in METHOD_PARAMS["recip"]}),
        "lut2d (default)": ("lut2d", {k: defaults[k] for k in METHOD_PARAMS["lut2d"]}),
        "shiftmax (I-ViT, LSB = 2^-7)": ("shiftmax", {}),
    }
    per_head = quantised_scores(layers, None)
    schemes = (
        (f"int8 with ONE scale S = {args.scale:g} for every layer and head (one generated "
         f"engine); {100 * fixed.clipped:.3f} % of scores clipped", fixed),
        (f"int8 with a power-of-two scale per layer and head, 2**ceil(log2(max|s| / 127)) "
         f"(S in {{{', '.join(f'{s:g}' for s in per_head.scales)}}}, nothing clipped; one "
         f"engine per scale, table bytes = the largest)", per_head),
    )
    results = {}
    for title, scores in schemes:
        print(f"\nDefaults, {title}.\nErrors in output LSB; argmax: the float argmax gets the "
              f"row's largest output.\n")
        print(HEADER)
        for label, (method, params) in configs.items():
            results[label] = measure(method, params, scores)
            print(_row(label, results[label]))
    sweep = [measure(method, params, fixed) for method, params in SWEEP]
    print(f"\nSweep of table sizes (out_bits = 8, S = {args.scale:g} everywhere)\n")
    print(HEADER)
    for r in sweep:
        default = all(defaults[k] == v for k, v in r.params.items())
        print(_row(f"{r.method}: {_describe(r.method, r.params)}"
                   f"{' (default)' if default else ''}", r))
    shift = measure("shiftmax", {}, fixed)
    with out:
        _plot(sweep, shift, out.stage / PLOT, args.scale)
    print(f"\nwrote {out.path / PLOT} ({time.monotonic() - started:.0f} s)")
    return 0
