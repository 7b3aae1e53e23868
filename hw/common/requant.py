"""Pipelined TFLite/gemmlowp requantizer, shared by every block that produces int8 from int32."""

import itertools

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import check_bool, check_choice, check_int
from .mul import PipelinedMultiplier
from .pipeline import StallPipeline

__all__ = ["RequantIn", "RequantOut", "Requantizer", "requant_sequencer", "REQUANT_LATENCY",
           "requant_latency", "OUT_WIDTHS", "RAW_WIDTH"]

#: Pipeline registers between an accepted input and its output beat (no stalls), by default.
REQUANT_LATENCY = 9


def requant_latency(far_dsps: bool = False) -> int:
    """Latency of a :class:`Requantizer`: ``REQUANT_LATENCY``, plus 2 with ``far_dsps``."""
    return REQUANT_LATENCY + (2 if far_dsps else 0)

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
    DSP multiplier (MULT18X18D on ECP5); every adder sits alone between registers.

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
        One more register stage on each side of the four DSP products (``latency`` is then
        ``REQUANT_LATENCY + 2``), so that the routes to and from a multiplier have a cycle to
        themselves: in a design that fills the device's DSPs (the 12 x 12 GEMM on the
        LFE5U-85F takes 148 of 156) the requantizer's multipliers get whichever sites are
        left, far from its logic. Default False.

    Members
    -------
    i : In(stream.Signature(RequantIn(lanes, out_width, tag)))
        Accumulators and their requantization parameters.
    o : Out(stream.Signature(RequantOut(lanes, out_width, tag)))
        Results, ``latency`` cycles after the input when not stalled.
    """

    def __init__(self, *, lanes: int, out_width: int = 8, tag=None, far_dsps: bool = False):
        check_int("lanes", lanes, 1, 64)
        check_choice("out_width", out_width, OUT_WIDTHS + (RAW_WIDTH,))
        check_bool("far_dsps", far_dsps)
        self._lanes = lanes
        self._out_width = out_width
        self._tag = tag
        self._far_dsps = far_dsps
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
    def latency(self) -> int:
        """Cycles from an accepted input beat to its output beat (no stalls)."""
        return requant_latency(self._far_dsps)

    def elaborate(self, platform):
        m = Module()
        n = self.latency
        extra = int(self._far_dsps)     # register stages added on each side of the DSPs
        # Stall the whole pipeline only when its output beat is held by the sink.
        pipe = StallPipeline(m, self.i, self.o)
        pipe.finish(n)
        advance, stage, delay = pipe.advance, pipe.reg, pipe.delay

        # Fields shared by every lane, delayed to the stage that uses them.
        payload = self.i.payload
        w = self._out_width
        raw = w == RAW_WIDTH
        if not raw:
            zp5 = delay("zero_point", signed(w), payload.out_zero_point, 5 + 2 * extra)
            lo4 = delay("act_min", signed(w), payload.act_min, 4 + 2 * extra)
            hi4 = delay("act_max", signed(w), payload.act_max, 4 + 2 * extra)
            # TFLite clamps as min(max(x, act_min), act_max): with act_min > act_max every
            # result is act_max, which the clamp below gives once act_min is lowered to it
            # (compared in s5, selected in s6).
            inverted = stage("act_inverted_s5", 1, lo4 > hi4)
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
            lo = delay("act_min_s7", signed(w), lo6, 2)
            hi = delay("act_max_s7", signed(w), hi6, 2)
        m.d.comb += self.o.payload.last.eq(delay("last", 1, payload.last, n))
        if self._tag is not None:
            m.d.comb += self.o.payload.tag.eq(delay("tag", self._tag, payload.tag, n))

        for lane in range(self._lanes):
            p = f"l{lane}_"
            acc = self.i.payload.acc[lane]
            mult = self.i.payload.multiplier[lane]
            shift = self.i.payload.shift[lane]

            # s1: left shift (wrapping), right-shift amount, saturation operands.
            left = Mux(shift[-1], 0, shift.as_unsigned()[:5])
            x1 = stage(p + "shifted", signed(32), (acc << left)[:32].as_signed())
            m1 = stage(p + "multiplier", signed(32), mult)
            right1 = stage(p + "right", unsigned(6), Mux(shift[-1], -shift, 0))

            # s2-s3: four 16 x 16 partial products (high halves signed, low halves unsigned: one
            # SB_MAC16 each on iCE40, where a 17-bit signed operand would not fit).
            # Each multiplier registers its operands again (on ECP5 inside the DSP) before the
            # product register: feeding the DSP straight from the s1 barrel shifter was the
            # requantized GEMM's critical path on ECP5.
            x_dsp = delay(p + "shifted_to_dsp", signed(32), x1, extra)
            m_dsp = delay(p + "multiplier_to_dsp", signed(32), m1, extra)
            halves_x = (x_dsp[16:].as_signed(), x_dsp[:16])
            halves_m = (m_dsp[16:].as_signed(), m_dsp[:16])
            pps = {}
            for (xn, x_half), (mn, m_half) in itertools.product(zip("hl", halves_x),
                                                                 zip("hl", halves_m)):
                mul = PipelinedMultiplier(a_width=16, b_width=16, a_signed=xn == "h",
                                          b_signed=mn == "h")
                m.submodules[f"{p}mul_{xn}{mn}"] = mul
                m.d.comb += [mul.a.eq(x_half), mul.b.eq(m_half), mul.en.eq(advance)]
                # (32 bits, unsigned for ll)
                pps[xn + mn] = delay(f"{p}pp_{xn}{mn}_from_dsp", mul.p.shape(), mul.p, extra)
            pp_hh, pp_hl, pp_lh, pp_ll = pps["hh"], pps["hl"], pps["lh"], pps["ll"]
            sat2 = delay(p + "sat_s2", 1, (x1 == -(1 << 31)) & (m1 == -(1 << 31)), 2 + 2 * extra)
            right2 = delay(p + "right_s2", unsigned(6), right1, 2 + 2 * extra)

            # s4: cross terms summed; high and low terms joined with the rounding constant.
            # For every product but the saturating one, gemmlowp's nudged truncating division
            # (ab + nudge) / 2**31 equals floor((ab + 2**30) / 2**31).
            mid = stage(p + "pp_mid", signed(35), pp_hl + pp_lh)
            # (hh << 32) + ll + 2**30: the low 30 bits of ll pass through untouched, so only
            # the upper part needs an adder (36 bits, not 66).
            outer_hi = (pp_hh << 2) + pp_ll[30:32] + 1
            outer = stage(p + "pp_outer", signed(66), Cat(pp_ll[:30], outer_hi).as_signed())
            sat3 = stage(p + "sat_s3", 1, sat2)
            right3 = stage(p + "right_s3", unsigned(6), right2)

            # s5: the high word (bits 31..62) of the full product + 2**30; mask of the bits
            # below the rounding bit. Bits 0..15 of (mid << 16) are zero, so the high word
            # needs bits 16..62 of outer + (mid << 16): a 47-bit carry chain, here split in
            # two, the upper half summed for both carries in and chosen by the lower half's
            # carry out (carry select: a 24-bit chain and a LUT; the 47-bit chain was the
            # requantized GEMM's critical path on the iCE40 UP5K, 21.8 ns over 46 levels).
            upper = outer[16:63]
            cross = Cat(mid, mid[-1].replicate(len(upper) - len(mid)))
            split = 24
            lower_sum = upper[:split] + cross[:split]
            upper_sum = [upper[split:] + cross[split:] + carry for carry in (0, 1)]
            sum_16_62 = Cat(lower_sum[:split],
                            Mux(lower_sum[split], upper_sum[1], upper_sum[0])[:len(upper) - split])
            total = stage(p + "product", signed(32), sum_16_62[31 - 16:])
            sat4 = stage(p + "sat_s4", 1, sat3)
            right4 = stage(p + "right_s4", unsigned(6), right3)
            # Bits below the rounding bit: bit i is set when i < right - 1. Per-bit constant
            # compares keep this off a carry chain (a shift-and-subtract was the critical path).
            sticky_mask = stage(p + "sticky_mask", 32, Cat(*(right3 > i + 1 for i in range(32))))

            # s6: high word, then x >> (right - 1) keeping the rounding bit; sticky bits.
            high = Mux(sat4, INT32_MAX, total)
            shifted_x2 = stage(p + "shifted_x2", signed(33), (high.as_signed() << 1) >> right4)
            sticky = stage(p + "sticky", 1, (high & sticky_mask).any())
            negative = stage(p + "negative", 1, high[31])

            # s7: round half away from zero (RoundingDivideByPOT).
            half = shifted_x2[0]
            rounded = stage(p + "rounded", signed(33),
                            shifted_x2[1:].as_signed() + (half & (~negative | sticky)))

            if raw:
                # s8-s9: the rounded high word is already an int32; the same latency as below.
                held = stage(p + "raw", signed(32), rounded[:32].as_signed())
                result = stage(p + "result", signed(32), held)
            else:
                # s8: output zero point, and the comparisons that decide the clamp; s9: clamp.
                with_zp = stage(p + "with_zero_point", signed(w), (rounded + zp)[:w])
                # The bounds fit w + 1 bits: a rounded value outside that range is decided by
                # its sign, one inside by a (w + 1)-bit comparison, not a 33-bit carry chain.
                top = rounded[w:]
                small = (top == 0) | (top == (1 << len(top)) - 1)
                low = rounded[:w + 1].as_signed()
                below = stage(p + "below", 1, Mux(small, low < lo_rel, rounded[-1]))
                above = stage(p + "above", 1, Mux(small, low > hi_rel, ~rounded[-1]))
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
