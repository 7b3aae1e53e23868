"""cocotb regression of a block's AXI4-Stream top level (``lutra generate --bus axi-stream``),
driven and checked by cocotbext-axi against the block's golden model.

Every interface the manifest (``LUTRA_MANIFEST``) lists under ``axi_streams`` gets a
cocotbext-axi ``AxiStreamSource`` (inputs) or ``AxiStreamSink`` (outputs) on
``AxiStreamBus.from_prefix``, with random pauses from their pause generators. Payloads are the
same Python values the block's own regression uses (built by ``sim/<block>_driver.py``); they are
packed into ``tdata`` bytes and ``tlast`` with the manifest's ``tdata`` layout only, so a wrong
layout, a lost or extra beat or a misplaced ``tlast`` fails the exact comparison. One scenario
per block (``SCENARIOS``), chosen by the manifest's ``block``; ``LUTRA_AXIS_STALL`` sets the
pause probability (default 0.3), ``LUTRA_ENCODER_LENGTHS`` the encoder's batch (default 3,5).
"""

from __future__ import annotations

import os
import warnings

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import (AxiStreamBus, AxiStreamFrame, AxiStreamMonitor, AxiStreamSink,
                           AxiStreamSource)

from sim.cocotb_streams import check_equal, decode, encode, load_manifest, seed
from sim.stalls import Stalls

# cocotbext-axi 0.1.28 (the newest release) still calls cocotb APIs that cocotb 2 deprecates
# (setimmediatevalue, Edge); under PYTHONWARNINGS=error those warnings would stop every test
# before its first clock. Only deprecation warnings raised from cocotbext-axi and cocotb-bus
# code are silenced; the testbench's own and cocotb's stay errors.
warnings.filterwarnings("ignore", category=DeprecationWarning,
                        module=r"(cocotbext\.axi|cocotb_bus)\.")


def pauses(prob: float, seed: int):
    """A cocotbext-axi pause generator: runs of 1..4 paused cycles with probability ``prob``
    before each unpaused one."""
    stalls = Stalls(prob, 4, seed)
    while True:
        for _ in range(stalls.cycles()):
            yield True
        yield False


