"""Pipeline helpers shared by every block: registers that stall together, and delay lines."""

from amaranth import Cat, Module, Signal

__all__ = ["StallPipeline", "delayed"]


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


def delayed(m: Module, name: str, value, cycles: int, *, shape=None, reset_less: bool = False,
            suffix: str = "_d"):
    """``value`` through ``cycles`` free-running ``sync`` registers named
    ``{name}{suffix}{k}`` (``k`` from 1), of ``shape`` (default: ``value``'s own)."""
    for k in range(cycles):
        reg = (Signal(shape, name=f"{name}{suffix}{k + 1}", reset_less=reset_less)
               if shape is not None else
               Signal.like(value, name=f"{name}{suffix}{k + 1}", reset_less=reset_less))
        m.d.sync += reg.eq(value)
        value = reg
    return value
