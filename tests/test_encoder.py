"""The encoder accelerator (hw/encoder): parameters, the weight image, and whole layers against
the integer encoder specification (sim/golden/encoder.py) at every stage boundary."""

import re

import numpy as np
import pytest
from sim.testing import SIMULATORS, cocotb_run

from hw.encoder.params import (DESCRIPTOR_BITS, INPUT_TAG, MEMORIES, OPS, SECOND_SOURCE,
                               EncoderParams)
from sim import encoder_driver as drv
from sim.encoder_image import (ExternalMemory, Image, build_image, pack_descriptor,
                               unpack_descriptor)


@pytest.fixture(scope="module")
def tiny():
    return drv.tiny_model()


def test_for_model(tiny):
    p = EncoderParams.for_model(tiny)
    assert (p.hidden, p.heads, p.ffn, p.layers, p.max_len) == (32, 2, 64, 2, 16)
    assert p.softmax_scale == tiny.layers[0].softmax_scale
    assert p.gelu_scale == tiny.layers[0].gelu.scale
    assert p.attention_unit.window == 3 and p.attention_unit.n_global == 0


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"rows": 0}, ValueError, "rows must be in [1, 32], not 0"),
    ({"port_width": 24}, ValueError, "port_width must be one of 16, 32, 64, 128, 256, 512, "
                                     "not 24"),
    ({"debug": 1}, TypeError, "debug must be a bool, not 1"),
    ({"cols": 3}, ValueError, "cols must divide hidden (32), not 3"),
    ({"fabric_cols": 5}, ValueError, "fabric_cols must be in [0, 4], not 5"),
    ({"fabric_cols": -1}, ValueError, "fabric_cols must be in [0, 4], not -1"),
    ({"fabric_cols": 1.0}, TypeError, "fabric_cols must be an integer, not 1.0"),
    ({"block": 16, "heads": 4}, ValueError, "block must divide the head size (8), not 16"),
    ({"max_tokens": 8}, ValueError, "max_tokens must be >= max_len (16), not 8"),
    ({"heads": 3}, ValueError, "heads must divide hidden (32), not 3"),
    ({"softmax_scale": 0.0}, ValueError, "softmax_scale must be in"),
])
def test_params_wrong(kwargs, exc, message):
    with pytest.raises(exc) as info:
        EncoderParams(**kwargs)
    assert str(info.value).startswith(message)


def test_fabric_cols():
    """The GEMM core gets the fabric columns: as many products per clock, fewer DSPs."""
    p, dsp = EncoderParams(rows=4, cols=4, fabric_cols=3), EncoderParams(rows=4, cols=4)
    assert (p.gemm.fabric_cols, p.gemm.a_width, p.gemm.k_per_pe) == (3, 16, 1)
    assert (p.gemm_macs, p.fabric_macs, dsp.fabric_macs) == (16, 12, 0)
    assert dsp.multipliers - p.multipliers == 12
    assert p.gemm.latency == dsp.gemm.latency


@pytest.mark.parametrize("config", [{}, {"engines": 2, "softmax": "lut2d"},
                                    {"rows": 2, "cols": 8, "fabric_cols": 3}])
def test_multipliers_count_the_netlist(config):
    """``EncoderParams.multipliers`` (the manifest's figure, from the units' parameters) is
    the number of products of two signals in the elaborated netlist, which synthesis maps one
    per MULT18X18D (``gen.resources``), for every unit the encoder composes."""
    from gen.resources import netlist_resources
    from hw.encoder import EncoderAccelerator
    p = EncoderParams(**config, debug=False)
    products = netlist_resources(EncoderAccelerator(p))["multipliers"]
    assert p.multipliers == len(products), (p.multipliers, len(products))


