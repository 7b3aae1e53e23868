"""The output end of a free-running pipeline: credits at its input, a queue at its output."""

from amaranth import Module, Mux, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .checks import check_int

__all__ = ["CreditQueue"]


class CreditQueue(wiring.Component):
    """Lets a fixed-latency pipeline run free while its sink stalls.

    A stall-together pipeline (:class:`~hw.common.pipeline.StallPipeline`) enables every
    register with ``~o.valid | o.ready``: the sink's ``ready`` runs through an OR per part of
    the block into one net that drives each of its registers (about 1,200 in the encoder's
    residual adder), a long path on an FPGA. Behind this queue the pipeline never stalls: a
    beat enters only when ``room`` (a register) says the queue will have a place for it
    whatever the sink does, and what the sink does not take waits in the queue. A beat that
    arrives while the queue is empty and the sink ready passes straight through, so the
    pipeline's latency and its rate of one beat per clock are unchanged; ``latency + 1``
    places (LUT RAM) keep that rate.

    Parameters
    ----------
    shape : shape-castable
        The beat.
    latency : int
        Cycles from a beat's ``take`` to its arrival on ``i`` (>= 1, fixed).

    Members
    -------
    take : In(1)
        A beat enters the pipeline in this cycle (only while ``room``).
    room : Out(1)
        Registered: the pipeline may take a beat in this cycle.
    i : In(stream.Signature(shape))
        The pipeline's output; ``i.ready`` is always 1.
    o : Out(stream.Signature(shape))
        The beats of ``i`` in order, with backpressure.
    """

    def __init__(self, shape, *, latency: int):
        check_int("latency", latency, 1)
        self._shape = shape
        self._latency = latency
        super().__init__({
            "take": In(1),
            "room": Out(1, init=1),
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    @property
    def depth(self) -> int:
        """Places in the queue: every beat taken and not yet delivered has one."""
        return self._latency + 1

    def elaborate(self, platform):
        m = Module()
        depth = self.depth
        m.submodules.queue = queue = SyncFIFO(width=Shape.cast(self._shape).width, depth=depth)
        through = ~queue.r_rdy & self.o.ready
        m.d.comb += [
            self.i.ready.eq(1),
            self.o.valid.eq(queue.r_rdy | self.i.valid),
            self.o.payload.eq(Mux(queue.r_rdy, queue.r_data, self.i.payload)),
            queue.r_en.eq(self.o.ready),
            queue.w_data.eq(self.i.payload),
            queue.w_en.eq(self.i.valid & ~through),
        ]
        # Beats taken and not yet delivered: at most ``depth``, so the queue never overflows.
        # With the sink always ready ``latency`` are owed, so ``room`` stays 1.
        owed = Signal(range(depth + 1))
        owed_next = owed + self.take - (self.o.valid & self.o.ready)
        m.d.sync += [owed.eq(owed_next), self.room.eq(owed_next < depth)]
        return m
