"""A two-stage pipelined signed multiplier that uses the target's DSP registers where it can.

``p`` at cycle t + 2 is ``a * b`` of cycle t: one register stage on the operands, one on the
product. In generic Verilog (``lutra generate``, the simulators, iCE40 builds) the registers are
ordinary flip-flops around a ``*``; Yosys' ``ice40_dsp`` pass already folds such registers into
SB_MAC16. ``synth_ecp5`` does not: it maps the ``*`` to a MULT18X18D whose operand and output
registers stay unused, so the multiplier's 4.45 ns (speed 6) plus the fabric routing into and out
of it was the GEMM core's critical path on ECP5. When the design is elaborated for ECP5 (an
Amaranth platform, or the flow's target hint, whose ``family`` is ``"ecp5"``) this component
instantiates MULT18X18D itself with ``REG_INPUTA``/``REG_INPUTB``/``REG_OUTPUT`` clocked, which
nextpnr times as register-to-register inside the DSP. Both forms have the same cycle behaviour;
``sim/models/MULT18X18D.v`` is the behavioural model the tests use to check that.
"""

from amaranth import ClockSignal, Module, Signal, signed
from amaranth.hdl import Instance
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .checks import check_int

__all__ = ["PipelinedMultiplier", "MULTIPLIER_LATENCY", "uses_ecp5_primitives"]

#: Cycles from an operand to its product.
MULTIPLIER_LATENCY = 2

_ECP5_WIDTH = 18        # MULT18X18D: signed 18 x 18 -> 36


def uses_ecp5_primitives(platform) -> bool:
    """Whether ``platform`` (``None``, an Amaranth platform or a target hint) is an ECP5."""
    return getattr(platform, "family", None) == "ecp5"


class PipelinedMultiplier(wiring.Component):
    """Signed product of two operands, two clock cycles after they are presented.

    Parameters
    ----------
    a_width, b_width : int
        Bits of the signed operands (each 2..18).

    Members
    -------
    a : In(signed(a_width))
    b : In(signed(b_width))
    en : In(1)
        Clock enable of both register stages (tie high, the default, for a free-running
        pipeline): with it low nothing moves, as in a stalled pipeline.
    p : Out(signed(a_width + b_width))
        ``a * b`` of the operands presented two enabled cycles ago. Registers have no reset:
        the value after reset is undefined until two operands have passed.
    """

    def __init__(self, *, a_width: int, b_width: int):
        check_int("a_width", a_width, 2, _ECP5_WIDTH)
        check_int("b_width", b_width, 2, _ECP5_WIDTH)
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

    def elaborate(self, platform):
        m = Module()
        if uses_ecp5_primitives(platform):
            self._ecp5(m)
            return m
        a = Signal.like(self.a, name="a_reg", reset_less=True)
        b = Signal.like(self.b, name="b_reg", reset_less=True)
        with m.If(self.en):
            m.d.sync += [a.eq(self.a), b.eq(self.b), self.p.eq(a * b)]
        return m

    def _ecp5(self, m: Module) -> None:
        # Operands sign-extended to the DSP's 18 bits; SIGNEDA/B select two's complement.
        a = Signal(signed(_ECP5_WIDTH), name="a_ext")
        b = Signal(signed(_ECP5_WIDTH), name="b_ext")
        p = Signal(2 * _ECP5_WIDTH, name="p_full")
        m.d.comb += [a.eq(self.a), b.eq(self.b), self.p.eq(p[:len(self.p)])]
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