def test_fit_counts_fabric_macs():
    """The fit check's estimate: each fabric product drops its DSP and counts the measured
    synthesis cost of a 16 x 8 FabricMultiplier (195 comb slots, 66 FF; docs/blocks/gemm.md)
    in place of the DSP PE's PipelinedMultiplier (registers only in the netlist count)."""
    from gen.blocks import get_block
    from gen.config import validate_params
    from gen.resources import netlist_resources
    from hw.common.mul import PipelinedMultiplier
    block = get_block("encoder")
    need = {f: block.resources(dict(validate_params(block, {"model_layers": 1,
                                                            "fabric_cols": f}).params))
            for f in (0, 2)}
    dsp_mul = netlist_resources(PipelinedMultiplier(a_width=16, b_width=8))
    fabric = 4 * 2
    assert len(need[0]["multipliers"]) - len(need[2]["multipliers"]) == fabric
    assert need[2]["ffs"] - need[0]["ffs"] == fabric * (66 - dsp_mul["ffs"])
    # (each estimate's LUT count is rounded once over the whole netlist)
    assert abs(need[2]["luts"] - need[0]["luts"] - fabric * (195 - dsp_mul["luts"])) <= 1


def test_for_model_wrong(tiny):
    import dataclasses
    with pytest.raises(ValueError, match="runs the 'lut' GELU, not 'poly'"):
        EncoderParams.for_model(dataclasses.replace(tiny, gelu="poly"))


def test_descriptor_round_trip():
    values = {"op": OPS["gemm"], "src": 6, "dst": 1, "tag": 4095, "k": 1536, "n": 384,
              "addr": (1 << 32) - 1, "mul0": -(1 << 31), "sh2": -31, "act_min": -32768}
    bits = pack_descriptor(**values)
    assert bits < 1 << DESCRIPTOR_BITS
    got = unpack_descriptor(bits)
    assert {k: got[k] for k in values} == values
    with pytest.raises(ValueError, match="descriptor field k: 65536 does not fit 16 bits"):
        pack_descriptor(k=1 << 16)
    with pytest.raises(KeyError):
        pack_descriptor(bogus=1)


