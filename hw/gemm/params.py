"""The GEMM core's parameters (``GemmParams``: bounds, help text, every derived figure), its
operand widths and the bounds derived from them, for the core, its driver and its block entry
(plain Python: no Amaranth, so the tiling driver and the fit check can use it)."""

from dataclasses import dataclass

from ..common.checks import check_int
from ..common.params import param, validate_fields

__all__ = ["A_WIDTHS", "OUT_WIDTHS", "B_WIDTH", "K_PER_PE", "READOUT_GROUP", "REQUANT_FAR_DSPS",
           "DSP_INPUT_REG_ABOVE", "GemmParams", "a_offset_width", "a_offset_range",
           "max_abs_product", "max_k", "pe_product_width"]

#: Bits of the activation operand ``a``: int8 (default) or int16.
A_WIDTHS = (8, 16)
#: Bits of a requantized result (and of its zero point and clamp bounds).
OUT_WIDTHS = (8, 16)
#: Bits of the weight operand ``b``.
B_WIDTH = 8
#: Products a PE may take per clock (``k_per_pe``): 1 (one MAC per PE) or a dot product.
K_PER_PE = (1, 2, 4)
#: Whether the core's requantizer takes its deeper form (``Requantizer(far_dsps=...)``, 4
#: cycles more): both sides of its DSP products registered (the core fills the device's DSPs,
#: so the requantizer's get the sites left over, far from its logic), and its left shift,
#: high-word sum and rounding split over more stages (150 MHz on ECP5, 50 MHz on the iCE40 UP5K).
REQUANT_FAR_DSPS = True
#: Rows whose results one read-out multiplexer gathers in one cycle (a power of two); taller
#: arrays select in two register stages (``GemmParams.readout_stages``).
READOUT_GROUP = 4
#: DSP products (``dsp_macs``) above which ``dsp_input_reg="auto"`` gives every PE's multiplier
#: a register of its own in front of it: the requantized 8 x 8 (64 MULT18X18D of the 85F's 156)
#: meets 150 MHz without it; the 12 x 12 (144, and 4 for its requantizer) fills the device's DSP
#: sites, so many DSPs sit far from their PEs, and its worst path was a PE's operand register
#: to its DSP's input (6.61 ns of routing, seed 1). The default is ``"off"``: the 12 x 12 with
#: the registers (44089c9, seed 1) did not finish routing in 82 minutes (docs/blocks/gemm.md).
DSP_INPUT_REG_ABOVE = 64


def a_offset_width(a_width: int) -> int:
    """Bits of the ``a_offset`` field of the ``params`` stream.

    int8: 9 bits (TFLite's -zero point is in [-127, 128]; the field allows [-256, 255]).
    int16: 17 bits, of which [-32767, 32768] (-zero point of every int16 zero point) is legal:
    the core applies the offset through the negated zero point, a 16-bit value.
    """
    return {8: 9, 16: 17}[a_width]


def a_offset_range(a_width: int) -> tuple[int, int]:
    """Inclusive range of ``a_offset`` the core computes exactly with."""
    if a_width == 8:
        return -256, 255
    return -(1 << 15) + 1, 1 << 15


def max_abs_product(a_width: int = 8) -> int:
    """Largest ``|(a + a_offset) * b|`` over every legal ``a``, ``a_offset`` and int8 ``b``."""
    lo, hi = a_offset_range(a_width)
    a_min, a_max = -(1 << (a_width - 1)), (1 << (a_width - 1)) - 1
    return max(-(a_min + lo), a_max + hi) * (1 << (B_WIDTH - 1))


def max_k(acc_width: int, a_width: int = 8) -> int:
    """Largest K for which every partial sum ``sum_k (a + a_offset) * b`` provably fits a signed
    ``acc_width``-bit accumulator, whatever the operands."""
    return ((1 << (acc_width - 1)) - 1) // max_abs_product(a_width)


def pe_product_width(a_width: int) -> int:
    """Bits of one PE's product: int8 ``a + a_offset`` (10 bits) x int8, or int16 ``a`` x int8
    (with int16 activations the offset is applied per column, not in the PE)."""
    return {8: 10, 16: 16}[a_width] + B_WIDTH


