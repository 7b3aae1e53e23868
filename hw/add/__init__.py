"""Lutra's residual adder: TFLite's int8/int16 ``ADD`` of 2 or 3 streams, bit-exact to
:func:`sim.golden.add.add_int`."""

from .core import AddUnit, InBeat, OutBeat, ParamBeat
from .params import WIDTHS, AddUnitParams

__all__ = ["AddUnit", "AddUnitParams", "InBeat", "OutBeat", "ParamBeat", "WIDTHS"]
