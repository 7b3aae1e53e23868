"""GELU unit: I-ViT ShiftGELU (default), I-BERT i-GELU and a table baseline."""

from .core import DIVIDERS, MAX_MODES, METHODS, Gelu
from .params import GeluParams
from .pipeline import GeluBeat

__all__ = ["Gelu", "GeluBeat", "GeluParams", "METHODS", "MAX_MODES", "DIVIDERS"]
