"""Out-of-context wrapper: the block alone between registers, with one output pin.

Every input port bit of the block (each stream's ``valid`` and ``payload``, each output
stream's ``ready``, any plain input) is driven by its own flip-flop of a shift chain fed by a
31-bit LFSR, and every output port bit is registered, then XOR-reduced through registered levels
of four-input XORs into one pin. So synthesis can
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
        XOR of every output bit of the block, through registered levels.
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
        # Every output bit is registered as it leaves the block, then XOR-reduced four bits per
        # LUT per registered level: a block output that is combinational (a stream's ready, say)
        # must not be timed through a deep XOR tree that is the wrapper's, not the block's.
        widths = self._output_levels()
        level = Signal(widths[0], name="captured")
        m.d.sync += level.eq(Cat(*outputs))
        for depth, width in enumerate(widths[1:], start=1):
            reduced = Signal(width, name=f"xor_level{depth}")
            m.d.sync += reduced.eq(Cat(*(level[n:n + 4].xor() for n in range(0, len(level), 4))))
            level = reduced
        m.d.comb += self.out.eq(level)
        return m

    def _output_levels(self) -> list[int]:
        """Widths of the output registers: the captured outputs, then each 4-input XOR level
        down to one bit."""
        widths = [max(self.output_bits, 1)]
        while widths[-1] > 1:
            widths.append(-(-widths[-1] // 4))
        return widths

    @property
    def output_ffs(self) -> int:
        """Flip-flops of the output side: the captured outputs and every XOR level."""
        return sum(self._output_levels())
