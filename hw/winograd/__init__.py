"""Winograd F(2x2,3x3) / F(4x4,3x3) convolution transform unit and its feature-map ends."""

from .core import InputTile, PassParams, WeightBeat, WinogradOut, WinogradUnit
from .feature_map import FeatureMapParams, PixelIn, PixelOut, Tiler, Untiler, WinogradFeatureMap
from .params import WinogradFMParams, WinogradParams

__all__ = ["InputTile", "PassParams", "WeightBeat", "WinogradOut", "WinogradUnit",
           "FeatureMapParams", "PixelIn", "PixelOut", "Tiler", "Untiler", "WinogradFeatureMap",
           "WinogradParams", "WinogradFMParams"]