class AxisTB:
    """Owns the clock, the reset and a cocotbext-axi driver on every AXI4-Stream interface
    but those named in ``passive``."""

    def __init__(self, dut, *, stall: float, seed: int, passive=()):
        self.dut = dut
        self.manifest = load_manifest()
        self.config = self.manifest["config"]
        self.figures = self.manifest["figures"]
        self.streams = self.manifest["axi_streams"]
        self.clk = dut.aclk
        low = self.manifest["ports"][1]["name"] == "aresetn"
        self.reset, self.reset_active = getattr(dut, self.manifest["ports"][1]["name"]), not low
        self.drivers = {}
        for n, (name, info) in enumerate(self.streams.items()):
            if name in passive:
                continue        # the scenario drives this interface itself
            bus = AxiStreamBus.from_prefix(dut, info["interface"])
            kind = AxiStreamSource if info["direction"] == "in" else AxiStreamSink
            driver = kind(bus, self.clk, self.reset, reset_active_level=self.reset_active)
            driver.log.setLevel("WARNING")
            if stall:
                driver.set_pause_generator(pauses(stall, seed * 101 + n))
            self.drivers[name] = driver

    async def start(self) -> None:
        """10 ns clock on ``aclk``, every plain input port 0 (not X), then :meth:`pulse_reset`."""
        Clock(self.clk, 10, unit="ns").start()
        axis = {info[s] for info in self.streams.values()
                for s in ("tvalid", "tready", "tdata", "tlast")}
        for port in self.manifest["ports"][2:]:
            if port["direction"] == "in" and port["name"] not in axis:
                getattr(self.dut, port["name"]).value = 0
        await self.pulse_reset()

    async def pulse_reset(self) -> None:
        """The reset held for 3 edges, then released for one."""
        self.reset.value = int(self.reset_active)
        for _ in range(3):
            await RisingEdge(self.clk)
        self.reset.value = int(not self.reset_active)
        await RisingEdge(self.clk)

    # ---- payloads <-> AXI4-Stream frames ------------------------------------------------------

    def frames(self, name: str, beats) -> list[AxiStreamFrame]:
        """The frames carrying ``beats`` (payload values) on input ``name``: ``tdata`` bytes
        from the manifest's layout; with ``tlast``, a frame ends at each beat whose ``last``
        is set; without, one frame."""
        info = self.streams[name]
        size = info["tdata_width"] // 8
        frames, data = [], bytearray()
        for beat in beats:
            if info["tlast"] is not None:
                beat = dict(beat)
                last = beat.pop("last")
            data += encode(info["layout"], beat).to_bytes(size, "little")
            if info["tlast"] is not None and last:
                frames.append(AxiStreamFrame(bytes(data)))
                data = bytearray()
        if data and info["tlast"] is not None:
            raise ValueError(f"{name}: beats after the last 'last' cannot end a frame")
        if data:
            frames.append(AxiStreamFrame(bytes(data)))
        return frames

    def beats(self, name: str, frame: AxiStreamFrame) -> list:
        """The payload values of a frame received on output ``name``."""
        info = self.streams[name]
        size = info["tdata_width"] // 8
        data = bytes(frame.tdata)
        assert len(data) % size == 0, f"{name}: frame of {len(data)} bytes, beats are {size}"
        out = []
        for n in range(0, len(data), size):
            value = decode(info["layout"], int.from_bytes(data[n:n + size], "little"))
            if info["tlast"] is not None:
                value = {**value, "last": int(n + size == len(data))}
            out.append(value)
        return out

    async def send(self, name: str, beats, *, wait: bool = True) -> None:
        """Queue ``beats`` on input ``name``; with ``wait``, return once all are taken."""
        for frame in self.frames(name, beats):
            await self.drivers[name].send(frame)
        if wait:
            await self.drivers[name].wait()

    async def feed(self, steps) -> None:
        """``(stream, beats)`` steps in order, each taken whole before the next is offered."""
        for name, beats in steps:
            await self.send(name, beats)

    async def recv(self, name: str, count: int) -> list:
        """The next ``count`` beats of output ``name`` (whole frames)."""
        out = []
        while len(out) < count:
            out += self.beats(name, await self.drivers[name].recv())
        assert len(out) == count, f"{name}: {len(out)} beats where {count} were expected"
        return out

    async def expect_idle(self, cycles: int) -> None:
        """Fail if any output gives a beat in the next ``cycles`` cycles."""
        for _ in range(cycles):
            await RisingEdge(self.clk)
        for name, driver in self.drivers.items():
            if self.streams[name]["direction"] == "out":
                assert driver.empty() and not driver.active, f"{name}: extra beats"


# ---- one scenario per block: the data of the block's own regression -----------------------------

async def add(tb: AxisTB, rng) -> None:
    from sim.add_driver import expected, from_beats, param_beat, random_params, random_tensor, \
        tensor_beats
    cfg = tb.config
    n, w, ow, lanes = cfg["inputs"], cfg["in_width"], cfg["out_width"], cfg["lanes"]
    plan = [("tensor", random_tensor(rng, n, 3, lanes, w, 0))]
    for t in range(10):
        if t % 3 == 0:
            plan.append(("load", random_params(rng, n, w, ow, extreme=t == 3)))
        plan.append(("tensor", random_tensor(rng, n, int(rng.integers(1, 8)), lanes, w, t)))
    steps = [("params", [param_beat(v, w)]) if kind == "load" else ("i", tensor_beats(v))
             for kind, v in plan]
    feed = cocotb.start_soon(tb.feed(steps))
    beats = await tb.recv("o", sum(v.shape[1] for kind, v in plan if kind == "tensor"))
    await feed
    await tb.expect_idle(tb.figures["latency_cycles"] + 8)
    for t, (got, want) in enumerate(zip(from_beats(beats, plan), expected(plan, n, w, ow))):
        check_equal(got, want, f"tensor {t}")


