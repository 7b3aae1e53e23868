"""Pipelined TFLite/gemmlowp requantizer, shared by every block that produces int8 from int32."""

import itertools

from amaranth import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import check_bool, check_choice, check_int
from .mul import MULTIPLIER_LATENCY, PipelinedMultiplier, uses_ice40_primitives
from .pipeline import StallPipeline

__all__ = ["RequantIn", "RequantOut", "Requantizer", "requant_sequencer", "REQUANT_LATENCY",
           "requant_latency", "OUT_WIDTHS", "RAW_WIDTH"]

#: Pipeline registers between an accepted input and its output beat (no stalls), by default.
REQUANT_LATENCY = 9


def requant_latency(far_dsps: bool = False) -> int:
    """Latency of a :class:`Requantizer`: ``REQUANT_LATENCY``, plus 4 with ``far_dsps``."""
    return REQUANT_LATENCY + (4 if far_dsps else 0)

INT32_MAX = (1 << 31) - 1

#: Output widths the requantizer produces (int8, or int16 for 16-bit activations).
OUT_WIDTHS = (8, 16)

#: ``out_width`` of a requantizer that returns ``MultiplyByQuantizedMultiplier`` itself: the
#: int32 result with no zero point and no clamp (the input legs of TFLite's ``ADD``).
RAW_WIDTH = 32


def RequantIn(lanes: int, out_width: int = 8, tag=None) -> data.StructLayout:
    """Payload of the requantizer's input: ``lanes`` accumulators with their per-lane
    ``multiplier`` (Q31) and ``shift`` (TFLite convention, positive = left), the shared output
    zero point and clamp bounds (``out_width`` bits; absent for ``RAW_WIDTH``), and a ``last``
    flag that passes through untouched, as does ``tag`` (a field of that shape, if given)."""
    fields = {
        "acc": data.ArrayLayout(signed(32), lanes),
        "multiplier": data.ArrayLayout(signed(32), lanes),
        "shift": data.ArrayLayout(signed(6), lanes),
    }
    if out_width != RAW_WIDTH:
        fields |= {"out_zero_point": signed(out_width), "act_min": signed(out_width),
                   "act_max": signed(out_width)}
    fields["last"] = unsigned(1)
    if tag is not None:
        fields["tag"] = tag
    return data.StructLayout(fields)


def RequantOut(lanes: int, out_width: int = 8, tag=None) -> data.StructLayout:
    """Payload of the requantizer's output: ``lanes`` signed ``out_width``-bit values and the
    passed-through ``last`` (and ``tag``, if given)."""
    fields = {"data": data.ArrayLayout(signed(out_width), lanes), "last": unsigned(1)}
    if tag is not None:
        fields["tag"] = tag
    return data.StructLayout(fields)


