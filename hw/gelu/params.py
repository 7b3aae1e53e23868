"""The GELU unit's parameters, their bounds and help text, and every derived figure."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cached_property

from sim.golden.gelu import i_gelu_constants, lut_gelu_table, shift_gelu_constants

from ..common.arith import signed_width
from ..common.checks import check_int
from ..common.params import param, validate_fields

__all__ = ["GeluParams", "METHODS", "MAX_MODES", "DIVIDERS", "LUT_MAX_IN_WIDTH"]

METHODS = ("shift", "poly", "lut")
MAX_MODES = ("row", "static")
DIVIDERS = ("pipelined", "iterative")
#: Widest input of ``method="lut"``: its table has ``2**in_width`` entries.
LUT_MAX_IN_WIDTH = 12

#: Beats of buffer beyond the longest row, covering the descriptor FIFO's read latency, so that
#: rows of ``max_row`` elements stream back to back at one beat per clock.
ROW_BUFFER_SLACK = 2


def _power_of_two_text(value: float) -> str:
    """``2**-24`` for a negative power of two, ``16`` for an integer: bounds as the docs say
    them."""
    exponent = math.log2(value)
    if exponent < 0 and exponent == int(exponent):
        return f"2**{int(exponent)}"
    return f"{value:g}"


@dataclass(frozen=True)
class GeluParams:
    """Generation-time parameters of :class:`hw.gelu.Gelu`, checked on construction.

    Each field's metadata holds its help text and bounds (``lo``/``hi``, or ``choices``); the
    command line, the TOML schema and ``lutra list`` are derived from them
    (``gen/blocks/gelu.py``). ``scale`` is stored as a float.
    """

    method: str = param("shift", "shift (I-ViT ShiftGELU), poly (I-BERT i-GELU) or lut",
                        choices=METHODS)
    scale: float = param(2.0 ** -4, "input scale S (real = integer * S)",
                         lo=2.0 ** -24, hi=16.0)
    in_width: int = param(8, f"input bits (lut: at most {LUT_MAX_IN_WIDTH})", lo=2, hi=16)
    lanes: int = param(1, "elements per beat", lo=1, hi=16)
    n: int = param(23, "ShiftGELU exponent range (I-ViT: 23)", lo=1, hi=30)
    out_bits: int = param(8, "sigmoid bits (shift) / output fraction (lut): output scale "
                          "S * 2**-(out_bits - 1)", lo=1, hi=16)
    max_mode: str = param("row", "shift: subtract each row's max (row, buffered) or the "
                          "largest input (static)", choices=MAX_MODES)
    max_row: int = param(1536, "shift/row: longest row in elements (multiple of lanes)",
                         lo=1, hi=1 << 16)
    divider: str = param("pipelined", "shift: pipelined (one beat per clock) or iterative",
                         choices=DIVIDERS)

    def __post_init__(self):
        scale = next(f for f in fields(self) if f.name == "scale").metadata
        if (isinstance(self.scale, (int, float)) and not isinstance(self.scale, bool)
                and not (math.isfinite(self.scale)
                         and scale["lo"] <= self.scale <= scale["hi"])):
            raise ValueError(f"scale must be in [{_power_of_two_text(scale['lo'])}, "
                             f"{_power_of_two_text(scale['hi'])}], not {self.scale!r}")
        validate_fields(self)
        if self.method == "lut":
            check_int("in_width", self.in_width, 2, LUT_MAX_IN_WIDTH)
        if self.max_row % self.lanes:
            raise ValueError(f"max_row must be a multiple of lanes ({self.lanes}), "
                             f"not {self.max_row!r}")
        object.__setattr__(self, "scale", float(self.scale))

    # ---- derived figures ---------------------------------------------------------------------

    @cached_property
    def constants(self):
        """The golden model's constants (``ShiftGeluConstants``/``IGeluConstants``; ``None`` for
        ``lut``)."""
        if self.method == "shift":
            return shift_gelu_constants(self.scale, n=self.n, out_bits=self.out_bits,
                                        in_width=self.in_width, max_mode=self.max_mode)
        if self.method == "poly":
            return i_gelu_constants(self.scale, in_width=self.in_width)
        return None

    @cached_property
    def lut_table(self) -> list[int] | None:
        """``method="lut"``: the table of every input code (``sim.golden.gelu.lut_gelu_table``)."""
        if self.method != "lut":
            return None
        return [int(v) for v in lut_gelu_table(self.scale, out_bits=self.out_bits,
                                                in_width=self.in_width)]

    @property
    def out_scale(self) -> float:
        """Scale of the outputs: real value = output * out_scale."""
        if self.constants is not None:
            return self.constants.out_scale
        return self.scale * 2.0 ** -(self.out_bits - 1)

    @property
    def out_width(self) -> int:
        """Bits of each signed output."""
        if self.constants is not None:
            return signed_width(*self.constants.y_range)
        return signed_width(min(self.lut_table), max(self.lut_table))

    @property
    def buffers_rows(self) -> bool:
        """Rows are buffered until their maximum is known (ShiftGELU, ``max_mode="row"``)."""
        return self.method == "shift" and self.max_mode == "row"

    @property
    def row_buffer_depth(self) -> int:
        """Beats of row buffer (0 when no row is buffered)."""
        return self.max_row // self.lanes + ROW_BUFFER_SLACK if self.buffers_rows else 0

    @property
    def beat_period(self) -> int:
        """Clock cycles per beat at full rate."""
        if self.method == "shift" and self.divider == "iterative":
            return self.constants.quotient_bits + 1
        return 1

    @property
    def latency(self) -> int:
        """Cycles from an input handshake to its output beat, sink always ready; in row mode,
        from the handshake of a row's last beat to the row's first output beat."""
        if self.method == "poly":
            from .poly import PolyGelu
            return PolyGelu.LATENCY
        if self.method == "lut":
            from .lut import LutGelu
            return LutGelu.LATENCY
        from .shift import RowBuffer, ShiftBack, ShiftFront
        k = self.constants
        divider = k.quotient_bits + (1 if self.divider == "iterative" else 0)
        row_buffer = RowBuffer.LATENCY if self.buffers_rows else 0
        return row_buffer + ShiftFront.latency_for(k) + divider + ShiftBack.LATENCY
