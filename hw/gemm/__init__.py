"""Systolic GEMM core: int8 or int16 activations, int8 weights, int8 or int16 results."""

from .core import GemmCore, GemmOut, KSlice, TileParams

__all__ = ["GemmCore", "GemmOut", "KSlice", "TileParams"]
