"""Stream driver of the LayerNorm block: plans of parameter loads and rows, their beats, and
the golden result.

Used by the Amaranth-simulator tests, the cocotb testbench and ``lutra sim``, so all of them
exercise the same protocol and compare against the same golden model
(:func:`sim.golden.layernorm.layer_norm_int`). A *plan* is a list of steps, each either
``("load", ChannelParams)`` or ``("rows", [row, ...])``, sent in order: a load applies to the
rows after it (the block's rule: rows whose first element is accepted after the load's last
beat).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .golden.layernorm import fold_layer_norm, layer_norm_int

__all__ = ["ChannelParams", "zero_params", "random_params", "folded_params", "param_beats",
           "row_beats", "expected", "from_beats", "random_rows", "plan_inputs",
           "minilm_embedding_rows"]


class ChannelParams(NamedTuple):
    """One parameter load: per-channel arrays and the output zero point."""

    multiplier: np.ndarray
    shift: np.ndarray
    bias: np.ndarray
    negate: np.ndarray
    out_zero_point: int = 0


def zero_params(hidden: int) -> ChannelParams:
    """What the block holds before its first load."""
    z = np.zeros(hidden, np.int64)
    return ChannelParams(z, z, z, z.astype(bool), 0)


def random_params(rng: np.random.Generator, hidden: int, out_width: int) -> ChannelParams:
    """Random folded parameters that keep most outputs inside the ``out_width`` range, with a
    few channels at the extremes (multiplier 0 or 2**31 - 1, shifts of -31 and +4, biases of
    +-2**30)."""
    # One standard deviation is |norm| ~ 2**20 / sqrt(hidden): map it to a quarter of the range.
    frac = round(20 - np.log2(hidden) / 2) - (out_width - 3)
    multiplier = rng.integers(1 << 30, 1 << 31, hidden)
    shift = -rng.integers(frac - 2, frac + 3, hidden)
    bias = rng.integers(-(1 << (frac + out_width - 2)), 1 << (frac + out_width - 2), hidden)
    negate = rng.random(hidden) < 0.3
    if hidden >= 4:
        multiplier[0], shift[1], bias[2], multiplier[3] = 0, -31, 1 << 30, (1 << 31) - 1
        shift[3], bias[hidden - 1] = 4, -(1 << 30)
    top = 1 << (out_width - 1)
    zp = int(rng.integers(-top // 4, top // 4))
    return ChannelParams(multiplier, shift, bias, negate, zp)


def folded_params(gamma, beta, *, out_scale: float, out_zero_point: int = 0) -> ChannelParams:
    """A load from float ``gamma``/``beta`` through :func:`fold_layer_norm`."""
    fold = fold_layer_norm(gamma, beta, out_scale=out_scale)
    return ChannelParams(fold.multiplier, fold.shift, fold.bias, fold.negate, out_zero_point)


def param_beats(params: ChannelParams) -> list[dict]:
    """The ``params`` stream beats of one load, channel 0 first."""
    return [{"multiplier": int(m), "shift": int(s), "bias": int(b), "negate": int(bool(g)),
             "out_zero_point": int(params.out_zero_point)}
            for m, s, b, g in zip(params.multiplier, params.shift, params.bias, params.negate)]


def row_beats(rows) -> list[dict]:
    """The ``i`` stream beats of ``rows``, one element each."""
    return [{"data": int(v)} for row in rows for v in row]


def expected(plan, hidden: int, out_width: int) -> list[np.ndarray]:
    """The golden output of every row of ``plan``, each under the load before it."""
    params = zero_params(hidden)
    out = []
    for kind, value in plan:
        if kind == "load":
            params = value
            continue
        for row in value:
            out.append(layer_norm_int(np.asarray(row, np.int64), multiplier=params.multiplier,
                                      shift=params.shift, bias=params.bias,
                                      negate=params.negate,
                                      out_zero_point=params.out_zero_point,
                                      out_bits=out_width))
    return out


def from_beats(beats: list[dict], rows: int, hidden: int) -> list[np.ndarray]:
    """Split output beats into rows, checking the beat count and every ``last`` flag."""
    if len(beats) != rows * hidden:
        raise AssertionError(f"expected {rows * hidden} output beats, got {len(beats)}")
    out = []
    for r in range(rows):
        chunk = beats[r * hidden:(r + 1) * hidden]
        lasts = [int(b["last"]) for b in chunk]
        if lasts != [0] * (hidden - 1) + [1]:
            raise AssertionError(f"row {r}: last flags {lasts}")
        out.append(np.array([b["data"] for b in chunk], np.int64))
    return out


def random_rows(rng: np.random.Generator, hidden: int, in_width: int,
                count: int) -> list[np.ndarray]:
    """``count`` rows mixing uniform data with the extremes: constant rows (minimum, maximum,
    zero), alternating minimum/maximum, one outlier, small values."""
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    rows = []
    for k in range(count):
        kind = k % 7
        if kind == 0:
            row = rng.integers(lo, hi + 1, hidden)
        elif kind == 1:
            row = np.full(hidden, (lo, hi, 0, 5)[k // 7 % 4])
        elif kind == 2:
            row = rng.choice([lo, hi], hidden)
        elif kind == 3:
            row = rng.integers(-3, 4, hidden)
            row[rng.integers(hidden)] = hi if k % 2 else lo
        elif kind == 4:
            row = rng.integers(-4, 5, hidden)
        elif kind == 5:
            row = rng.integers(lo // 2, 0, hidden)
        else:
            row = np.round(rng.normal(0, hi / 8, hidden)).clip(lo, hi)
        rows.append(row.astype(np.int64))
    return rows


def plan_inputs(plan) -> tuple[list[tuple[str, dict]], int]:
    """Every beat of ``plan`` in order as ``(stream, payload)``, and the number of rows."""
    beats, rows = [], 0
    for kind, value in plan:
        if kind == "load":
            beats += [("params", b) for b in param_beats(value)]
        else:
            beats += [("i", b) for b in row_beats(value)]
            rows += len(value)
    return beats, rows


def minilm_embedding_rows(sentence: str) -> tuple[np.ndarray, np.ndarray, float]:
    """all-MiniLM-L6-v2's embedding sum (word + position + token type 0) of ``sentence``, one
    row of 384 per token: ``(q, x, scale)`` with the float rows ``x`` quantized to int16 by
    max-abs, ``q = round(x / scale)``."""
    from .minilm import load_tokenizer, load_weights
    weights = load_weights()
    ids = np.asarray(load_tokenizer().encode(sentence).ids)
    x = (weights["embeddings.word_embeddings.weight"][ids]
         + weights["embeddings.position_embeddings.weight"][:len(ids)]
         + weights["embeddings.token_type_embeddings.weight"][0]).astype(np.float64)
    scale = float(np.abs(x).max()) / 32767
    q = np.clip(np.round(x / scale), -32768, 32767).astype(np.int64)
    return q, x, scale
