"""Lutra's GELU unit: I-ViT ShiftGELU (default), I-BERT i-GELU or a table, chosen at generation."""

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .lut import LutGelu
from .params import DIVIDERS, MAX_MODES, METHODS, GeluParams
from .pipeline import GeluBeat
from .poly import PolyGelu
from ..common.params import params_or_keywords
from .shift import Divider, RowBuffer, ShiftBack, ShiftFront

__all__ = ["METHODS", "MAX_MODES", "DIVIDERS", "Gelu"]


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
    params : GeluParams
        All the parameters below at once (or give them as keywords).
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

    def __init__(self, params: GeluParams | None = None, **kwargs):
        params = params_or_keywords(GeluParams, params, kwargs)
        self._params = params
        super().__init__({
            "i": In(stream.Signature(GeluBeat(params.lanes, params.in_width))),
            "o": Out(stream.Signature(GeluBeat(params.lanes, params.out_width))),
        })

    @property
    def parameters(self) -> GeluParams:
        """The validated parameters with every derived figure."""
        return self._params

    method = property(lambda self: self._params.method)
    scale = property(lambda self: self._params.scale)
    in_width = property(lambda self: self._params.in_width)
    lanes = property(lambda self: self._params.lanes)
    n = property(lambda self: self._params.n)
    out_bits = property(lambda self: self._params.out_bits)
    max_mode = property(lambda self: self._params.max_mode)
    max_row = property(lambda self: self._params.max_row)
    divider = property(lambda self: self._params.divider)
    out_width = property(lambda self: self._params.out_width)
    out_scale = property(lambda self: self._params.out_scale)
    constants = property(lambda self: self._params.constants)
    buffers_rows = property(lambda self: self._params.buffers_rows)
    row_buffer_depth = property(lambda self: self._params.row_buffer_depth)
    beat_period = property(lambda self: self._params.beat_period)
    latency = property(lambda self: self._params.latency)

    def _parts(self):
        p = self._params
        k, lanes = p.constants, p.lanes
        if p.method == "poly":
            return [PolyGelu(constants=k, lanes=lanes)]
        if p.method == "lut":
            return [LutGelu(table=p.lut_table, in_width=p.in_width, lanes=lanes)]
        parts = [ShiftFront(constants=k, lanes=lanes),
                 Divider(constants=k, lanes=lanes, divider=p.divider),
                 ShiftBack(constants=k, lanes=lanes)]
        if p.buffers_rows:
            parts.insert(0, RowBuffer(lanes=lanes, width=p.in_width,
                                      depth=p.row_buffer_depth))
        return parts

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
