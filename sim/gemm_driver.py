"""Tiling driver: runs any M x K x N GEMM on a ``rows x cols`` GemmCore.

``plan`` cuts the problem into output tiles (zero-padding the ragged edges), ``Tile.slices`` and
``Tile.params`` are the beats the core's ``i`` and ``params`` streams take, and ``assemble``
puts the output beats back into the M x N result. Used by the Amaranth-simulator tests, the
cocotb testbench and the benchmark, so all three exercise the same stream protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GemmProblem", "Tile", "plan", "assemble", "random_problem"]


@dataclass
class GemmProblem:
    """A whole GEMM with its TFLite output-stage parameters (per column of B)."""

    a: np.ndarray                   # M x K int8
    b: np.ndarray                   # K x N int8
    a_offset: int = 0
    bias: np.ndarray | None = None  # N int32
    multiplier: np.ndarray | None = None   # N int32 (Q31)
    shift: np.ndarray | None = None        # N
    out_zero_point: int = 0
    act_min: int = -128
    act_max: int = 127

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.a.shape[0], self.a.shape[1], self.b.shape[1]

    def expected(self, requantize: bool) -> np.ndarray:
        """The golden model's result for this problem."""
        from .golden.gemm import gemm
        if requantize:
            return gemm(self.a, self.b, bias=self.bias, a_offset=self.a_offset,
                        multiplier=self.multiplier, shift=self.shift,
                        out_zero_point=self.out_zero_point, act_min=self.act_min,
                        act_max=self.act_max)
        return gemm(self.a, self.b, bias=self.bias, a_offset=self.a_offset)


@dataclass
class Tile:
    row0: int
    col0: int
    slices: list        # payloads for the `i` stream
    params: dict        # payload for the `params` stream


def _padded(values, length, fill=0):
    out = [fill] * length
    for i, v in enumerate(values):
        out[i] = int(v)
    return out


def plan(problem: GemmProblem, rows: int, cols: int, requantize: bool) -> list[Tile]:
    """Output tiles in row-major tile order, each with its k-slices and parameters."""
    m, k, n = problem.shape
    bias = problem.bias if problem.bias is not None else np.zeros(n, dtype=np.int64)
    tiles = []
    for row0 in range(0, m, rows):
        for col0 in range(0, n, cols):
            a = problem.a[row0:row0 + rows]
            b = problem.b[:, col0:col0 + cols]
            slices = [{"a": _padded(a[:, kk], rows), "b": _padded(b[kk], cols),
                       "last": int(kk == k - 1)} for kk in range(k)]
            params = {"a_offset": int(problem.a_offset),
                      "bias": _padded(bias[col0:col0 + cols], cols)}
            if requantize:
                mult = np.broadcast_to(problem.multiplier, (n,))[col0:col0 + cols]
                shift = np.broadcast_to(problem.shift, (n,))[col0:col0 + cols]
                params.update({
                    "multiplier": _padded(mult, cols, 1 << 30),
                    "shift": _padded(shift, cols),
                    "out_zero_point": int(problem.out_zero_point),
                    "act_min": int(problem.act_min),
                    "act_max": int(problem.act_max),
                })
            tiles.append(Tile(row0, col0, slices, params))
    return tiles


def assemble(beats: list[dict], shape_mn: tuple[int, int], rows: int, cols: int,
             lanes: int) -> np.ndarray:
    """Place output beats (``{"data": [...], "last": ...}``) into the M x N result.

    Checks the beat count and that ``last`` is set exactly on each tile's final beat.
    """
    m, n = shape_mn
    tiles = [(r, c) for r in range(0, m, rows) for c in range(0, n, cols)]
    per_tile = rows * cols // lanes
    if len(beats) != len(tiles) * per_tile:
        raise AssertionError(f"expected {len(tiles) * per_tile} output beats, got {len(beats)}")
    out = np.zeros((m, n), dtype=np.int64)
    for t, (row0, col0) in enumerate(tiles):
        tile_beats = beats[t * per_tile:(t + 1) * per_tile]
        flat = [v for beat in tile_beats for v in beat["data"]]
        lasts = [beat["last"] for beat in tile_beats]
        want_lasts = [0] * (per_tile - 1) + [1]
        if lasts != want_lasts:
            raise AssertionError(f"tile {t}: last flags {lasts} != {want_lasts}")
        block = np.array(flat, dtype=np.int64).reshape(rows, cols)
        h, w = min(rows, m - row0), min(cols, n - col0)
        out[row0:row0 + h, col0:col0 + w] = block[:h, :w]
    return out


def random_problem(rng: np.random.Generator, m: int, k: int, n: int, *,
                   extreme: bool = False) -> GemmProblem:
    """Random int8 operands and realistic TFLite output-stage parameters.

    ``extreme`` fills A and B with -128, the largest products the array can see.
    """
    if extreme:
        a = np.full((m, k), -128, dtype=np.int64)
        b = np.full((k, n), -128, dtype=np.int64)
    else:
        a = rng.integers(-128, 128, (m, k))
        b = rng.integers(-128, 128, (k, n))
    from .golden.gemm import quantize_multiplier
    scales = rng.uniform(2.0 ** -14, 2.0 ** -6, n) / max(1.0, np.sqrt(k) / 8)
    mult_shift = [quantize_multiplier(s) for s in scales]
    return GemmProblem(
        a=a, b=b,
        a_offset=int(rng.integers(-127, 129)),
        bias=rng.integers(-(1 << 16), 1 << 16, n),
        multiplier=np.array([ms[0] for ms in mult_shift]),
        shift=np.array([ms[1] for ms in mult_shift]),
        out_zero_point=int(rng.integers(-20, 21)),
        act_min=int(rng.integers(-128, -100)),
        act_max=int(rng.integers(100, 128)),
    )
