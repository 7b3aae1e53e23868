"""The GELU units' stream layout; their pipeline helpers live in ``hw/common``."""

from amaranth import signed, unsigned
from amaranth.lib import data

__all__ = ["GeluBeat"]


def GeluBeat(lanes: int, width: int) -> data.StructLayout:
    """``lanes`` signed ``width``-bit elements of a row; ``last`` marks the row's final beat."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(width), lanes),
        "last": unsigned(1),
    })
