"""I-BERT's i-GELU as a pipelined unit (second-order polynomial erf, two multipliers per lane)."""

from amaranth import Module, Mux, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sim.golden.gelu import IGeluConstants

from ..common.checks import check_int
from ..common.arith import signed_width
from ..common.pipeline import StallPipeline
from .pipeline import GeluBeat

__all__ = ["PolyGelu"]


class PolyGelu(wiring.Component):
    """``y = x * (floor(sign(x) ((min(|x|, -b) + b)**2 + c) / 2**14) + shift_int)``.

    Bit-exact to :func:`sim.golden.gelu.i_gelu` (HuggingFace I-BERT ``IntGELU``); constants
    from :func:`sim.golden.gelu.i_gelu_constants`. One beat per clock, ``LATENCY`` cycles.

    Parameters
    ----------
    constants : IGeluConstants
    lanes : int

    Members
    -------
    i : In(stream.Signature(GeluBeat(lanes, in_width)))
    o : Out(stream.Signature(GeluBeat(lanes, out_width)))
        i-GELU at scale ``S * S_L / 2`` (negative).
    """

    LATENCY = 6

    def __init__(self, *, constants: IGeluConstants, lanes: int):
        if not isinstance(constants, IGeluConstants):
            raise TypeError(f"constants must be an IGeluConstants (i_gelu_constants()), "
                            f"not {constants!r}")
        check_int("lanes", lanes, 1, 64)
        self._k, self._lanes = constants, lanes
        super().__init__({
            "i": In(stream.Signature(GeluBeat(lanes, constants.in_width))),
            "o": Out(stream.Signature(GeluBeat(lanes, self.out_width))),
        })

    @property
    def out_width(self) -> int:
        return signed_width(*self._k.y_range)

    def elaborate(self, platform):
        m = Module()
        k = self._k
        w = k.in_width
        pipe = StallPipeline(m, self.i, self.o)
        offset_width = signed_width(k.b, 0)
        square_hi = k.b * k.b
        for lane in range(self._lanes):
            p = f"l{lane}_"
            x = self.i.payload.data[lane]
            # s1: |x|; s2: min(|x|, -b) + b, in [b, 0].
            magnitude = pipe.reg(p + "magnitude", unsigned(w), Mux(x < 0, -x, x))
            clipped = Mux(magnitude > -k.b, -k.b, magnitude)
            offset = pipe.reg(p + "offset", signed(offset_width), clipped + k.b)
            x1 = pipe.delay(p + "x1", signed(w), x, 2)
            # s3: the square plus c (the polynomial of |x|).
            poly = pipe.reg(p + "poly", signed(signed_width(k.c, square_hi + max(k.c, 0))),
                            offset * offset + k.c)
            x2 = pipe.reg(p + "x2", signed(w), x1)
            # s4: sign applied (sign(x) * poly); s5: floor division by 2**14 plus shift_int.
            bound = abs(k.c) + square_hi
            signed_poly = pipe.reg(p + "signed_poly", signed(signed_width(-bound, bound)),
                                   Mux(x2 < 0, -poly, Mux(x2 == 0, 0, poly)))
            factor_lo = (-bound >> k.CONST) + k.shift_int
            factor_hi = (bound >> k.CONST) + k.shift_int
            factor = pipe.reg(p + "factor", signed(signed_width(factor_lo, factor_hi)),
                              (signed_poly >> k.CONST) + k.shift_int)
            x4 = pipe.delay(p + "x", signed(w), x2, 2)
            # s6: the product.
            y = pipe.reg(p + "y", signed(self.out_width), x4 * factor)
            m.d.comb += self.o.payload.data[lane].eq(y)
        m.d.comb += self.o.payload.last.eq(pipe.delay("last", 1, self.i.payload.last,
                                                      self.LATENCY))
        pipe.finish(self.LATENCY)
        return m
