"""The GELU units' stream layout; their pipeline helpers live in ``hw/common``."""

from amaranth import signed, unsigned
from amaranth.lib import data

# Transitional: hw/layernorm still imports these from here (moved to hw/common).
from ..common.arith import signed_width, unsigned_width  # noqa: F401
from ..common.pipeline import StallPipeline  # noqa: F401

__all__ = ["GeluBeat"]


def GeluBeat(lanes: int, width: int) -> data.StructLayout:
    """``lanes`` signed ``width``-bit elements of a row; ``last`` marks the row's final beat."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(width), lanes),
        "last": unsigned(1),
    })
