"""Lutra's residual adder: TFLite's int8/int16 ``ADD`` of 2 or 3 streams, element-wise.

Bit-exact to :func:`sim.golden.add.add_int` (``reference_integer_ops/add.h`` for N inputs)::

    leg_k = MBQM((x_k + offset_k) << left_shift, multiplier_k, shift_k)     (int32)
    out   = clamp(MBQM(leg_0 + leg_1 [+ leg_2], out_multiplier, out_shift) + out_offset)

Three stages that never stall, then a :class:`~hw.common.credit.CreditQueue` that holds what
the sink does not take and admits an input beat only when it will have a place for it:

1. the input legs: one :class:`~hw.common.requant.Requantizer` with ``inputs * lanes`` lanes in
   its raw int32 form (``RAW_WIDTH``), fed straight from the input beat and the parameter
   register; the output parameters ride along as its ``tag``;
2. one register holding the legs' sum per lane (int32, wrapping as the golden model's int32
   arithmetic does);
3. the output :class:`~hw.common.requant.Requantizer` (``lanes`` lanes, ``out_width`` bits),
   whose zero point is ``out_offset`` and whose clamp bounds are the output type's.
"""

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..common.credit import CreditQueue
from ..common.requant import RAW_WIDTH, Requantizer
from .params import AddUnitParams

__all__ = ["InBeat", "OutBeat", "ParamBeat", "OutputParams", "AddUnit"]


def InBeat(inputs: int, lanes: int, in_width: int) -> data.StructLayout:
    """One beat of every input tensor: ``data[k][j]`` is lane ``j`` of input ``k``; ``last``
    passes through to the output beat (e.g. the end of a row or of a tensor)."""
    return data.StructLayout({
        "data": data.ArrayLayout(data.ArrayLayout(signed(in_width), lanes), inputs),
        "last": unsigned(1),
    })


