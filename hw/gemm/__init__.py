"""Systolic int8 GEMM core."""

from .core import GemmCore, GemmOut, KSlice, TileParams

__all__ = ["GemmCore", "GemmOut", "KSlice", "TileParams"]