@pytest.mark.parametrize("port_width", [16, 32, 128])
def test_image_layout(tiny, port_width):
    p = EncoderParams.for_model(tiny, port_width=port_width)
    image = build_image(tiny, p)
    assert Image.from_bytes(image.to_bytes(), p).words == image.words
    program = image.descriptors()
    ops = [d["op"] for d in program]
    per_layer = ["gemm", "gemm", "gemm", "attention", "gemm", "add", "layernorm", "gemm",
                 "gelu", "gemm", "add", "layernorm"]
    assert ops == [OPS[o] for o in ["layernorm"] + per_layer * 2 + ["pool", "end"]]
    # Every weight tile row, read back from the words the GEMM reads.
    desc = program[1 + 7]                       # layer 0 FFN1
    lin = tiny.layers[0].ffn1
    k, n = lin.weight.shape
    assert (desc["k"], desc["n"]) == (k, n)
    words = p.weight_row_words

    def row(addr, count, width, bits):
        value = sum(w << (i * port_width) for i, w in enumerate(image.words[addr:addr + count]))
        out = [(value >> (bits * c)) & ((1 << bits) - 1) for c in range(width)]
        return [v - (1 << bits) if v >> (bits - 1) else v for v in out]

    for tile in range(n // p.cols):
        for kk in range(k):
            got = row(desc["addr"] + (tile * k + kk) * words, words, p.cols, 8)
            assert got == list(lin.weight[kk, tile * p.cols:(tile + 1) * p.cols])
        base = desc["paddr"] + tile * 3 * p.param_row_words
        cols = slice(tile * p.cols, (tile + 1) * p.cols)
        assert row(base, p.param_row_words, p.cols, 32) == list(lin.bias[cols])
        assert row(base + p.param_row_words, p.param_row_words, p.cols, 32) == \
            list(np.broadcast_to(lin.out.multiplier, (n,))[cols])
    # LayerNorm records
    ln = tiny.layers[1].ln2
    desc = program[-3]
    for c in range(p.hidden):
        rec = row(desc["paddr"] + c * p.ln_row_words, p.ln_row_words, 4, 32)
        assert rec[:2] == [ln.multiplier[c], ln.bias[c]]
        assert ((rec[2] & 0xFF) ^ 0x80) - 0x80 == ln.shift[c] and (rec[2] >> 8) & 1 == \
            int(ln.negate[c])
    assert image.layout["words"] == len(image.words)


def test_image_reads_the_second_source_only_as_add_input(tiny):
    """The readers take an ADD's second input from ``SECOND_SOURCE`` whatever ``src2`` says,
    and select ``src`` among the other memories: every program the image writer makes has
    each ADD's ``src2`` that memory, and no pass with it as ``src``."""
    second = list(MEMORIES).index(SECOND_SOURCE)
    program = build_image(tiny, EncoderParams.for_model(tiny)).descriptors()
    adds = [d for d in program if d["op"] == OPS["add"]]
    assert len(adds) == 2 * len(tiny.layers)
    assert all(d["src2"] == second for d in adds), [d["src2"] for d in adds]
    reads = [d["src"] for d in program if d["op"] not in (OPS["end"], OPS["attention"])]
    assert second not in reads, reads


def test_external_memory(tiny):
    image = build_image(tiny, EncoderParams.for_model(tiny))
    memory = ExternalMemory(image, latency=(2, 2))
    assert memory.read(3, 2) == image.words[3:5] and memory.delay() == 2
    with pytest.raises(IndexError, match="outside the image"):
        memory.read(len(image.words) - 1, 2)


@pytest.mark.parametrize("lengths, stall_prob, seed", [([3, 5], 0.25, 1)])
def test_amaranth_one_layer(lengths, stall_prob, seed):
    """One layer, two sequences, random stalls on every stream: every stage boundary and the
    pooled sums bit-exact. The GEMM array's last two columns multiply in logic
    (``fabric_cols``), the first two on DSPs: both kinds of PE in one run."""
    model = drv.tiny_model(layers=1)
    params = EncoderParams.for_model(model, max_tokens=16, max_seqs=2, fabric_cols=2)
    batch = drv.random_batch(np.random.default_rng(seed), model, lengths)
    result = drv.simulate(params, model, batch, stall_prob=stall_prob, seed=seed)
    drv.compare(drv.expected(model, batch), result["debug"], result["pooled"])


def test_amaranth_banked_memories():
    """Activation memories of several banks (``BANK_WORDS`` words each: a 1 x 4 array keeps
    one token per word, so 20 tokens reach bank 1 of the hidden-wide memories and bank 2 of
    the FFN's): every stage boundary and the pooled sums bit-exact, random stalls."""
    from hw.encoder.core import BANK_WORDS
    model = drv.tiny_model(layers=1)
    params = EncoderParams.for_model(model, rows=1, max_tokens=32, max_seqs=2)
    assert params.memory_depth("a") > BANK_WORDS and params.memory_depth("e") > 2 * BANK_WORDS
    lengths = [12, 8]
    assert sum(lengths) * params.hidden > BANK_WORDS
    assert sum(lengths) * params.ffn > 2 * BANK_WORDS
    batch = drv.random_batch(np.random.default_rng(7), model, lengths)
    result = drv.simulate(params, model, batch, stall_prob=0.1, seed=7)
    drv.compare(drv.expected(model, batch), result["debug"], result["pooled"])


#: Refused batches (sequence lengths) on max_len 16, max_tokens 16, max_seqs 2, and the
#: BatchError flags each must raise.
REFUSED = [([1, 1, 1], {"seqs": 1, "tokens": 0, "length": 0, "program": 0}),
           ([10, 9], {"seqs": 0, "tokens": 1, "length": 0, "program": 0}),
           ([0], {"seqs": 0, "tokens": 0, "length": 1, "program": 0}),
           ([17], {"seqs": 0, "tokens": 1, "length": 1, "program": 0}),
           ([16, 16, 3], {"seqs": 1, "tokens": 1, "length": 0, "program": 0})]


def test_amaranth_refuses_oversize_batches():
    """Batches over max_seqs / max_tokens or with a sequence of length 0 or over max_len: each
    is refused with one err beat naming the failed checks, its x beats are dropped (no write
    reaches a memory: no debug beat, no pooled beat), and the good batch after them is
    bit-exact. Random stalls on every stream."""
    model = drv.tiny_model(layers=1)
    params = EncoderParams.for_model(model, max_tokens=16, max_seqs=2)
    batch = drv.random_batch(np.random.default_rng(2), model, [3, 5])
    memory = ExternalMemory(build_image(model, params), gap_prob=0.2, seed=3, latency=(1, 4))
    got = drv.simulate(params, model, batch, stall_prob=0.2, seed=0, memory=memory,
                       refused=[lengths for lengths, _ in REFUSED], max_cycles=200_000)
    assert got["err"] == [flags for _, flags in REFUSED], got["err"]
    drv.compare(drv.expected(model, batch), got["debug"], got["pooled"])


def _rewrite_descriptor(image: Image, index: int, **changes) -> Image:
    """A copy of ``image`` whose ``index``-th descriptor has the fields ``changes``."""
    import dataclasses
    desc = {**image.descriptors()[index], **changes}
    n, width = image.params.descriptor_words, image.params.port_width
    bits = pack_descriptor(**desc)
    words = list(image.words)
    words[index * n:(index + 1) * n] = [(bits >> (w * width)) & ((1 << width) - 1)
                                        for w in range(n)]
    return dataclasses.replace(image, words=words)


def _run_bad_program(params, model, image, batches, cycles_after: int, max_cycles: int) -> dict:
    """``batches`` through the accelerator (Amaranth simulator, random stalls) behind ``image``;
    runs until one ``err`` beat per batch has left, then ``cycles_after`` more cycles (at most
    ``max_cycles`` in all). Returns the ``err``, ``o`` and debug beats and the cycles."""
    from amaranth.sim import Simulator

    from hw.encoder import EncoderAccelerator
    from sim.encoder_image import embedding_sums
    from sim.stalls import Stalls
    from sim.streams import stream_put
    dut = EncoderAccelerator(params)
    memory = ExternalMemory(image, gap_prob=0.2, seed=5, latency=(1, 4))
    stalls = [Stalls(0.2, 3, 10 + k) for k in range(5)]
    got = {"err": [], "o": [], "dbg": [], "cycles": 0}
    pending, state = [], {"done": False, "after": cycles_after}

    async def feed(ctx):
        for batch in batches:
            for n, ids in enumerate(batch):
                await stream_put(ctx, dut.seq, {"length": len(ids),
                                                "last": int(n == len(batch) - 1)}, stalls[0])
            for ids in batch:
                for value in embedding_sums(model, ids).ravel():
                    await stream_put(ctx, dut.x, int(value), stalls[0])

    def sink(port, stall, take):
        return drv.stream_taker(port, stall, take, lambda: state["done"])

    answers = drv.read_port_answers(dut, memory, pending, lambda: state["done"])

    async def clock(ctx):
        while state["after"] and got["cycles"] < max_cycles:
            await ctx.tick()
            got["cycles"] += 1
            if len(got["err"]) == len(batches):
                state["after"] -= 1
        state["done"] = True

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed, background=True)
    for process in (sink(dut.req, stalls[1], lambda r: pending.append((r["addr"], r["length"]))),
                    sink(dut.o, stalls[2], got["o"].append),
                    sink(dut.err, stalls[3], got["err"].append),
                    sink(dut.dbg, stalls[4], got["dbg"].append), answers, clock):
        sim.add_testbench(process)
    sim.run()
    return got