async def gemm(tb: AxisTB, rng) -> None:
    from sim.gemm_driver import assemble, plan, random_problem
    cfg = tb.config
    widths = {"a_width": cfg["a_width"], "out_width": cfg["out_width"]}
    rows, cols, requantize = cfg["rows"], cfg["cols"], cfg["requantize"]
    problems = [random_problem(rng, 2 * rows + 1, 37, 2 * cols + 1, **widths),
                random_problem(rng, rows, 1, cols, **widths),
                random_problem(rng, rows, 300, cols, extreme=True, **widths)]
    plans = [plan(p, rows, cols, requantize, **widths, k_per_pe=cfg["k_per_pe"])
             for p in problems]
    tiles = [t for tiles in plans for t in tiles]
    per_tile = tb.figures["output_beats_per_tile"]
    inputs = [cocotb.start_soon(tb.send("i", [s for t in tiles for s in t.slices])),
              cocotb.start_soon(tb.send("params", [t.params for t in tiles]))]
    beats = await tb.recv("o", len(tiles) * per_tile)
    for task in inputs:
        await task
    await tb.expect_idle(tb.figures["latency_cycles"] + 8)
    start = 0
    for n, (problem, tiles_of) in enumerate(zip(problems, plans)):
        count = len(tiles_of) * per_tile
        shape_m, _, shape_n = problem.shape
        got = assemble(beats[start:start + count], (shape_m, shape_n), rows, cols,
                       cfg["out_lanes"])
        check_equal(got, problem.expected(requantize), f"problem {n} {problem.shape}")
        start += count


async def softmax(tb: AxisTB, rng) -> None:
    from sim.golden.softmax import lut_softmax, shiftmax
    cfg = tb.config
    bits, max_len = cfg["in_bits"], cfg["max_len"]
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    lengths = [int(n) for n in rng.integers(1, min(max_len, 40) + 1, 12)] + [1, max_len]
    rows = [rng.integers(lo, hi, n) for n in lengths] + [np.full(max_len, lo)]
    beats = [{"data": int(v), "last": int(j == len(r) - 1)} for r in rows for j, v in enumerate(r)]
    feed = cocotb.start_soon(tb.send("i", beats))
    got = await tb.recv("o", len(beats))
    await feed
    await tb.expect_idle(2 * max_len + 40)
    tables = ("in_bits", "exp_bits", "recip_index_bits", "recip_bits", "frac_bits",
              "log_steps", "pow_index_bits", "pow_steps", "pow_bits")
    start = 0
    for n, row in enumerate(rows):
        out = got[start:start + len(row)]
        start += len(row)
        if cfg["method"] == "shiftmax":
            want = shiftmax(row, cfg["scale"], n=cfg["n"], out_bits=cfg["out_bits"])[0].tolist()
        else:
            want = lut_softmax(row, scale=cfg["scale"], method=cfg["method"],
                               out_bits=cfg["out_bits"], **{k: cfg[k] for k in tables}).tolist()
        assert [b["data"] for b in out] == want, f"row {n}: {[b['data'] for b in out]} != {want}"
        assert [b["last"] for b in out] == [0] * (len(row) - 1) + [1], f"row {n}: last flags"


async def gelu(tb: AxisTB, rng) -> None:
    from sim.gelu_driver import expected, from_beats, random_rows, to_beats
    cfg = tb.config
    rows = random_rows(rng, cfg, 16, max_len=24)
    beats_in = to_beats(rows, cfg["lanes"])
    feed = cocotb.start_soon(tb.send("i", beats_in))
    beats = await tb.recv("o", len(beats_in))
    await feed
    await tb.expect_idle(tb.figures["latency_cycles"] + 8)
    got = from_beats(beats, [len(r) for r in rows], cfg["lanes"])
    for r, (out, want) in enumerate(zip(got, expected(cfg, rows))):
        check_equal(out, want, f"row {r}")


async def layernorm(tb: AxisTB, rng) -> None:
    from sim.layernorm_driver import (expected, from_beats, param_beats, random_params,
                                      random_rows, row_beats)
    cfg = tb.config
    n, w, ow = cfg["hidden"], cfg["in_width"], cfg["out_width"]
    plan = [("rows", random_rows(rng, n, w, 2)),            # before any load: all zeros
            ("load", random_params(rng, n, ow)), ("rows", random_rows(rng, n, w, 3)),
            ("load", random_params(rng, n, ow)), ("load", random_params(rng, n, ow)),
            ("rows", random_rows(rng, n, w, 3))]
    steps = [("params", param_beats(v)) if kind == "load" else ("i", row_beats(v))
             for kind, v in plan]
    rows = sum(len(v) for kind, v in plan if kind == "rows")
    feed = cocotb.start_soon(tb.feed(steps))
    beats = await tb.recv("o", rows * n)
    await feed
    await tb.expect_idle(tb.figures["latency_cycles"] + 8)
    for r, (out, want) in enumerate(zip(from_beats(beats, rows, n), expected(plan, n, ow))):
        check_equal(out, want, f"row {r}")


