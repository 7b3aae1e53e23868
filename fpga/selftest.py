"""Built-in self-test: the block replays golden-model transactions and checks a signature.

At generation time the block's ``selftest`` hook draws a seeded random problem and computes the
golden model's outputs; the input beats go into ROMs, and the MISR signature
(:func:`fpga.lfsr.misr`) of the expected output beats is baked into the design as a constant.
In hardware an LFSR decides, cycle by cycle, whether each input stream offers its next beat and
whether each output stream is ready (random stalls on every stream); each output beat taken is
folded into a running MISR. When the expected number of output beats has arrived the signatures
are compared: ``passed`` or ``failed``. A watchdog fails the test if the beats stop coming.

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

from amaranth import ClockDomain, Const, Elaboratable, Module, Shape, Signal
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
    "BoardSelfTest",
    "SelfTest",
    "build_selftest",
    "selftest_vectors",
]

MISR_INIT = 0xFFFFFFFF


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


def selftest_vectors(config: BlockConfig, seed: int, component=None) -> dict:
    """Packed input beats per input stream and the expected signature per output stream."""
    if config.block.selftest is None:
        raise ValueError(f"block {config.name!r} has no self-test vectors (BlockSpec.selftest)")
    if component is None:
        component = build_component(config)
        component._MustUse__silence = True      # only its signature is read here
    streams = _streams(component)
    vectors = config.block.selftest(dict(config.params), seed)
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
    return {"inputs": inputs, "outputs": outputs}


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
                rom = Memory(shape=len(port.payload.as_value()), depth=max(len(beats), 2),
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
                    m.d.sync += [signature.eq(misr_next(signature, port.payload.as_value())),
                                 count.eq(count + 1)]
                checks.append((count == expect["beats"], signature == expect["signature"]))

        all_arrived = Signal()
        all_match = Signal()
        m.d.comb += [all_arrived.eq(_all([arrived for arrived, _ in checks])),
                     all_match.eq(_all([match for _, match in checks]))]
        idle = Signal(range(self._timeout + 1))
        moved = [getattr(block, name).valid & getattr(block, name).ready for name in streams]
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
    component = build_component(config)
    vectors = selftest_vectors(config, vectors_seed, component)
    top = BoardSelfTest(SelfTest(block=component, vectors=vectors))
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
