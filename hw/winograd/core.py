"""Winograd F(m x m, 3 x 3) convolution unit: input transform, Winograd-domain multiply and
channel accumulation, output transform, requantization. Tiles in, tiles out."""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sim.golden.winograd import (
    TapShifts,
    default_tap_shifts,
    exact_accumulator_width,
    exact_divisor,
    input_bounds,
    integer_matrices,
    odd_inverse_steps,
    output_growth_bits,
    rescale_shifts,
    weight_bounds,
)

from ..common.arith import signed_width, times_constant
from ..common.checks import check_bool, check_choice, check_int
from ..common.requant import REQUANT_LATENCY, RequantIn, Requantizer

__all__ = ["InputTile", "WeightBeat", "PassParams", "WinogradOut", "WinogradUnit",
           "constant_matrix_product"]

# Pass states: waiting for the params beat, loading weights, taking tiles.
PARAMS, WEIGHTS, TILES = range(3)

#: Front pipeline registers after the last tap group is issued: products, accumulated M,
#: A^T M, A^T M A, scaled result, + bias, output sequencer.
FRONT_STAGES = 7


def InputTile(n: int) -> data.StructLayout:
    """One input channel of one (n x n) input tile, row-major; ``last`` marks the tile's final
    input channel, ``end`` (with ``last``) the final tile of the pass."""
    return data.StructLayout({
        "d": data.ArrayLayout(data.ArrayLayout(signed(8), n), n),
        "last": unsigned(1),
        "end": unsigned(1),
    })


def WeightBeat(taps: int, width: int) -> data.StructLayout:
    """``taps`` consecutive Winograd-domain weights (row-major taps, channel after channel);
    ``last`` marks the final beat of the pass's weights."""
    return data.StructLayout({
        "u": data.ArrayLayout(signed(width), taps),
        "last": unsigned(1),
    })


def PassParams(requantize: bool) -> data.StructLayout:
    """Per-pass (= per output channel) bias and TFLite output-stage parameters."""
    fields = {"bias": signed(32)}
    if requantize:
        fields.update({"multiplier": signed(32), "shift": signed(6), "out_zero_point": signed(8),
                       "act_min": signed(8), "act_max": signed(8)})
    return data.StructLayout(fields)


