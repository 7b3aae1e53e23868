"""Stream driver of the GELU unit: rows to beats, beats to rows, and the golden result.

Used by the Amaranth-simulator tests, the cocotb testbench and the benchmark, so all three
exercise the same stream protocol and compare against the same golden model.
"""

from __future__ import annotations

import numpy as np

from .golden.gelu import i_gelu, lut_gelu, shift_gelu

__all__ = ["expected", "to_beats", "from_beats", "random_rows"]


def expected(params: dict, rows: list[np.ndarray]) -> list[np.ndarray]:
    """The golden model's output for each row under the block parameters ``params``."""
    method, scale, width = params["method"], params["scale"], params["in_width"]
    out = []
    for row in rows:
        if method == "shift":
            y, _ = shift_gelu(row, scale, n=params["n"], out_bits=params["out_bits"],
                              max_mode=params["max_mode"], in_width=width)
        elif method == "poly":
            y, _ = i_gelu(row, scale, in_width=width)
        else:
            y, _ = lut_gelu(row, scale, out_bits=params["out_bits"], in_width=width)
        out.append(np.asarray(y, dtype=np.int64))
    return out


def to_beats(rows: list[np.ndarray], lanes: int) -> list[dict]:
    """Beats of ``lanes`` elements; ``last`` on each row's final beat."""
    beats = []
    for row in rows:
        if len(row) == 0 or len(row) % lanes:
            raise ValueError(f"row length must be a positive multiple of lanes ({lanes}), "
                             f"not {len(row)}")
        chunks = np.asarray(row).reshape(-1, lanes)
        for n, chunk in enumerate(chunks):
            beats.append({"data": [int(v) for v in chunk], "last": int(n == len(chunks) - 1)})
    return beats


def from_beats(beats: list[dict], lengths: list[int], lanes: int) -> list[np.ndarray]:
    """Split output beats back into rows, checking the beat count and every ``last`` flag."""
    want = sum(length // lanes for length in lengths)
    if len(beats) != want:
        raise AssertionError(f"expected {want} output beats, got {len(beats)}")
    rows, start = [], 0
    for r, length in enumerate(lengths):
        count = length // lanes
        chunk = beats[start:start + count]
        lasts = [int(b["last"]) for b in chunk]
        if lasts != [0] * (count - 1) + [1]:
            raise AssertionError(f"row {r}: last flags {lasts}")
        rows.append(np.array([v for b in chunk for v in b["data"]], dtype=np.int64))
        start += count
    return rows


def random_rows(rng: np.random.Generator, params: dict, count: int, *,
                max_len: int | None = None) -> list[np.ndarray]:
    """``count`` rows of random lengths (multiples of ``lanes``, up to ``max_row``) mixing
    uniform data with the extremes: all-minimum, all-maximum, negative-maximum rows, single
    beats and near-zero values."""
    lanes, width = params["lanes"], params["in_width"]
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    longest = min(params["max_row"], max_len or params["max_row"])
    rows = []
    for n in range(count):
        length = lanes * int(rng.integers(1, longest // lanes + 1))
        kind = n % 6
        if kind == 0:
            row = rng.integers(lo, hi + 1, length)
        elif kind == 1:
            row = rng.integers(lo, 0, length)                     # the row maximum is negative
        elif kind == 2:
            row = rng.choice([lo, hi, 0, -1, 1], length)
        elif kind == 3:
            row = np.full(length, lo if n % 12 == 3 else hi)
        elif kind == 4:
            row = rng.integers(-8, 9, length)
        else:
            row = rng.integers(lo, hi + 1, lanes)                 # one beat
        rows.append(row.astype(np.int64))
    return rows
