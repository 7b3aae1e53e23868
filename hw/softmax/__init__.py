"""Streaming softmax engine: LUT methods (recip, lut2d) and I-ViT's ShiftMax."""

from .engine import SoftmaxEngine, SoftmaxIn, SoftmaxOut

__all__ = ["SoftmaxEngine", "SoftmaxIn", "SoftmaxOut"]
