"""Winograd F(2x2,3x3) / F(4x4,3x3) convolution transform unit."""

from .core import InputTile, PassParams, WeightBeat, WinogradOut, WinogradUnit

__all__ = ["InputTile", "PassParams", "WeightBeat", "WinogradOut", "WinogradUnit"]
