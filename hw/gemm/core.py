"""Output-stationary systolic GEMM core (int8 or int16 activations, int8 weights) with TFLite
requantization to int8 or int16."""

from amaranth import Array, C, Cat, Elaboratable, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.hdl import Instance
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..common.fabric_mul import FabricMultiplier
from ..common.params import params_or_keywords
from ..common.mul import (MULTIPLIER_LATENCY, PipelinedMultiplier, uses_ecp5_primitives,
                          uses_ice40_primitives)
from ..common.pipeline import delayed, own_register
from ..common.requant import Requantizer
from .bram import BlockRAM
from .params import B_WIDTH, READOUT_GROUP, REQUANT_FAR_DSPS, GemmParams, a_offset_width

__all__ = ["KSlice", "TileParams", "GemmOut", "GemmCore"]


def _next(pointer, depth: int):
    """``pointer + 1`` modulo ``depth``."""
    return Mux(pointer == depth - 1, 0, pointer + 1)


class _Ports:
    """Port signals under the names of a ``Memory`` port's (``addr``, ``data``, ``en``)."""

    def __init__(self, addr, data, en=None):
        self.addr, self.data, self.en = addr, data, en


class _CoreBlockRAM(BlockRAM):
    """A :class:`BlockRAM` whose ports are taken as a ``Memory``'s are (``write_port()``,
    ``read_port()``), so that the core drives both kinds of row and tile memory alike; the read
    data has the memory's shape."""

    def __init__(self, shape, depth: int):
        self._shape = Shape.cast(shape)
        super().__init__(width=self._shape.width, depth=depth)

    def write_port(self):
        return _Ports(self.w_addr, self.w_data, self.w_en)

    def read_port(self, *, domain):
        return _Ports(self.r_addr,
                      self.r_data.as_signed() if self._shape.signed else self.r_data)


class _CollisionFreeMemory(Elaboratable):
    """A ``Memory`` whose one read port is read a cycle after its address, as a ``Memory``'s
    synchronous port is, but through a register after its asynchronous port, and marked
    ``no_rw_check``: the core never reads a word in the cycle it is written. Yosys merges the
    register into the memory and, told so, leaves collisions undefined; a synchronous port
    reaches it from Amaranth's RTLIL with its read-first behaviour fixed, which Yosys keeps on
    iCE40 block RAM by delaying every write a cycle and bypassing it (two flip-flops per bit:
    889 FF and 446 LUT4 of the requantized 1 x 4 on the UP5K, a part at 87 % of its cells)."""

    def __init__(self, shape, depth: int):
        self._memory = Memory(shape=shape, depth=depth, init=[], attrs={"no_rw_check": 1})
        self._reads = []

    def write_port(self):
        return self._memory.write_port()

    def read_port(self, *, domain):
        assert domain == "sync"
        read = self._memory.read_port(domain="comb")
        data = Signal.like(read.data, name="read_data", reset_less=True)
        self._reads.append((read, data))
        return _Ports(read.addr, data)

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = self._memory
        m.d.sync += [data.eq(read.data) for read, data in self._reads]
        return m


def _memory(m, name: str, shape, depth: int, block_ram: bool, platform):
    """The core's row or tile memory ``name``: a ``Memory`` (LUT RAM, read a cycle after its
    address) or, with ``block_ram``, a :class:`BlockRAM` (read two cycles after). Outside
    ECP5's forms (LUT RAM, or DP16KD instances) it is a :class:`_CollisionFreeMemory`."""
    if block_ram:
        memory = _CoreBlockRAM(shape, depth)
    elif uses_ecp5_primitives(platform):
        memory = Memory(shape=shape, depth=depth, init=[])
    else:
        memory = _CollisionFreeMemory(shape, depth)
    m.submodules[name] = memory
    return memory


def _at_least(value, n: int):
    """``value >= n`` for an unsigned ``value`` and a constant ``n``, as logic of its bits from
    the top down (no carry chain)."""
    if n <= 0:
        return C(1, 1)
    if n >= 1 << len(value):
        return C(0, 1)
    top = len(value) - 1
    rest = value[:top] if top else None
    if n >> top & 1:
        return value[top] & (_at_least(rest, n - (1 << top)) if top else C(1, 1))
    return value[top] | (_at_least(rest, n) if top else C(0, 1))


def _select(values, index):
    """``values[index]``, the choices padded to every value of ``index`` (a complete case
    statement)."""
    values = list(values)
    return Array(values + values[-1:] * (2 ** len(index) - len(values)))[index]


#: INIT of each half of a CCU2C computing ``(0 if C else A) + B``: the LUT4 (D tied high) gives
#: the carry propagate, ``A ^ B`` or, with C set, ``B``; its low quarter (the LUT2 of A and B
#: that the carry logic takes as the generate when nothing propagates) gives ``B``, right in
#: both cases (A == B, or B == 0 with A ignored).
_MASKED_ADD_INIT = 0b1100_0110_0000_1100


def _masked_sum(m: Module, name: str, a, first, b):
    """``(0 if first else a) + b`` modulo ``2 ** len(a)`` (``b`` sign- or zero-extended, or
    truncated, to ``len(a)`` bits), as one chain of CCU2C instances (ECP5) whose LUTs apply
    the mask."""
    width = len(a)
    addend = Signal(width, name=f"{name}_addend")
    m.d.comb += addend.eq(b)
    total = Signal(width + (width & 1), name=name)    # (an odd width leaves one half spare)
    init = C(_MASKED_ADD_INIT, 16)
    carry = C(0, 1)
    for n, i in enumerate(range(0, width, 2)):
        ports = {}
        for half, j in enumerate((i, i + 1)):
            x, y = (a[j], addend[j]) if j < width else (C(0, 1), C(0, 1))
            ports |= {f"i_A{half}": x, f"i_B{half}": y, f"i_C{half}": first,
                      f"i_D{half}": C(1, 1), f"o_S{half}": total[j]}
        cout = Signal(name=f"{name}_carry{n}")
        m.submodules[f"{name}{n}"] = Instance(
            "CCU2C", p_INIT0=init, p_INIT1=init, p_INJECT1_0="NO", p_INJECT1_1="NO",
            i_CIN=carry, o_COUT=cout, **ports)
        carry = cout
    return total[:width]


