"""Feature-map driver of the Winograd unit: the tiler in front of it and the assembler behind it.

The unit is tile-level (tiles in, tiles out). ``plan`` cuts an NCHW int8 feature map into
overlapping (m+2) x (m+2) tiles with zero padding (``sim.golden.winograd.extract_tiles``, the
same tiling the golden model uses) and produces, per output channel (one *pass*), the beats of
the unit's ``params``, ``weights`` and ``i`` streams; ``assemble`` puts the ``o`` beats back
into the NKHW output. Shared by the Amaranth-simulator tests, the cocotb testbench and the bench.

``plan_feature_map`` / ``assemble_feature_map`` do the same for ``WinogradFeatureMap``, whose
tiler and untiler are in gateware: they only flatten the map to its NHWC stream (once per
output channel) and check the row-by-row output stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .golden.gemm import quantize_multiplier
from .golden.winograd import (
    TapShifts,
    conv2d_winograd,
    extract_tiles,
    place_tiles,
    transform_weights,
)

__all__ = ["ConvProblem", "Pass", "plan", "assemble", "random_problem", "plan_feature_map",
           "assemble_feature_map", "feature_map_beats"]


@dataclass
class ConvProblem:
    """A 3x3 convolution with its per-output-channel bias and TFLite output stage."""

    x: np.ndarray                       # N, C, H, W int8
    w: np.ndarray                       # K, C, 3, 3 int8
    padding: int = 1
    bias: np.ndarray | None = None      # K int32
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    out_zero_point: int = 0
    act_min: int = -128
    act_max: int = 127

    @property
    def channels(self) -> tuple[int, int]:
        return self.w.shape[1], self.w.shape[0]

    def expected(self, *, m: int, mode: str, requantize: bool,
                 tap_shifts: TapShifts | None = None) -> np.ndarray:
        """The golden model's output for this problem on the unit so configured."""
        kw = {}
        if requantize:
            kw = dict(multiplier=self.multiplier, shift=self.shift,
                      out_zero_point=self.out_zero_point, act_min=self.act_min,
                      act_max=self.act_max)
        return conv2d_winograd(self.x, self.w, m=m, mode=mode, padding=self.padding,
                               tap_shifts=tap_shifts, bias=self._bias(), **kw)

    def _bias(self) -> np.ndarray:
        if self.bias is None:
            return np.zeros(self.w.shape[0], dtype=np.int64)
        return np.asarray(self.bias, dtype=np.int64)


@dataclass
class Pass:
    """The beats of one pass (one output channel)."""

    params: dict
    weights: list = field(default_factory=list)
    tiles: list = field(default_factory=list)


def plan(problem: ConvProblem, *, m: int, mode: str, taps_per_clock: int, requantize: bool,
         tap_shifts: TapShifts | None = None) -> list[Pass]:
    """One ``Pass`` per output channel: params beat, weight beats, input-tile beats."""
    tiles, _ = extract_tiles(problem.x, m=m, padding=problem.padding)
    n = m + 2
    chans = problem.w.shape[1]
    flat = tiles.reshape((-1, chans, n, n))
    u = transform_weights(problem.w, m=m, mode=mode, tap_shifts=tap_shifts)
    passes = []
    for k in range(problem.w.shape[0]):
        params = _pass_params(problem, k, requantize)
        weights = _weight_beats(u[k], taps_per_clock)
        beats = []
        for t, tile in enumerate(flat):
            for c in range(chans):
                last = c == chans - 1
                beats.append({"d": tile[c].tolist(), "last": int(last),
                              "end": int(last and t == len(flat) - 1)})
        passes.append(Pass(params, weights, beats))
    return passes


def _pass_params(problem: ConvProblem, k: int, requantize: bool) -> dict:
    bias = problem._bias()
    params = {"bias": int(bias[k])}
    if requantize:
        params.update({
            "multiplier": int(np.broadcast_to(problem.multiplier, bias.shape)[k]),
            "shift": int(np.broadcast_to(problem.shift, bias.shape)[k]),
            "out_zero_point": int(problem.out_zero_point),
            "act_min": int(problem.act_min),
            "act_max": int(problem.act_max),
        })
    return params


def _weight_beats(u_k: np.ndarray, taps_per_clock: int) -> list[dict]:
    words = u_k.reshape(-1, taps_per_clock)
    return [{"u": [int(v) for v in word], "last": int(i == len(words) - 1)}
            for i, word in enumerate(words)]


