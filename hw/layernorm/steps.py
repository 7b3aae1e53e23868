"""A repeated-step unit: the restoring divisions and the square root of the row statistics.

Every per-row computation of the LayerNorm that is not a single adder (the mean's division by
``2 * hidden``, the digit-by-digit square root, the reciprocal ``2**31 // std``) is ``steps``
applications of one uniform step to a state: shift one or two bits of the operand into a partial
remainder, compare, subtract. :class:`StepUnit` builds it either as a pipeline (one step per
stage, one row per clock) or as one register set that iterates (one step per clock, one row
every ``steps + 2`` clocks), the two forms of the GELU divider.
"""

from collections.abc import Callable

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..common.checks import check_choice, check_int

__all__ = ["DIVIDERS", "StepUnit"]

#: ``pipelined``: one step per pipeline stage; ``iterative``: one step per clock in one stage.
DIVIDERS = ("iterative", "pipelined")


def _assign(m: Module, domain, target: data.View, values: dict) -> None:
    """``target`` gets ``values`` (field -> value); fields not named keep their own value."""
    for name, _ in target.shape():
        value = values.get(name)
        if value is not None:
            domain += target[name].eq(value)


class StepUnit(wiring.Component):
    """``finish(step(...step(init(payload))))``: ``steps`` applications of one step.

    Parameters
    ----------
    in_layout, state_layout, out_layout : data.StructLayout
        Payloads of the input and output streams and the state the steps work on.
    steps : int
        Applications of ``step``.
    divider : str
        ``"pipelined"``: a register stage per step, one beat per clock, latency ``steps``.
        ``"iterative"``: one beat every ``steps + 2`` clocks, latency ``steps + 1``; its
        ``i.ready`` does not depend on ``o.ready``, so chained units have no combinational
        ready path.
    init : callable
        ``init(payload) -> dict``: the state before the first step (every field).
    step : callable
        ``step(state) -> dict``: the fields a step changes; the others are carried.
    finish : callable
        ``finish(state) -> dict``: the output payload (every field) from the final state.

    Members
    -------
    i : In(stream.Signature(in_layout))
    o : Out(stream.Signature(out_layout))
    """

    def __init__(self, *, in_layout: data.StructLayout, state_layout: data.StructLayout,
                 out_layout: data.StructLayout, steps: int, divider: str,
                 init: Callable, step: Callable, finish: Callable):
        check_int("steps", steps, 1)
        check_choice("divider", divider, DIVIDERS)
        self._state_layout, self._steps, self._divider = state_layout, steps, divider
        self._init, self._step, self._finish = init, step, finish
        super().__init__({"i": In(stream.Signature(in_layout)),
                          "o": Out(stream.Signature(out_layout))})

    @staticmethod
    def latency_for(steps: int, divider: str) -> int:
        """Cycles from an accepted beat to its result on ``o`` (no stalls)."""
        return steps + (divider == "iterative")

    @staticmethod
    def period_for(steps: int, divider: str) -> int:
        """Cycles between accepted beats at full rate."""
        return 1 if divider == "pipelined" else steps + 2

    @property
    def latency(self) -> int:
        return self.latency_for(self._steps, self._divider)

    @property
    def period(self) -> int:
        return self.period_for(self._steps, self._divider)

    def elaborate(self, platform):
        m = Module()
        layout = self._state_layout
        if self._divider == "pipelined":
            advance = Signal()
            valid = Signal(self._steps)
            m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance),
                         self.o.valid.eq(valid[-1])]
            state = Signal(layout, name="state_in")
            _assign(m, m.d.comb, state, self._init(self.i.payload))
            with m.If(advance):
                m.d.sync += valid.eq(valid << 1 | self.i.valid)
            for k in range(self._steps):
                nxt = Signal(layout, name=f"state_{k + 1}")
                changes = self._step(state)
                with m.If(advance):
                    for name, _ in layout:
                        m.d.sync += nxt[name].eq(changes.get(name, state[name]))
                state = nxt
            _assign(m, m.d.comb, self.o.payload, self._finish(state))
            return m

        # Iterative: load, then `steps` steps, then hold the result until it is taken. A new
        # beat is taken only once the result has gone (one idle cycle per beat): i.ready is a
        # register function, which cuts the ready chain through the statistics units.
        state = Signal(layout, name="state")
        steps_left = Signal(range(self._steps))
        running = Signal()
        out_valid = Signal()
        accept = Signal()
        m.d.comb += [
            self.i.ready.eq(~running & ~out_valid),
            accept.eq(self.i.valid & self.i.ready),
            self.o.valid.eq(out_valid),
        ]
        _assign(m, m.d.comb, self.o.payload, self._finish(state))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(accept):
            m.d.sync += [running.eq(1), steps_left.eq(self._steps - 1)]
            _assign(m, m.d.sync, state, self._init(self.i.payload))
        with m.Elif(running):
            _assign(m, m.d.sync, state, self._step(state))
            m.d.sync += steps_left.eq(steps_left - 1)
            with m.If(steps_left == 0):
                m.d.sync += [running.eq(0), out_valid.eq(1)]
        return m