#: Descriptors the readers cannot run as written, (index in the one-layer program, changes):
#: the first ADD with ``src2`` another memory; the embedding LayerNorm reading
#: ``SECOND_SOURCE``; the first GEMM reading no memory (src 7).
BAD_PROGRAMS = {"add_src2": (6, {"src2": list(MEMORIES).index("c")}),
                "src_is_second": (0, {"src": list(MEMORIES).index(SECOND_SOURCE)}),
                "src_no_memory": (1, {"src": 7})}


@pytest.mark.parametrize("case", BAD_PROGRAMS)
def test_amaranth_refuses_a_program_that_breaks_the_source_rule(case):
    """Source b is always ``SECOND_SOURCE`` and source a one of the other memories: a
    descriptor asking otherwise stops its batch with one ``err`` beat (``program``), after the
    passes before it and before its own (no debug beat of its tag or later, no ``o`` beat);
    the next batch is taken (and stopped the same way). Random stalls on every stream."""
    model = drv.tiny_model(layers=1)
    params = EncoderParams.for_model(model, max_tokens=16, max_seqs=2)
    image = build_image(model, params)
    index, changes = BAD_PROGRAMS[case]
    program = image.descriptors()
    assert case != "add_src2" or program[index]["op"] == OPS["add"], program[index]
    bad = _rewrite_descriptor(image, index, **changes)
    assert bad.descriptors()[index] == {**program[index], **changes}
    rng = np.random.default_rng(4)
    batches = [drv.random_batch(rng, model, [2, 1]), drv.random_batch(rng, model, [1])]
    got = _run_bad_program(params, model, bad, batches, cycles_after=300, max_cycles=20_000)
    flags = {"seqs": 0, "tokens": 0, "length": 0, "program": 1}
    assert got["err"] == [flags, flags], got["err"]
    assert got["o"] == [], f"{len(got['o'])} pooled beats of a stopped batch"
    ran = {d["tag"] for d in program[:index] if d["op"] != OPS["end"]}
    tags = {beat["tag"] for beat in got["dbg"]}
    assert tags - {INPUT_TAG} == ran, (sorted(tags), sorted(ran))


