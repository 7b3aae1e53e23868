"""Streaming integer LayerNorm (I-BERT's IntLayerNorm made fully integer), bit-exact to
:func:`sim.golden.layernorm.layer_norm_int`."""

from .core import InBeat, LayerNorm, OutBeat, ParamBeat
from .params import WIDTHS, LayerNormParams
from .steps import DIVIDERS

__all__ = ["LayerNorm", "LayerNormParams", "InBeat", "OutBeat", "ParamBeat", "DIVIDERS", "WIDTHS"]
