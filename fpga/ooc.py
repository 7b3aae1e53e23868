"""Out-of-context wrapper: the block alone between registers, with one output pin.

Every input port bit of the block (each stream's ``valid`` and ``payload``, each output
stream's ``ready``, any plain input) is driven by its own flip-flop of a shift chain fed by a
31-bit LFSR, and every output port bit is XOR-reduced into one registered pin. So synthesis can
neither constant-fold an input nor drop an output, each input bit is distinct (Yosys cannot
merge two multipliers that would see the same operands), and every timing path that starts or
ends in the block is register-to-register.

The wrapper is a separate Verilog module (``lutra_ooc``) that instantiates the block's own
Verilog, exactly as ``lutra generate`` writes it; the flow keeps the two modules apart through
synthesis (``keep_hierarchy``) so the wrapper's cells are counted on their own.
"""

from __future__ import annotations

from amaranth import Cat, ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from .lfsr import add_lfsr

__all__ = ["OOC_TOP", "OocWrapper"]

OOC_TOP = "lutra_ooc"


class OocWrapper(wiring.Component):
    """Drives ``module``'s input ports from an LFSR chain and XORs its outputs to ``out``.

    Parameters
    ----------
    module : str
        Verilog module name of the block.
    ports : list of dict
        The block's ports as in its manifest (``name``, ``direction``, ``width``); ``clk`` and
        ``rst`` are connected to this wrapper's own clock and reset.

    Members
    -------
    out : Out(1)
        Registered XOR of every output bit of the block.
    """

    def __init__(self, *, module: str, ports: list[dict]):
        self._module = module
        self._ports = [p for p in ports if p["name"] not in ("clk", "rst")]
        super().__init__({"out": Out(1)})

    @property
    def input_bits(self) -> int:
        return sum(p["width"] for p in self._ports if p["direction"] == "in")

    @property
    def output_bits(self) -> int:
        return sum(p["width"] for p in self._ports if p["direction"] == "out")

    def elaborate(self, platform):
        m = Module()
        lfsr = add_lfsr(m, "lfsr")
        chain = Signal(max(self.input_bits, 1), name="chain")
        m.d.sync += chain.eq(Cat(lfsr[-1], chain[:-1]))

        connections = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
        outputs = []
        offset = 0
        for port in self._ports:
            if port["direction"] == "in":
                connections[f"i_{port['name']}"] = chain[offset:offset + port["width"]]
                offset += port["width"]
            else:
                wire = Signal(port["width"], name=f"block_{port['name']}")
                connections[f"o_{port['name']}"] = wire
                outputs.append(wire)
        m.submodules.block = Instance(self._module, **connections)
        m.d.sync += self.out.eq(Cat(*outputs).xor())
        return m
