"""Lutra's GELU unit: I-ViT ShiftGELU (default), I-BERT i-GELU or a table, chosen at generation."""

import math

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sim.golden.gelu import i_gelu_constants, lut_gelu_table, shift_gelu_constants

from ..common.checks import check_choice, check_int
from .lut import LutGelu
from ..common.arith import signed_width
from .pipeline import GeluBeat
from .poly import PolyGelu
from .shift import Divider, RowBuffer, ShiftBack, ShiftFront

__all__ = ["METHODS", "MAX_MODES", "DIVIDERS", "Gelu"]

METHODS = ("shift", "poly", "lut")
MAX_MODES = ("row", "static")
DIVIDERS = ("pipelined", "iterative")

#: Beats of buffer beyond the longest row, covering the descriptor FIFO's read latency, so that
#: rows of ``max_row`` elements stream back to back at one beat per clock.
ROW_BUFFER_SLACK = 2


class Gelu(wiring.Component):
    """Integer GELU of a stream of signed ``in_width``-bit values at scale ``scale``.

    ``method="shift"`` (default) is bit-exact to I-ViT's ShiftGELU,
    :func:`sim.golden.gelu.shift_gelu`: ``x * sigmoid(1.702 x)`` with a shift-and-add
    exponential and one exact division ``(2**31 - 1) // min(e + em, 2**31 - 1)`` per element.
    ``max_mode="row"`` subtracts each row's maximum, as I-ViT does: rows (ended by ``last``)
    are buffered in block RAM and leave after their last beat arrives; ``"static"`` subtracts
    the largest input code instead and streams with no buffer. Output scale
    ``scale * 2**-(out_bits - 1)``.

    ``method="poly"`` is I-BERT's i-GELU, :func:`sim.golden.gelu.i_gelu` (scale
    ``S * S_L / 2``, negative); it is built for wide inputs with small scales (``in_width``
    about 16). ``method="lut"`` reads the correctly rounded GELU of each input code from a table
    (:func:`sim.golden.gelu.lut_gelu`, scale ``scale * 2**-(out_bits - 1)``).

    Every method takes one beat of ``lanes`` elements per clock when ``divider="pipelined"``;
    ``divider="iterative"`` (shift only) takes one beat every ``beat_period`` cycles.
    Backpressure on ``o`` stalls the unit; nothing is dropped, repeated or reordered.

    Parameters
    ----------
    method : str
        ``"shift"``, ``"poly"`` or ``"lut"``.
    scale : float
        Input scale ``S`` (real value = integer * S), in [2**-24, 16].
    in_width : int
        Input bits, 2..16 (``lut``: 2..12).
    lanes : int
        Elements per beat, 1..16.
    n : int
        ShiftGELU's exponent range (I-ViT: 23), 1..30.
    out_bits : int
        Sigmoid bits (shift) / output fraction (lut): output scale ``S * 2**-(out_bits - 1)``;
        1..16.
    max_mode : str
        ``"row"`` or ``"static"`` (shift only).
    max_row : int
        Longest row in elements, a multiple of ``lanes`` (shift, ``max_mode="row"``).
    divider : str
        ``"pipelined"`` or ``"iterative"`` (shift only).

    Members
    -------
    i : In(stream.Signature(GeluBeat(lanes, in_width)))
        Input elements; ``last`` ends a row.
    o : Out(stream.Signature(GeluBeat(lanes, out_width)))
        One output per input, in order, ``last`` where the input had it; scale ``out_scale``.
    """

    def __init__(self, *, method: str = "shift", scale: float = 2.0 ** -4, in_width: int = 8,
                 lanes: int = 1, n: int = 23, out_bits: int = 8, max_mode: str = "row",
                 max_row: int = 1536, divider: str = "pipelined"):
        check_choice("method", method, METHODS)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a number, not {scale!r}")
        if not (math.isfinite(scale) and 2.0 ** -24 <= scale <= 16):
            raise ValueError(f"scale must be in [2**-24, 16], not {scale!r}")
        check_int("in_width", in_width, 2, 12 if method == "lut" else 16)
        check_int("lanes", lanes, 1, 16)
        check_int("n", n, 1, 30)
        check_int("out_bits", out_bits, 1, 16)
        check_choice("max_mode", max_mode, MAX_MODES)
        check_int("max_row", max_row, 1, 1 << 16)
        if max_row % lanes:
            raise ValueError(f"max_row must be a multiple of lanes ({lanes}), not {max_row!r}")
        check_choice("divider", divider, DIVIDERS)
        self._method, self._scale, self._in_width = method, float(scale), in_width
        self._lanes, self._n, self._out_bits = lanes, n, out_bits
        self._max_mode, self._max_row, self._divider = max_mode, max_row, divider

        if method == "shift":
            self._constants = shift_gelu_constants(scale, n=n, out_bits=out_bits,
                                                   in_width=in_width, max_mode=max_mode)
            self._out_scale = self._constants.out_scale
            self._out_width = signed_width(*self._constants.y_range)
        elif method == "poly":
            self._constants = i_gelu_constants(scale, in_width=in_width)
            self._out_scale = self._constants.out_scale
            self._out_width = signed_width(*self._constants.y_range)
        else:
            self._constants = None
            self._out_scale = scale * 2.0 ** -(out_bits - 1)
            table = lut_gelu_table(scale, out_bits=out_bits, in_width=in_width)
            self._out_width = signed_width(int(table.min()), int(table.max()))
        super().__init__({
            "i": In(stream.Signature(GeluBeat(lanes, in_width))),
            "o": Out(stream.Signature(GeluBeat(lanes, self._out_width))),
        })

    method = property(lambda self: self._method)
    scale = property(lambda self: self._scale)
    in_width = property(lambda self: self._in_width)
    lanes = property(lambda self: self._lanes)
    n = property(lambda self: self._n)
    out_bits = property(lambda self: self._out_bits)
    max_mode = property(lambda self: self._max_mode)
    max_row = property(lambda self: self._max_row)
    divider = property(lambda self: self._divider)
    out_width = property(lambda self: self._out_width)
    out_scale = property(lambda self: self._out_scale)

    @property
    def constants(self):
        """The golden model's constants (``ShiftGeluConstants``/``IGeluConstants``; ``None`` for
        ``lut``)."""
        return self._constants

    @property
    def buffers_rows(self) -> bool:
        return self._method == "shift" and self._max_mode == "row"

    @property
    def row_buffer_depth(self) -> int:
        """Beats of row buffer (0 when no row is buffered)."""
        return self._max_row // self._lanes + ROW_BUFFER_SLACK if self.buffers_rows else 0

    @property
    def beat_period(self) -> int:
        """Clock cycles per beat at full rate."""
        if self._method == "shift" and self._divider == "iterative":
            return self._constants.quotient_bits + 1
        return 1

    def _parts(self):
        k, lanes = self._constants, self._lanes
        if self._method == "poly":
            return [PolyGelu(constants=k, lanes=lanes)]
        if self._method == "lut":
            return [LutGelu(scale=self._scale, in_width=self._in_width,
                            out_bits=self._out_bits, lanes=lanes)]
        parts = [ShiftFront(constants=k, lanes=lanes),
                 Divider(constants=k, lanes=lanes, divider=self._divider),
                 ShiftBack(constants=k, lanes=lanes)]
        if self.buffers_rows:
            parts.insert(0, RowBuffer(lanes=lanes, width=self._in_width,
                                      depth=self.row_buffer_depth))
        return parts

    @property
    def latency(self) -> int:
        """Cycles from an input handshake to its output beat, sink always ready; in row mode,
        from the handshake of a row's last beat to the row's first output beat."""
        if self._method == "poly":
            return PolyGelu.LATENCY
        if self._method == "lut":
            return LutGelu.LATENCY
        k = self._constants
        divider = k.quotient_bits + (1 if self._divider == "iterative" else 0)
        row_buffer = RowBuffer.LATENCY if self.buffers_rows else 0
        return row_buffer + ShiftFront.latency_for(k) + divider + ShiftBack.LATENCY

    def elaborate(self, platform):
        m = Module()
        parts = self._parts()
        for index, part in enumerate(parts):
            m.submodules[type(part).__name__.lower()] = part
            if index:
                wiring.connect(m, parts[index - 1].o, part.i)
        wiring.connect(m, wiring.flipped(self.i), parts[0].i)
        wiring.connect(m, parts[-1].o, wiring.flipped(self.o))
        return m
