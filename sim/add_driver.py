"""Stream driver of the residual adder: plans of parameter loads and tensors, their beats, and
the golden result.

Used by the Amaranth-simulator tests, the cocotb testbench and ``lutra sim``, so all of them
exercise the same protocol and compare against the same golden model
(:func:`sim.golden.add.add_int`). A *plan* is a list of steps, each either ``("load",
AddParams)`` or ``("tensor", x)`` with ``x`` of shape ``(inputs, beats, lanes)``, sent in
order: a load applies to the tensors after it (the block's rule: input beats accepted in a
later cycle than the load's beat).
"""

from __future__ import annotations

import numpy as np

from .golden.add import ADD_LEFT_SHIFT, AddParams, add_int
from .golden.gemm import INT32_MAX

__all__ = ["zero_params", "random_params", "param_beat", "tensor_beats", "random_tensor",
           "plan_inputs", "expected", "from_beats"]


def zero_params(inputs: int, in_width: int, out_width: int) -> AddParams:
    """What the block holds before its first load."""
    z = np.zeros(inputs, np.int64)
    return AddParams(ADD_LEFT_SHIFT[in_width], z, z, z, 0, 0, 0, out_width)


def random_params(rng: np.random.Generator, inputs: int, in_width: int, out_width: int, *,
                  extreme: bool = False) -> AddParams:
    """A load from random scales through :meth:`AddParams.from_scales`, with random offsets
    (an int8 zero point negated, [-127, 128]; the full ``in_width + 1``-bit field for int16)
    and output zero point, and an output scale that saturates some sums. ``extreme`` also puts
    the corners in: a multiplier of 0 or ``2**31 - 1``, shifts of -31, a positive output
    shift, offsets at both ends of their field."""
    scales = np.exp(rng.uniform(-3, 1, inputs))
    out_scale = float(scales.sum()) * 2.0 ** (in_width - out_width) * rng.uniform(0.6, 2.5)
    p = AddParams.from_scales(list(scales), out_scale, in_bits=in_width, bits=out_width)
    top = 1 << (out_width - 1)
    if in_width == 8:
        p.offsets = rng.integers(-127, 129, inputs)
    elif rng.random() < 0.5:
        p.offsets = rng.integers(-(1 << 16), 1 << 16, inputs)
    p.out_offset = int(rng.integers(-top // 2, top // 2))
    if extreme:
        k = int(rng.integers(inputs))
        p.multipliers[k] = (0, INT32_MAX)[int(rng.integers(2))]
        p.shifts[(k + 1) % inputs] = -31
        p.offsets[k] = (-(1 << in_width), (1 << in_width) - 1)[int(rng.integers(2))]
        p.out_shift = int(rng.integers(1, 4))
        p.out_offset = (-top, top - 1)[int(rng.integers(2))]
    return p


def param_beat(p: AddParams, in_width: int) -> dict:
    """The ``params`` beat of one load; ``p.left_shift`` must be TFLite's for ``in_width``."""
    if p.left_shift != ADD_LEFT_SHIFT[in_width]:
        raise ValueError(f"left_shift must be {ADD_LEFT_SHIFT[in_width]} for in_width "
                         f"{in_width}, not {p.left_shift!r}")
    return {"offset": [int(v) for v in p.offsets],
            "multiplier": [int(v) for v in p.multipliers],
            "shift": [int(v) for v in p.shifts],
            "out": {"out_multiplier": int(p.out_multiplier), "out_shift": int(p.out_shift),
                    "out_offset": int(p.out_offset)}}


def tensor_beats(x: np.ndarray) -> list[dict]:
    """The ``i`` beats of one tensor ``x[input, beat, lane]``; ``last`` on its final beat."""
    beats = x.shape[1]
    return [{"data": x[:, b, :].tolist(), "last": int(b == beats - 1)} for b in range(beats)]


def random_tensor(rng: np.random.Generator, inputs: int, beats: int, lanes: int,
                  in_width: int, kind: int) -> np.ndarray:
    """A tensor ``(inputs, beats, lanes)`` of one of seven kinds: uniform, every input at the
    minimum, every input at the maximum, minimum against maximum, random extremes, small
    values, normal."""
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    shape = (inputs, beats, lanes)
    kind %= 7
    if kind == 0:
        x = rng.integers(lo, hi + 1, shape)
    elif kind in (1, 2):
        x = np.full(shape, lo if kind == 1 else hi)
    elif kind == 3:
        x = np.empty(shape, np.int64)
        x[0::2], x[1::2] = lo, hi
    elif kind == 4:
        x = rng.choice([lo, hi, 0, -1], shape)
    elif kind == 5:
        x = rng.integers(-3, 4, shape)
    else:
        x = np.round(rng.normal(0, hi / 6, shape)).clip(lo, hi)
    return x.astype(np.int64)


def plan_inputs(plan, in_width: int) -> tuple[list[tuple[str, dict]], int]:
    """Every beat of ``plan`` in order as ``(stream, payload)``, and the number of ``i``
    beats."""
    beats, count = [], 0
    for kind, value in plan:
        if kind == "load":
            beats.append(("params", param_beat(value, in_width)))
        else:
            beats += [("i", b) for b in tensor_beats(value)]
            count += value.shape[1]
    return beats, count


def expected(plan, inputs: int, in_width: int, out_width: int) -> list[np.ndarray]:
    """The golden output ``(beats, lanes)`` of every tensor of ``plan``, each under the load
    before it."""
    p = zero_params(inputs, in_width, out_width)
    out = []
    for kind, value in plan:
        if kind == "load":
            p = value
        else:
            out.append(add_int(list(value), p))
    return out


def from_beats(beats: list[dict], plan) -> list[np.ndarray]:
    """Split output beats into the plan's tensors, checking the beat count and every
    ``last`` flag."""
    sizes = [value.shape[1] for kind, value in plan if kind == "tensor"]
    if len(beats) != sum(sizes):
        raise AssertionError(f"expected {sum(sizes)} output beats, got {len(beats)}")
    out, start = [], 0
    for t, size in enumerate(sizes):
        chunk = beats[start:start + size]
        lasts = [int(b["last"]) for b in chunk]
        if lasts != [0] * (size - 1) + [1]:
            raise AssertionError(f"tensor {t}: last flags {lasts}")
        out.append(np.array([b["data"] for b in chunk], np.int64))
        start += size
    return out
