"""A two-stage pipelined signed multiplier that uses the target's DSP registers where it can.

``p`` at cycle t + 2 is ``a * b`` of cycle t: one register stage on the operands, one on the
product. In generic Verilog (``lutra generate``, the simulators) the registers are ordinary
flip-flops around a ``*``. ``synth_ecp5`` maps the ``*`` to a MULT18X18D whose operand and output
registers stay unused, so the multiplier's 4.45 ns (speed 6) plus the fabric routing into and out
of it was the GEMM core's critical path on ECP5. When the design is elaborated for ECP5 (an
Amaranth platform, or the flow's target hint, whose ``family`` is ``"ecp5"``) this component
instantiates MULT18X18D itself with ``REG_INPUTA``/``REG_INPUTB``/``REG_OUTPUT`` clocked, which
nextpnr times as register-to-register inside the DSP.

On iCE40 (``family`` ``"ice40"``) it instantiates SB_MAC16 in its 16 x 16 mode with the A and B
operand registers and the 32-bit product register (``PIPELINE_16x16_MULT_REG2``) enabled and the
output taken from that register (``TOPOUTPUT_SELECT``/``BOTOUTPUT_SELECT`` 3), so nothing outside
the DSP sits between the two register stages. nextpnr-ice40 times every SB_MAC16 port as a
register whatever its configuration, so a DSP whose registers are unused (combinational through
the multiplier) gets an Fmax that the silicon does not have; this form is timed as it is built.
Operands wider than the SB_MAC16's 16 bits (signed or unsigned) keep the generic form, which Yosys
splits over DSPs and LUTs.

``latency=3`` registers the product once more: on iCE40 in the SB_MAC16's own pipeline register
(``PIPELINE_16x16_MULT_REG1``, between its 8 x 8 partial products and their sum), so the stage
takes no flip-flop of the fabric; elsewhere a fabric register after the product.

All forms have the same cycle behaviour; ``sim/models/MULT18X18D.v`` and ``sim/models/SB_MAC16.v``
are the behavioural models the tests use to check that.
"""

from amaranth import ClockSignal, Module, Signal, signed, unsigned
from amaranth.hdl import Instance
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .checks import check_bool, check_int

__all__ = ["PipelinedMultiplier", "MULTIPLIER_LATENCY", "MAX_UNSIGNED_WIDTH",
           "uses_ecp5_primitives", "uses_ice40_primitives"]

#: Cycles from an operand to its product.
MULTIPLIER_LATENCY = 2

_ECP5_WIDTH = 18        # MULT18X18D: signed 18 x 18 -> 36
_ICE40_WIDTH = 16       # SB_MAC16: 16 x 16 -> 32, each operand signed or unsigned

#: Widest unsigned operand :class:`PipelinedMultiplier` takes: it must fit the MULT18X18D's
#: 18 signed bits once zero-extended.
MAX_UNSIGNED_WIDTH = _ECP5_WIDTH - 1


def uses_ecp5_primitives(platform) -> bool:
    """Whether ``platform`` (``None``, an Amaranth platform or a target hint) is an ECP5."""
    return getattr(platform, "family", None) == "ecp5"


def uses_ice40_primitives(platform) -> bool:
    """Whether ``platform`` (``None``, an Amaranth platform or a target hint) is an iCE40."""
    return getattr(platform, "family", None) == "ice40"


