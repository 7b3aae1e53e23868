"""Pipeline helpers shared by every block: registers that stall together, delay lines, and
registers that synthesis keeps apart from their equals."""

from amaranth import C, Cat, ClockSignal, Module, ResetSignal, Signal
from amaranth.hdl import Instance

from .mul import uses_ecp5_primitives

__all__ = ["StallPipeline", "delayed", "own_register", "register_copies"]


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


def own_register(m: Module, name: str, value, platform, *, reset: bool = False):
    """``value`` through a register of its own (named ``name``; with ``reset``, cleared to 0 by
    the ``sync`` domain's reset like an ordinary register, otherwise without reset). On ECP5
    its bits are TRELLIS_FF instances: a register that holds what another one holds (a copy
    made to split a fan-out) is merged with it by Yosys' opt_merge, whatever the names or
    ``keep`` attributes of their wires; instances of a vendor cell are not merged."""
    reg = Signal.like(value, name=name, reset_less=not reset)
    if not uses_ecp5_primitives(platform):
        m.d.sync += reg.eq(value)
        return reg
    # SRMODE LSR_OVER_CE: a synchronous reset, as Amaranth's; REGSET RESET: to 0.
    clear = ResetSignal() if reset else C(0, 1)
    for n in range(len(reg)):
        m.submodules[f"{name}_ff{n}"] = Instance(
            "TRELLIS_FF", p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR",
            p_REGSET="RESET", p_SRMODE="LSR_OVER_CE",
            i_CLK=ClockSignal(), i_LSR=clear, i_CE=C(1, 1), i_DI=value[n], o_Q=reg[n])
    return reg


def register_copies(m: Module, name: str, value, platform, count: int, *,
                    reset: bool = False) -> list:
    """``count`` copies of ``value`` through a register (``name_0`` ...), each driving a share of
    a wide fan-out. On ECP5 each is an :func:`own_register`; elsewhere synthesis merges equal
    registers whatever is done, so one register serves all ``count`` (and the fit check's
    netlist count, ``gen/resources.py``, sees what synthesis keeps)."""
    copies = count if uses_ecp5_primitives(platform) else 1
    regs = [own_register(m, f"{name}_{n}", value, platform, reset=reset) for n in range(copies)]
    return regs * (count // copies)
