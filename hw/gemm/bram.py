"""A simple dual-port memory in block RAM whose read goes through the RAM's output register.

Used for the GEMM core's row and tile memories with ``GemmParams.block_ram``: in LUT RAM they
take six logic cells per 16 x 4 bits (a TRELLIS_DPR16X4) plus the multiplexers of their depth.
A block RAM read straight into logic is slow (the DP16KD's clock-to-out without its output
register was 6.2 ns of an 8.56 ns path on the 4 x 4 core, seed 1), so the read is registered
once more: ``r_data`` at cycle t + 2 is the word at ``r_addr`` of cycle t.

In generic Verilog (``lutra generate``, the simulators, iCE40) that register is a flip-flop after
an Amaranth ``Memory`` marked ``ram_style = "block"`` (Yosys maps it to SB_RAM40_4K or DP16KD).
Elaborated for ECP5 (``hw.common.mul.uses_ecp5_primitives``) the memory is DP16KD instances in
their 1024 x 18 mode, written on port A and read on port B with ``REGMODE_B = "OUTREG"``: Yosys
does not use that output register when it infers a DP16KD, and nextpnr times the RAM's
registered output as a register. ``sim/models/DP16KD.v`` is the behavioural model the tests use.
"""

from amaranth import ClockSignal, Module, Signal, unsigned
from amaranth.hdl import Instance
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..common.checks import check_int
from ..common.mul import uses_ecp5_primitives

__all__ = ["BlockRAM", "BLOCK_RAM_LATENCY", "DP16KD_DEPTH", "DP16KD_WIDTH"]

#: Cycles from a read address to its data.
BLOCK_RAM_LATENCY = 2
#: Words and bits of one DP16KD in the mode :class:`BlockRAM` uses (1024 x 18).
DP16KD_DEPTH, DP16KD_WIDTH = 1024, 18
_DP16KD_ADDR_BITS = 10      # AD[13:4] in the x18 mode; AD[1:0] are the write byte enables


class BlockRAM(wiring.Component):
    """``depth`` words of ``width`` bits in block RAM: one write port, one registered read port.

    Parameters
    ----------
    width : int
        Bits per word, 1..1024.
    depth : int
        Words, 1..1024.

    Members
    -------
    w_addr : In(range(depth))
    w_data : In(width)
    w_en : In(1)
        The word ``w_data`` is written at ``w_addr`` at the clock edge that ends a cycle with
        ``w_en`` set.
    r_addr : In(range(depth))
    r_data : Out(width)
        The word at ``r_addr`` two cycles ago (read every cycle). A word written in the cycle
        its address is presented may be read old or new: the GEMM core never reads a row or
        tile before the cycle after its write.
    """

    def __init__(self, *, width: int, depth: int):
        check_int("width", width, 1, 1024)
        check_int("depth", depth, 1, DP16KD_DEPTH)
        self._width, self._depth = width, depth
        super().__init__({"w_addr": In(range(max(depth, 2))), "w_data": In(width),
                          "w_en": In(1), "r_addr": In(range(max(depth, 2))),
                          "r_data": Out(width)})

    @property
    def width(self) -> int:
        return self._width

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def blocks(self) -> int:
        """DP16KD instances of the ECP5 form: one per 18 bits of the word."""
        return -(-self._width // DP16KD_WIDTH)

    def elaborate(self, platform):
        m = Module()
        if uses_ecp5_primitives(platform):
            self._ecp5(m)
            return m
        # (no_rw_check: see the class docstring on reads of a word being written. The read
        # register follows the asynchronous port, so that Yosys merges it into the memory
        # and, told so, leaves collisions undefined: a synchronous port reaches it from
        # Amaranth's RTLIL with a read-first behaviour, which Yosys keeps on iCE40 by delaying
        # each write a cycle and bypassing it, two flip-flops per bit.)
        memory = Memory(shape=unsigned(self._width), depth=self._depth, init=[],
                        attrs={"ram_style": "block", "no_rw_check": 1})
        m.submodules.memory = memory
        write, read = memory.write_port(), memory.read_port(domain="comb")
        read_data = Signal(self._width, reset_less=True)
        m.d.comb += [write.addr.eq(self.w_addr), write.data.eq(self.w_data),
                     write.en.eq(self.w_en), read.addr.eq(self.r_addr)]
        m.d.sync += [read_data.eq(read.data), self.r_data.eq(read_data)]
        return m

    def _ecp5(self, m: Module) -> None:
        # Only the pins Yosys' own DP16KD mapping drives are connected (constant pins are
        # routes from the GND/VCC nets; see hw/common/mul.py).
        for n in range(self.blocks):
            lo, hi = n * DP16KD_WIDTH, min((n + 1) * DP16KD_WIDTH, self._width)
            data_in = Signal(DP16KD_WIDTH, name=f"di{n}")
            data_out = Signal(DP16KD_WIDTH, name=f"do{n}")
            m.d.comb += [data_in.eq(self.w_data[lo:hi]), self.r_data[lo:hi].eq(data_out)]
            w_addr = Signal(_DP16KD_ADDR_BITS, name=f"wa{n}")
            r_addr = Signal(_DP16KD_ADDR_BITS, name=f"ra{n}")
            m.d.comb += [w_addr.eq(self.w_addr), r_addr.eq(self.r_addr)]
            ports = {f"i_DIA{b}": data_in[b] for b in range(DP16KD_WIDTH)}
            ports |= {f"i_ADA{b + 4}": w_addr[b] for b in range(_DP16KD_ADDR_BITS)}
            ports |= {"i_ADA3": 0, "i_ADA2": 0, "i_ADA1": 1, "i_ADA0": 1}    # both bytes
            ports |= {f"i_ADB{b + 4}": r_addr[b] for b in range(_DP16KD_ADDR_BITS)}
            ports |= {"i_ADB3": 0, "i_ADB2": 0, "i_ADB1": 0, "i_ADB0": 0}
            ports |= {f"o_DOB{b}": data_out[b] for b in range(DP16KD_WIDTH)}
            ports |= {"i_CLKA": ClockSignal("sync"), "i_CEA": 1, "i_OCEA": 1,
                      "i_WEA": self.w_en, "i_RSTA": 0,
                      "i_CSA2": 0, "i_CSA1": 0, "i_CSA0": 0,
                      "i_CLKB": ClockSignal("sync"), "i_CEB": 1, "i_OCEB": 1,
                      "i_WEB": 0, "i_RSTB": 0,
                      "i_CSB2": 0, "i_CSB1": 0, "i_CSB0": 0}
            m.submodules[f"ram{n}"] = Instance(
                "DP16KD",
                p_DATA_WIDTH_A=DP16KD_WIDTH, p_DATA_WIDTH_B=DP16KD_WIDTH,
                p_REGMODE_A="NOREG", p_REGMODE_B="OUTREG",
                p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL",
                p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                p_RESETMODE="SYNC", p_GSR="DISABLED",
                **ports)
