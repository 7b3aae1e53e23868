"""The output end of a free-running pipeline: credits at its input, a queue at its output."""

from amaranth import Module, Mux, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
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
    places keep that rate (LUT RAM, rounded up to a power of two).

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
        """Places in the queue: every beat taken and not yet delivered has one (``latency + 1``
        would do; a power of two keeps the pointers plain counters)."""
        return 1 << self._latency.bit_length()

    def elaborate(self, platform):
        m = Module()
        depth = self.depth
        m.submodules.queue = queue = Memory(shape=Shape.cast(self._shape).width, depth=depth,
                                            init=[])
        write, read = queue.write_port(), queue.read_port(domain="comb")
        # The queue's state is its two pointers alone (one wrap bit above the address), so no
        # reachable-only relation between registers is needed to see that ``o`` holds while
        # stalled: the head moves only when taken, and a full queue takes no write.
        put = Signal(range(2 * depth))
        get = Signal(range(2 * depth))
        held = put != get
        # ``depth`` or more held (unreachable): no write, which could land on the head.
        full = (put - get)[depth.bit_length() - 1]
        through = ~held & self.o.ready
        push = self.i.valid & ~through & ~full
        pop = held & self.o.ready
        m.d.comb += [
            self.i.ready.eq(1),
            self.o.valid.eq(held | self.i.valid),
            self.o.payload.eq(Mux(held, read.data, self.i.payload)),
            read.addr.eq(get[:-1]),
            write.addr.eq(put[:-1]),
            write.data.eq(self.i.payload),
            write.en.eq(push),
        ]
        m.d.sync += [put.eq(put + push), get.eq(get + pop)]
        # Beats taken and not yet delivered: at most ``depth``, so the queue never overflows.
        # With the sink always ready ``latency`` are owed, so ``room`` stays 1.
        owed = Signal(range(depth + 1))
        owed_next = owed + self.take - (self.o.valid & self.o.ready)
        m.d.sync += [owed.eq(owed_next), self.room.eq(owed_next < depth)]
        return m
