"""Winograd F(m x m, 3 x 3) convolution unit: input transform, Winograd-domain multiply and
channel accumulation, output transform, requantization. Tiles in, tiles out."""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sim.golden.winograd import exact_divisor, integer_matrices, odd_inverse_steps, rescale_shifts

from ..common.params import params_or_keywords
from ..common.arith import times_constant
from ..common.requant import requant_sequencer
from .params import WinogradParams

__all__ = ["InputTile", "WeightBeat", "PassParams", "WinogradOut", "WinogradUnit",
           "constant_matrix_product"]

# Pass states: waiting for the params beat, loading weights, taking tiles.
PARAMS, WEIGHTS, TILES = range(3)


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
    parameters : WinogradParams
        The generation-time parameters (``hw/winograd/params.py``); or, as keyword arguments,
        ``WinogradUnit(m=4, taps_per_clock=9)``:
    m : int
        Output tile size, 2 or 4 (input tiles are (m+2) x (m+2)).
    mode : str
        ``"exact"`` or ``"tapwise"``.
    in_channels : int
        Input channels per pass the weight memory holds (1..1024).
    taps_per_clock : int or None
        Winograd-domain multipliers; divides ``(m+2)**2``; ``None``: all taps.
    requantize : bool
        Requantize to int8 (default) or stream the int32 results (bias included).
    out_lanes : int or None
        Output values per beat; divides ``m*m``; ``None``: ``m``. One requantizer lane each.
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

    def __init__(self, parameters: WinogradParams | None = None, **kwargs):
        parameters = params_or_keywords(WinogradParams, parameters, kwargs,
                                        build=WinogradParams.of, name="parameters")
        self._params = p = parameters
        super().__init__({
            "params": In(stream.Signature(PassParams(p.requantize))),
            "weights": In(stream.Signature(WeightBeat(p.taps_per_clock, p.weight_width))),
            "i": In(stream.Signature(InputTile(p.tile_size))),
            "o": Out(stream.Signature(WinogradOut(p.out_lanes, p.requantize))),
        })

    @property
    def parameters(self) -> WinogradParams:
        """The generation-time parameters and every figure derived from them."""
        return self._params

    m = property(lambda self: self._params.m)
    mode = property(lambda self: self._params.mode)
    in_channels = property(lambda self: self._params.in_channels)
    taps_per_clock = property(lambda self: self._params.taps_per_clock)
    requantize = property(lambda self: self._params.requantize)
    out_lanes = property(lambda self: self._params.out_lanes)
    # Derived figures (documented on WinogradParams).
    tap_shifts = property(lambda self: self._params.shifts)
    tile_size = property(lambda self: self._params.tile_size)
    cycles_per_beat = property(lambda self: self._params.cycles_per_beat)
    input_width = property(lambda self: self._params.input_width)
    weight_width = property(lambda self: self._params.weight_width)
    accumulator_width = property(lambda self: self._params.accumulator_width)
    transform_width = property(lambda self: self._params.transform_width)
    weight_words = property(lambda self: self._params.weight_words)
    beats_per_tile = property(lambda self: self._params.beats_per_tile)
    latency = property(lambda self: self._params.latency)
    multipliers = property(lambda self: self._params.multipliers)

    def elaborate(self, platform):
        m = Module()
        state, params, busy, rd, words = self._pass_control(m)
        # The front pipeline stalls as a whole when its last register is held.
        advance = Signal()
        i_valid, a_valid, a_v, a_first, a_last, final_group = self._input_transform(
            m, state, advance)
        b_valid, d_valid, d_m = self._multiply_accumulate(
            m, advance, rd, words, a_valid, a_v, a_first, a_last, final_group)
        e1_valid, e2_valid, e2 = self._output_transform(m, advance, d_valid, d_m)
        self._rescale_and_output(m, params, busy, advance,
                                 (i_valid, a_valid, b_valid, d_valid, e1_valid), e2_valid, e2)
        return m

    def _pass_control(self, m):
        """Pass control: params, then weights (into the weight memory), then tiles. Returns
        ``(state, params, busy, rd, words)``: ``rd`` the weight memory's read port, ``words``
        its depth."""
        p = self._params
        state = Signal(range(3), init=PARAMS)
        params = Signal(PassParams(p.requantize))
        busy = Signal()
        # No zero-width counters or addresses: Verilator rejects the [-1:0] ranges they produce.
        words = max(p.weight_words, 2)
        m.submodules.weight_mem = mem = Memory(
            shape=data.ArrayLayout(signed(p.weight_width), p.taps_per_clock), depth=words,
            init=[])
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
            wrap = self.weights.payload.last | (wr_addr == p.weight_words - 1)
            m.d.sync += wr_addr.eq(Mux(wrap, 0, wr_addr + 1))
            with m.If(self.weights.payload.last):
                m.d.sync += state.eq(TILES)
        return state, params, busy, rd, words

    def _input_transform(self, m, state, advance):
        """Stages I and A. Returns ``(i_valid, a_valid, a_v, a_first, a_last, final_group)``.

        Stage I: the accepted tile, registered so that the input transform starts from a
        register (not from the source's payload: that was the critical path).
        Stage A: transformed (and quantized) input taps. With fewer multipliers than taps
        the taps rotate by `taps` per clock so group g is always at 0."""
        p = self._params
        n, taps, groups = p.tile_size, p.taps_per_clock, p.cycles_per_beat
        _, _, bt, _ = integer_matrices(p.m)
        i_valid = Signal()
        i_tile = Signal(InputTile(n))
        a_valid = Signal()
        a_v = Signal(data.ArrayLayout(signed(p.input_width), n * n))
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
            if p.mode != "exact":
                value = self._quantize_tap(m, value, p.shifts.v[t // n][t % n], t)
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
        return i_valid, a_valid, a_v, a_first, a_last, final_group

    def _multiply_accumulate(self, m, advance, rd, words, a_valid, a_v, a_first, a_last,
                             final_group):
        """Weight memory read, stage B (products) and stage C (accumulators); returns
        ``(b_valid, d_valid, d_m)``, the completed M in register D."""
        p = self._params
        n, taps, aw = p.tile_size, p.taps_per_clock, p.accumulator_width
        # Weight memory read: one word per issued group, in order, channel after channel.
        rd_addr = Signal(range(words))
        issue = advance & a_valid
        next_addr = Mux(issue, Mux(final_group & a_last, 0, rd_addr + 1), rd_addr)
        m.d.comb += rd.addr.eq(next_addr)
        m.d.sync += rd_addr.eq(next_addr)

        # Stage B: products of one group of taps.
        pw = p.product_width
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
        return b_valid, d_valid, d_m

    def _output_transform(self, m, advance, d_valid, d_m):
        """Stages E1, E2: output transform, rows then columns; returns
        ``(e1_valid, e2_valid, e2)``."""
        p = self._params
        tm, n, mw = p.m, p.tile_size, p.transform_width
        at, _, _, _ = integer_matrices(tm)
        if p.mode == "exact":
            m_taps = [[d_m[r * n + c] for c in range(n)] for r in range(n)]
        else:
            left, _ = rescale_shifts(p.shifts)
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
        return e1_valid, e2_valid, e2

    def _rescale_and_output(self, m, params, busy, advance, front_valids, e2_valid, e2):
        """Stage S: back to the direct accumulator's scale. Stage E3: bias added; held for the
        sequencer. Two stages, so the rounding shift, saturation and bias add (or the exact
        division's shift-and-add steps) are not one long carry chain. Then the output
        sequencer, which drives ``advance``; ``busy`` while any stage holds a tile."""
        p = self._params
        tm = p.m
        i_valid, a_valid, b_valid, d_valid, e1_valid = front_valids
        s_valid = Signal()
        s_y = Signal(data.ArrayLayout(signed(32), tm * tm))
        e3_valid = Signal()
        e3 = Signal(data.ArrayLayout(signed(32), tm * tm))
        scaled = []
        for t in range(tm * tm):
            if p.mode == "exact":
                k, odd = exact_divisor(tm)
                y = e2[t][k:k + 32].as_signed()
                for sign, amount in odd_inverse_steps(odd):
                    y = (y + (y << amount) if sign > 0 else y - (y << amount))[:32].as_signed()
            else:
                _, frac = rescale_shifts(p.shifts)
                y = e2[t]
                if frac:
                    y = (y + (1 << (frac - 1))) >> frac
                y = Mux(y > (1 << 31) - 1, (1 << 31) - 1, Mux(y < -(1 << 31), -(1 << 31), y))
            scaled.append(y)

        # ---- output sequencer: tile -> beats of `out_lanes` (-> requantizer) ----------------
        requant = {"multiplier": lambda _: params.multiplier, "shift": lambda _: params.shift,
                   "out_zero_point": params.out_zero_point, "act_min": params.act_min,
                   "act_max": params.act_max} if p.requantize else {}
        tile_done = requant_sequencer(m, self.o, count=tm * tm, lanes=p.out_lanes,
                                      requantize=p.requantize, valid=e3_valid,
                                      value=lambda t: e3[t], **requant)
        m.d.comb += [
            advance.eq(~e3_valid | tile_done),
            busy.eq(i_valid | a_valid | b_valid | d_valid | e1_valid | e2_valid | s_valid | e3_valid),
        ]
        with m.If(advance):
            m.d.sync += [s_valid.eq(e2_valid), e3_valid.eq(s_valid)]
            m.d.sync += [s_y[t].eq(scaled[t]) for t in range(tm * tm)]
            m.d.sync += [e3[t].eq((s_y[t] + params.bias)[:32]) for t in range(tm * tm)]

    @staticmethod
    def _quantize_tap(module, value, shift: int, tap: int):
        """int8 ``sat((value + 2**(shift-1)) >> shift)``: the tap-wise input quantizer."""
        if shift:
            value = (value + (1 << (shift - 1))) >> shift
        q = Signal(signed(8), name=f"v_q{tap}")
        module.d.comb += q.eq(Mux(value > 127, 127, Mux(value < -128, -128, value)))
        return q
