"""Streaming softmax engine: LUT methods (recip, lut2d) and I-ViT's ShiftMax."""

from .core import SoftmaxEngine, SoftmaxIn, SoftmaxOut
from .params import SoftmaxParams

__all__ = ["SoftmaxEngine", "SoftmaxIn", "SoftmaxOut", "SoftmaxParams"]