def OutBeat(lanes: int, out_width: int) -> data.StructLayout:
    """``lanes`` sums and the input beat's ``last``."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(out_width), lanes),
        "last": unsigned(1),
    })


def OutputParams(out_width: int) -> data.StructLayout:
    """The output requantization: Q31 multiplier, shift (TFLite convention, in [-31, 31]) and
    the output offset (zero point)."""
    return data.StructLayout({
        "out_multiplier": signed(32),
        "out_shift": signed(6),
        "out_offset": signed(out_width),
    })


def ParamBeat(inputs: int, in_width: int, out_width: int) -> data.StructLayout:
    """One parameter load (a single beat): per input its offset (``in_width + 1`` bits),
    Q31 multiplier and shift (in [-31, 31]; TFLite's are <= 0), then the output's."""
    return data.StructLayout({
        "offset": data.ArrayLayout(signed(in_width + 1), inputs),
        "multiplier": data.ArrayLayout(signed(32), inputs),
        "shift": data.ArrayLayout(signed(6), inputs),
        "out": OutputParams(out_width),
    })


class AddUnit(wiring.Component):
    """Element-wise TFLite ``ADD`` of ``inputs`` tensors streamed side by side.

    Bit-exact to :func:`sim.golden.add.add_int` with ``left_shift = 20`` (int8 inputs) or
    ``15`` (int16), ``bits = out_width`` and the load in effect for each beat. The sum of the
    legs and each ``(x + offset) << left_shift`` wrap modulo 2**32, exactly as the golden
    model's int32 ``MultiplyByQuantizedMultiplier`` does. One beat per clock in steady state;
    backpressure on ``o`` stalls the block, and nothing is dropped, repeated or reordered.

    **Parameter loads.** One beat on ``params`` is one load; ``params`` is always ready. A load
    accepted in clock cycle *t* applies to every input beat accepted in a later cycle; beats
    accepted in cycle *t* or before keep the previous load through to their output, however
    long they wait. Nothing is reset between tensors. Before the first load every parameter is
    0 (outputs 0).

    The keyword-only parameters build and check an :class:`AddUnitParams`
    (:attr:`parameters`), which also derives the latency and rate figures.

    Parameters
    ----------
    in_width, out_width : int
        8 or 16.
    inputs : int
        Tensors summed, 2 or 3.
    lanes : int
        Elements of each tensor per beat, 1..16.

    Members
    -------
    i : In(stream.Signature(InBeat(inputs, lanes, in_width)))
        ``lanes`` elements of every input tensor per beat.
    params : In(stream.Signature(ParamBeat(inputs, in_width, out_width)))
        Parameter loads, one beat each.
    o : Out(stream.Signature(OutBeat(lanes, out_width)))
        One beat per input beat, in order, ``latency`` cycles later when not stalled.
    """

    def __init__(self, *, in_width: int = 16, out_width: int = 16, inputs: int = 2,
                 lanes: int = 1):
        self._params = AddUnitParams(in_width=in_width, out_width=out_width, inputs=inputs,
                                     lanes=lanes)
        super().__init__({
            "i": In(stream.Signature(InBeat(inputs, lanes, in_width))),
            "params": In(stream.Signature(ParamBeat(inputs, in_width, out_width))),
            "o": Out(stream.Signature(OutBeat(lanes, out_width))),
        })

    @property
    def parameters(self) -> AddUnitParams:
        """The validated parameters with every derived figure."""
        return self._params

    in_width = property(lambda self: self._params.in_width)
    out_width = property(lambda self: self._params.out_width)
    inputs = property(lambda self: self._params.inputs)
    lanes = property(lambda self: self._params.lanes)
    latency = property(lambda self: self._params.latency)

    def elaborate(self, platform):
        m = Module()
        cfg = self._params
        n, lanes, ow = cfg.inputs, cfg.lanes, cfg.out_width

        # The load in effect: beats accepted in the cycle a load arrives still see the old one.
        load = Signal(ParamBeat(n, cfg.in_width, ow))
        m.d.comb += self.params.ready.eq(1)
        with m.If(self.params.valid):
            m.d.sync += load.eq(self.params.payload)

        # The stages run free (their requantizers' ``o.ready`` is 1): a stall on ``o`` reaches
        # no pipeline register, only the queue and its credit count.
        m.submodules.queue = queue = CreditQueue(OutBeat(lanes, ow), latency=cfg.latency)
        take = Signal()
        m.d.comb += [
            self.i.ready.eq(queue.room),
            take.eq(self.i.valid & queue.room),
            queue.take.eq(take),
        ]

        # 1. Input legs, lane k * lanes + j for input k, element j; the output parameters of
        # the load the beat was accepted under travel with it as the tag.
        m.submodules.legs = legs = Requantizer(lanes=n * lanes, out_width=RAW_WIDTH,
                                               tag=OutputParams(ow))
        m.d.comb += [
            legs.i.valid.eq(take),
            legs.i.payload.last.eq(self.i.payload.last),
            legs.i.payload.tag.eq(load.out),
            legs.o.ready.eq(1),
        ]
        for k in range(n):
            for j in range(lanes):
                lane = k * lanes + j
                shifted = (self.i.payload.data[k][j] + load.offset[k]) << cfg.left_shift
                m.d.comb += [
                    legs.i.payload.acc[lane].eq(shifted[:32].as_signed()),
                    legs.i.payload.multiplier[lane].eq(load.multiplier[k]),
                    legs.i.payload.shift[lane].eq(load.shift[k]),
                ]

        # 2. The legs' sum per lane, one register with its own valid.
        sums = Signal(data.ArrayLayout(signed(32), lanes))
        sums_tag = Signal(OutputParams(ow))
        sums_last = Signal()
        sums_valid = Signal()
        m.d.sync += [
            sums_valid.eq(legs.o.valid),
            sums_tag.eq(legs.o.payload.tag),
            sums_last.eq(legs.o.payload.last),
        ]
        for j in range(lanes):
            total = sum(legs.o.payload.data[k * lanes + j] for k in range(n))
            m.d.sync += sums[j].eq(total[:32].as_signed())

        # 3. Output requantization, zero point and clamp to the output type.
        m.submodules.out = out = Requantizer(lanes=lanes, out_width=ow)
        top = 1 << (ow - 1)
        m.d.comb += [
            out.i.valid.eq(sums_valid),
            out.i.payload.out_zero_point.eq(sums_tag.out_offset),
            out.i.payload.act_min.eq(-top),
            out.i.payload.act_max.eq(top - 1),
            out.i.payload.last.eq(sums_last),
        ]
        for j in range(lanes):
            m.d.comb += [
                out.i.payload.acc[j].eq(sums[j]),
                out.i.payload.multiplier[j].eq(sums_tag.out_multiplier),
                out.i.payload.shift[j].eq(sums_tag.out_shift),
            ]
        m.d.comb += [
            queue.i.valid.eq(out.o.valid),
            out.o.ready.eq(1),
            queue.i.payload.data.eq(out.o.payload.data),
            queue.i.payload.last.eq(out.o.payload.last),
        ]
        wiring.connect(m, queue.o, wiring.flipped(self.o))
        return m