@dataclass(frozen=True)
class GemmParams:
    """Generation-time parameters of :class:`hw.gemm.GemmCore`, checked on construction, and
    every figure derived from them (latency, FIFO depths, ``max_k``, multipliers).

    Each field's metadata holds its help text and bounds (``lo``/``hi``, or ``choices``); the
    command line, the TOML schema and ``lutra list`` are derived from them
    (``gen/blocks/gemm.py``). The run-time tile parameters are not here: they arrive on the
    core's ``params`` stream.
    """

    rows: int = param(4, "PE rows (rows of A and C per tile)", lo=1, hi=32)
    cols: int = param(4, "PE columns (columns of B and C per tile)", lo=1, hi=32)
    acc_width: int = param(32, "accumulator bits (at least 24 with a_width 16)", lo=18, hi=32)
    requantize: bool = param(True, "requantize (false: raw int32 out)")
    out_lanes: int = param(1, "output elements per beat (divides cols)", lo=1, hi=32)
    a_width: int = param(8, "activation bits (weights stay int8); 16: a_offset in "
                         "[-32767, 32768], offset applied per column", choices=A_WIDTHS)
    out_width: int = param(8, "requantized output bits (zero point, act_min/max too); 8 with "
                           "requantize false", choices=OUT_WIDTHS)
    k_per_pe: int = param(1, "products per PE per clock (dot-product PE): each input beat "
                          "carries k_per_pe consecutive k-slices", choices=K_PER_PE)
    fabric_cols: int = param(0, "PE columns (the last ones, at most cols) whose multipliers are "
                             "built from logic instead of DSPs", lo=0, hi=32)
    block_ram: bool = param(False, "row and tile memories in block RAM, read through its output "
                            "register (latency +1): fewer logic cells than LUT RAM")
    dsp_input_reg: str = param("off", "a register in front of each PE's multiplier, its only "
                               "load, so that the placer may put it near a distant DSP "
                               "(latency +1): on, off, or auto (on above "
                               f"{DSP_INPUT_REG_ABOVE} DSP products)",
                               choices=("auto", "on", "off"))

    def __post_init__(self):
        # out_lanes is bounded by cols, checked below with that bound in the message.
        validate_fields(self, exclude=("out_lanes", "fabric_cols"))
        lo = pe_product_width(self.a_width)
        if self.acc_width < lo:
            raise ValueError(f"acc_width must be in [{lo}, 32] when a_width is "
                             f"{self.a_width}, not {self.acc_width!r}")
        if not self.requantize and self.out_width != 8:
            raise ValueError(f"out_width must be 8 when requantize is False (the raw output "
                             f"is int32), not {self.out_width!r}")
        check_int("out_lanes", self.out_lanes, 1, self.cols)
        if self.cols % self.out_lanes:
            raise ValueError(f"out_lanes must divide cols ({self.cols}), not "
                             f"{self.out_lanes!r}")
        check_int("fabric_cols", self.fabric_cols, 0, self.cols)

    # ---- derived figures ---------------------------------------------------------------------

    @property
    def macs(self) -> int:
        """Products per clock: ``rows * cols * k_per_pe`` (``dsp_macs + fabric_macs``)."""
        return self.rows * self.cols * self.k_per_pe

    @property
    def fabric_macs(self) -> int:
        """Products per clock of the PEs whose multipliers are logic (``fabric_cols``
        columns): ``rows * fabric_cols * k_per_pe``."""
        return self.rows * self.fabric_cols * self.k_per_pe

    @property
    def dsp_macs(self) -> int:
        """Products per clock of the PEs on DSPs (one DSP each)."""
        return self.macs - self.fabric_macs

    @property
    def dsp_input_stage(self) -> bool:
        """Whether each PE's multiplier takes its operands from a register of its own
        (``dsp_input_reg``; with ``"auto"``, when ``dsp_macs`` exceeds
        ``DSP_INPUT_REG_ABOVE``): one cycle more from a PE's operands to its product."""
        if self.dsp_input_reg == "auto":
            return self.dsp_macs > DSP_INPUT_REG_ABOVE
        return self.dsp_input_reg == "on"

    @property
    def tree_levels(self) -> int:
        """Pipelined adder levels that sum a PE's ``k_per_pe`` products before its
        accumulator: ``log2(k_per_pe)``, one register each."""
        return self.k_per_pe.bit_length() - 1

    @property
    def max_k(self) -> int:
        """Largest K for which no partial sum can overflow ``acc_width`` bits (any operands and
        ``a_offset`` in range): results are exact up to it. Beyond it a 32-bit accumulator
        wraps modulo 2**32, exactly as the golden model's int32 sum does."""
        return max_k(self.acc_width, self.a_width)

    @property
    def a_offset_range(self) -> tuple[int, int]:
        """Inclusive range of the run-time ``a_offset`` the results are exact for."""
        return a_offset_range(self.a_width)

    @property
    def operand_a_width(self) -> int:
        """Bits of a PE's ``a`` operand: ``a + a_offset`` (int8) or ``a`` alone (int16)."""
        return pe_product_width(self.a_width) - B_WIDTH

    @property
    def offset_multipliers(self) -> int:
        """Products of the per-column offset cells: ``cols * k_per_pe`` with ``a_width=16``,
        else 0."""
        return self.cols * self.k_per_pe if self.a_width == 16 else 0

    @property
    def multipliers(self) -> int:
        """DSP products: ``k_per_pe`` per PE outside the ``fabric_cols`` columns and per
        offset cell (``a_width=16``), four per requantizer lane (its 32 x 32 product in
        16 x 16 parts)."""
        requant = 4 * self.out_lanes if self.requantize else 0
        return self.dsp_macs + self.offset_multipliers + requant

    @property
    def min_tile_cycles(self) -> int:
        """Minimum spacing in cycles (k-slice beats) between the last k-slices of
        consecutive tiles: ``max(rows, cols)``, at least 2 (a PE's result register holds a
        tile's sum from its last product until the next tile's, and the read-out takes it two
        cycles after that product)."""
        return max(self.rows, self.cols, 2)

    @property
    def beats_per_tile(self) -> int:
        """Output beats of one tile: ``rows * cols / out_lanes``."""
        return self.rows * self.cols // self.out_lanes

    @property
    def row_read_delay(self) -> int:
        """Cycles from a tile's last k-slice to the read of its first result row in the last
        column: the slice's edge register (1), its skew to column ``cols - 1`` (``cols - 1``),
        the PE's operand, DSP product and fabric product registers (3; 4 with
        ``dsp_input_stage``), its adder tree (``tree_levels``), its accumulator (1) and its
        result register (1) make ``5 + dsp_input_stage + tree_levels + cols``; the read-out
        register follows."""
        return 5 + int(self.dsp_input_stage) + self.tree_levels + self.cols

    @property
    def row_fifo_depth(self) -> int:
        """Rows of result buffering: enough that a sink that is always ready never throttles
        the input. A tile holds its reservation from its last k-slice until its last row leaves
        the FIFO; tiles end at most once per ``max(min_tile_cycles, beats_per_tile)`` cycles."""
        period = max(self.min_tile_cycles, self.beats_per_tile)
        lifetime = self.row_read_delay + self.readout_stages + 3 + self.beats_per_tile
        return self.rows * (-(-lifetime // period) + 1)

    @property
    def readout_stages(self) -> int:
        """Register stages from the PE results to a row memory's write: 1, or 2 with more than
        ``READOUT_GROUP`` rows (a mux within groups of neighbouring rows, then among them)."""
        return 1 if self.rows <= READOUT_GROUP else 2

    @property
    def tile_fifo_depth(self) -> int:
        """Tiles whose output-side parameters wait in the tile FIFO: one per ``rows`` rows of
        the row FIFO (tiles that have ended), plus the tile being sliced (its parameters enter
        as its ``params`` beat is taken)."""
        return self.row_fifo_depth // self.rows + 1

    @property
    def segments(self) -> int:
        """Output beats per row: ``cols / out_lanes``."""
        return self.cols // self.out_lanes

    @property
    def output_pipeline(self) -> int:
        """Cycles from a row's read out of the row FIFO to its first beat entering the output
        FIFO: the row shifter, the bias-add register and the requantizer (its deeper form:
        ``far_dsps``); with ``block_ram`` the read's output register first."""
        from ..common.requant import requant_latency
        return (2 + int(self.block_ram)
                + (requant_latency(REQUANT_FAR_DSPS) if self.requantize else 0))

    @property
    def out_fifo_depth(self) -> int:
        """Beats of the output FIFO. A row is read only when every beat it makes has a place
        reserved there, and a place is given back when its beat leaves ``o``; with an always
        ready sink a beat gives its place back ``output_pipeline + 4`` cycles after its row was
        read (FIFO write to read 2, the credit register 1, the decision 1), so two rows'
        worth plus that round trip keeps a row read every ``segments`` cycles."""
        return 2 * self.segments + self.output_pipeline + 4

    @property
    def latency(self) -> int:
        """Cycles from accepting a tile's last k-slice to its first output beat (unstalled):
        the last row finishes ``row_read_delay`` cycles later; then the read-out registers
        (``readout_stages``), the row FIFO (write, then buffered read: 2), the output pipeline
        and the output FIFO (2)."""
        return self.row_read_delay + self.readout_stages + 2 + self.output_pipeline + 2
