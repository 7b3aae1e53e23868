"""hw.common.credit.CreditQueue: a free-running delay line behind it keeps every beat, in order,
under random stalls on both sides, and loses no rate when the sink is always ready."""

import pytest
from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.common.credit import CreditQueue
from hw.common.pipeline import delayed
from sim.stalls import Stalls
from sim.streams import stream_through


class DelayLine(wiring.Component):
    """``latency`` free-running registers (valid and payload) behind a CreditQueue."""

    def __init__(self, latency: int):
        self.latency = latency
        super().__init__({"i": In(stream.Signature(unsigned(8))),
                          "o": Out(stream.Signature(unsigned(8)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.queue = queue = CreditQueue(unsigned(8), latency=self.latency)
        take = Signal()
        m.d.comb += [self.i.ready.eq(queue.room), take.eq(self.i.valid & queue.room),
                     queue.take.eq(take),
                     queue.i.valid.eq(delayed(m, "valid", take, self.latency)),
                     queue.i.payload.eq(delayed(m, "data", self.i.payload, self.latency))]
        wiring.connect(m, queue.o, wiring.flipped(self.o))
        return m


@pytest.mark.parametrize("latency, error, message", [
    (0, ValueError, "latency must be >= 1, not 0"),
    (2.0, TypeError, "latency must be an integer, not 2.0"),
])
def test_init_wrong(latency, error, message):
    with pytest.raises(error) as info:
        CreditQueue(unsigned(8), latency=latency)
    assert str(info.value) == message


def test_depth():
    # latency + 1 places, rounded up to a power of two
    assert [CreditQueue(unsigned(1), latency=n).depth for n in (1, 3, 4, 15, 16, 19)] == \
        [2, 4, 8, 16, 32, 32]


def run(latency: int, stall_prob: float, count: int, seed: int):
    dut = DelayLine(latency)
    got, accepted, produced = stream_through(
        dut, [n % 256 for n in range(count)], count, stalls=Stalls(stall_prob, seed=seed),
        sink_stalls=Stalls(stall_prob, max_cycles=2 * latency, seed=seed + 1))
    want = [n % 256 for n in range(count)]
    assert got == want, f"got {got} want {want}"
    return accepted, produced


@pytest.mark.parametrize("latency", [1, 3, 16])
def test_random_stalls(latency):
    run(latency, 0.4, 300, seed=latency)


@pytest.mark.parametrize("latency", [1, 5])
def test_full_rate_and_latency(latency):
    accepted, produced = run(latency, 0.0, 50, seed=0)
    assert accepted == list(range(accepted[0], accepted[0] + 50)), accepted
    assert [o - i for i, o in zip(accepted, produced)] == [latency] * 50