def _winograd_setup(tb: AxisTB) -> dict:
    from sim.golden.winograd import parse_tap_shifts
    cfg = tb.config
    m = cfg["m"]
    return {"m": m, "mode": cfg["mode"], "taps_per_clock": cfg["taps_per_clock"] or (m + 2) ** 2,
            "requantize": cfg["requantize"],
            "tap_shifts": parse_tap_shifts(cfg["tap_shifts"], m) if cfg["mode"] == "tapwise"
            else None}


async def _winograd_passes(tb: AxisTB, passes, count: int, idle: int) -> list:
    steps = [s for ps in passes for s in (("params", [ps.params]), ("weights", ps.weights))]
    feeds = [cocotb.start_soon(tb.feed(steps)),
             cocotb.start_soon(tb.send("i", [b for ps in passes for b in ps.tiles]))]
    beats = await tb.recv("o", count)
    for task in feeds:
        await task
    await tb.expect_idle(idle)
    return beats


def _expected_conv(problem, setup: dict):
    return problem.expected(m=setup["m"], mode=setup["mode"], requantize=setup["requantize"],
                            tap_shifts=setup["tap_shifts"])


async def winograd(tb: AxisTB, rng) -> None:
    from sim.winograd_driver import assemble, plan, random_problem
    setup = _winograd_setup(tb)
    lanes = tb.config["out_lanes"] or setup["m"]
    for padding in (1, 0):
        problem = random_problem(rng, n_img=1, chans=min(3, tb.config["in_channels"]),
                                 out_chans=2, height=7, width=6, padding=padding)
        passes = plan(problem, **setup)
        tiles = sum(b["last"] for ps in passes for b in ps.tiles)
        beats = await _winograd_passes(tb, passes, tiles * tb.figures["output_beats_per_tile"],
                                       tb.figures["latency_cycles"] + 8)
        check_equal(assemble(beats, problem, m=setup["m"], lanes=lanes),
                    _expected_conv(problem, setup), f"padding {padding}")


async def winograd_fm(tb: AxisTB, rng) -> None:
    from sim.winograd_driver import (assemble_feature_map, feature_map_beats, plan_feature_map,
                                     random_problem)
    setup = _winograd_setup(tb)
    cfg = tb.config
    for height, width, padding in [(cfg["max_height"], cfg["max_width"], 1), (3, 3, 0),
                                   (1, 2, 1)]:
        problem = random_problem(rng, n_img=1, chans=cfg["in_channels"], out_chans=2,
                                 height=height, width=width, padding=padding)
        beats = await _winograd_passes(tb, plan_feature_map(problem, **setup),
                                       feature_map_beats(problem),
                                       tb.figures["unit_latency_cycles"] + 16)
        check_equal(assemble_feature_map(beats, problem), _expected_conv(problem, setup),
                    f"{height}x{width} padding {padding}")