class PipelinedMultiplier(wiring.Component):
    """Signed product of two operands, ``latency`` clock cycles after they are presented.

    Parameters
    ----------
    a_width, b_width : int
        Bits of the operands: 2..18 signed, 1..17 unsigned.
    a_signed, b_signed : bool
        Whether each operand is two's complement (the default) or unsigned. An unsigned operand
        of up to 16 bits takes one SB_MAC16 on iCE40 where the same value as a signed operand
        would need 17 bits (more than the SB_MAC16 takes).
    latency : int
        2 (default) or 3: the product registered once more (inside the SB_MAC16 on iCE40).

    Members
    -------
    a : In(signed(a_width) or unsigned(a_width))
    b : In(signed(b_width) or unsigned(b_width))
    en : In(1)
        Clock enable of every register stage (tie high, the default, for a free-running
        pipeline): with it low nothing moves, as in a stalled pipeline.
    p : Out(signed(a_width + b_width)), unsigned if both operands are
        ``a * b`` of the operands presented ``latency`` enabled cycles ago. Registers have no
        reset: the value after reset is undefined until ``latency`` operands have passed.
    """

    def __init__(self, *, a_width: int, b_width: int, a_signed: bool = True,
                 b_signed: bool = True, latency: int = MULTIPLIER_LATENCY):
        check_bool("a_signed", a_signed)
        check_int("latency", latency, MULTIPLIER_LATENCY, MULTIPLIER_LATENCY + 1)
        check_bool("b_signed", b_signed)
        check_int("a_width", a_width, 2 if a_signed else 1,
                  _ECP5_WIDTH if a_signed else MAX_UNSIGNED_WIDTH)
        check_int("b_width", b_width, 2 if b_signed else 1,
                  _ECP5_WIDTH if b_signed else MAX_UNSIGNED_WIDTH)
        self._a_width, self._b_width = a_width, b_width
        self._a_signed, self._b_signed = a_signed, b_signed
        self._latency = latency
        shape_a = signed(a_width) if a_signed else unsigned(a_width)
        shape_b = signed(b_width) if b_signed else unsigned(b_width)
        width_p = a_width + b_width
        shape_p = signed(width_p) if a_signed or b_signed else unsigned(width_p)
        super().__init__({"a": In(shape_a), "b": In(shape_b),
                          "en": In(1, init=1), "p": Out(shape_p)})

    @property
    def a_width(self) -> int:
        return self._a_width

    @property
    def b_width(self) -> int:
        return self._b_width

    @property
    def a_signed(self) -> bool:
        return self._a_signed

    @property
    def b_signed(self) -> bool:
        return self._b_signed

    @property
    def latency(self) -> int:
        return self._latency

    def elaborate(self, platform):
        m = Module()
        if uses_ice40_primitives(platform) and self._a_width <= _ICE40_WIDTH \
                and self._b_width <= _ICE40_WIDTH:
            self._ice40(m)
            return m
        # The two-stage product, then (latency 3) a fabric register.
        p = self.p if self._latency == MULTIPLIER_LATENCY else Signal.like(self.p, name="p_dsp")
        if uses_ecp5_primitives(platform):
            self._ecp5(m, p)
        else:
            a = Signal.like(self.a, name="a_reg", reset_less=True)
            b = Signal.like(self.b, name="b_reg", reset_less=True)
            with m.If(self.en):
                m.d.sync += [a.eq(self.a), b.eq(self.b), p.eq(a * b)]
        if p is not self.p:
            with m.If(self.en):
                m.d.sync += self.p.eq(p)
        return m

    def _ecp5(self, m: Module, product) -> None:
        # Operands sign-extended to the DSP's 18 bits; SIGNEDA/B select two's complement.
        a = Signal(signed(_ECP5_WIDTH), name="a_ext")
        b = Signal(signed(_ECP5_WIDTH), name="b_ext")
        p = Signal(2 * _ECP5_WIDTH, name="p_full")
        m.d.comb += [a.eq(self.a), b.eq(self.b), product.eq(p[:len(product)])]
        ports = {f"i_A{n}": a[n] for n in range(_ECP5_WIDTH)}
        ports |= {f"i_B{n}": b[n] for n in range(_ECP5_WIDTH)}
        ports |= {f"i_C{n}": 0 for n in range(_ECP5_WIDTH)}
        ports |= {f"o_P{n}": p[n] for n in range(2 * _ECP5_WIDTH)}
        # Only the pins Yosys' own MULT18X18D mapping ties, plus the one clock, enable and
        # reset used: every constant input is a route from the GND/VCC net, and tying the
        # cascade, spare clock and enable pins as well made nextpnr fail to route a 4 x 4 array
        # ("Failed to find a route for arc ... of net $PACKER_GND_NET").
        ports |= {"i_SIGNEDA": 1, "i_SIGNEDB": 1, "i_SOURCEA": 0, "i_SOURCEB": 0,
                  "i_CLK0": ClockSignal(), "i_CE0": self.en, "i_RST0": 0}
        m.submodules.dsp = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0", p_REG_OUTPUT_CLK="CLK0",
            p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
            p_GSR="DISABLED", p_RESETMODE="SYNC", p_SOURCEB_MODE="B_SHIFT",
            p_MULT_BYPASS="DISABLED", p_CAS_MATCH_REG="FALSE", **ports)

    def _ice40(self, m: Module) -> None:
        # Operands extended to the DSP's 16 bits as their own signedness says; A_SIGNED and
        # B_SIGNED make the product two's complement or unsigned to match.
        a = Signal(signed(_ICE40_WIDTH) if self._a_signed else _ICE40_WIDTH, name="a_ext")
        b = Signal(signed(_ICE40_WIDTH) if self._b_signed else _ICE40_WIDTH, name="b_ext")
        p = Signal(2 * _ICE40_WIDTH, name="p_full")
        m.d.comb += [a.eq(self.a), b.eq(self.b), self.p.eq(p[:len(self.p)])]
        # The pins Yosys' own ice40_dsp mapping drives (C/D, holds, resets, loads, add/sub);
        # the cascade inputs (CI, ACCUMCI, SIGNEXTIN) stay unconnected, as it leaves them.
        m.submodules.dsp = Instance(
            "SB_MAC16",
            p_NEG_TRIGGER=0, p_C_REG=0, p_A_REG=1, p_B_REG=1, p_D_REG=0,
            p_TOP_8x8_MULT_REG=0, p_BOT_8x8_MULT_REG=0,
            p_PIPELINE_16x16_MULT_REG1=int(self._latency > MULTIPLIER_LATENCY),
            p_PIPELINE_16x16_MULT_REG2=1,
            p_TOPOUTPUT_SELECT=3, p_TOPADDSUB_LOWERINPUT=0, p_TOPADDSUB_UPPERINPUT=0,
            p_TOPADDSUB_CARRYSELECT=0, p_BOTOUTPUT_SELECT=3, p_BOTADDSUB_LOWERINPUT=0,
            p_BOTADDSUB_UPPERINPUT=0, p_BOTADDSUB_CARRYSELECT=0, p_MODE_8x8=0,
            p_A_SIGNED=int(self._a_signed), p_B_SIGNED=int(self._b_signed),
            i_CLK=ClockSignal(), i_CE=self.en, i_A=a, i_B=b, i_C=0, i_D=0,
            i_AHOLD=0, i_BHOLD=0, i_CHOLD=0, i_DHOLD=0, i_IRSTTOP=0, i_IRSTBOT=0,
            i_ORSTTOP=0, i_ORSTBOT=0, i_OLOADTOP=0, i_OLOADBOT=0, i_ADDSUBTOP=0,
            i_ADDSUBBOT=0, i_OHOLDTOP=0, i_OHOLDBOT=0, o_O=p)
