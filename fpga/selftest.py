"""Built-in self-test: the block replays golden-model transactions and checks a signature.

At generation time the block's ``selftest`` hook draws a seeded random problem and computes the
golden model's outputs; the input beats go into ROMs, and the MISR signature
(:func:`fpga.lfsr.misr`) of the expected output beats is baked into the design as a constant.
In hardware an LFSR decides, cycle by cycle, whether each input stream offers its next beat and
whether each output stream is ready (random stalls on every stream); each output beat taken is
folded into a running MISR. When the expected number of output beats has arrived the signatures
are compared: ``passed`` or ``failed``. A watchdog fails the test if the beats stop coming.

A block with a read port to external memory (``req`` requests of ``addr`` + ``length`` words,
``rdata`` the words back: the encoder accelerator and its weight image) gets that memory as a
ROM (:class:`ReadPortRom`, :class:`RomBacked`) when its ``selftest`` hook gives the memory's
words (``"memory"``); the self-test then drives and checks its other streams.

On a board (:class:`BoardSelfTest`) the LEDs show it: with an RGB LED, blue blinks while running,
green is pass, red is fail; with three or more LEDs, LED 0 blinks while running, LED 1 is pass,
LED 2 is fail; with two (iCEBreaker), LED 1 (green) blinks while running and stays on for pass,
LED 0 (red) is fail.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from amaranth import ClockDomain, Const, Elaboratable, Module, Shape, Signal, Value
from amaranth.build import ResourceError
from amaranth.lib import data, io, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from gen.config import BlockConfig, build_component
from gen.outputs import OutputDir
from gen.verilog import VERSION

from . import report as rpt
from .lfsr import add_lfsr, misr, misr_next
from .targets import Board
from .tools import amaranth_tool_env, tool_version

__all__ = [
    "MISR_INIT",
    "READ_PORT",
    "BoardSelfTest",
    "ReadPortRom",
    "RomBacked",
    "SelfTest",
    "build_selftest",
    "selftest_design",
    "selftest_vectors",
]

MISR_INIT = 0xFFFFFFFF
#: Member names of a read port to external memory: the requests out, the words back in.
READ_PORT = ("req", "rdata")


def _streams(component) -> dict[str, tuple[bool, object]]:
    """Stream members of ``component``: name -> (is_input, payload shape)."""
    found = {}
    for name, member in component.signature.members.items():
        signature = member.signature if member.is_signature else None
        if isinstance(signature, wiring.FlippedSignature):
            signature = signature.flip()
        if not isinstance(signature, stream.Signature):
            raise TypeError(f"self-test: member {name!r} of {type(component).__name__} is not a "
                            f"stream; only stream interfaces can be driven")
        found[name] = (member.flow == wiring.In, signature.members["payload"].shape)
    return found


def _pack(shape, payload) -> int:
    """``payload`` (int, or dict/list for a layout) as the unsigned bits of ``shape``."""
    if isinstance(shape, data.Layout):
        return Const.cast(shape.const(payload)).value
    return payload & ((1 << Shape.cast(shape).width) - 1)


def selftest_vectors(config: BlockConfig, seed: int, component) -> dict:
    """Packed input beats per input stream and the expected signature per output stream; with
    the hook's ``"memory"`` (the words behind the block's read port), those words too."""
    if config.block.selftest is None:
        raise ValueError(f"block {config.name!r} has no self-test vectors (BlockSpec.selftest)")
    vectors = config.block.selftest(dict(config.params), seed)
    streams = _streams(component)
    memory = vectors.get("memory")
    if memory is not None:
        streams = {k: v for k, v in streams.items() if k not in READ_PORT}
    inputs, outputs = {}, {}
    for name, (is_input, shape) in streams.items():
        beats = vectors["inputs" if is_input else "outputs"].get(name, [])
        packed = [_pack(shape, beat) for beat in beats]
        if is_input:
            inputs[name] = packed
        else:
            width = Shape.cast(shape).width
            outputs[name] = {"beats": len(packed), "width": width,
                             "signature": misr(packed, width, MISR_INIT)}
    return {"inputs": inputs, "outputs": outputs,
            **({"memory": list(memory)} if memory is not None else {})}


def selftest_design(config: BlockConfig, vectors_seed: int = 1) -> tuple[SelfTest, dict]:
    """The :class:`SelfTest` of ``config`` (its read port, if the vectors give a memory, served
    by a ROM of those words) and its vectors."""
    component = build_component(config)
    vectors = selftest_vectors(config, vectors_seed, component)
    if "memory" in vectors:
        request, answer = (getattr(component, name).payload for name in READ_PORT)
        rom = ReadPortRom(words=vectors["memory"], request=request.shape(),
                          width=len(answer))
        component = RomBacked(component, rom)
    return SelfTest(block=component, vectors=vectors), vectors


class ReadPortRom(wiring.Component):
    """A ROM behind a read port: takes one request at a time and returns its ``length`` words
    from word address ``addr``, one per clock, honouring backpressure.

    Parameters
    ----------
    words : list of int
        The ROM's contents (block RAM initialised by the bitstream).
    request : data.StructLayout
        The request's layout: fields ``addr`` (word address) and ``length`` (words).
    width : int
        Bits per word.

    Members
    -------
    req : In(stream.Signature(request))
        Read requests (the block's ``req``).
    rdata : Out(stream.Signature(unsigned(width)))
        The words, in request order.
    reading : Out(1)
        A request is being answered (the self-test's watchdog counts it as activity).
    """

    def __init__(self, *, words: list[int], request: data.StructLayout, width: int):
        if not words:
            raise ValueError("words must not be empty")
        if not isinstance(request, data.StructLayout) or \
                {"addr", "length"} - {name for name, _ in request}:
            raise TypeError(f"request must be a StructLayout with fields addr and length, not "
                            f"{request!r}")
        if not isinstance(width, int) or width < 1:
            raise TypeError(f"width must be a positive integer, not {width!r}")
        self._words = list(words)
        self._width = width
        super().__init__({"req": wiring.In(stream.Signature(request)),
                          "rdata": Out(stream.Signature(width)), "reading": Out(1)})

    @property
    def words(self) -> list[int]:
        return list(self._words)

    def elaborate(self, platform):
        m = Module()
        depth = max(len(self._words), 2)
        m.submodules.rom = rom = Memory(shape=self._width, depth=depth, init=self._words)
        read = rom.read_port()                  # synchronous: block RAM
        addr = Signal(range(depth))
        left = Signal.like(self.req.payload.length)
        # ``rdata.valid``: read.data holds the next word. The ROM reads ahead whenever that word
        # is taken or there is none.
        advance = ~self.rdata.valid | self.rdata.ready
        m.d.comb += [read.en.eq(advance), read.addr.eq(addr),
                     self.rdata.payload.eq(read.data), self.req.ready.eq(left == 0),
                     self.reading.eq(left != 0)]
        with m.If(advance):
            m.d.sync += self.rdata.valid.eq(left != 0)
            with m.If(left != 0):
                m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += [addr.eq(self.req.payload.addr), left.eq(self.req.payload.length)]
        return m


class RomBacked(wiring.Component):
    """``block`` with its read port (``READ_PORT``) answered by ``rom``; its other members
    are this component's.

    Members
    -------
    (every member of ``block`` but ``req`` and ``rdata``)
    """

    def __init__(self, block, rom: ReadPortRom):
        self._block = block
        self._rom = rom
        members = {name: member for name, member in block.signature.members.items()
                   if name not in READ_PORT}
        super().__init__(members)

    @property
    def reading(self):
        """The ROM is answering a request (activity for the watchdog)."""
        return self._rom.reading

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = block = self._block
        m.submodules.rom = rom = self._rom
        request, answer = READ_PORT
        wiring.connect(m, getattr(block, request), rom.req)
        wiring.connect(m, rom.rdata, getattr(block, answer))
        for name in self.signature.members:
            ours, theirs = getattr(self, name), getattr(block, name)
            if self.signature.members[name].flow == wiring.In:
                wiring.connect(m, wiring.flipped(ours), theirs)
            else:
                wiring.connect(m, theirs, wiring.flipped(ours))
        return m


def _all(values):
    result = values[0]
    for value in values[1:]:
        result = result & value
    return result


def _any(values):
    result = values[0]
    for value in values[1:]:
        result = result | value
    return result


class SelfTest(wiring.Component):
    """Drives ``block`` from ROMs with LFSR stalls and checks its output signatures.

    Parameters
    ----------
    block : wiring.Component
        The block, whose members are all streams.
    vectors : dict
        From :func:`selftest_vectors`; ``outputs[name]["signature"]`` may be altered to test
        that a wrong signature reaches ``failed``.
    timeout : int
        Cycles in which no stream moves a beat after which the test fails (the watchdog).

    Members
    -------
    running : Out(1)
        The test is under way.
    passed : Out(1)
        Every expected output beat arrived and every signature matched.
    failed : Out(1)
        A signature differed, or the watchdog expired.
    """

    def __init__(self, *, block, vectors: dict, timeout: int = 1 << 16):
        self._block = block
        self._vectors = vectors
        self._timeout = timeout
        super().__init__({"running": Out(1), "passed": Out(1), "failed": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = block = self._block
        lfsr = add_lfsr(m, "stall_lfsr", init=0x1234567)
        streams = _streams(block)
        tap = 0

        def random_bit():
            # Successive LFSR bits for successive streams: each gets its own stall pattern.
            nonlocal tap
            tap = (tap + 7) % len(lfsr)
            return lfsr[tap]

        done = Signal()
        checks = []
        for name, (is_input, shape) in streams.items():
            port = getattr(block, name)
            if is_input:
                beats = self._vectors["inputs"].get(name, [])
                rom = Memory(shape=len(Value.cast(port.payload)), depth=max(len(beats), 2),
                             init=beats)
                m.submodules[f"rom_{name}"] = rom
                read = rom.read_port()               # synchronous: block RAM where possible
                index = Signal(range(len(beats) + 1), name=f"{name}_index")
                primed = Signal(name=f"{name}_primed")
                fire = port.valid & port.ready
                next_index = index + fire
                m.d.sync += [index.eq(next_index), primed.eq(1)]
                m.d.comb += [
                    # Read-ahead: the ROM is addressed with the index after this cycle's beat.
                    read.addr.eq(next_index),
                    port.payload.eq(read.data),
                    port.valid.eq(primed & (index < len(beats)) & random_bit()),
                ]
            else:
                expect = self._vectors["outputs"][name]
                signature = Signal(32, init=MISR_INIT, name=f"{name}_signature")
                count = Signal(range(expect["beats"] + 1), name=f"{name}_count")
                fire = port.valid & port.ready
                m.d.comb += port.ready.eq(random_bit())
                with m.If(fire & (count < expect["beats"])):
                    m.d.sync += [signature.eq(misr_next(signature, Value.cast(port.payload))),
                                 count.eq(count + 1)]
                checks.append((count == expect["beats"], signature == expect["signature"]))

        all_arrived = Signal()
        all_match = Signal()
        m.d.comb += [all_arrived.eq(_all([arrived for arrived, _ in checks])),
                     all_match.eq(_all([match for _, match in checks]))]
        idle = Signal(range(self._timeout + 1))
        moved = [getattr(block, name).valid & getattr(block, name).ready for name in streams]
        if isinstance(block, RomBacked):
            moved.append(block.reading)     # it computes between its stream beats
        with m.If(_any(moved)):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != self._timeout):
            m.d.sync += idle.eq(idle + 1)
        passed, failed = Signal(), Signal()
        with m.If(~done):
            with m.If(all_arrived):
                m.d.sync += [done.eq(1), passed.eq(all_match), failed.eq(~all_match)]
            with m.Elif(idle == self._timeout):
                m.d.sync += [done.eq(1), failed.eq(1)]
        m.d.comb += [self.running.eq(~done), self.passed.eq(passed), self.failed.eq(failed)]
        return m


class BoardSelfTest(Elaboratable):
    """:class:`SelfTest` on a board, its outcome on the LEDs (see the module docstring)."""

    def __init__(self, selftest: SelfTest):
        self._selftest = selftest

    def elaborate(self, platform):
        m = Module()
        # Our own ``sync`` domain with a power-on reset: some platforms' default domain is
        # reset-less (ECP5: the GSR initialises the FFs), but blocks may use their reset.
        clk = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_buffer = clk_buffer = io.Buffer("i", clk)
        m.domains.sync = sync = ClockDomain("sync")
        m.domains.por = por = ClockDomain("por", reset_less=True)
        power_on = Signal(4)                    # counts to 15 after configuration, then holds
        m.d.comb += [sync.clk.eq(clk_buffer.i), por.clk.eq(clk_buffer.i),
                     sync.rst.eq(power_on != 15)]
        with m.If(power_on != 15):
            m.d.por += power_on.eq(power_on + 1)
        m.submodules.selftest = test = self._selftest
        # About 3 Hz at the board's clock, whatever it is.
        period = int(platform.default_clk_frequency) // 6
        blink = Signal()
        ticks = Signal(range(period))
        m.d.sync += ticks.eq(ticks + 1)
        with m.If(ticks == period - 1):
            m.d.sync += [ticks.eq(0), blink.eq(~blink)]
        names = {name for name, _ in platform.resources}

        def drive(port, value):
            buffer = io.Buffer("o", port)       # applies the board's LED polarity
            m.submodules += buffer
            m.d.comb += buffer.o.eq(value)

        if "rgb_led" in names:
            rgb = platform.request("rgb_led", 0, dir="-")
            drive(rgb.r, test.failed)
            drive(rgb.g, test.passed)
            drive(rgb.b, test.running & blink)
            return m
        leds = []
        while True:
            try:
                leds.append(platform.request("led", len(leds), dir="-"))
            except ResourceError:       # no more LEDs on this board
                break
        if len(leds) >= 3:
            drive(leds[0], test.running & blink)
            drive(leds[1], test.passed)
            drive(leds[2], test.failed)
        else:
            drive(leds[0], test.failed)
            drive(leds[1], test.passed | (test.running & blink))
        return m


def build_selftest(config: BlockConfig, board: Board, out: Path, *, seed: int = 1,
                             vectors_seed: int = 1, freq_mhz: float | None = None,
                             force: bool = False) -> dict:
    """Self-test bitstream for ``board`` through the amaranth-boards platform build.

    Written into ``out`` as :mod:`gen.outputs` describes (``force`` is passed to it).
    """
    device = board.device
    try:
        selftest, vectors = selftest_design(config, vectors_seed)
    except ValueError as error:         # the block's hook refuses this configuration
        from .flow import BuildError
        raise BuildError(f"{config.name} self-test: {error}") from None
    top = BoardSelfTest(selftest)
    platform = board.platform_class()()
    freq = freq_mhz or platform.default_clk_frequency / 1e6
    nextpnr_opts = f"--report nextpnr.json --timing-allow-fail --seed {seed} --freq {freq}"
    overrides = {"nextpnr_opts": nextpnr_opts}
    if device.family == "ice40":
        overrides["synth_opts"] = "-dsp"
    tools = {"yosys": tool_version("yosys"),
             f"nextpnr-{device.family}": tool_version(f"nextpnr-{device.family}")}
    saved = {k: os.environ.get(k) for k in amaranth_tool_env()}
    os.environ.update(amaranth_tool_env())
    try:
        with OutputDir(out, owner="build", force=force) as staged:
            tmp = staged.stage
            start = time.monotonic()
            platform.build(top, name="top", build_dir=str(tmp), do_program=False, **overrides)
            elapsed = time.monotonic() - start
            placed = rpt.parse_nextpnr(json.loads((tmp / "nextpnr.json").read_text()))
            clocks = placed["clocks"]
            for c in clocks:
                c["domain"] = "sync"
            bitstream = "top.bin" if device.family == "ice40" else "top.bit"
            report = {
                "lutra_report": 1, "lutra_version": VERSION, "kind": "selftest",
                "block": config.name, "config": dict(config.params),
                "defaults": config.block.defaults(), "target": board.name,
                "device": device.describe(), "family": device.family, "tools": tools,
                "seed": seed, "vectors_seed": vectors_seed, "clocks": clocks,
                "timing_met": all(c["met"] for c in clocks),
                "timing_summary": rpt.timing_summary(clocks),
                "critical_path": rpt.worst_clocked_path(placed["critical_paths"]),
                "resources": rpt.resources(placed["utilization"], None, device.family),
                "selftest": {"outputs": vectors["outputs"],
                             "input_beats": {k: len(v) for k, v in vectors["inputs"].items()},
                             "rom_words": len(vectors.get("memory", ())),
                             "bitstream": bitstream},
                "steps": {"platform build (synth + pnr + pack)": round(elapsed, 2)},
            }
            (tmp / rpt.REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
            (tmp / "report.md").write_text(rpt.markdown_report(report))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    report["_path"] = str(out)
    return report
