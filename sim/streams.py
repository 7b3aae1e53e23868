"""Stream helpers for the Amaranth simulator: producers and consumers with random stalls.

A beat moves only on a clock edge where ``valid & ready``; these helpers hold ``valid`` (or
``ready``) for a random number of idle cycles between beats so that every block is exercised
with gaps on its inputs and backpressure on its outputs.
"""

from __future__ import annotations

from amaranth.lib import data
from amaranth.sim import Simulator

from .stalls import Stalls

__all__ = ["stream_put", "stream_get", "handshake_monitor", "expect_no_beat", "run_testbenches",
           "stream_through", "Stalls", "to_python"]


def to_python(value):
    """Turn a sampled ``data.Const`` (struct/array, nested) into dicts, lists and ints."""
    if isinstance(value, data.Const):
        layout = value.shape()
        if isinstance(layout, data.ArrayLayout):
            return [to_python(value[i]) for i in range(layout.length)]
        return {name: to_python(value[name]) for name, _ in layout}
    return int(value)


async def stream_put(ctx, stream, payload, stalls: Stalls | None = None) -> None:
    """Offer ``payload`` on ``stream`` (after any random idle cycles) until it is taken."""
    if stalls is not None:
        for _ in range(stalls.cycles()):
            await ctx.tick()
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, stalls: Stalls | None = None):
    """Take one beat from ``stream`` (after any random idle cycles); returns it as Python data."""
    if stalls is not None:
        for _ in range(stalls.cycles()):
            await ctx.tick()
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return to_python(payload)


def handshake_monitor(i, o, accepted: list, produced: list):
    """A testbench (add it with ``background=True``) that appends the cycle of every handshake
    on the input stream ``i`` to ``accepted`` and on the output stream ``o`` to ``produced``."""
    async def monitor(ctx):
        cycle = 0
        async for _, _, i_valid, i_ready, o_valid, o_ready in ctx.tick().sample(
                i.valid, i.ready, o.valid, o.ready):
            if i_valid and i_ready:
                accepted.append(cycle)
            if o_valid and o_ready:
                produced.append(cycle)
            cycle += 1
    return monitor


async def expect_no_beat(ctx, stream, cycles: int) -> None:
    """Fail if ``stream`` offers a beat in the next ``cycles`` clocks (after the last one due)."""
    for _ in range(cycles):
        assert not ctx.get(stream.valid), "extra output beat"
        await ctx.tick()


def run_testbenches(dut, *testbenches, monitor: tuple | None = None, period: float = 1e-8) -> None:
    """Simulate ``dut`` under a clock of ``period`` seconds until every testbench returns.

    ``monitor`` is ``(i, o, accepted, produced)``: a :func:`handshake_monitor` runs in the
    background and fills the two lists.
    """
    sim = Simulator(dut)
    sim.add_clock(period)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    if monitor is not None:
        sim.add_testbench(handshake_monitor(*monitor), background=True)
    sim.run()


def stream_through(dut, beats_in, count: int, *, stalls, sink_stalls: Stalls,
                   drain: int | None = None) -> tuple[list, list, list]:
    """Send ``beats_in`` into ``dut`` and take ``count`` beats from ``dut.o``, stalling both
    sides; return ``(beats out, accepted, produced)`` (the handshake cycles of ``dut.i`` and
    ``dut.o``).

    ``stalls`` is the source's :class:`Stalls` for payloads into ``dut.i``, or a dict of them
    by stream name when ``beats_in`` holds ``(stream name, payload)`` pairs. ``drain``: that
    many cycles after the last expected beat must pass without another (:func:`expect_no_beat`).
    """
    beats, accepted, produced = [], [], []
    named = isinstance(stalls, dict)

    async def producer(ctx):
        for beat in beats_in:
            name, payload = beat if named else ("i", beat)
            await stream_put(ctx, getattr(dut, name), payload, stalls[name] if named else stalls)

    async def consumer(ctx):
        for _ in range(count):
            beats.append(await stream_get(ctx, dut.o, sink_stalls))
        if drain is not None:
            await expect_no_beat(ctx, dut.o, drain)

    run_testbenches(dut, producer, consumer, monitor=(dut.i, dut.o, accepted, produced))
    return beats, accepted, produced