class Requantizer(wiring.Component):
    """``clamp(MultiplyByQuantizedMultiplier(acc, multiplier, shift) + out_zero_point)``.

    Bit-exact to TFLite's double-rounding ``MultiplyByQuantizedMultiplier`` with gemmlowp's
    ``SaturatingRoundingDoublingHighMul`` and ``RoundingDivideByPOT`` (see
    ``sim.golden.gemm.requantize``), including ``INT32_MIN`` operands and ties. The left shift wraps
    modulo 2**32 as two's-complement hardware does. ``shift`` must be in [-31, 31].

    The 32 x 32 product is split into four 16 x 16 partial products so that each maps onto one
    DSP multiplier (MULT18X18D on ECP5, SB_MAC16 on iCE40); every adder sits alone between
    registers.

    Parameters
    ----------
    lanes : int
        Values requantized per beat (1..64).
    out_width : int
        Bits of the results, the zero point and the clamp bounds: 8 (int8, default) or 16; or
        ``RAW_WIDTH`` (32): the int32 ``MultiplyByQuantizedMultiplier`` itself, with no zero
        point and no clamp (the payload has no such fields), in the same number of cycles.
    tag : shape or None
        Shape of an optional ``tag`` field carried from each input beat to its output beat
        untouched, like ``last`` (e.g. parameters a later stage applies to the same beat).
    far_dsps : bool
        The deeper form (``latency`` is then ``REQUANT_LATENCY + 4``): one more register stage
        on each side of the four DSP products, so that the routes to and from a multiplier
        have a cycle to themselves (in a design that fills the device's DSPs, the 12 x 12 GEMM
        on the LFE5U-85F takes 148 of 156, the requantizer's multipliers get whichever sites
        are left, far from its logic), the left shift split over the first of them, the
        high word's 48-bit sum and the rounding increment each over two stages. Default False.
    early_clamp : bool or None
        With ``far_dsps`` and a clamp (``out_width`` 8 or 16): decide the clamp's compares in
        the rounding's second stage, from its operands, so that the stage after it only
        selects (the bounds' pipeline then starts a stage earlier; the same latency and
        results). ``None`` (the default): on iCE40 only, where the compare after the rounded
        register was the requantized 1 x 4 GEMM's critical path on the UP5K (20.2 ns, 12.3 ns
        of it routing); elsewhere the netlist is the one before this option.

    Members
    -------
    i : In(stream.Signature(RequantIn(lanes, out_width, tag)))
        Accumulators and their requantization parameters.
    o : Out(stream.Signature(RequantOut(lanes, out_width, tag)))
        Results, ``latency`` cycles after the input when not stalled.
    """

    def __init__(self, *, lanes: int, out_width: int = 8, tag=None, far_dsps: bool = False,
                 early_clamp: bool | None = None):
        check_int("lanes", lanes, 1, 64)
        check_choice("out_width", out_width, OUT_WIDTHS + (RAW_WIDTH,))
        check_bool("far_dsps", far_dsps)
        if early_clamp is not None:
            check_bool("early_clamp", early_clamp)
            if early_clamp and not far_dsps:
                raise ValueError("early_clamp needs far_dsps")
            if early_clamp and out_width == RAW_WIDTH:
                raise ValueError(f"early_clamp needs a clamp (out_width 8 or 16), "
                                 f"not {out_width!r}")
        self._lanes = lanes
        self._out_width = out_width
        self._tag = tag
        self._far_dsps = far_dsps
        self._early_clamp = early_clamp
        super().__init__({
            "i": In(stream.Signature(RequantIn(lanes, out_width, tag))),
            "o": Out(stream.Signature(RequantOut(lanes, out_width, tag))),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def out_width(self) -> int:
        return self._out_width

    @property
    def far_dsps(self) -> bool:
        return self._far_dsps

    @property
    def early_clamp(self) -> bool | None:
        return self._early_clamp

    @property
    def latency(self) -> int:
        """Cycles from an accepted input beat to its output beat (no stalls)."""
        return requant_latency(self._far_dsps)

    def elaborate(self, platform):
        m = Module()
        n = self.latency
        extra = int(self._far_dsps)     # register stages added on each side of the DSPs
        # On iCE40 the stage after the DSPs is the SB_MAC16's own pipeline register (the
        # fabric's flip-flops are what the UP5K runs out of first); elsewhere a fabric register.
        in_dsp = extra if uses_ice40_primitives(platform) else 0
        w = self._out_width
        raw = w == RAW_WIDTH
        early = self._early_clamp
        if early is None:
            early = bool(extra) and not raw and uses_ice40_primitives(platform)
        early = int(early)              # stages the bounds' pipeline starts earlier
        # Stall the whole pipeline only when its output beat is held by the sink.
        pipe = StallPipeline(m, self.i, self.o)
        pipe.finish(n)
        advance, stage, delay = pipe.advance, pipe.reg, pipe.delay

        # Fields shared by every lane, delayed to the stage that uses them.
        payload = self.i.payload
        if not raw:
            # With early_clamp the bounds are relative to the zero point a stage earlier.
            zp5 = delay("zero_point", signed(w), payload.out_zero_point, n - 4 - early)
            lo3 = delay("act_min", signed(w), payload.act_min, n - 6 - early)
            hi3 = delay("act_max", signed(w), payload.act_max, n - 6 - early)
            lo4 = stage(f"act_min_d{n - 5 - early}", signed(w), lo3)
            hi4 = stage(f"act_max_d{n - 5 - early}", signed(w), hi3)
            # TFLite clamps as min(max(x, act_min), act_max): with act_min > act_max every
            # result is act_max, which the clamp below gives once act_min is lowered to it
            # (compared over s4 and s5, selected in s6). The bounds' halves are compared apart
            # a stage early (the upper halves signed), so that s5 only joins three flags: the
            # whole compare after the registers was the requantized 8x8 GEMM's critical path
            # on ECP5 (6.81 ns over 12 levels, seed 1).
            h = w // 2
            upper_gt = stage("act_upper_gt_s4", 1, lo3[h:].as_signed() > hi3[h:].as_signed())
            upper_eq = stage("act_upper_eq_s4", 1, lo3[h:] == hi3[h:])
            lower_gt = stage("act_lower_gt_s4", 1, lo3[:h] > hi3[:h])
            inverted = stage("act_inverted_s5", 1, upper_gt | (upper_eq & lower_gt))
            lo5 = stage("act_min_s5", signed(w), lo4)
            hi5 = stage("act_max_s5", signed(w), hi4)
            lo6 = stage("act_min_s6", signed(w), Mux(inverted, hi5, lo5))
            hi6 = stage("act_max_s6", signed(w), hi5)
            zp6 = stage("zero_point_s6", signed(w), zp5)
            # The bounds relative to the zero point, so that s8 compares the rounded value with
            # them beside (not after) the zero point's add, and s9 only selects.
            lo_rel = stage("act_min_rel", signed(w + 1), lo6 - zp6)
            hi_rel = stage("act_max_rel", signed(w + 1), hi6 - zp6)
            zp = stage("zero_point_s7", signed(w), zp6)
            if early:
                zp = stage("zero_point_s8", signed(w), zp)
            lo = delay("act_min_s7", signed(w), lo6, 2 + early)
            hi = delay("act_max_s7", signed(w), hi6, 2 + early)
        m.d.comb += self.o.payload.last.eq(delay("last", 1, payload.last, n))
        if self._tag is not None:
            m.d.comb += self.o.payload.tag.eq(delay("tag", self._tag, payload.tag, n))

        for lane in range(self._lanes):
            p = f"l{lane}_"
            acc = self.i.payload.acc[lane]
            mult = self.i.payload.multiplier[lane]
            shift = self.i.payload.shift[lane]

            # s1: left shift (wrapping), right-shift amount. Both fit 5 bits: shift is in
            # [-31, 31]. With far_dsps the left shift is split: by 0..7 here, by 0, 8, 16 or 24
            # in the register stage before the DSPs (a 5-level shifter from the input was the
            # requantized 2 x 2 GEMM's critical path on the iCE40 UP5K).
            left = Mux(shift[-1], 0, shift.as_unsigned()[:5])
            right1 = stage(p + "right", unsigned(5), Mux(shift[-1], -shift, 0)[:5])
            if extra:
                x_fine = stage(p + "shifted_fine", signed(32), (acc << left[:3])[:32].as_signed())
                coarse = stage(p + "left_coarse", unsigned(2), left[3:])
                x_dsp = stage(p + "shifted", signed(32),
                              (x_fine << Cat(C(0, 3), coarse))[:32].as_signed())
            else:
                x_dsp = stage(p + "shifted", signed(32), (acc << left)[:32].as_signed())
            m_dsp = delay(p + "multiplier", signed(32), mult, 1 + extra)

            # s2-s3: four 16 x 16 partial products (high halves signed, low halves unsigned: one
            # SB_MAC16 each on iCE40, where a 17-bit signed operand would not fit).
            # Each multiplier registers its operands again (on ECP5 inside the DSP) before the
            # product register: feeding the DSP straight from the s1 barrel shifter was the
            # requantized GEMM's critical path on ECP5.
            halves_x = (x_dsp[16:].as_signed(), x_dsp[:16])
            halves_m = (m_dsp[16:].as_signed(), m_dsp[:16])
            pps = {}
            for (xn, x_half), (mn, m_half) in itertools.product(zip("hl", halves_x),
                                                                 zip("hl", halves_m)):
                mul = PipelinedMultiplier(a_width=16, b_width=16, a_signed=xn == "h",
                                          b_signed=mn == "h",
                                          latency=MULTIPLIER_LATENCY + in_dsp)
                m.submodules[f"{p}mul_{xn}{mn}"] = mul
                m.d.comb += [mul.a.eq(x_half), mul.b.eq(m_half), mul.en.eq(advance)]
                # (32 bits, unsigned for ll)
                pps[xn + mn] = delay(f"{p}pp_{xn}{mn}_from_dsp", mul.p.shape(), mul.p,
                                     extra - in_dsp)
            pp_hh, pp_hl, pp_lh, pp_ll = pps["hh"], pps["hl"], pps["lh"], pps["ll"]

            # s4: cross terms summed; high and low terms joined with the rounding constant.
            # For every product, gemmlowp's nudged truncating division (ab + nudge) / 2**31
            # equals floor((ab + 2**30) / 2**31) but for INT32_MIN * INT32_MIN, where the
            # floor is 2**31 and SaturatingRoundingDoublingHighMul gives INT32_MAX. The high
            # word is kept in 33 bits, so that product is 2**31 exactly: RoundingDivideByPOT
            # of 2**31 and of INT32_MAX agree for every exponent but 0, and for exponent 0 the
            # clamp below (int8 and int16 results) or the raw form's saturation (int32) gives
            # what INT32_MAX would. No 32-bit compares of the operands are needed.
            mid = stage(p + "pp_mid", signed(35), pp_hl + pp_lh)
            # (hh << 32) + ll + 2**30: the low 30 bits of ll pass through untouched, so only
            # the upper part needs an adder (36 bits, not 66).
            outer_hi = (pp_hh << 2) + pp_ll[30:32] + 1
            outer = stage(p + "pp_outer", signed(66), Cat(pp_ll[:30], outer_hi).as_signed())

            # s5: the high word (bits 31..63) of the full product + 2**30. Bits 0..15 of
            # (mid << 16) are zero, so it needs bits 16..63 of outer + (mid << 16): a 48-bit
            # sum. With far_dsps it takes two register stages, 24 bits each (the second's
            # carry in is its low bit: (2a + c) + (2b + 1) = 2 (a + b + c) + ...); otherwise
            # one, the upper half summed for both carries in and chosen by the lower half's
            # carry out (the 47-bit chain was the requantized GEMM's critical path on the
            # iCE40 UP5K, 21.8 ns over 46 levels; the carry select, merged by Yosys into one
            # chain with a route between its halves, the requantized 4 x 4 and 8 x 8's on
            # ECP5, 6.9-7.0 ns).
            upper = outer[16:64]
            cross = Cat(mid, mid[-1].replicate(len(upper) - len(mid)))
            split = 24
            lower_sum = upper[:split] + cross[:split]
            if extra:
                low_word = stage(p + "high_low", unsigned(split - 15 + 1), lower_sum[15:])
                upper_hi = stage(p + "outer_high", unsigned(len(upper) - split), upper[split:])
                mid_hi = stage(p + "mid_high", signed(len(mid) - split), mid[split:])
                mid_hi_ext = Cat(mid_hi, mid_hi[-1].replicate(len(upper) - len(mid)))
                upper_sum = Cat(low_word[-1], upper_hi) + Cat(C(1, 1), mid_hi_ext)
                high_next = Cat(low_word[:-1], upper_sum[1:len(upper) - split + 1])
            else:
                upper_sums = [upper[split:] + cross[split:] + carry for carry in (0, 1)]
                high_next = Cat(lower_sum[15:split], Mux(lower_sum[split], upper_sums[1],
                                                         upper_sums[0])[:len(upper) - split])
            high_next = high_next.as_signed()
            # The right shift's amount: for the mask beside the high word, then for the shift.
            right_m = delay(p + "right_to_mask", unsigned(5), right1, 3 + 3 * extra)
            high = stage(p + "high", signed(33), high_next)
            # The high word already shifted by 0 or 16 (keeping the rounding bit), so that the
            # next stage's shifter has 4 levels, not 5 (the UP5K's critical path).
            coarse_x2 = stage(p + "high_coarse_x2", signed(34),
                              (high_next << 1) >> Cat(C(0, 4), right_m[4]))
            right_sh = stage(p + "right_to_shift", unsigned(4), right_m[:4])
            # Bits below the rounding bit: bit i is set when i < right - 1 (so i < 30). Per-bit
            # constant compares keep this off a carry chain (a shift-and-subtract was the
            # critical path).
            sticky_mask = stage(p + "sticky_mask", 30, Cat(*(right_m > i + 1 for i in range(30))))

            # s6: x >> (right - 1) keeping the rounding bit; sticky bits; the sign.
            shifted_x2 = stage(p + "shifted_x2", signed(34), coarse_x2 >> right_sh)
            sticky = stage(p + "sticky", 1, (high[:30] & sticky_mask).any())
            negative = stage(p + "negative", 1, high[-1])

            # s7: round half away from zero (RoundingDivideByPOT). The increment is split: the
            # upper half's carry in is the increment when the lower half is all ones, so no
            # chain spans all 33 bits (a 33-bit chain was a critical path on the UP5K).
            # With far_dsps the halves take a register stage each, the lower half's carry out
            # registered between them (the lookahead's all-ones tree and the upper chain were
            # the 1 x 4 GEMM's critical path on the UP5K, 20.1 ns).
            quotient = shifted_x2[1:]
            up = shifted_x2[0] & (~negative | sticky)
            low_q, high_q = quotient[:16], quotient[16:]
            if extra:
                low_sum = stage(p + "rounded_low", unsigned(17), low_q + up)
                high_q = stage(p + "quotient_high", unsigned(len(high_q)), high_q)
                rounded = stage(p + "rounded", signed(33),
                                Cat(low_sum[:16], (high_q + low_sum[16])[:len(high_q)]))
                if early:
                    # The s8 flags below, from the operands of the sum above: its low w + 1
                    # bits and whether its bits from w up are all equal (the increment of
                    # high_q only carries on its all-ones value).
                    carry = low_sum[16]
                    high_zero = ~high_q[1:].any() & ~high_q[0] & ~carry
                    high_ones = high_q[1:].all() & (high_q[0] ^ carry)
                    high_wrap = high_q.all() & carry           # all ones + 1 = 0
                    below_top = low_sum[w:16]
                    top_zero = stage(p + "top_zero", 1,
                                     ~below_top.any() & (high_zero | high_wrap))
                    top_ones = stage(p + "top_ones", 1, below_top.all() & high_ones)
                    low_next = Cat(low_sum[:16], high_q[0] ^ carry)[:w + 1].as_signed()
                    below_low = stage(p + "below_low", 1, low_next < lo_rel)
                    above_low = stage(p + "above_low", 1, low_next > hi_rel)
            else:
                rounded = stage(p + "rounded", signed(33),
                                Cat((low_q + up)[:16],
                                    (high_q + (up & low_q.all()))[:len(high_q)]))

            if raw:
                # s8-s9: the rounded high word is an int32 but for the saturating product's
                # 2**31 (exponent 0), which is INT32_MAX; the same latency as below.
                held = stage(p + "raw", signed(32),
                             Mux(rounded[31] & ~rounded[32], INT32_MAX, rounded[:32]))
                result = stage(p + "result", signed(32), held)
            else:
                # s8: output zero point, and the comparisons that decide the clamp; s9: clamp.
                with_zp = stage(p + "with_zero_point", signed(w), (rounded + zp)[:w])
                # The bounds fit w + 1 bits: a rounded value outside that range is decided by
                # its sign, one inside by a (w + 1)-bit comparison, not a 33-bit carry chain.
                if early:
                    small, low_below, low_above = top_zero | top_ones, below_low, above_low
                else:
                    top = rounded[w:]
                    small = (top == 0) | (top == (1 << len(top)) - 1)
                    low = rounded[:w + 1].as_signed()
                    low_below, low_above = low < lo_rel, low > hi_rel
                below = stage(p + "below", 1, Mux(small, low_below, rounded[-1]))
                above = stage(p + "above", 1, Mux(small, low_above, ~rounded[-1]))
                result = stage(p + "result", signed(w), Mux(below, lo, Mux(above, hi, with_zp)))
            m.d.comb += self.o.payload.data[lane].eq(result)
        return m


def requant_sequencer(m: Module, o, *, count: int, lanes: int, valid, value, last=1,
                      requantize: bool, out_width: int = 8, multiplier=None, shift=None,
                      out_zero_point=None, act_min=None, act_max=None):
    """The output sequencer of a block that ends in a :class:`Requantizer`: a vector of
    ``count`` int32 results leaves as ``count / lanes`` beats of ``lanes`` values, through a
    requantizer (added to ``m`` as ``requant``) when ``requantize``, else straight to ``o``.

    ``value(index)``, ``multiplier(index)`` and ``shift(index)`` give the element at an
    Amaranth index (``segment * lanes + lane``), ``out_zero_point``, ``act_min``, ``act_max``
    the values shared by the beat; all are read while ``valid`` says the vector is held and
    are registered with the beat (one register stage, the beat's ``last`` being ``last`` on the
    vector's final beat). ``o`` is the block's output (``RequantOut`` with ``requantize``, else
    a ``data``/``last`` stream of int32). Returns the (combinational) value that is high when
    the vector's final beat is taken: the source may then move on.
    """
    segments = count // lanes
    segment = Signal(range(max(segments, 2)))
    final_segment = segment == segments - 1
    if requantize:
        m.submodules.requant = requant = Requantizer(lanes=lanes, out_width=out_width)
        seq = requant.i
        wiring.connect(m, requant.o, wiring.flipped(o))
    else:
        seq = o
    seq_valid = Signal()
    seq_payload = Signal(seq.payload.shape(), reset_less=True)    # qualified by seq_valid
    advance = ~seq_valid | seq.ready
    take = Signal()
    m.d.comb += [
        seq.valid.eq(seq_valid),
        seq.payload.eq(seq_payload),
        take.eq(advance & valid),
    ]
    with m.If(advance):
        m.d.sync += seq_valid.eq(take)
    with m.If(take):
        m.d.sync += [segment.eq(Mux(final_segment, 0, segment + 1)),
                     seq_payload.last.eq(last & final_segment)]
        for lane in range(lanes):
            index = segment * lanes + lane
            if requantize:
                m.d.sync += [seq_payload.acc[lane].eq(value(index)),
                             seq_payload.multiplier[lane].eq(multiplier(index)),
                             seq_payload.shift[lane].eq(shift(index))]
            else:
                m.d.sync += seq_payload.data[lane].eq(value(index))
        if requantize:
            m.d.sync += [seq_payload.out_zero_point.eq(out_zero_point),
                         seq_payload.act_min.eq(act_min), seq_payload.act_max.eq(act_max)]
    return take & final_segment
