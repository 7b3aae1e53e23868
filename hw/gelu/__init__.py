"""GELU unit: I-ViT ShiftGELU (default), I-BERT i-GELU and a table baseline."""

from .core import DIVIDERS, MAX_MODES, METHODS, Gelu
from .pipeline import GeluBeat

__all__ = ["Gelu", "GeluBeat", "METHODS", "MAX_MODES", "DIVIDERS"]
