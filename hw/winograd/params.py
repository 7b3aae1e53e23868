"""The Winograd unit's and the feature-map block's parameters, their bounds and help text, and
every derived figure (widths, latency, memory depths, multipliers)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sim.golden.winograd import (
    TapShifts,
    exact_accumulator_width,
    format_tap_shifts,
    input_bounds,
    output_growth_bits,
    parse_tap_shifts,
    rescale_shifts,
    weight_bounds,
)

from ..common.arith import signed_width
from ..common.checks import check_int
from ..common.params import param, validate_fields

__all__ = ["WinogradParams", "WinogradFMParams", "MODES", "POINTS", "FRONT_STAGES",
           "line_buffers", "line_buffer_depth", "output_buffer_tile_bits", "output_buffer_depth"]

#: Output tile sizes: F(2x2, 3x3) and F(4x4, 3x3).
POINTS = (2, 4)
#: ``exact`` (== direct convolution) or ``tapwise`` (int8 per-tap scales).
MODES = ("exact", "tapwise")
#: Front pipeline registers after the last tap group is issued: products, accumulated M,
#: A^T M, A^T M A, scaled result, + bias, output sequencer.
FRONT_STAGES = 7


def _unit_kwargs(m, mode, taps_per_clock, out_lanes, tap_shifts) -> dict:
    """The keyword form of ``WinogradUnit``/``WinogradFeatureMap`` (``None`` for "all taps",
    "m lanes", "data-free shifts"; ``tap_shifts`` a ``TapShifts``) as parameter fields (0, 0,
    the comma-separated text). A malformed ``TapShifts`` is refused here, naming it; its values
    are checked by the dataclass."""
    fields = {"taps_per_clock": 0 if taps_per_clock is None else taps_per_clock,
              "tap_shifts": ""}
    if out_lanes is not None:
        fields["out_lanes"] = out_lanes
    if tap_shifts is None or m not in POINTS or mode not in MODES:
        return fields                       # a bad m or mode is named by the dataclass
    if mode == "exact":
        raise ValueError(f"tap_shifts must be None in exact mode, not "
                         f"{type(tap_shifts).__name__}")
    if not isinstance(tap_shifts, TapShifts):
        raise TypeError(f"tap_shifts must be a TapShifts or None, not {tap_shifts!r}")
    n = m + 2
    for name, values in (("v", tap_shifts.v), ("u", tap_shifts.u)):
        if np.shape(values) != (n, n):
            raise ValueError(f"tap_shifts.{name} must be {n} x {n}, not {values!r}")
    fields["tap_shifts"] = format_tap_shifts(TapShifts(np.asarray(tap_shifts.v),
                                                       np.asarray(tap_shifts.u)))
    return fields


@dataclass(frozen=True)
class _UnitFields:
    """The fields the unit and the feature-map block share, and their checks and figures."""

    m: int = param(2, "output tile size (2: F(2x2,3x3), 4: F(4x4,3x3))", choices=POINTS)
    mode: str = param("exact", "exact (== direct conv) or tapwise (int8 per-tap scales)",
                      choices=MODES)
    in_channels: int = param(8, "input channels per pass (weight memory depth)", lo=1,
                             hi=1024)
    taps_per_clock: int = param(0, "Winograd-domain multipliers (divides (m+2)^2; 0: all "
                                "taps)", lo=0, hi=36)
    requantize: bool = param(True, "requantize to int8 (false: raw int32 out)")
    tap_shifts: str = param("", "tapwise: 2*(m+2)^2 comma-separated ints, V right shifts then "
                            "U exponents (sim.golden.winograd.format_tap_shifts); empty: "
                            "data-free")

    def _check_unit(self) -> None:
        """Cross-field checks; ``taps_per_clock`` 0 becomes ``(m+2)**2`` (all taps)."""
        n2 = self.tile_size ** 2
        if self.taps_per_clock == 0:
            object.__setattr__(self, "taps_per_clock", n2)
        check_int("taps_per_clock", self.taps_per_clock, 1, n2)
        if n2 % self.taps_per_clock:
            raise ValueError(f"taps_per_clock must divide {n2}, not {self.taps_per_clock!r}")
        if self.mode == "exact" and self.tap_shifts:
            raise ValueError(f"tap_shifts must be empty in exact mode, not "
                             f"{self.tap_shifts!r}")
        if self.mode == "tapwise":
            self._check_shifts(self.shifts)

    def _check_shifts(self, shifts: TapShifts) -> None:
        for name, values, lo, hi in (("v", shifts.v, 0, 15), ("u", shifts.u, -16, 24)):
            for value in (v for row in values for v in row):
                if not lo <= value <= hi:
                    raise ValueError(f"tap_shifts.{name} entries must be in [{lo}, {hi}], "
                                     f"not {value!r}")
        left, _ = rescale_shifts(shifts)
        # The golden model works on int64: 32-bit accumulators, shifts and A^T M A growth.
        limit = 62 - 32 - output_growth_bits(self.m)
        if int(left.max()) > limit:
            raise ValueError(f"tap_shifts span max(v - u) - min(v - u) = {int(left.max())} "
                             f"must be <= {limit}")

    # ---- derived figures ---------------------------------------------------------------------

    @cached_property
    def shifts(self) -> TapShifts | None:
        """``tapwise``: the per-tap V right shifts and U exponents (``tap_shifts`` parsed, or
        the data-free ``default_tap_shifts(m)``), as tuples of tuples of ints; ``exact``:
        ``None``."""
        if self.mode != "tapwise":
            return None
        shifts = parse_tap_shifts(self.tap_shifts, self.m)
        return TapShifts(tuple(tuple(int(v) for v in r) for r in shifts.v),
                         tuple(tuple(int(v) for v in r) for r in shifts.u))

    @property
    def tile_size(self) -> int:
        """Input tile side, ``m + 2``."""
        return self.m + 2

    @property
    def cycles_per_beat(self) -> int:
        """Clocks per accepted input-channel beat: ``(m+2)**2 / taps_per_clock``."""
        return self.tile_size ** 2 // self.taps_per_clock

    @property
    def input_width(self) -> int:
        """Bits of a transformed input tap as multiplied (exact growth bound, or int8)."""
        return 8 if self.mode == "tapwise" else self.exact_input_width

    @property
    def exact_input_width(self) -> int:
        """Bits of a transformed input tap at its exact growth bound (both modes compute it;
        ``tapwise`` then quantizes it to int8)."""
        return signed_width(*input_bounds(self.m))

    @property
    def weight_width(self) -> int:
        """Bits of a Winograd-domain weight (exact growth bound of ``(sG) g (sG)^T``, or int8)."""
        return 8 if self.mode == "tapwise" else signed_width(*weight_bounds(self.m))

    @property
    def product_width(self) -> int:
        """Bits of a Winograd-domain product ``V * U``."""
        vw, uw = self.input_width, self.weight_width
        return signed_width(-(1 << (vw - 1)) * ((1 << (uw - 1)) - 1),
                            (1 << (vw - 1)) * (1 << (uw - 1)))

    @property
    def accumulator_width(self) -> int:
        """Bits of each Winograd-domain accumulator."""
        return exact_accumulator_width(self.m) if self.mode == "exact" else 32

    @property
    def transform_width(self) -> int:
        """Bits of ``A^T M A`` as computed (exact: modulo ``2**accumulator_width``; tapwise:
        the rescaled accumulators plus the output transform's growth)."""
        if self.mode == "exact":
            return self.accumulator_width
        left, _ = rescale_shifts(self.shifts)
        return 32 + int(left.max()) + output_growth_bits(self.m)

    @property
    def weight_words(self) -> int:
        """Depth of the weight memory (words of ``taps_per_clock`` weights)."""
        return self.in_channels * self.cycles_per_beat


@dataclass(frozen=True)
class WinogradParams(_UnitFields):
    """Generation-time parameters of :class:`hw.winograd.WinogradUnit`, checked on
    construction, and every figure derived from them.

    Each field's metadata holds its help text and bounds (``lo``/``hi``, or ``choices``); the
    command line, the TOML schema and ``lutra list`` are derived from them
    (``gen/blocks/winograd.py``). ``taps_per_clock`` 0 and ``out_lanes`` 0 stand for all taps
    and ``m`` lanes and read back as those numbers. The per-pass bias and requantization are
    not here: they arrive on the unit's ``params`` stream.
    """

    out_lanes: int = param(0, "outputs per beat (divides m*m; 0: m)", lo=0, hi=16)

    def __post_init__(self):
        validate_fields(self)
        self._check_unit()
        if self.out_lanes == 0:
            object.__setattr__(self, "out_lanes", self.m)
        check_int("out_lanes", self.out_lanes, 1, self.m * self.m)
        if (self.m * self.m) % self.out_lanes:
            raise ValueError(f"out_lanes must divide {self.m * self.m}, not "
                             f"{self.out_lanes!r}")

    @classmethod
    def of(cls, *, m: int = 2, mode: str = "exact", in_channels: int = 8,
           taps_per_clock: int | None = None, requantize: bool = True,
           out_lanes: int | None = None, tap_shifts: TapShifts | None = None) -> WinogradParams:
        """From the unit's keyword form: ``None`` for all taps, ``m`` lanes, the data-free
        shifts; ``tap_shifts`` a ``TapShifts``."""
        return cls(m=m, mode=mode, in_channels=in_channels, requantize=requantize,
                   **_unit_kwargs(m, mode, taps_per_clock, out_lanes, tap_shifts))

    @property
    def beats_per_tile(self) -> int:
        """Output beats per m x m tile."""
        return self.m * self.m // self.out_lanes

    @property
    def latency(self) -> int:
        """Clocks from the handshake of a tile's last input-channel beat to its first output
        beat (sink ready). The beat waits in the input register while the previous beat's
        groups issue (``cycles_per_beat - 1`` clocks when beats come back to back), then is
        loaded (1 clock) and its ``cycles_per_beat`` groups issue."""
        from ..common.requant import REQUANT_LATENCY
        extra = REQUANT_LATENCY if self.requantize else 0
        return 2 * self.cycles_per_beat + FRONT_STAGES + extra

    @property
    def multipliers(self) -> int:
        """Hardware multipliers: the Winograd-domain ones plus the requantizer's (4 per lane)."""
        return self.taps_per_clock + (4 * self.out_lanes if self.requantize else 0)


def line_buffers(m: int) -> int:
    """Rows the tiler holds: ``m + 2`` being read and ``m`` being written."""
    return 2 * m + 2


def line_buffer_depth(max_width: int, channels: int) -> int:
    """Bytes per tiler line buffer: ``max_width`` pixels of ``2**ceil(log2 channels)`` (the
    channel index is the low address bits)."""
    return max_width << (channels - 1).bit_length()


def output_buffer_tile_bits(m: int, max_width: int) -> int:
    """Address bits of a tile column in the untiler's output buffer."""
    return (-(-max_width // m) - 1).bit_length()


def output_buffer_depth(m: int, max_width: int) -> int:
    """Words (of ``m`` values) of the untiler's output buffer: two banks of ``m`` rows of
    ``2**output_buffer_tile_bits`` tile columns."""
    return 2 * m << output_buffer_tile_bits(m, max_width)


@dataclass(frozen=True)
class WinogradFMParams(_UnitFields):
    """Generation-time parameters of :class:`hw.winograd.WinogradFeatureMap` (the unit's, with
    ``out_lanes = m``, and the largest map), checked on construction, and every figure derived
    from them. Fields as :class:`WinogradParams`; the command line, the TOML schema and
    ``lutra list`` are derived from them (``gen/blocks/winograd_fm.py``).
    """

    in_channels: int = param(8, "input channels of the map", lo=1, hi=1024)
    max_height: int = param(32, "largest input map height (run-time height <= this)", lo=1,
                            hi=4096)
    max_width: int = param(32, "largest input map width (line buffer length)", lo=1, hi=4096)

    def __post_init__(self):
        validate_fields(self)
        self._check_unit()

    @classmethod
    def of(cls, *, m: int = 2, mode: str = "exact", in_channels: int = 8,
           taps_per_clock: int | None = None, requantize: bool = True,
           tap_shifts: TapShifts | None = None, max_height: int = 32,
           max_width: int = 32) -> WinogradFMParams:
        """From the feature map's keyword form (as :meth:`WinogradParams.of`)."""
        return cls(m=m, mode=mode, in_channels=in_channels, requantize=requantize,
                   max_height=max_height, max_width=max_width,
                   **_unit_kwargs(m, mode, taps_per_clock, None, tap_shifts))

    @cached_property
    def unit(self) -> WinogradParams:
        """The unit's parameters: one tile row (``m`` values) per output beat."""
        return WinogradParams(m=self.m, mode=self.mode, in_channels=self.in_channels,
                              taps_per_clock=self.taps_per_clock, requantize=self.requantize,
                              tap_shifts=self.tap_shifts, out_lanes=self.m)

    @property
    def line_buffers(self) -> int:
        """The tiler's line buffers (``2m + 2``)."""
        return line_buffers(self.m)

    @property
    def line_buffer_depth(self) -> int:
        """Bytes per line buffer."""
        return line_buffer_depth(self.max_width, self.in_channels)

    @property
    def tiler_clocks_per_beat(self) -> int:
        """Clocks per tile beat out of the tiler, sink ready: one per column (``m + 2``)."""
        return self.tile_size

    @property
    def output_buffer_depth(self) -> int:
        """Words (of ``m`` values) of the untiler's output buffer."""
        return output_buffer_depth(self.m, self.max_width)

    @property
    def output_value_bits(self) -> int:
        """Bits of an output value: 8 requantized, else 32."""
        return 8 if self.requantize else 32
