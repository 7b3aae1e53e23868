"""Tiling driver: runs any M x K x N GEMM on a ``rows x cols`` GemmCore.

``plan`` cuts the problem into output tiles (zero-padding the ragged edges), ``Tile.slices`` and
``Tile.params`` are the beats the core's ``i`` and ``params`` streams take, and ``assemble``
puts the output beats back into the M x N result. Used by the Amaranth-simulator tests, the
cocotb testbench and the benchmark, so all three exercise the same stream protocol.

``a_width`` (8 or 16) and ``out_width`` (8 or 16) are the core's parameters of the same names;
``plan`` refuses a problem whose values do not fit them, rather than let the core wrap them.
With ``k_per_pe`` > 1 each beat carries that many consecutive k-slices, and a K that is not a
multiple of it is padded at its end with zero k-slices (``b = 0`` adds nothing, whatever
``a_offset``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw.gemm.params import a_offset_range

__all__ = ["GemmProblem", "Tile", "check_problem", "plan", "assemble", "random_problem"]


@dataclass
class GemmProblem:
    """A whole GEMM with its TFLite output-stage parameters (per column of B)."""

    a: np.ndarray                   # M x K int8 or int16
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


def _check_range(name: str, values, bits: int, what: str) -> None:
    values = np.asarray(values)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if values.size and (values.min() < lo or values.max() > hi):
        bad = values.min() if values.min() < lo else values.max()
        raise ValueError(f"{name} must be in [{lo}, {hi}] ({what}), not {int(bad)}")


def check_problem(problem: GemmProblem, *, a_width: int = 8, out_width: int = 8,
                  requantize: bool = True) -> None:
    """Raise ``ValueError`` naming the first value that a core with these widths cannot take."""
    _check_range("a", problem.a, a_width, f"a_width {a_width}")
    _check_range("b", problem.b, 8, "int8 weights")
    lo, hi = a_offset_range(a_width)
    if not lo <= problem.a_offset <= hi:
        raise ValueError(f"a_offset must be in [{lo}, {hi}] (a_width {a_width}), "
                         f"not {problem.a_offset!r}")
    if requantize:
        for name in ("out_zero_point", "act_min", "act_max"):
            _check_range(name, getattr(problem, name), out_width, f"out_width {out_width}")


def plan(problem: GemmProblem, rows: int, cols: int, requantize: bool, *, a_width: int = 8,
         out_width: int = 8, k_per_pe: int = 1) -> list[Tile]:
    """Output tiles in row-major tile order, each with its k-slices and parameters."""
    check_problem(problem, a_width=a_width, out_width=out_width, requantize=requantize)
    m, k, n = problem.shape
    bias = problem.bias if problem.bias is not None else np.zeros(n, dtype=np.int64)
    tiles = []
    for row0 in range(0, m, rows):
        for col0 in range(0, n, cols):
            a = problem.a[row0:row0 + rows]
            b = problem.b[:, col0:col0 + cols]
            if k_per_pe == 1:
                slices = [{"a": _padded(a[:, kk], rows), "b": _padded(b[kk], cols),
                           "last": int(kk == k - 1)} for kk in range(k)]
            else:
                slices = _dot_slices(a, b, rows, cols, k_per_pe)
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


def _dot_slices(a: np.ndarray, b: np.ndarray, rows: int, cols: int, k_per_pe: int) -> list:
    """Beats of ``k_per_pe`` k-slices (``a[r][j] = A[r, k + j]``, ``b[c][j] = B[k + j, c]``),
    K padded with zeros to a multiple of ``k_per_pe``."""
    beats = -(-a.shape[1] // k_per_pe)
    a_pad = np.zeros((rows, beats * k_per_pe), dtype=np.int64)
    b_pad = np.zeros((beats * k_per_pe, cols), dtype=np.int64)
    a_pad[:a.shape[0], :a.shape[1]] = a
    b_pad[:b.shape[0], :b.shape[1]] = b
    return [{"a": a_pad[:, s * k_per_pe:(s + 1) * k_per_pe].tolist(),
             "b": b_pad[s * k_per_pe:(s + 1) * k_per_pe].T.tolist(),
             "last": int(s == beats - 1)} for s in range(beats)]


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
                   extreme: bool = False, a_width: int = 8, out_width: int = 8) -> GemmProblem:
    """Random operands (``a`` of ``a_width`` bits, int8 ``b``) and realistic TFLite
    output-stage parameters for ``out_width``-bit results; ``a_offset`` is a -zero point of
    ``a_width`` bits.

    ``extreme`` fills A with its most negative value and B with -128, the largest products.
    """
    a_top, out_top = 1 << (a_width - 1), 1 << (out_width - 1)
    if extreme:
        a = np.full((m, k), -a_top, dtype=np.int64)
        b = np.full((k, n), -128, dtype=np.int64)
    else:
        a = rng.integers(-a_top, a_top, (m, k))
        b = rng.integers(-128, 128, (k, n))
    from .golden.gemm import quantize_multiplier
    # Output scale relative to the accumulator's: keeps results inside the clamp range mostly.
    scales = rng.uniform(2.0 ** -14, 2.0 ** -6, n) / max(1.0, np.sqrt(k) / 8)
    scales *= 2.0 ** (out_width - a_width)
    mult_shift = [quantize_multiplier(s) for s in scales]
    margin = 28 * out_top // 128
    return GemmProblem(
        a=a, b=b,
        a_offset=int(rng.integers(-a_top + 1, a_top + 1)),
        bias=rng.integers(-(1 << 16), 1 << 16, n),
        multiplier=np.array([ms[0] for ms in mult_shift]),
        shift=np.array([ms[1] for ms in mult_shift]),
        out_zero_point=int(rng.integers(-20, 21)) * (out_top // 128),
        act_min=int(rng.integers(-out_top, -out_top + margin)),
        act_max=int(rng.integers(out_top - margin, out_top)),
    )