def plan_feature_map(problem: ConvProblem, *, m: int, mode: str, taps_per_clock: int,
                     requantize: bool, tap_shifts: TapShifts | None = None) -> list[Pass]:
    """One ``Pass`` per (image, output channel) for ``WinogradFeatureMap``: the params beat
    (frame shape included), the weight beats and the image's values in NHWC order."""
    n_img, _, height, width = problem.x.shape
    u = transform_weights(problem.w, m=m, mode=mode, tap_shifts=tap_shifts)
    passes = []
    for img in range(n_img):
        pixels = [{"data": int(v)} for v in problem.x[img].transpose(1, 2, 0).reshape(-1)]
        for k in range(problem.w.shape[0]):
            params = {"height": height, "width": width, "padding": problem.padding,
                      **_pass_params(problem, k, requantize)}
            passes.append(Pass(params, _weight_beats(u[k], taps_per_clock), pixels))
    return passes


def feature_map_beats(problem: ConvProblem) -> int:
    """Output beats of ``WinogradFeatureMap`` for the whole problem."""
    n_img, _, height, width = problem.x.shape
    grow = 2 * problem.padding - 2
    return n_img * problem.w.shape[0] * (height + grow) * (width + grow)


def assemble_feature_map(beats: list[dict], problem: ConvProblem) -> np.ndarray:
    """NKHW output from ``WinogradFeatureMap``'s ``o`` beats (checks count, ``last``, ``end``)."""
    n_img, _, height, width = problem.x.shape
    out_h, out_w = height + 2 * problem.padding - 2, width + 2 * problem.padding - 2
    k = problem.w.shape[0]
    if len(beats) != feature_map_beats(problem):
        raise AssertionError(f"expected {feature_map_beats(problem)} output beats, "
                             f"got {len(beats)}")
    for i, beat in enumerate(beats):
        col, row = i % out_w, i // out_w % out_h
        last, end = int(col == out_w - 1), int(col == out_w - 1 and row == out_h - 1)
        if (beat["last"], beat["end"]) != (last, end):
            raise AssertionError(f"beat {i}: last, end {beat['last']}, {beat['end']} != "
                                 f"{last}, {end}")
    values = np.array([b["data"] for b in beats], dtype=np.int64)
    return values.reshape(n_img, k, out_h, out_w)


def assemble(beats: list[dict], problem: ConvProblem, *, m: int, lanes: int) -> np.ndarray:
    """NKHW output from the unit's ``o`` beats (checks the beat count and ``last`` flags)."""
    tiles, out_hw = extract_tiles(problem.x, m=m, padding=problem.padding)
    n_img, ty, tx = tiles.shape[:3]
    k = problem.w.shape[0]
    per_tile = m * m // lanes
    count = k * n_img * ty * tx
    if len(beats) != count * per_tile:
        raise AssertionError(f"expected {count * per_tile} output beats, got {len(beats)}")
    lasts = [b["last"] for b in beats]
    want = ([0] * (per_tile - 1) + [1]) * count
    if lasts != want:
        bad = next(i for i, (a, b) in enumerate(zip(lasts, want)) if a != b)
        raise AssertionError(f"beat {bad}: last {lasts[bad]} != {want[bad]}")
    values = np.array([v for b in beats for v in b["data"]], dtype=np.int64)
    y = values.reshape(k, n_img, ty, tx, m, m).transpose(1, 2, 3, 0, 4, 5)
    return place_tiles(y, out_hw)


def random_problem(rng: np.random.Generator, *, n_img: int, chans: int, out_chans: int,
                   height: int, width: int, padding: int,
                   extreme: bool = False) -> ConvProblem:
    """Random int8 data and weights with realistic per-channel requantization parameters;
    ``extreme`` uses -128 everywhere (the largest Winograd-domain values)."""
    if extreme:
        x = np.full((n_img, chans, height, width), -128, dtype=np.int64)
        w = np.full((out_chans, chans, 3, 3), -128, dtype=np.int64)
    else:
        x = rng.integers(-128, 128, (n_img, chans, height, width))
        w = rng.integers(-128, 128, (out_chans, chans, 3, 3))
    scales = rng.uniform(2.0 ** -14, 2.0 ** -8, out_chans) / max(1.0, np.sqrt(chans))
    mult_shift = [quantize_multiplier(s) for s in scales]
    return ConvProblem(
        x=x, w=w, padding=padding,
        bias=rng.integers(-(1 << 16), 1 << 16, out_chans),
        multiplier=np.array([ms[0] for ms in mult_shift]),
        shift=np.array([ms[1] for ms in mult_shift]),
        out_zero_point=int(rng.integers(-10, 11)),
        act_min=int(rng.integers(-128, -100)),
        act_max=int(rng.integers(100, 128)),
    )
