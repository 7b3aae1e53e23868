"""cocotb drivers for Amaranth ``lib.stream`` ports, described by a Lutra manifest.

Payloads are nested Python values (dicts for structs, lists for arrays, ints) packed and
unpacked with the layout the manifest records, so a testbench uses the same description an
integrator reads. A beat moves on a rising edge where ``valid & ready`` was seen in the settled
(``ReadOnly``) phase of that cycle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from .stalls import Stalls

__all__ = ["encode", "decode", "StreamSource", "StreamSink", "load_manifest", "start_clock_reset",
           "seed", "check_equal", "watch_handshakes"]


def encode(desc: dict, value) -> int:
    """Pack a nested Python value into the bits of a described shape."""
    if "struct" in desc:
        unknown = set(value) - set(desc["struct"])
        if unknown:
            raise KeyError(f"no such field(s): {sorted(unknown)}")
        bits = 0
        for name, member in desc["struct"].items():
            bits |= encode(member["shape"], value.get(name, 0)) << member["offset"]
        return bits
    if "array" in desc:
        arr = desc["array"]
        if len(value) != arr["length"]:
            raise ValueError(f"expected {arr['length']} elements, got {len(value)}")
        bits = 0
        for i, item in enumerate(value):
            bits |= encode(arr["shape"], item) << (i * arr["stride"])
        return bits
    width, value = desc["width"], int(value)
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if desc["signed"] else (0, (1 << width) - 1)
    if not lo <= value <= hi:
        raise ValueError(f"{value} does not fit {'signed' if desc['signed'] else 'unsigned'}"
                         f"({width})")
    return value & ((1 << width) - 1)


def decode(desc: dict, bits: int):
    """Unpack bits into the nested Python value of a described shape."""
    if "struct" in desc:
        return {name: decode(m["shape"], bits >> m["offset"]) for name, m in desc["struct"].items()}
    if "array" in desc:
        arr = desc["array"]
        return [decode(arr["shape"], bits >> (i * arr["stride"])) for i in range(arr["length"])]
    width = desc["width"]
    value = bits & ((1 << width) - 1)
    if desc["signed"] and value >> (width - 1):
        value -= 1 << width
    return value


def load_manifest() -> dict:
    """The manifest of the design under test (path in ``LUTRA_MANIFEST``)."""
    return json.loads(Path(os.environ["LUTRA_MANIFEST"]).read_text())


def seed() -> int:
    """The regression's random seed (``LUTRA_SEED``, set by ``sim.runner``)."""
    return int(os.environ.get("LUTRA_SEED", "1"))


def check_equal(got, want, what: str) -> None:
    """Assert two integer arrays are equal, naming the first mismatch."""
    import numpy as np
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"{what}: {len(bad)} mismatches, first at {tuple(bad[0])}: "
                           f"{got[tuple(bad[0])]} != {want[tuple(bad[0])]}")


async def start_clock_reset(dut, cycles: int = 2) -> None:
    """10 ns clock on ``clk``; ``rst`` held for ``cycles`` edges."""
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


class _StreamEnd:
    """One end of the manifest's stream ``name``: its clock, handshake and payload handles."""

    def __init__(self, dut, manifest: dict, name: str, stalls: Stalls | None):
        info = manifest["streams"][name]
        self.clk = dut.clk
        self.valid = getattr(dut, info["valid"])
        self.ready = getattr(dut, info["ready"])
        self.payload = getattr(dut, info["payload"])
        self.layout = info["layout"]
        self.stalls = stalls or Stalls()


class StreamSource(_StreamEnd):
    """Drives an input stream: ``await send(payload)`` returns once the beat is taken."""

    def __init__(self, dut, manifest: dict, name: str, stalls: Stalls | None = None):
        super().__init__(dut, manifest, name, stalls)
        self.sent = 0
        self.valid.value = 0

    async def send(self, value) -> None:
        for _ in range(self.stalls.cycles()):
            self.valid.value = 0
            await RisingEdge(self.clk)
        self.valid.value = 1
        self.payload.value = encode(self.layout, value)
        while True:
            await ReadOnly()
            taken = bool(self.ready.value)
            await RisingEdge(self.clk)
            if taken:
                break
        self.valid.value = 0
        self.sent += 1

    async def send_all(self, values) -> None:
        for value in values:
            await self.send(value)


class StreamSink(_StreamEnd):
    """Consumes an output stream: ``await recv()`` returns the next beat's payload."""

    def __init__(self, dut, manifest: dict, name: str, stalls: Stalls | None = None):
        super().__init__(dut, manifest, name, stalls)
        self.received = 0
        self.ready.value = 0

    async def recv(self):
        for _ in range(self.stalls.cycles()):
            self.ready.value = 0
            await RisingEdge(self.clk)
        self.ready.value = 1
        while True:
            await ReadOnly()
            if self.valid.value:
                value = decode(self.layout, int(self.payload.value))
                await RisingEdge(self.clk)
                break
            await RisingEdge(self.clk)
        self.ready.value = 0
        self.received += 1
        return value

    async def expect_idle(self, cycles: int) -> None:
        """Fail if the stream offers a beat during the next ``cycles`` cycles."""
        for n in range(cycles):
            await ReadOnly()
            assert not self.valid.value, f"unexpected extra beat {n} cycles after the last"
            await RisingEdge(self.clk)


async def watch_handshakes(dut, manifest: dict, count: int, *, source: str = "i",
                           sink: str = "o") -> tuple[list[int], list[int]]:
    """The cycle of every handshake on the streams ``source`` and ``sink`` (port names from the
    manifest), until ``count`` beats have left ``sink``: ``(accepted, produced)``."""
    ports = [getattr(dut, manifest["streams"][name][role])
             for name in (source, sink) for role in ("valid", "ready")]
    accepted, produced, cycle = [], [], 0
    while len(produced) < count:
        await ReadOnly()
        if ports[0].value and ports[1].value:
            accepted.append(cycle)
        if ports[2].value and ports[3].value:
            produced.append(cycle)
        await RisingEdge(dut.clk)
        cycle += 1
    return accepted, produced
