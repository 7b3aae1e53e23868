"""A two-stage pipelined signed multiplier built from logic only (radix-4 Booth), for products
beside a device's DSPs.

``synth_ecp5`` maps every ``$mul`` it sees onto a MULT18X18D, so a multiplier meant for the
fabric must not contain one: this one is written as Booth partial products and adders, with the
same ports and cycle behaviour as :class:`hw.common.mul.PipelinedMultiplier` (``p`` at cycle
t + 2 is ``a * b`` of cycle t), so a processing element can use either.

The weight ``b`` is recoded into ``ceil(b_width / 2)`` radix-4 Booth digits ``d_i`` in
{-2, -1, 0, 1, 2} (``d_i = -2 b[2i+1] + b[2i] + b[2i-1]``, ``b[-1] = 0``), so
``a * b = sum_i 4**i d_i a``. Each partial product ``d_i a`` is formed without an adder as
``x_i = (|d_i| a) XOR neg_i`` (its ones' complement when ``d_i < 0``) plus ``neg_i`` at its
least significant bit (``neg_i = b[2i+1]``: the triplet 111 gives ``x_i = -1`` and
``neg_i = 1``, 0 as it should). The first register stage holds the sums of neighbouring
partial products, ``x_{2j} + 4 x_{2j+1}``, with ``neg_{2j}`` in the second operand's free low
bits; the second sums those, with the remaining ``neg`` bits in the free low bits of each
shifted operand, except the last digit's, which has none below it and is added on its own.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .checks import check_int
from .mul import MULTIPLIER_LATENCY

__all__ = ["FabricMultiplier"]


class FabricMultiplier(wiring.Component):
    """Signed product of two operands, two clock cycles after they are presented, in logic
    (no hard multiplier).

    Parameters
    ----------
    a_width : int
        Bits of the signed operand ``a`` (the multiplicand), 2..32.
    b_width : int
        Bits of the signed operand ``b`` (Booth-recoded), 2..32.

    Members
    -------
    a : In(signed(a_width))
    b : In(signed(b_width))
    en : In(1)
        Clock enable of both register stages (tie high, the default, for a free-running
        pipeline).
    p : Out(signed(a_width + b_width))
        ``a * b`` of the operands presented two enabled cycles ago. Registers have no reset.
    """

    def __init__(self, *, a_width: int, b_width: int):
        check_int("a_width", a_width, 2, 32)
        check_int("b_width", b_width, 2, 32)
        self._a_width, self._b_width = a_width, b_width
        super().__init__({"a": In(signed(a_width)), "b": In(signed(b_width)),
                          "en": In(1, init=1), "p": Out(signed(a_width + b_width))})

    @property
    def a_width(self) -> int:
        return self._a_width

    @property
    def b_width(self) -> int:
        return self._b_width

    @property
    def latency(self) -> int:
        return MULTIPLIER_LATENCY

    @property
    def digits(self) -> int:
        """Booth digits of ``b``, one partial product each: ``ceil(b_width / 2)``."""
        return (self._b_width + 1) // 2

    def elaborate(self, platform):
        m = Module()
        n, width = self.digits, self._a_width + 1       # |d| a needs one bit more than a
        b = Signal(signed(2 * n), name="b_ext")
        m.d.comb += b.eq(self.b)
        partial, neg = [], []
        for i in range(n):
            low = b[2 * i - 1] if i else Const(0, 1)
            one = Signal(name=f"one{i}")
            two = Signal(name=f"two{i}")
            m.d.comb += [one.eq(b[2 * i] ^ low),
                         two.eq((b[2 * i + 1] ^ b[2 * i]) & ~(b[2 * i] ^ low))]
            magnitude = Mux(two, self.a << 1, Mux(one, self.a, 0))
            x = Signal(signed(width), name=f"pp{i}")
            m.d.comb += x.eq(magnitude.as_unsigned() ^ b[2 * i + 1].replicate(width))
            partial.append(x)
            neg.append(b[2 * i + 1])

        # Stage 1: x_{2j} + 4 x_{2j+1} + neg_{2j}, in the frame of x_{2j} (4j).
        pairs, left = [], []     # left: (position, bit) of the neg bits not yet added
        for j in range(0, n, 2):
            if j + 1 < n:
                total = partial[j] + Cat(neg[j], Const(0, 1), partial[j + 1]).as_signed()
                left.append((2 * j + 2, neg[j + 1]))
                shape = total.shape()
            else:
                # A lone last digit: one bit more, for d a = 2**a_width (a and d at their
                # most negative) once its neg bit is added.
                total, shape = partial[j], signed(width + 1)
                left.append((2 * j, neg[j]))
            pair = Signal(shape, name=f"pair{j // 2}", reset_less=True)
            pairs.append(pair)
            with m.If(self.en):
                m.d.sync += pair.eq(total)
        left_reg = Signal(len(left), name="neg_left", reset_less=True)
        with m.If(self.en):
            m.d.sync += left_reg.eq(Cat(bit for _, bit in left))
        left = [(pos, left_reg[k]) for k, (pos, _) in enumerate(left)]

        # Stage 2: pair k enters at 4k with the neg bit left by pair k - 1 (at 4k - 2) in its
        # free low bits. The last pair's own neg bit has no free bit below it (a partial product
        # starts in its column) and is added to that pair alone: an incrementer, not a third
        # operand of the final sum (Yosys would build that one from LUT full adders).
        *lower, (pos, bit) = left
        last = pairs[-1]
        cut = pos - 4 * (len(pairs) - 1)
        pairs[-1] = Cat(last[:cut], (last[cut:] + bit)[:len(last) - cut]).as_signed()
        total = pairs[0]
        for k, (pos, bit) in enumerate(lower, start=1):
            holes = [Const(0, 1)] * (4 * k)
            holes[pos] = bit
            total = total + Cat(*holes, pairs[k]).as_signed()
        with m.If(self.en):
            m.d.sync += self.p.eq(total)
        return m