# ---- structure: the activation memories' pins --------------------------------------------------

@pytest.fixture(scope="module")
def coarse_netlist(tmp_path_factory):
    """The encoder (``debug`` off; 2 x 4 array, 64 tokens: memories of two and four banks) in
    Yosys's coarse netlist of the RTLIL that ``lutra build`` synthesises (``opt`` merges
    flip-flops of equal inputs, as synthesis does): the flattened module and, per bit, the
    cell driving it and its type."""
    import json

    from fpga.tools import run_tool
    from gen.verilog import convert_rtlil
    from hw.encoder import EncoderAccelerator
    tmp_path = tmp_path_factory.mktemp("netlist")
    (tmp_path / "enc.il").write_text(convert_rtlil(
        EncoderAccelerator(EncoderParams(rows=2, max_tokens=64, debug=False)), "enc"))
    run_tool("yosys", ["-q", "-p", "read_rtlil enc.il; hierarchy -top enc; proc; flatten; "
                       "opt -fast; write_json net.json"], cwd=tmp_path, log=tmp_path / "yosys.log")
    module = json.loads((tmp_path / "net.json").read_text())["modules"]["enc"]
    drivers = {bit: (name, cell["type"]) for name, cell in module["cells"].items()
               for port, bits in cell["connections"].items()
               if cell["port_directions"][port] == "output" for bit in bits}
    return module, drivers


def test_each_memory_has_its_own_write_registers(coarse_netlist):
    """Every address, data and enable pin of each activation memory's write port comes straight
    from a flip-flop, and no flip-flop drives the pins of two memories. A register shared by
    all memories runs across the chip to every block RAM: at MiniLM size (154 block RAMs) each
    write data bit reached ~169 pins. (The read address is still one register for all
    memories: see ``hw/encoder/core.py``.)"""
    module, drivers = coarse_netlist
    owner = {}                          # flip-flop -> the memory whose pins it drives
    pins = dict.fromkeys(MEMORIES, 0)
    for cell in module["cells"].values():
        bank = re.fullmatch(r"mem_(\w+)_(\d+)", cell["parameters"].get("MEMID", "").lstrip("\\"))
        if cell["type"] != "$memwr_v2" or not bank or bank[1] not in MEMORIES:
            continue
        memory = bank[1]
        for port in ("ADDR", "DATA", "EN"):
            for bit in cell["connections"][port]:
                ff, kind = drivers.get(bit, (bit, "constant"))
                assert "dff" in kind, f"{bank[0]} {port} bit driven by {kind} {ff}"
                assert owner.setdefault(ff, memory) == memory, \
                    f"{ff} drives the {port} pins of {owner[ff]} and {memory}"
                pins[memory] += 1
    assert all(pins.values()), pins


