"""The encoder accelerator (issue 13): a BERT-style encoder stack on Lutra's blocks."""

from .core import EncoderAccelerator
from .params import EncoderParams

__all__ = ["EncoderAccelerator", "EncoderParams"]