# A k-slice's valid and last flags, as they travel with the operands through the array.
_Flags = data.StructLayout({"valid": 1, "last": 1})


class _FlagChain:
    """A row's flags ``stages`` registers after its edge register (``flags``, a ``_Flags``
    value), their valid flag carried exclusive-or the row's ``phase``, a register that toggles
    every cycle, as it was when the flags entered the edge register.

    Every PE's flags would otherwise be the same delays of the same edge flags as those of the
    other PEs of its anti-diagonal, which Yosys merges into one register per anti-diagonal:
    its accumulator clear and enable then reached 12 PEs across the 12 x 12 array (768
    flip-flops). A phase is a register that feeds back on itself, which synthesis cannot merge
    with another row's, so the rows' flags differ and each PE has its own."""

    def __init__(self, flags, phase, stages: int):
        self.flags, self.phase, self.stages = flags, phase, stages

    @classmethod
    def edge(cls, m: Module, name: str, valid, last, phase) -> "_FlagChain":
        """The edge register of a row's flags, taking ``valid`` and ``last``."""
        flags = Signal(_Flags, name=name, init=cls._invalid(0))
        m.d.sync += [flags.valid.eq(valid ^ phase), flags.last.eq(last)]
        return cls(flags, phase, 0)

    @staticmethod
    def _invalid(stages: int) -> dict:
        # The reset value, an invalid beat at every stage (the phase restarts at 0).
        return {"valid": (stages + 1) & 1, "last": 0}

    def next(self, m: Module, name: str) -> "_FlagChain":
        """The chain one register further on (a register named ``name``)."""
        flags = Signal(_Flags, name=name, init=self._invalid(self.stages + 1))
        m.d.sync += flags.eq(self.flags)
        return _FlagChain(flags, self.phase, self.stages + 1)

    def delayed(self, m: Module, name: str, cycles: int) -> "_FlagChain":
        """The chain ``cycles`` registers further on (named ``{name}_d1``, ...)."""
        chain = self
        for k in range(cycles):
            chain = chain.next(m, f"{name}_d{k + 1}")
        return chain

    @property
    def valid(self):
        """The true valid flag: the phase has toggled once per register since it was applied,
        and once for the edge register itself."""
        return self.flags.valid ^ self.phase ^ ((self.stages + 1) & 1)

    @property
    def last(self):
        return self.flags.last


def KSlice(rows: int, cols: int, a_width: int = 8, k_per_pe: int = 1) -> data.StructLayout:
    """One k-slice of a tile: column ``k`` of A (``rows`` values of ``a_width`` bits), row ``k``
    of B (``cols`` int8 values); ``last`` marks the tile's final k-slice.

    With ``k_per_pe`` > 1 a beat carries ``k_per_pe`` consecutive k-slices: ``a[r][j]`` is
    ``A[r, k + j]`` and ``b[c][j]`` is ``B[k + j, c]``."""
    a, b = signed(a_width), signed(B_WIDTH)
    if k_per_pe > 1:
        a, b = data.ArrayLayout(a, k_per_pe), data.ArrayLayout(b, k_per_pe)
    return data.StructLayout({
        "a": data.ArrayLayout(a, rows),
        "b": data.ArrayLayout(b, cols),
        "last": unsigned(1),
    })


def TileParams(cols: int, requantize: bool, a_width: int = 8,
               out_width: int = 8) -> data.StructLayout:
    """Run-time parameters of one tile, one beat per tile on the ``params`` stream."""
    fields = {
        "a_offset": signed(a_offset_width(a_width)),
        "bias": data.ArrayLayout(signed(32), cols),
    }
    if requantize:
        fields.update({
            "multiplier": data.ArrayLayout(signed(32), cols),
            "shift": data.ArrayLayout(signed(6), cols),
            "out_zero_point": signed(out_width),
            "act_min": signed(out_width),
            "act_max": signed(out_width),
        })
    return data.StructLayout(fields)