def test_each_bank_has_read_selects_of_its_own(coarse_netlist):
    """Every activation memory is banks of at most ``BANK_WORDS`` words (one block-RAM row:
    synthesis builds no select of its own), and every bit a bank reads goes only into
    multiplexers selected by flip-flops that select no other bank's words. Synthesis's select
    of a deep memory's block RAMs, registered from the one read address of all memories, was
    two flip-flops into ~1,100 LUT inputs each (the MiniLM netlist at df7b046)."""
    from collections import defaultdict

    from hw.encoder.core import BANK_WORDS
    module, drivers = coarse_netlist
    banks = defaultdict(list)
    for memory, info in module["memories"].items():
        bank = re.fullmatch(r"mem_(\w+)_(\d+)", memory)
        if bank and bank[1] in MEMORIES:
            assert info["size"] <= BANK_WORDS, (memory, info["size"])
            banks[bank[1]].append(memory)
    assert set(banks) == set(MEMORIES) and len(banks["a"]) == 2 and len(banks["e"]) == 4, banks
    readers = defaultdict(list)
    for name, cell in module["cells"].items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"][port] == "input":
                for bit in bits:
                    readers[bit].append(cell)
    owner = {}                          # select flip-flop -> the bank it selects
    for cell in module["cells"].values():
        bank = cell["parameters"].get("MEMID", "").lstrip("\\")
        if cell["type"] != "$memrd_v2" or not any(bank in b for b in banks.values()):
            continue
        for bit in cell["connections"]["DATA"]:
            assert readers[bit], f"{bank}: a data bit is read by nothing"
            for reader in readers[bit]:
                assert reader["type"] == "$mux" and bit in reader["connections"]["B"], \
                    f"{bank} read data into {reader['type']}"
                (select,) = reader["connections"]["S"]
                ff, kind = drivers.get(select, (select, "constant"))
                assert "dff" in kind, f"{bank}'s select driven by {kind} {ff}"
                assert owner.setdefault(ff, bank) == bank, f"{ff} selects {owner[ff]} and {bank}"


def test_descriptor_loads_are_enabled_by_flip_flops_of_their_own(coarse_netlist):
    """The descriptor register loads in groups of at most ``DESC_LOAD_BITS`` bits, each group's
    clock enable straight from a flip-flop that enables nothing else of it: one enable decoded
    from the state and ``row_valid`` had ~490 loads in the MiniLM netlist (df7b046)."""
    from hw.encoder.core import DESC_LOAD_BITS
    module, drivers = coarse_netlist
    desc = set(module["netnames"]["desc"]["bits"])
    enabled = {}                        # enable flip-flop -> desc bits it enables
    for name, cell in module["cells"].items():
        bits = desc & set(cell["connections"].get("Q", []))
        if not bits:
            continue
        assert "EN" in cell["connections"], f"desc bits in {cell['type']} {name}: no enable"
        for bit in cell["connections"]["EN"]:
            ff, kind = drivers.get(bit, (bit, "constant"))
            assert "dff" in kind, f"desc bits enabled by {kind} {ff}"
            enabled.setdefault(ff, set()).update(bits)
    assert set().union(*enabled.values()) == desc
    assert max(len(bits) for bits in enabled.values()) <= DESC_LOAD_BITS, \
        {ff: len(bits) for ff, bits in enabled.items()}