async def attention(tb: AxisTB, rng) -> None:
    """The scheduler between a descriptor source and behavioural engines
    (``sim.attention_driver.EngineModel``) on its command interfaces, whose ``tready`` they
    drive cycle by cycle (``done``/``done_ready`` pass through as plain ports); a cocotbext-axi
    ``AxiStreamMonitor`` records each command interface. Exact-cost engines and back-to-back
    descriptors first (every command in its golden cycle), then stalling engines and
    descriptor pauses (the invariants)."""
    from sim.attention_driver import EngineModel, check_invariants
    from sim.golden.attention import schedule
    cfg = tb.config
    engines_n, cost = cfg["engines"], 3
    pattern = {k: cfg[k] for k in ("block", "window", "n_global", "causal")}
    desc = tb.drivers["desc"]

    def unpause():
        desc.clear_pause_generator()
        desc.pause = False          # clearing the generator keeps its last value

    cmd = [tb.streams[f"cmd_{e}"] for e in range(engines_n)]
    ports = [(getattr(tb.dut, c["tvalid"]), getattr(tb.dut, c["tready"]),
              getattr(tb.dut, c["tdata"]), getattr(tb.dut, c["tlast"])) for c in cmd]
    done = [(getattr(tb.dut, f"done_{e}"), getattr(tb.dut, f"done_ready_{e}"))
            for e in range(engines_n)]
    monitors = [AxiStreamMonitor(AxiStreamBus.from_prefix(tb.dut, c["interface"]), tb.clk,
                                 tb.reset, reset_active_level=tb.reset_active) for c in cmd]
    for monitor in monitors:
        monitor.log.setLevel("WARNING")
    desc_valid = getattr(tb.dut, tb.streams["desc"]["tvalid"])
    desc_ready = getattr(tb.dut, tb.streams["desc"]["tready"])

    async def run(lengths, stall_prob: float, run_seed: int):
        engines = [EngineModel(cost, stall_prob=stall_prob, seed=run_seed * 97 + e)
                   for e in range(engines_n)]
        unpause()
        if stall_prob:
            desc.set_pause_generator(pauses(stall_prob, run_seed))
        await tb.send("desc", [{"seq": s, "length": n} for s, n in enumerate(lengths)],
                      wait=False)
        cycle, sent, origin, quiet = 0, 0, None, 0
        while quiet <= 12:
            for e, engine in enumerate(engines):
                ports[e][1].value = int(engine.ready(cycle))
                done[e][0].value = int(engine.done(cycle))
            await ReadOnly()
            fired = False
            if desc_valid.value and desc_ready.value:
                origin = cycle if origin is None else origin
                sent += 1
                fired = True
            for e, engine in enumerate(engines):
                valid, ready, data, last = ports[e]
                if valid.value and ready.value:
                    payload = decode(cmd[e]["layout"], int(data.value))
                    engine.take(cycle, {**payload, "last": int(last.value)})
                    fired = True
                if engine.done(cycle) and done[e][1].value:
                    engine.finished(cycle)
                    fired = True
            idle = sent == len(lengths) and all(e.done_at is None for e in engines)
            quiet = quiet + 1 if idle and not fired else 0
            await RisingEdge(tb.clk)
            cycle += 1
            assert cycle < 50_000, (
                f"no end after 50000 cycles: {sent} of {len(lengths)} descriptors taken; "
                f"engines (commands, done at): {[(len(e.commands), e.done_at) for e in engines]}")
        unpause()
        for e, (engine, monitor) in enumerate(zip(engines, monitors)):
            rows = []
            while not monitor.empty():
                rows.append([(b["seq"], b["query_block"], b["key_block"], bool(b["last"]),
                              b["valid"]) for b in tb.beats(f"cmd_{e}", monitor.recv_nowait())])
            seen = [c[1:] for c in engine.commands]
            assert [c for row in rows for c in row] == seen, \
                f"engine {e}: monitor frames {rows} != commands {seen}"
        return engines, origin

    lengths = [int(n) for n in rng.integers(1, cfg["max_len"] + 1, 10)] + [cfg["max_len"], 1]
    engines, origin = await run(lengths, 0.0, seed())
    want = schedule(lengths, engines=engines_n, cost_per_pair=cost,
                    lookahead=cfg["lookahead"], longest_first=cfg["longest_first"], **pattern)
    for e, (engine, expected) in enumerate(zip(engines, want.engines)):
        got = [c._replace(cycle=c.cycle - origin) for c in engine.commands]
        assert got == list(expected), f"engine {e}: {got} != {list(expected)}"
    lengths = [int(n) for n in rng.integers(1, cfg["max_len"] + 1, 10)] + [0, cfg["max_len"]]
    engines, _ = await run(lengths, 0.4, seed() + 1)
    check_invariants(engines, lengths, range(len(lengths)), **pattern)