def GemmOut(lanes: int, requantize: bool, out_width: int = 8) -> data.StructLayout:
    """Output beat: ``lanes`` consecutive elements of a row of C (requantized to ``out_width``
    bits, or raw int32 accumulators); ``last`` marks the tile's final beat."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(out_width) if requantize else signed(32), lanes),
        "last": unsigned(1),
    })


class GemmCore(wiring.Component):
    """Output-stationary systolic array computing ``C = A . B`` tile by tile.

    Each tile is ``C[rows x cols] = sum_k (A[:, k] + a_offset) * B[k, :] + bias``, optionally
    requantized to int8 or int16 per column (TFLite ``MultiplyByQuantizedMultiplier``, zero
    point, clamp).
    ``K >= 1`` is chosen per tile at run time by the ``last`` flag of the k-slices. One k-slice
    enters per clock; the next tile's k-slices enter while the previous tile's results drain,
    so back-to-back tiles with ``K >= max(rows, cols, 2)`` keep every PE busy. Shorter tiles are
    accepted with idle cycles in between (``min_tile_cycles``).

    The array never stalls: results are moved into per-column row memories whose space is
    reserved when a tile's last k-slice is accepted, so backpressure on ``o`` reaches ``i``
    only through that reservation. No net driven by logic fans out across the array (see
    ``docs/blocks/gemm.md``, "Inside").

    Parameters
    ----------
    parameters : GemmParams
        The generation-time parameters (``hw/gemm/params.py``); or its fields as keyword
        arguments, ``GemmCore(rows=8, cols=8)``. They are:
    rows, cols : int
        Array size, 1..32 each.
    acc_width : int
        Accumulator width, 18..32 (24..32 with ``a_width=16``). The accumulator holds the exact
        sum for ``K <= max_k``; beyond, a 32-bit one wraps modulo 2**32 as the golden model does.
    requantize : bool
        Requantize (default) or stream raw int32 accumulators (bias included).
    out_lanes : int
        Output elements per beat; divides ``cols``. One requantizer lane each.
    a_width : int
        Bits of the activations ``a``: 8 (default) or 16. Weights are int8 either way. With 8,
        each PE multiplies ``a + a_offset`` (10 bits) by ``b``. With 16, ``a + a_offset`` would
        need 18 bits, more than an iCE40 SB_MAC16 takes (16 x 16), so each PE multiplies ``a``
        alone (16 x 8) and one more multiplier per column accumulates ``zero_point * b`` with
        ``zero_point = -a_offset`` (16 bits), subtracted from every row of the column when the
        row is read out: ``sum_k (a + a_offset) b = sum_k a b - zero_point * sum_k b``. Every
        product is one DSP on both families; ``a_offset`` must be in ``a_offset_range``.
    out_width : int
        Bits of the requantized results, their zero point and clamp bounds: 8 (default) or 16.
        Must be 8 with ``requantize=False``.
    k_per_pe : int
        Products per PE per clock, 1 (default), 2 or 4: each PE multiplies ``k_per_pe``
        consecutive elements of its row of A and column of B in as many DSPs, sums them in a
        pipelined adder tree (``tree_levels`` registers) and accumulates the sum, so one
        accumulator and one read-out serve ``k_per_pe`` products. Each ``i`` beat then
        carries ``k_per_pe`` k-slices; a K that is not a multiple is padded with zero
        k-slices (``b = 0``), as ``sim/gemm_driver.py``'s ``plan`` does.
    fabric_cols : int
        0 (default) to ``cols``: the last ``fabric_cols`` columns of PEs multiply in logic
        (:class:`hw.common.fabric_mul.FabricMultiplier`, radix-4 Booth) instead of DSPs, with
        the same latency, so an array can hold more products than the device has DSPs.

    Members
    -------
    i : In(stream.Signature(KSlice(rows, cols, a_width, k_per_pe)))
        k-slices of A and B (``k_per_pe`` per beat).
    params : In(stream.Signature(TileParams(cols, requantize, a_width, out_width)))
        One beat per tile, taken at least a cycle before the tile's first k-slice: alone
        after reset (or whenever no tile's parameters are held), otherwise together with the
        previous tile's last k-slice.
    o : Out(stream.Signature(GemmOut(out_lanes, requantize, out_width)))
        The tile's result row by row, ``cols // out_lanes`` beats per row.
    """

    def __init__(self, parameters: GemmParams | None = None, **kwargs):
        parameters = params_or_keywords(GemmParams, parameters, kwargs, name="parameters")
        self._params = p = parameters
        super().__init__({
            "i": In(stream.Signature(KSlice(p.rows, p.cols, p.a_width, p.k_per_pe))),
            "params": In(stream.Signature(TileParams(p.cols, p.requantize, p.a_width,
                                                     p.out_width))),
            "o": Out(stream.Signature(GemmOut(p.out_lanes, p.requantize, p.out_width))),
        })

    @property
    def parameters(self) -> GemmParams:
        """The generation-time parameters and every figure derived from them."""
        return self._params

    rows = property(lambda self: self._params.rows)
    cols = property(lambda self: self._params.cols)
    acc_width = property(lambda self: self._params.acc_width)
    requantize = property(lambda self: self._params.requantize)
    out_lanes = property(lambda self: self._params.out_lanes)
    a_width = property(lambda self: self._params.a_width)
    out_width = property(lambda self: self._params.out_width)
    k_per_pe = property(lambda self: self._params.k_per_pe)
    fabric_cols = property(lambda self: self._params.fabric_cols)
    # Derived figures (documented on GemmParams).
    max_k = property(lambda self: self._params.max_k)
    a_offset_range = property(lambda self: self._params.a_offset_range)
    multipliers = property(lambda self: self._params.multipliers)
    min_tile_cycles = property(lambda self: self._params.min_tile_cycles)
    row_read_delay = property(lambda self: self._params.row_read_delay)
    row_fifo_depth = property(lambda self: self._params.row_fifo_depth)
    latency = property(lambda self: self._params.latency)
    beats_per_tile = property(lambda self: self._params.beats_per_tile)

    def elaborate(self, platform):
        m = Module()
        a_offset, fire, ends, tile_mems, out_layout, row_pop = self._input_side(m, platform)
        row_in, flags_in, col_in = self._edge_and_skew(m, a_offset, fire)
        res, offset_sum = self._pe_array(m, platform, a_offset, row_in, flags_in, col_in)
        # A dot-product PE's adder tree and the multipliers' own input registers
        # (``dsp_input_stage``) delay its sums: the read-out follows that much later.
        ends = delayed(m, "tree_end", ends,
                       self._params.tree_levels + int(self._params.dsp_input_stage), shape=1)
        row_mems, row_written = self._row_readout(m, platform, ends, res, offset_sum)
        self._output_side(m, row_mems, row_written, tile_mems, out_layout, row_pop)
        return m

    def _input_side(self, m, platform):
        """Tile parameters and input acceptance; returns ``(a_offset, fire, ends, tile_mems,
        out_layout, row_pop)``.

        Only a_offset, applied as k-slices enter, is held here; the fields used when the
        tile's rows leave go into the tile FIFO as the beat is taken, through a register on
        the FPGA families, so that the memory's write enable and address start at flip-flops
        (on the UP5K, ``may_end`` through the handshake to the 19 block RAMs of the 1 x 4's
        tile word was a critical path, 22.1 ns, 16.7 ns of it routing, seed 1; the register
        costs a flip-flop per bit, 304 there); the generic form writes it straight: it holds
        every tile that has ended and not yet left, plus the one being sliced."""
        p = self._params
        rows = p.rows
        spacing = p.min_tile_cycles
        depth = p.row_fifo_depth
        tile_layout = TileParams(p.cols, p.requantize, p.a_width, p.out_width)
        a_offset = Signal(signed(a_offset_width(p.a_width)), reset_less=True)
        have_params = Signal()
        # (Counters get at least one bit: zero-width signals become [-1:0] vectors in Verilog.)
        gap = Signal(range(max(spacing, 2)))    # cycles until another tile may end
        reserved = Signal(range(depth + 1))     # row FIFO entries promised to accepted tiles
        row_pop = Signal()

        out_fields = {name: field.shape for name, field in tile_layout if name != "a_offset"}
        out_layout = data.StructLayout(out_fields)

        # Whether a tile's last k-slice may be taken now (its parameters held, the spacing since
        # the previous tile's end elapsed, room in the row FIFO), registered: computed a cycle
        # ahead for both outcomes of this cycle's tile end, so the input's ready, the tile end
        # and the parameters' handshake are each one LUT of flip-flops and the streams' valid
        # and last (the parameters' load from the input ports was the requantized 4x4's
        # critical path on ECP5, seed 1: 7.41 ns over 5 levels).
        may_end = Signal()
        fire = Signal()
        ends = Signal()
        params_fire = Signal()
        m.d.comb += [
            self.i.ready.eq(Mux(self.i.payload.last, may_end, have_params)),
            fire.eq(self.i.valid & self.i.ready),
            ends.eq(self.i.valid & self.i.payload.last & may_end),
            self.params.ready.eq(~have_params | ends),
            params_fire.eq(self.params.valid & self.params.ready),
        ]
        tile_fields = Cat(*(self.params.payload[k] for k in out_fields))
        if uses_ecp5_primitives(platform) or uses_ice40_primitives(platform):
            tile_push = Signal()
            tile_push_data = Signal(out_layout.size, reset_less=True)
            m.d.sync += [tile_push.eq(params_fire), tile_push_data.eq(tile_fields)]
        else:
            tile_push, tile_push_data = params_fire, tile_fields
        # The tile FIFO is one memory per column (its bias, multiplier and shift) and one for
        # the fields the columns share, each with write and read address counters of its own
        # (which synthesis does not merge: each feeds back on itself): one address register
        # reached 217 LUT RAM cells on the 12 x 12. (In block RAM, one memory: so outside ECP5,
        # whose LUT RAM is the only kind that splits per column for free; the UP5K's block RAMs
        # hold 16 bits each, and the 1 x 4's columns split took 31 of its 30.)
        tile_mems = []
        for name, spans in self._tile_parts(out_layout, platform):
            mem = _memory(m, name, sum(width for _, width in spans), p.tile_fifo_depth,
                          p.block_ram, platform)
            tile_write = mem.write_port()
            m.d.comb += [tile_write.en.eq(tile_push), tile_write.data.eq(
                Cat(*(tile_push_data[offset:offset + width] for offset, width in spans)))]
            with m.If(tile_push):
                m.d.sync += tile_write.addr.eq(_next(tile_write.addr, p.tile_fifo_depth))
            tile_mems.append((mem, spans))
        with m.If(params_fire):
            m.d.sync += [a_offset.eq(self.params.payload.a_offset), have_params.eq(1)]
        with m.Elif(ends):
            m.d.sync += have_params.eq(0)
        with m.If(ends):
            m.d.sync += gap.eq(spacing - 1)
        with m.Elif(gap != 0):
            m.d.sync += gap.eq(gap - 1)
        # The counter takes a tile's rows a cycle after its end (`ended`, a flip-flop), so that
        # its adder starts at flip-flops only: the input's valid and last through `ends` into
        # it was the raw 8x8 block_ram core's critical path on ECP5 (6.72 ns, 4.83 ns of it
        # routing, seed 1). The room below counts the rows of `ended` beside it.
        ended = Signal()
        m.d.sync += [ended.eq(ends), reserved.eq(reserved + Mux(ended, rows, 0) - row_pop)]

        # Room next cycle (reserved + rows * (ended + ends) - row_pop + rows <= depth) is the
        # reservation counter compared with a constant for each outcome of ended, ends and
        # row_pop, which only select: row_pop is the shifter's load, which fans out to every
        # shifter register, and load -> room through an adder was the 12x12 core's critical
        # path (9.09 ns, seed 1). (With spacing > 1 a tile cannot end the cycle after another
        # did, so ended and ends are never both set.)
        def counted_at_most(n):
            return 0 if n < 0 else 1 if n >= depth else reserved <= n

        def reserved_at_most(n):
            return Mux(ended, counted_at_most(n - rows), counted_at_most(n))

        def room_after(tile_ends):
            return Mux(row_pop, reserved_at_most(depth - rows * (1 + tile_ends) + 1),
                       reserved_at_most(depth - rows * (1 + tile_ends)))
        # Next cycle's have_params is params.valid if a tile ends now (its parameters' beat is
        # then taken if valid), else have_params | params.valid; gap is then 0 if it is now
        # at most 1 (or if spacing is 1). (Comparisons whose outcome the widths decide are
        # left to Python: Verilator rejects constant comparisons.)
        m.d.sync += may_end.eq(Mux(
            ends,
            self.params.valid & int(spacing == 1) & room_after(1),
            (have_params | self.params.valid) & (1 if spacing <= 2 else gap <= 1) &
            room_after(0)))
        return a_offset, fire, ends, tile_mems, out_layout, row_pop

    def _tile_parts(self, out_layout, platform):
        """The tile memories: ``(name, spans)``, each span ``(offset, width)`` a field (or an
        element of one) of ``out_layout``, in the order the memory's word holds them."""
        p = self._params
        if p.block_ram or not uses_ecp5_primitives(platform):
            return [("tile_mem", [(0, out_layout.size)])]
        per_column = [name for name in ("bias", "multiplier", "shift")
                      if name in out_layout.members]
        parts = []
        for c in range(p.cols):
            spans = []
            for name in per_column:
                field = out_layout[name]
                width = Shape.cast(field.shape.elem_shape).width
                spans.append((field.offset + c * width, width))
            parts.append((f"tile_mem{c}", spans))
        shared = [(out_layout[name].offset, Shape.cast(out_layout[name].shape).width)
                  for name in out_layout.members if name not in per_column]
        if shared:
            parts.append(("tile_mem_shared", shared))
        return parts

    def _edge_and_skew(self, m, a_offset, fire):
        """Edge registers and the skew delay lines; returns ``(row_in, flags_in, col_in)``,
        the operands as one list of ``k_per_pe`` lanes per row and per column, and each row's
        flags.
        With int8 activations a_offset is added to a at the edge; with int16 the offset is
        applied per column (``_pe_array``)."""
        p = self._params
        k = p.k_per_pe

        def lane(vector, j):
            """Element j of a row's or column's operands, and its name suffix."""
            return (vector, "") if k == 1 else (vector[j], f"_{j}")
        offset_per_column = p.a_width == 16
        operand_a_width = p.operand_a_width
        row_in, flags_in = [], []
        for r in range(p.rows):
            # Each row's flags are its own (``_FlagChain``: not merged per anti-diagonal).
            phase = Signal(name=f"flags_phase{r}")
            m.d.sync += phase.eq(~phase)
            edge = _FlagChain.edge(m, f"edge_flags{r}", fire, self.i.payload.last, phase)
            flags_in.append(edge.delayed(m, f"skew_flags{r}", r))
            lanes = []
            for j in range(k):
                a_in, suffix = lane(self.i.payload.a[r], j)
                edge_a = Signal(signed(operand_a_width), name=f"edge_a{r}{suffix}",
                                reset_less=True)
                m.d.sync += edge_a.eq(a_in if offset_per_column else a_in + a_offset)
                lanes.append(delayed(m, f"skew_a{r}{suffix}", edge_a, r,
                                     shape=signed(operand_a_width), reset_less=True))
            row_in.append(lanes)
        col_in = []
        for c in range(p.cols):
            lanes = []
            for j in range(k):
                b_in, suffix = lane(self.i.payload.b[c], j)
                edge_b = Signal(signed(8), name=f"edge_b{c}{suffix}", reset_less=True)
                m.d.sync += edge_b.eq(b_in)
                lanes.append(delayed(m, f"skew_b{c}{suffix}", edge_b, c, shape=signed(8),
                                     reset_less=True))
            col_in.append(lanes)
        return row_in, flags_in, col_in

    def _pe(self, m, platform, name, a_left, b_above, flags_left, fabric=False):
        """One multiply-accumulate cell of ``k_per_pe`` products (the operand lists
        ``a_left``, ``b_above``); returns its operand and flag registers (passed on to its
        neighbours) and its result register (the tile's sum). With ``fabric`` its multipliers
        are :class:`FabricMultiplier` (logic) instead of DSPs, with the same latency."""
        width = self._params.acc_width
        k = len(a_left)
        lanes = [""] if k == 1 else [str(j) for j in range(k)]
        # Data registers need no reset (only the flags do): a reset that is not the
        # flip-flops' only synchronous set/reset costs a LUT per bit on ECP5.
        a = [Signal(a_left[0].shape(), name=name + "a" + j, reset_less=True) for j in lanes]
        b = [Signal(signed(B_WIDTH), name=name + "b" + j, reset_less=True) for j in lanes]
        flags = flags_left.next(m, name + "flags")
        # The product's flags, aligned with it: valid, and the tile's end registered as
        # such, so the accumulator's clear is a flip-flop (set by reset, too) of this PE
        # alone (see _FlagChain).
        product_valid = Signal(name=name + "product_valid")
        product_end = Signal(name=name + "product_end", init=1)
        acc = Signal(signed(width), name=name + "acc", reset_less=True)
        result = Signal(signed(width), name=name + "result", reset_less=True)
        # The product of the operands this PE registers now arrives two cycles later (on
        # ECP5 both register stages live inside the DSP), and is registered once more in
        # the fabric, with its flags: the route out of the DSP and the accumulator's carry
        # chain are then in separate cycles.
        # On iCE40 that fabric register is the SB_MAC16's own pipeline register instead (the
        # fabric's flip-flops are what the UP5K runs out of first).
        muls, products = [], []
        in_dsp = not fabric and uses_ice40_primitives(platform)
        for j in lanes:
            if fabric:
                mul = FabricMultiplier(a_width=len(a_left[0]), b_width=B_WIDTH)
            else:
                mul = PipelinedMultiplier(a_width=len(a_left[0]), b_width=B_WIDTH,
                                          latency=MULTIPLIER_LATENCY + in_dsp)
            m.submodules[name + "mul" + j] = mul
            muls.append(mul)
            products.append(Signal.like(mul.p, name=name + "product" + j, reset_less=True))
        m.d.sync += [reg.eq(value) for regs, values in ((a, a_left), (b, b_above))
                     for reg, value in zip(regs, values)]
        product_flags = flags
        if self._params.dsp_input_stage:
            # The multiplier's operands from registers of its own, each loading only the DSP,
            # so that nextpnr may place them between the PE and a DSP far from it (the 12 x 12
            # fills the 85F's DSP sites): the operand registers above feed the neighbouring PEs.
            a_left = [own_register(m, f"{name}mul_a{j}", x, platform)
                      for j, x in zip(lanes, a_left)]
            b_above = [own_register(m, f"{name}mul_b{j}", y, platform)
                       for j, y in zip(lanes, b_above)]
            product_flags = flags.next(m, name + "mul_flags")
        m.d.comb += [port.eq(value) for mul, x, y in zip(muls, a_left, b_above)
                     for port, value in ((mul.a, x), (mul.b, y))]
        domain = "comb" if in_dsp else "sync"
        m.d[domain] += [product.eq(mul.p) for product, mul in zip(products, muls)]
        # With k_per_pe > 1 the products are summed in pairs, a register per level, before the
        # accumulator: each level one carry chain narrower than the accumulator's, and the
        # flags follow through as many registers.
        tree_flags = product_flags.next(m, name + "product_flags")
        for level in range(self._params.tree_levels):
            sums = []
            for n in range(0, len(products), 2):
                pair = products[n] + products[n + 1]
                sums.append(Signal(pair.shape(), name=f"{name}sum{level}_{n // 2}",
                                   reset_less=True))
                m.d.sync += sums[-1].eq(pair)
            products = sums
            tree_flags = tree_flags.next(m, f"{name}sum{level}_flags_d1")
        m.d.sync += [
            product_valid.eq(tree_flags.valid),
            product_end.eq(tree_flags.valid & tree_flags.last),
        ]
        (dot,) = products
        if uses_ecp5_primitives(platform) or uses_ice40_primitives(platform):
            # The adder's sums drive the accumulator alone, so that nextpnr packs each
            # flip-flop beside its CCU2C half (a sum that drives two flip-flops is packed with
            # whichever nextpnr meets first: with the result register loaded from it too, the
            # 12 x 12's accumulators were placed away from their carry chains, 6.22 ns of
            # routing on 8.27, seed 1). So the result is the accumulator a cycle after the tile's last
            # product, and the accumulator restarts by ignoring its old value at the next
            # tile's first product: in the CCU2C's own LUTs (``_masked_sum``), at no cost.
            fresh = Signal(name=name + "fresh", init=1)     # the last valid product ended a tile
            product_first = Signal(name=name + "product_first", init=1)
            result_load = Signal(name=name + "result_load")
            with m.If(tree_flags.valid):
                m.d.sync += fresh.eq(tree_flags.last)
            m.d.sync += [product_first.eq(fresh), result_load.eq(product_end)]
            if uses_ecp5_primitives(platform):
                total = _masked_sum(m, name + "acc_add", acc, product_first, dot)
            else:
                # (iCE40, the same for the same reason: with the result register loaded from
                # the sum, its LUTs were packed with neither flip-flop, and the routes were
                # the UP5K 1x4's critical paths. SB_CARRY takes the operands the LUT takes,
                # so the mask is a LUT of its own in front of the chain.)
                total = Mux(product_first, 0, acc) + dot
            with m.If(product_valid):
                m.d.sync += acc.eq(total)
            with m.If(result_load):
                m.d.sync += result.eq(acc)
            return a, b, flags, result
        # Elsewhere the accumulator restarts by clearing at the tile's last product rather
        # than by gating the adder's input on the first one (a LUT per bit in front of the
        # carry chain): the clear is the flip-flops' synchronous reset. The result is loaded
        # with the last sum, a cycle before the ECP5 form has it; the read-out takes it a
        # cycle later (when the next tile cannot have ended yet: ``min_tile_cycles`` >= 2).
        total = acc + dot
        # (product_end implies product_valid: the clear overrides the enable, as the
        # flip-flops' reset does, and the enable is product_valid itself.)
        with m.If(product_valid):
            m.d.sync += acc.eq(total)
        with m.If(product_end):
            m.d.sync += [acc.eq(0), result.eq(total)]
        return a, b, flags, result

    def _pe_array(self, m, platform, a_offset, row_in, flags_in, col_in):
        """The rows x cols processing elements (and, with int16 activations, a row of offset
        cells); returns their result registers ``res[r][c]`` and the offset sums (or None).
        The last ``fabric_cols`` columns multiply in logic; the offset cells use DSPs."""
        p = self._params
        rows, cols = p.rows, p.cols
        res = [[None] * cols for _ in range(rows)]
        b_above = col_in
        for r in range(rows):
            a_left, flags_left = row_in[r], flags_in[r]
            b_here = []
            for c in range(cols):
                a_left, b, flags_left, res[r][c] = self._pe(m, platform, f"pe{r}_{c}_",
                                                            a_left, b_above[c], flags_left,
                                                            fabric=c >= cols - p.fabric_cols)
                b_here.append(b)
            b_above = b_here

        offset_sum = None
        if p.a_width == 16:
            # A row of offset cells in step with row 0: the same b and flags, and the tile's
            # input zero point (-a_offset, 16 bits for every a_offset in range) instead of a.
            # Its sums, zero_point * sum_k b[k, c], leave each row of the column at read-out.
            # (With k_per_pe > 1 each offset cell is a dot-product PE too: zero_point in every
            # lane, so its sum is zero_point * sum_j b[k + j, c].)
            zero_point = Signal(signed(p.a_width), name="edge_zero_point", reset_less=True)
            m.d.sync += zero_point.eq(-a_offset)
            # (Row 0 has no skew: its flags are at its edge register.)
            zp_left, flags_left = [zero_point] * p.k_per_pe, flags_in[0]
            offset_sum = []
            for c in range(cols):
                zp_left, _, flags_left, total = self._pe(m, platform, f"offset{c}_", zp_left,
                                                         col_in[c], flags_left)
                offset_sum.append(total)
        return res, offset_sum

    def _row_readout(self, m, platform, ends, res, offset_sum):
        """Row read-out into the row memories, column by column; returns the memories and the
        last column's write enable (a row is whole when it is set).

        Row r of a tile ending at cycle t is complete in column c at t + 5 + c + r, and read
        out of the array at t + 6 + c + r into that column's own memory: every column's
        select, write enable and write address is its left neighbour's, a cycle later (a
        register chain, so no net fans out across the array). Rows are written whole
        (readable in every column) when the last column has written them.
        A token travelling down a delay line marks the rows being read; a row index that
        restarts one cycle before the first row selects them (a binary mux is cheaper than a
        one-hot AND-OR on ECP5's PFUMX slices). With more than ``READOUT_GROUP`` rows the
        selection takes two register stages (``GemmParams.readout_stages``): first within
        groups of neighbouring rows, then among the groups, so that no path gathers a whole
        column of PEs (the 12:1 mux was the 12 x 12 core's critical path on ECP5, 7.87 ns of
        which 6.40 ns routing, seed 1)."""
        p = self._params
        rows, cols, width, depth = p.rows, p.cols, p.acc_width, p.row_fifo_depth
        before_first = delayed(m, "row_token", ends, 5, shape=1)
        token = [delayed(m, "row_token0", before_first, 1, shape=1)]
        for r in range(1, rows):
            token.append(delayed(m, f"row_token{r}", token[-1], 1, shape=1))
        row_index = Signal(range(max(rows, 2)))
        m.d.sync += row_index.eq(Mux(before_first, 0, row_index + 1))
        # With two stages each group's select (the index's low bits) is a counter of its own,
        # delayed column by column as the index is: one register reaching every group of a
        # column (289 LUTs on the 12 x 12) would span the column's PEs again. (Each counter
        # feeds back on itself, so synthesis does not merge them.)
        low = READOUT_GROUP.bit_length() - 1
        groups = range(0, rows, READOUT_GROUP)
        group_index = {}
        if p.readout_stages == 2:
            for g in groups:
                group_index[g] = Signal(low, name=f"row_index_low{g}")
                m.d.sync += group_index[g].eq(Mux(before_first, 0, group_index[g] + 1))
        reading = Signal()
        m.d.comb += reading.eq(Cat(*token).any())
        first = token[0]
        row_mems = []
        for c in range(cols):
            if c:
                row_index = delayed(m, f"row_index{c}", row_index, 1)
                group_index = {g: delayed(m, f"row_index_low{g}_{c}", index, 1)
                               for g, index in group_index.items()}
                reading = delayed(m, f"row_reading{c}", reading, 1)
                first = delayed(m, f"row_first{c}", first, 1)
            column_sums = [res[r][c] for r in range(rows)]
            if p.readout_stages == 1:
                row_sum = _select(column_sums, row_index)
            else:
                # Stage 1: within each group, by the index's low bits; stage 2: the group.
                parts = []
                for g in groups:
                    part = Signal(signed(width), name=f"row_part{c}_{g}", reset_less=True)
                    m.d.sync += part.eq(_select(column_sums[g:g + READOUT_GROUP],
                                                group_index[g]))
                    parts.append(part)
                group = delayed(m, f"row_group{c}", row_index[low:], 1)
                row_sum = _select(parts, group)
            if offset_sum is not None:
                # The offset sum is final with row 0's sums and overwritten by the next tile's
                # before this tile's last row is read: held from the first row's read on.
                held = Signal(signed(width), name=f"offset_held{c}", reset_less=True)
                with m.If(first):
                    m.d.sync += held.eq(offset_sum[c])
                # (With two stages the first row reaches the subtraction a cycle after its
                # read, when held has it; the next tile's first read comes later still.)
                row_sum = row_sum - (Mux(first, offset_sum[c], held) if p.readout_stages == 1
                                     else held)
            column = _memory(m, f"row_mem{c}", signed(width), depth, p.block_ram, platform)
            write = column.write_port()
            written = Signal(name=f"row_written{c}")
            m.d.sync += [write.data.eq(row_sum),
                         written.eq(delayed(m, f"row_staged{c}", reading,
                                            p.readout_stages - 1))]
            m.d.comb += write.en.eq(written)
            if c:
                m.d.sync += write.addr.eq(row_mems[-1][1].addr)
            else:
                with m.If(written):
                    m.d.sync += write.addr.eq(_next(write.addr, depth))
            row_mems.append((column, write, written))
        return [mem for mem, _, _ in row_mems], row_mems[-1][2]

    def _output_side(self, m, row_mems, row_written, tile_mems, out_layout, row_pop):
        """Rows leave the row memories (one per column) whole into a shifter that emits
        ``out_lanes`` elements per clock. Nothing here waits on ``o.ready``: the requantizer
        runs free into an output FIFO whose free entries are counted (credits), and a row is
        read only when every beat it makes has an entry reserved. Whether a row is loaded is
        decided a cycle ahead, so the load enable of the wide shifter is a flip-flop, and no
        multiplexer grows with ``cols``."""
        p = self._params
        cols, lanes, depth = p.cols, p.out_lanes, p.row_fifo_depth
        segments = p.segments

        # load: the shifter takes the row (and its tile's parameters) read a cycle before. The
        # decision is registered and its inputs are counters compared with constants: for each
        # outcome of this cycle's load (and of the credit returned, itself registered), the
        # counters' next values are compared without an adder in between.
        load = Signal()
        available = Signal(range(depth + 1))    # rows written a cycle ago or more, not loaded
        remaining = Signal(range(segments + 1))     # beats still to leave the shifter
        credits = Signal(range(p.out_fifo_depth + 1), init=p.out_fifo_depth)
        returned = Signal()                     # an output beat left a cycle ago
        m.d.comb += row_pop.eq(load)
        m.d.sync += [
            returned.eq(self.o.valid & self.o.ready),
            available.eq(available + row_written - load),
            remaining.eq(Mux(load, segments, Mux(remaining == 0, 0, remaining - 1))),
            credits.eq(credits - Mux(load, segments, 0) + returned),
        ]
        # Each condition on next cycle's values, for load = 0 and load = 1.
        # (Comparisons whose outcome the widths decide are left to Python: Verilator rejects
        # constant comparisons.)
        free = Mux(load, segments <= 1, 1 if segments <= 2 else remaining <= 2)

        def credits_at_least(n):
            return Mux(returned, 1 if n <= 1 else credits >= n - 1, credits >= n)
        has_credit = Mux(load, credits_at_least(2 * segments), credits_at_least(segments))
        # A row not taken by this load: whether one and two rows are available are registers,
        # set from the counter's next value (compared with a constant for each outcome of the
        # write and the load, which only select): the counter's carry-chain compare in front
        # of the decision was the requantized 8x8's worst path at 85ddf0a (6.67 ns, seed 2).
        rows_at_least = {n: Signal(name=f"rows_at_least{n}") for n in (1, 2)}
        for n, flag in rows_at_least.items():
            m.d.sync += flag.eq(Mux(row_written,
                                    Mux(load, _at_least(available, n), _at_least(available, n - 1)),
                                    Mux(load, _at_least(available, n + 1),
                                        _at_least(available, n))))
        has_row = Mux(load, rows_at_least[2], rows_at_least[1])
        load_next = Signal()
        m.d.comb += load_next.eq(free & has_credit & has_row)
        m.d.sync += load.eq(load_next)

        # Every tile has `rows` rows: counting them gives each row's place in its tile, so the
        # tile's parameters are read by a counter, and the memories hold no flags. The read
        # ports run every cycle at registered addresses: that of the row (and tile) the next
        # load takes, advanced with the decision that registers `load`.
        row_of_tile = Signal(range(max(p.rows, 2)))
        at_last = row_of_tile == p.rows - 1
        with m.If(load):
            m.d.sync += row_of_tile.eq(Mux(at_last, 0, row_of_tile + 1))
        last_next = Mux(load, row_of_tile == p.rows - 2, at_last) if p.rows > 1 else 1
        reads = [mem.read_port(domain="sync") for mem in row_mems]
        # One read address counter per group of columns: a single one reaches every LUT RAM
        # cell of every row memory (291 on the 12 x 12), a net across the array. The counters
        # are not merged by synthesis (each feeds back on itself); the groups are sized so
        # that their enable reaches at most 32 address bits. With rows of 2 beats or more the
        # next load is at least 2 cycles away, so the counters may advance with `load` (a
        # flip-flop) rather than the decision: load_next, spread to the groups' counters, was
        # the 8x8 core's critical path on ECP5 (7.57 ns, 5.68 ns routing, seed 1).
        advance = load if segments >= 2 else load_next
        # (With `load` one counter per column.)
        addr_bits = len(Signal(range(depth)))
        per_group = 1 if segments >= 2 else -(-cols // min(cols, max(1, 32 // addr_bits)))
        for first in range(0, cols, per_group):
            row_addr = Signal(range(depth), name=f"row_read_addr{first}")
            with m.If(advance):
                m.d.sync += row_addr.eq(_next(row_addr, depth))
            m.d.comb += [read.addr.eq(row_addr) for read in reads[first:first + per_group]]
        # The tile address likewise (load & at_last is load_next & last_next registered): the
        # credit compares -> decision -> its enable was the requantized 4x4 and 8x8's critical
        # path on ECP5 once the requantizer's were gone (7.02 ns on the 8x8, seed 1).
        tile_advance = load & at_last if segments >= 2 else load_next & last_next
        tile_data = Signal(out_layout.size)
        for mem, spans in tile_mems:
            tile_read = mem.read_port(domain="sync")
            with m.If(tile_advance):
                m.d.sync += tile_read.addr.eq(_next(tile_read.addr, p.tile_fifo_depth))
            m.d.comb += Cat(*(tile_data[offset:offset + width]
                              for offset, width in spans)).eq(tile_read.data)
        head_last = at_last
        tile = data.View(out_layout, tile_data)
        # The shifter's load reaches every bit of every column (1,266 registers on the 12 x 12):
        # with rows of 2 beats or more it is one copy of `load` per column, each its own
        # register, so that no flip-flop drives the whole shifter. (Loads are then never on
        # consecutive cycles, so a copy that clears itself after a load is `load` exactly, and
        # it feeds back on itself: synthesis cannot merge the copies, as it merges flip-flops
        # of equal inputs.)
        takes = [load]
        if segments >= 2:                   # (one more for the fields every column shares)
            takes = [Signal(name=f"shift_take{c}") for c in range(cols + 1)]
            m.d.sync += [take_c.eq(load_next & ~take_c) for take_c in takes]
        shift_remaining = remaining
        # A block RAM's read takes a cycle more (its output register): the shifter then takes
        # the row and its tile's parameters a cycle after the decision's `load`, and the beats
        # it forms follow as much later. (Rows, credits and addresses are still counted at
        # `load`: only the data path moves.)
        if p.block_ram:
            takes = [delayed(m, f"shift_take{c}_ram", t, 1) for c, t in enumerate(takes)]
            head_last = delayed(m, "take_last", head_last, 1, shape=1)
            shift_remaining = delayed(m, "take_remaining", remaining, 1)
        take = takes[-1]                    # for the fields every column shares
        takes = (takes * cols)[:cols]       # each column's

        # The shifter: position s holds elements s * lanes .. s * lanes + lanes - 1. It shifts
        # every clock (what passes the end while no row is in it is never marked valid).
        fields = {"acc": lambda c: reads[c].data, "bias": lambda c: tile.bias[c]}
        if p.requantize:
            fields |= {"multiplier": lambda c: tile.multiplier[c],
                       "shift": lambda c: tile.shift[c]}
        shifter = {}
        for name, value in fields.items():
            shape = value(0).shape()
            regs = [Signal(shape, name=f"shift_{name}{c}", reset_less=True) for c in range(cols)]
            for c in range(cols):
                after = regs[c + lanes] if c + lanes < cols else regs[c]
                m.d.sync += regs[c].eq(Mux(takes[c], value(c), after))
            shifter[name] = regs[:lanes]
        row_end = Signal(name="shift_last")     # the row is its tile's last
        if p.requantize:
            shared = {"out_zero_point": tile.out_zero_point, "act_min": tile.act_min,
                      "act_max": tile.act_max}
            held = {k: Signal(v.shape(), name=f"shift_{k}", reset_less=True)
                    for k, v in shared.items()}
            with m.If(take):
                m.d.sync += [held[k].eq(v) for k, v in shared.items()]
        with m.If(take):
            m.d.sync += row_end.eq(head_last)
        # One register stage: the bias added, the beat formed. Its valid flag is the only
        # reset one; the payload is qualified by it.
        if p.requantize:
            m.submodules.requant = requant = Requantizer(lanes=lanes, out_width=p.out_width,
                                                          far_dsps=REQUANT_FAR_DSPS)
            beat = requant.i
            m.d.comb += requant.o.ready.eq(1)       # free-running: the credits leave it room
            into_fifo = requant.o
        else:
            beat = stream.Signature(GemmOut(lanes, False)).create(path=("raw",))
            into_fifo = beat
        beat_valid = Signal()
        beat_payload = Signal(beat.payload.shape(), reset_less=True)
        m.d.comb += [beat.valid.eq(beat_valid), beat.payload.eq(beat_payload)]
        m.d.sync += [
            beat_valid.eq(shift_remaining != 0),
            beat_payload.last.eq(row_end & (shift_remaining == 1)),
        ]
        for lane in range(lanes):
            total = (shifter["acc"][lane] + shifter["bias"][lane])[:32].as_signed()
            if p.requantize:
                m.d.sync += [beat_payload.acc[lane].eq(total),
                             beat_payload.multiplier[lane].eq(shifter["multiplier"][lane]),
                             beat_payload.shift[lane].eq(shifter["shift"][lane])]
            else:
                m.d.sync += beat_payload.data[lane].eq(total)
        if p.requantize:
            m.d.sync += [beat_payload[k].eq(v) for k, v in held.items()]

        m.submodules.out_fifo = out_fifo = SyncFIFOBuffered(
            width=len(self.o.payload.as_value()), depth=p.out_fifo_depth)
        m.d.comb += [
            out_fifo.w_en.eq(into_fifo.valid),
            out_fifo.w_data.eq(into_fifo.payload),
            self.o.valid.eq(out_fifo.r_rdy),
            self.o.payload.eq(out_fifo.r_data),
            out_fifo.r_en.eq(self.o.ready),
        ]