def test_gemm_parameter_sets_load_column_by_column(coarse_netlist):
    """Each column of each GEMM tile parameter set (bias, multiplier, shift; banks 0 and 1)
    loads under a clock enable straight from a flip-flop that enables nothing else: the decode
    of the fetcher's step, bank and row into a whole set's 256 enables was the worst path of
    the MiniLM build at df7b046 (g_row to g_bias1, 18.1 ns, 10.5 ns of it the enable's
    route)."""
    module, drivers = coarse_netlist
    names = [f"g_{kind}{b}" for kind in ("bias", "mult", "shift") for b in (0, 1)]
    cols = EncoderParams().cols
    enabled = {}                        # enable flip-flop -> the (set, column) it enables
    for name in names:
        bits = module["netnames"][name]["bits"]
        width = len(bits) // cols
        for c in range(cols):
            column = set(bits[c * width:(c + 1) * width])
            for cell_name, cell in module["cells"].items():
                if not column & set(cell["connections"].get("Q", [])):
                    continue
                assert "EN" in cell["connections"], f"{name} column {c}: no enable"
                for bit in cell["connections"]["EN"]:
                    ff, kind = drivers.get(bit, (bit, "constant"))
                    assert "dff" in kind, f"{name} column {c} enabled by {kind} {ff}"
                    assert enabled.setdefault(ff, (name, c)) == (name, c), \
                        f"{ff} enables {enabled[ff]} and {(name, c)}"
    assert len(enabled) == len(names) * cols, len(enabled)


def test_gelu_pipelines_run_free(coarse_netlist):
    """No flip-flop of the GELU table or of its requantizer has a clock enable: they run free
    into a credit queue, so that no stall enable spans them (the requantizer's, 785 loads, was
    the largest net of the MiniLM netlist at f373fea). Their input payload's names are the
    descriptor's bits, which load under the descriptor's own enables, so they are left out."""
    module, drivers = coarse_netlist
    kinds = {}
    for name, info in module["netnames"].items():
        if not name.startswith(("gelu.", "gelu_requant.")) or ".i__payload" in name:
            continue
        for bit in info["bits"]:
            cell, kind = drivers.get(bit, (None, ""))
            if "dff" in kind:
                kinds.setdefault(kind, set()).add(name)
    assert kinds and not any(kind.endswith("e") for kind in kinds), kinds


# ---- cocotb on the generated Verilog -----------------------------------------------------------

#: (cocotb tests, good batch lengths, GEMM fabric columns) per simulator, in one build. Icarus
#: runs ~1,300-2,900 cycles/s of this design: the batch check only, its good batch two
#: one-token sequences, on an array whose last two columns multiply in logic.
COCOTB_RUNS = {"verilator": ("batch_with_stalls,refused_batches", "3,5", 0),
               "icarus": ("refused_batches", "1,1", 2)}


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_cocotb(simulator, tmp_path):
    """One tiny layer: refused batches (each flag of the batch check), then a batch of
    sequences, random stalls on every stream including err."""
    testcase, lengths, fabric_cols = COCOTB_RUNS[simulator]
    cocotb_run("encoder", {"model_layers": 1, "max_tokens": 16, "max_seqs": 2,
                           "fabric_cols": fabric_cols}, simulator,
               tmp_path, testcase=testcase, LUTRA_ENCODER_LENGTHS=lengths)


def test_generate_writes_the_weight_image(tmp_path, capsys):
    """``lutra generate encoder`` writes the weight image beside the Verilog, as the read port
    expects it, and the manifest describes it."""
    import json

    from gen.blocks.encoder import encoder_model, encoder_params
    from gen.cli import main
    assert main(["generate", "encoder", "--model-layers", "1", "--out", str(tmp_path)]) == 0
    assert "image.bin (weight image" in capsys.readouterr().out
    info = json.loads((tmp_path / "lutra_encoder.json").read_text())["weight_image"]
    data = (tmp_path / info["file"]).read_bytes()
    from gen.blocks import get_block
    from gen.config import validate_params
    config = validate_params(get_block("encoder"), {"model_layers": 1}).params
    params = encoder_params(config)
    assert info["bytes"] == len(data) == info["words"] * params.port_width // 8
    image = Image.from_bytes(data, params)
    assert image.descriptors()[-1]["op"] == OPS["end"]
    assert [d["op"] for d in image.descriptors()] == \
        [d["op"] for d in build_image(encoder_model(config), params).descriptors()]
    for record in info["layout"]["records"]:           # every record lies inside the file
        assert 0 <= record["addr"] and record["addr"] + record["words"] <= info["words"]