async def attention_unit(tb: AxisTB, rng) -> None:
    from types import SimpleNamespace

    from sim.attention_unit_driver import (expected_context, from_words, quant_payload,
                                           random_layer, random_qkv, to_words)
    from sim.tb.attention_unit_tb import pack_quant
    cfg = SimpleNamespace(**tb.config)
    hidden = cfg.heads * cfg.head_dim
    pattern = {"block": cfg.block, "window": cfg.window, "n_global": cfg.n_global,
               "causal": cfg.causal}
    layer = random_layer(rng, cfg.head_dim, softmax_scale=cfg.softmax_scale)
    tb.dut.quant.value = pack_quant(quant_payload(layer))
    await tb.pulse_reset()              # as the unit's own testbench: quant set before reset
    for n, lengths in enumerate([[cfg.max_len], [1], [3, cfg.max_len - 1, 2]]):
        lengths = lengths[:cfg.max_seqs]
        batch = [random_qkv(rng, t, hidden) for t in lengths]
        sends = [cocotb.start_soon(tb.send("desc", [
            {"length": t, "last": int(i == len(lengths) - 1)} for i, t in enumerate(lengths)]))]
        for index, name in enumerate(("q", "k", "v")):
            sends.append(cocotb.start_soon(tb.send(name, [
                w for x in batch for w in to_words(x[index], cfg.block)])))
        words = await tb.recv("o", sum(lengths) * hidden // cfg.block)
        for task in sends:
            await task
        lasts = [w["last"] for w in words]
        assert lasts == [0] * (len(words) - 1) + [1], f"batch {n}: last flags {lasts}"
        got = from_words([w["data"] for w in words], sum(lengths), hidden)
        want = np.concatenate([expected_context(q, k, v, layer, heads=cfg.heads,
                                                softmax=cfg.softmax, pattern=pattern)
                               for q, k, v in batch])
        check_equal(got, want, f"batch {n} (lengths {lengths})")
        tb.dut._log.info(f"batch {n} (lengths {lengths}) bit-exact")
    await tb.expect_idle(20)


async def encoder(tb: AxisTB, rng) -> None:
    """The encoder with its weight memory served on ``m_axis_req``/``s_axis_rdata``; every
    stage boundary from ``m_axis_dbg`` and the pooled sums bit-exact."""
    from gen.blocks.encoder import encoder_model, encoder_params
    from sim.encoder_driver import compare, expected, random_batch
    from sim.encoder_image import ExternalMemory, build_image, embedding_sums
    model, params = encoder_model(tb.config), encoder_params(tb.config)
    memory = ExternalMemory(build_image(model, params), latency=(1, 6), seed=seed())
    lengths = [int(n) for n in os.environ.get("LUTRA_ENCODER_LENGTHS", "3,5").split(",")]
    batch = random_batch(rng, model, lengths)
    debug = []

    async def serve():
        while True:
            (req,) = tb.beats("req", await tb.drivers["req"].recv())
            for _ in range(memory.delay()):
                await RisingEdge(tb.clk)
            await tb.send("rdata", memory.read(req["addr"], req["length"]))

    async def watch():
        while True:
            for b in tb.beats("dbg", await tb.drivers["dbg"].recv()):
                debug.append((b["tag"], b["token"], b["channel"], b["data"]))

    tasks = [cocotb.start_soon(serve())] + ([cocotb.start_soon(watch())] if params.debug else [])
    feed = cocotb.start_soon(tb.feed(
        [("seq", [{"length": len(ids), "last": int(n == len(batch) - 1)}
                  for n, ids in enumerate(batch)])]
        + [("x", [int(v) for v in embedding_sums(model, ids).ravel()]) for ids in batch]))
    pooled = []
    while len(pooled) < len(batch):
        pooled.append([b["data"] for b in tb.beats("o", await tb.drivers["o"].recv())])
    await feed
    await tb.expect_idle(8)
    for task in tasks:
        task.cancel()
    compare(expected(model, batch), debug, pooled)


#: Interfaces a scenario drives itself, by block.
PASSIVE = {"attention": lambda name: name.startswith("cmd_")}

SCENARIOS = {f.__name__: f for f in (add, gemm, softmax, gelu, layernorm, winograd, winograd_fm,
                                     attention, attention_unit, encoder)}


@cocotb.test(timeout_time=float(os.environ.get("LUTRA_AXIS_TIMEOUT_MS", "20")), timeout_unit="ms")
async def golden_through_axi_stream(dut):
    """The block's regression data through cocotbext-axi sources and sinks with random pauses
    on every interface: every output beat, ``tlast`` and the beat counts exact. A frame whose
    ``tlast`` never comes fails at the simulated-time limit (``LUTRA_AXIS_TIMEOUT_MS``,
    default 20 ms: 2,000,000 cycles)."""
    stall = float(os.environ.get("LUTRA_AXIS_STALL", "0.3"))
    block = load_manifest()["block"]
    assert block in SCENARIOS, f"no AXI4-Stream scenario for block {block!r}"
    # the attention scheduler's engines answer its commands cycle by cycle (see attention())
    passive = PASSIVE.get(block, lambda name: False)
    tb = AxisTB(dut, stall=stall, seed=seed(),
                passive={n for n in load_manifest()["axi_streams"] if passive(n)})
    await tb.start()
    await SCENARIOS[block](tb, np.random.default_rng(seed()))
