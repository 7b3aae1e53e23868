"""Stream layouts and the stall-together pipeline helper shared by the GELU units."""

from amaranth import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data

__all__ = ["GeluBeat", "StallPipeline", "signed_width", "unsigned_width"]


def GeluBeat(lanes: int, width: int) -> data.StructLayout:
    """``lanes`` signed ``width``-bit elements of a row; ``last`` marks the row's final beat."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(width), lanes),
        "last": unsigned(1),
    })


def signed_width(lo: int, hi: int) -> int:
    """Bits of the smallest signed shape holding every integer in [lo, hi]."""
    return max((-lo - 1).bit_length() if lo < 0 else 0, hi.bit_length() if hi > 0 else 0) + 1


def unsigned_width(hi: int) -> int:
    """Bits of the smallest unsigned shape holding every integer in [0, hi]."""
    return max(1, hi.bit_length())


class StallPipeline:
    """Registers of a fixed-latency pipeline that all move together.

    The pipeline advances when its output beat is absent or being taken (``~o.valid |
    o.ready``); that is also its input's ``ready``, so a beat enters only when everything ahead
    of it can move and nothing is dropped or repeated while the sink stalls.
    """

    def __init__(self, m: Module, i, o):
        self._m, self._i, self._o = m, i, o
        self.advance = Signal(name="advance")
        m.d.comb += [self.advance.eq(~o.valid | o.ready), i.ready.eq(self.advance)]

    def reg(self, name: str, shape, value):
        """A register loaded with ``value`` whenever the pipeline advances."""
        reg = Signal(shape, name=name)
        with self._m.If(self.advance):
            self._m.d.sync += reg.eq(value)
        return reg

    def delay(self, name: str, shape, value, cycles: int):
        """``value`` delayed by ``cycles`` pipeline steps."""
        for step in range(cycles):
            value = self.reg(f"{name}_d{step + 1}", shape, value)
        return value

    def finish(self, latency: int) -> None:
        """Track beat validity through ``latency`` stages (the depth the payload went through)."""
        valid = Signal(latency, name="stage_valid")
        with self._m.If(self.advance):
            self._m.d.sync += valid.eq(Cat(self._i.valid, valid[:-1]))
        self._m.d.comb += self._o.valid.eq(valid[-1])