def WinogradOut(lanes: int, requantize: bool) -> data.StructLayout:
    """``lanes`` consecutive outputs of an m x m tile (row-major); ``last`` on its final beat."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(8) if requantize else signed(32), lanes),
        "last": unsigned(1),
    })


def constant_matrix_product(left, values, right):
    """``left @ values @ right.T`` for integer constant matrices, shift-and-add only.

    ``values`` is a list of rows of Amaranth values; returns rows of (full-width) expressions.
    """
    def mat_vec(mat, vector):
        out = []
        for row in mat:
            terms = [times_constant(v, int(c)) for c, v in zip(row, vector) if c != 0]
            total = terms[0]
            for t in terms[1:]:
                total = total + t
            out.append(total)
        return out

    columns = list(zip(*values))
    partial = list(zip(*[mat_vec(left, col) for col in columns]))  # left @ values, as rows
    return [mat_vec(right, row) for row in partial]


class WinogradUnit(wiring.Component):
    """Winograd F(m x m, 3 x 3) unit: ``Y = A^T [sum_c U_c (.) (B^T d_c B)] A`` per tile.

    Works in *passes*, one output channel per pass: a ``params`` beat (bias, requantization),
    then the pass's Winograd-domain weights ``U[c]`` on ``weights`` (for every input channel, in
    ``n*n / taps_per_clock`` beats of ``taps_per_clock`` taps), then input tiles on ``i``, each
    tile as one beat per input channel. Every tile gives one m x m output tile on ``o``. The
    ``params`` beat of the next pass is taken once the previous pass has left the front pipeline.

    The input transform and the output transform are shift-and-add only; the
    ``taps_per_clock`` Winograd-domain multipliers (plus the requantizer's) are the only
    multipliers. One input-channel beat is accepted every ``cycles_per_beat = n*n /
    taps_per_clock`` clocks; an output tile takes ``m*m / out_lanes`` clocks to leave.

    ``exact`` mode: ``U = (sG) g (sG)^T`` with ``s = 2`` (F2) or ``24`` (F4), V exact, accumulators
    of ``exact_accumulator_width(m)`` bits, exact division by ``s**2`` (shift, then the inverse of
    the odd part by shift-and-add): bit-exact to direct int32 3x3 convolution.
    ``tapwise`` mode: V quantized to int8 per tap by a rounding right shift, U int8 given,
    int32 accumulators, per-tap rescaling by left shifts, a rounding right shift back to the
    direct accumulator's scale. Both follow ``sim.golden.winograd.winograd_tiles``.

    Parameters
    ----------
    m : int
        Output tile size, 2 or 4 (input tiles are (m+2) x (m+2)).
    mode : str
        ``"exact"`` or ``"tapwise"``.
    in_channels : int
        Input channels per pass the weight memory holds (1..1024).
    taps_per_clock : int
        Winograd-domain multipliers; divides ``(m+2)**2``.
    requantize : bool
        Requantize to int8 (default) or stream the int32 results (bias included).
    out_lanes : int
        Output values per beat; divides ``m*m``. One requantizer lane each.
    tap_shifts : TapShifts or None
        ``tapwise`` only: per-tap V right shifts (0..15) and U exponents (-16..24); ``None``
        uses the data-free ``default_tap_shifts(m)``.

    Members
    -------
    params : In(stream.Signature(PassParams(requantize)))
        One beat per pass.
    weights : In(stream.Signature(WeightBeat(taps_per_clock, weight_width)))
        The pass's transformed weights; ``last`` on the final beat.
    i : In(stream.Signature(InputTile(m + 2)))
        Input tiles, one beat per input channel.
    o : Out(stream.Signature(WinogradOut(out_lanes, requantize)))
        Output tiles, ``m*m / out_lanes`` beats each.
    """

    def __init__(self, *, m: int = 2, mode: str = "exact", in_channels: int = 8,
                 taps_per_clock: int | None = None, requantize: bool = True,
                 out_lanes: int | None = None, tap_shifts: TapShifts | None = None):
        check_choice("m", m, (2, 4))
        check_choice("mode", mode, ("exact", "tapwise"))
        check_int("in_channels", in_channels, 1, 1024)
        n = m + 2
        if taps_per_clock is None:
            taps_per_clock = n * n
        check_int("taps_per_clock", taps_per_clock, 1, n * n)
        if (n * n) % taps_per_clock:
            raise ValueError(f"taps_per_clock must divide {n * n}, not {taps_per_clock!r}")
        check_bool("requantize", requantize)
        if out_lanes is None:
            out_lanes = m
        check_int("out_lanes", out_lanes, 1, m * m)
        if (m * m) % out_lanes:
            raise ValueError(f"out_lanes must divide {m * m}, not {out_lanes!r}")
        if mode == "exact" and tap_shifts is not None:
            raise ValueError("tap_shifts must be None in exact mode, not "
                             f"{type(tap_shifts).__name__}")
        if mode == "tapwise":
            tap_shifts = self._checked_shifts(tap_shifts, m)
        self._m, self._n, self._mode = m, n, mode
        self._in_channels = in_channels
        self._taps = taps_per_clock
        self._requantize = requantize
        self._out_lanes = out_lanes
        self._tap_shifts = tap_shifts
        super().__init__({
            "params": In(stream.Signature(PassParams(requantize))),
            "weights": In(stream.Signature(WeightBeat(taps_per_clock, self.weight_width))),
            "i": In(stream.Signature(InputTile(n))),
            "o": Out(stream.Signature(WinogradOut(out_lanes, requantize))),
        })

    @staticmethod
    def _checked_shifts(shifts, m: int) -> TapShifts:
        if shifts is None:
            shifts = default_tap_shifts(m)
        if not isinstance(shifts, TapShifts):
            raise TypeError(f"tap_shifts must be a TapShifts or None, not {shifts!r}")
        n = m + 2
        for name, values, lo, hi in (("v", shifts.v, 0, 15), ("u", shifts.u, -16, 24)):
            rows = [list(r) for r in values]
            if len(rows) != n or any(len(r) != n for r in rows):
                raise ValueError(f"tap_shifts.{name} must be {n} x {n}, not {values!r}")
            for value in (int(v) for r in rows for v in r):
                if not lo <= value <= hi:
                    raise ValueError(f"tap_shifts.{name} entries must be in [{lo}, {hi}], "
                                     f"not {value!r}")
        left, _ = rescale_shifts(shifts)
        # The golden model works on int64: 32-bit accumulators, shifts and A^T M A growth.
        limit = 62 - 32 - output_growth_bits(m)
        if int(left.max()) > limit:
            raise ValueError(f"tap_shifts span max(v - u) - min(v - u) = {int(left.max())} "
                             f"must be <= {limit}")
        return TapShifts(tuple(tuple(int(v) for v in r) for r in shifts.v),
                         tuple(tuple(int(v) for v in r) for r in shifts.u))

    m = property(lambda self: self._m)
    mode = property(lambda self: self._mode)
    in_channels = property(lambda self: self._in_channels)
    taps_per_clock = property(lambda self: self._taps)
    requantize = property(lambda self: self._requantize)
    out_lanes = property(lambda self: self._out_lanes)
    tap_shifts = property(lambda self: self._tap_shifts)

    @property
    def tile_size(self) -> int:
        """Input tile side, ``m + 2``."""
        return self._n

    @property
    def cycles_per_beat(self) -> int:
        """Clocks per accepted input-channel beat: ``(m+2)**2 / taps_per_clock``."""
        return self._n * self._n // self._taps

    @property
    def input_width(self) -> int:
        """Bits of a transformed input tap as multiplied (exact growth bound, or int8)."""
        if self._mode == "tapwise":
            return 8
        return signed_width(*input_bounds(self._m))

    @property
    def weight_width(self) -> int:
        """Bits of a Winograd-domain weight (exact growth bound of ``(sG) g (sG)^T``, or int8)."""
        if self._mode == "tapwise":
            return 8
        return signed_width(*weight_bounds(self._m))

    @property
    def accumulator_width(self) -> int:
        """Bits of each Winograd-domain accumulator."""
        return exact_accumulator_width(self._m) if self._mode == "exact" else 32

    @property
    def transform_width(self) -> int:
        """Bits of ``A^T M A`` as computed (exact: modulo ``2**accumulator_width``; tapwise:
        the rescaled accumulators plus the output transform's growth)."""
        if self._mode == "exact":
            return self.accumulator_width
        left, _ = rescale_shifts(self._tap_shifts)
        return 32 + int(left.max()) + output_growth_bits(self._m)

    @property
    def weight_words(self) -> int:
        """Depth of the weight memory (words of ``taps_per_clock`` weights)."""
        return self._in_channels * self.cycles_per_beat

    @property
    def beats_per_tile(self) -> int:
        return self._m * self._m // self._out_lanes

    @property
    def latency(self) -> int:
        """Clocks from the handshake of a tile's last input-channel beat to its first output beat
        (sink ready)."""
        extra = REQUANT_LATENCY if self._requantize else 0
        # The beat waits in the input register while the previous beat's groups issue
        # (cycles_per_beat - 1 clocks when beats come back to back), then is loaded (1 clock)
        # and its cycles_per_beat groups issue.
        return 2 * self.cycles_per_beat + FRONT_STAGES + extra

    @property
    def multipliers(self) -> int:
        """Hardware multipliers: the Winograd-domain ones plus the requantizer's (4 per lane)."""
        return self._taps + (4 * self._out_lanes if self._requantize else 0)

    def elaborate(self, platform):
        m = Module()
        tm, n, taps = self._m, self._n, self._taps
        groups = self.cycles_per_beat
        vw, uw, aw = self.input_width, self.weight_width, self.accumulator_width
        at, _, bt, _ = integer_matrices(tm)
        exact = self._mode == "exact"

        # ---- pass control: params, then weights, then tiles -------------------------------
        state = Signal(range(3), init=PARAMS)
        params = Signal(PassParams(self._requantize))
        busy = Signal()
        # No zero-width counters or addresses: Verilator rejects the [-1:0] ranges they produce.
        words = max(self.weight_words, 2)
        m.submodules.weight_mem = mem = Memory(
            shape=data.ArrayLayout(signed(uw), taps), depth=words, init=[])
        wr = mem.write_port()
        # Synchronous read (block RAM on iCE40, no LUT-RAM read in the product path): the port
        # is given the address the next issue will use, so its data is ready when it issues.
        rd = mem.read_port(domain="sync", transparent_for=(wr,))
        wr_addr = Signal(range(words))
        m.d.comb += [
            self.params.ready.eq((state == PARAMS) & ~busy),
            self.weights.ready.eq(state == WEIGHTS),
            wr.addr.eq(wr_addr),
            wr.data.eq(self.weights.payload.u),
            wr.en.eq(self.weights.valid & self.weights.ready),
        ]
        with m.If(self.params.valid & self.params.ready):
            m.d.sync += [params.eq(self.params.payload), state.eq(WEIGHTS)]
        with m.If(self.weights.valid & self.weights.ready):
            # Extra beats beyond the memory wrap around; the driver sends exactly one pass.
            wrap = self.weights.payload.last | (wr_addr == self.weight_words - 1)
            m.d.sync += wr_addr.eq(Mux(wrap, 0, wr_addr + 1))
            with m.If(self.weights.payload.last):
                m.d.sync += state.eq(TILES)

        # ---- the front pipeline stalls as a whole when its last register is held ----------
        advance = Signal()

        # Stage I: the accepted tile, registered so that the input transform starts from a
        # register (not from the source's payload: that was the critical path).
        # Stage A: transformed (and quantized) input taps. With fewer multipliers than taps
        # the taps rotate by `taps` per clock so group g is always at 0.
        i_valid = Signal()
        i_tile = Signal(InputTile(n))
        a_valid = Signal()
        a_v = Signal(data.ArrayLayout(signed(vw), n * n))
        a_first = Signal()
        a_last = Signal()
        group = Signal(range(max(groups, 2)))
        next_first = Signal(init=1)
        final_group = group == groups - 1
        accept, load = Signal(), Signal()
        m.d.comb += [
            load.eq(advance & i_valid & (~a_valid | final_group)),
            self.i.ready.eq((state == TILES) & (~i_valid | load)),
            accept.eq(self.i.valid & self.i.ready),
        ]
        with m.If(accept):
            m.d.sync += [i_valid.eq(1), i_tile.eq(self.i.payload)]
        with m.Elif(load):
            m.d.sync += i_valid.eq(0)
        d = [[i_tile.d[r][c] for c in range(n)] for r in range(n)]
        v_full = constant_matrix_product(bt, d, bt)
        v_taps = []
        for t in range(n * n):
            value = v_full[t // n][t % n]
            if not exact:
                value = self._quantize_tap(m, value, self._tap_shifts.v[t // n][t % n], t)
            v_taps.append(value)
        with m.If(advance):
            with m.If(load):
                m.d.sync += [a_valid.eq(1), group.eq(0), a_first.eq(next_first),
                             a_last.eq(i_tile.last), next_first.eq(i_tile.last)]
                m.d.sync += [a_v[t].eq(v_taps[t]) for t in range(n * n)]
            with m.Elif(a_valid & ~final_group):
                m.d.sync += group.eq(group + 1)
                m.d.sync += [a_v[t].eq(a_v[(t + taps) % (n * n)]) for t in range(n * n)]
            with m.Else():
                m.d.sync += a_valid.eq(0)
        with m.If(accept & self.i.payload.last & self.i.payload.end):
            m.d.sync += state.eq(PARAMS)

        # Weight memory read: one word per issued group, in order, channel after channel.
        rd_addr = Signal(range(words))
        issue = advance & a_valid
        next_addr = Mux(issue, Mux(final_group & a_last, 0, rd_addr + 1), rd_addr)
        m.d.comb += rd.addr.eq(next_addr)
        m.d.sync += rd_addr.eq(next_addr)

        # Stage B: products of one group of taps.
        pw = signed_width(-(1 << (vw - 1)) * ((1 << (uw - 1)) - 1),
                         (1 << (vw - 1)) * (1 << (uw - 1)))
        b_valid, b_first, b_last, b_final = Signal(), Signal(), Signal(), Signal()
        b_prod = Signal(data.ArrayLayout(signed(pw), taps))
        with m.If(advance):
            m.d.sync += [b_valid.eq(a_valid), b_first.eq(a_first), b_last.eq(a_last),
                         b_final.eq(final_group)]
            m.d.sync += [b_prod[j].eq(a_v[j] * rd.data[j]) for j in range(taps)]

        # Stage C: accumulators, rotating like the taps; the completed M goes to register D.
        acc = Signal(data.ArrayLayout(signed(aw), n * n))
        d_valid = Signal()
        d_m = Signal(data.ArrayLayout(signed(aw), n * n))
        sums = [(Mux(b_first, 0, acc[j]) + b_prod[j])[:aw].as_signed() for j in range(taps)]
        rotated = [acc[t] for t in range(taps, n * n)] + sums
        with m.If(advance):
            m.d.sync += d_valid.eq(b_valid & b_last & b_final)
            with m.If(b_valid):
                m.d.sync += [acc[t].eq(rotated[t]) for t in range(n * n)]
                with m.If(b_last & b_final):
                    m.d.sync += [d_m[t].eq(rotated[t]) for t in range(n * n)]

        # Stages E1, E2: output transform, rows then columns.
        mw = self.transform_width
        if exact:
            m_taps = [[d_m[r * n + c] for c in range(n)] for r in range(n)]
        else:
            left, frac = rescale_shifts(TapShifts(self._tap_shifts.v, self._tap_shifts.u))
            m_taps = [[d_m[r * n + c] << int(left[r][c]) for c in range(n)] for r in range(n)]
        e1_valid, e2_valid = Signal(), Signal()
        e1 = Signal(data.ArrayLayout(data.ArrayLayout(signed(mw), n), tm))
        e2 = Signal(data.ArrayLayout(signed(mw), tm * tm))
        rows = [[sum((times_constant(m_taps[k][c], int(at[i][k])) for k in range(n)
                      if at[i][k]), Const(0, 1)) for c in range(n)] for i in range(tm)]
        # Exact mode works modulo 2**aw: truncation keeps exactly the bits that matter.
        cols = [[sum((times_constant(e1[i][k], int(at[j][k])) for k in range(n) if at[j][k]),
                     Const(0, 1)) for j in range(tm)] for i in range(tm)]
        with m.If(advance):
            m.d.sync += [e1_valid.eq(d_valid), e2_valid.eq(e1_valid)]
            m.d.sync += [e1[i][c].eq(rows[i][c]) for i in range(tm) for c in range(n)]
            m.d.sync += [e2[i * tm + j].eq(cols[i][j]) for i in range(tm) for j in range(tm)]

        # Stage S: back to the direct accumulator's scale. Stage E3: bias added; held for the
        # sequencer. Two stages, so the rounding shift, saturation and bias add (or the exact
        # division's shift-and-add steps) are not one long carry chain.
        s_valid = Signal()
        s_y = Signal(data.ArrayLayout(signed(32), tm * tm))
        e3_valid = Signal()
        e3 = Signal(data.ArrayLayout(signed(32), tm * tm))
        scaled = []
        for t in range(tm * tm):
            if exact:
                k, odd = exact_divisor(tm)
                y = e2[t][k:k + 32].as_signed()
                for sign, amount in odd_inverse_steps(odd):
                    y = (y + (y << amount) if sign > 0 else y - (y << amount))[:32].as_signed()
            else:
                y = e2[t]
                if frac:
                    y = (y + (1 << (frac - 1))) >> frac
                y = Mux(y > (1 << 31) - 1, (1 << 31) - 1, Mux(y < -(1 << 31), -(1 << 31), y))
            scaled.append(y)

        # ---- output sequencer: tile -> beats of `lanes` (-> requantizer) --------------------
        lanes = self._out_lanes
        segments = tm * tm // lanes
        segment = Signal(range(max(segments, 2)))
        final_segment = segment == segments - 1
        if self._requantize:
            m.submodules.requant = requant = Requantizer(lanes=lanes)
            seq, seq_layout = requant.i, RequantIn(lanes)
            wiring.connect(m, requant.o, wiring.flipped(self.o))
        else:
            seq, seq_layout = self.o, WinogradOut(lanes, False)
        seq_valid = Signal()
        seq_payload = Signal(seq_layout)
        take = Signal()
        m.d.comb += [
            seq.valid.eq(seq_valid),
            seq.payload.eq(seq_payload),
            take.eq((~seq_valid | seq.ready) & e3_valid),
            advance.eq(~e3_valid | (take & final_segment)),
            busy.eq(i_valid | a_valid | b_valid | d_valid | e1_valid | e2_valid | s_valid | e3_valid),
        ]
        with m.If(advance):
            m.d.sync += [s_valid.eq(e2_valid), e3_valid.eq(s_valid)]
            m.d.sync += [s_y[t].eq(scaled[t]) for t in range(tm * tm)]
            m.d.sync += [e3[t].eq((s_y[t] + params.bias)[:32]) for t in range(tm * tm)]
        with m.If(~seq_valid | seq.ready):
            m.d.sync += seq_valid.eq(take)
        with m.If(take):
            m.d.sync += [segment.eq(Mux(final_segment, 0, segment + 1)),
                         seq_payload.last.eq(final_segment)]
            field = "acc" if self._requantize else "data"
            m.d.sync += [seq_payload[field][j].eq(e3[segment * lanes + j]) for j in range(lanes)]
            if self._requantize:
                m.d.sync += [seq_payload.multiplier[j].eq(params.multiplier) for j in range(lanes)]
                m.d.sync += [seq_payload.shift[j].eq(params.shift) for j in range(lanes)]
                m.d.sync += [seq_payload.out_zero_point.eq(params.out_zero_point),
                             seq_payload.act_min.eq(params.act_min),
                             seq_payload.act_max.eq(params.act_max)]
        return m

    @staticmethod
    def _quantize_tap(module, value, shift: int, tap: int):
        """int8 ``sat((value + 2**(shift-1)) >> shift)``: the tap-wise input quantizer."""
        if shift:
            value = (value + (1 << (shift - 1))) >> shift
        q = Signal(signed(8), name=f"v_q{tap}")
        module.d.comb += q.eq(Mux(value > 127, 127, Mux(value < -128, -128, value)))
        return q
