"""The encoder's board self-test (fpga/selftest.py): the weight image in a ROM behind the read
port, a random batch in, the pooled sums' signature checked against the specification's."""

import copy

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from fpga.selftest import ReadPortRom, RomBacked, SelfTest, selftest_design, selftest_vectors
from gen.blocks import get_block
from gen.config import build_component, validate_params
from sim.stalls import Stalls
from sim.streams import stream_get, stream_put
from sim.testing import run_selftest

#: One layer of the tiny encoder and two sequences of at most 4 tokens: a short simulation.
TINY = {"model": "tiny", "model_layers": 1, "model_max_len": 4, "max_tokens": 8, "max_seqs": 2,
        "debug": False}
REQUEST = data.StructLayout({"addr": 32, "length": 24})


def _config(**changes):
    return validate_params(get_block("encoder"), {**TINY, **changes})


def _run(dut, max_cycles=200_000) -> dict:
    return run_selftest(dut, max_cycles=max_cycles, period=1e-8)


def test_rom_init_wrong():
    with pytest.raises(ValueError, match="words must not be empty"):
        ReadPortRom(words=[], request=REQUEST, width=8)
    with pytest.raises(TypeError, match="request must be a StructLayout with fields addr and "
                                        "length, not"):
        ReadPortRom(words=[1], request=data.StructLayout({"addr": 8}), width=8)
    with pytest.raises(TypeError, match="width must be a positive integer, not 0"):
        ReadPortRom(words=[1], request=REQUEST, width=0)


def test_rom_answers_requests_with_stalls():
    """Random requests, random stalls on both streams: every word, in order, nothing else."""
    rng = np.random.default_rng(4)
    words = [int(w) for w in rng.integers(0, 1 << 16, size=50)]
    requests = [(int(a), int(n)) for a, n in zip(rng.integers(0, 40, size=12),
                                                 rng.integers(1, 11, size=12))]
    want = [words[a + k] for a, n in requests for k in range(n)]
    dut = ReadPortRom(words=words, request=REQUEST, width=16)
    got = []

    async def put(ctx):
        stalls = Stalls(0.3, 3, 1)
        for addr, length in requests:
            await stream_put(ctx, dut.req, {"addr": addr, "length": length}, stalls)

    async def get(ctx):
        stalls = Stalls(0.3, 3, 2)
        for _ in want:
            got.append(await stream_get(ctx, dut.rdata, stalls))
        for _ in range(20):                     # and nothing more
            *_, valid = await ctx.tick().sample(dut.rdata.valid)
            assert not valid, "a word beyond the requests"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(put)
    sim.add_testbench(get)
    sim.run()
    assert got == want, f"{len(got)} words: {got} != {want}"


def test_encoder_selftest_passes():
    """The tiny encoder behind its weight ROM reaches ``passed`` with the specification's
    signature."""
    selftest, vectors = selftest_design(_config())
    assert len(vectors["memory"]) > 1000 and set(vectors["inputs"]) == {"seq", "x"}
    assert set(vectors["outputs"]) == {"o", "err"} and vectors["outputs"]["o"]["beats"] == 2 * 32
    assert vectors["outputs"]["err"]["beats"] == 0          # a good batch: no refusal beat
    result = _run(selftest)
    assert result.get("passed") == 1 and result["failed"] == 0, result


def test_encoder_selftest_fails_on_corrupt_weight():
    """Four weights of the first GEMM tile with their sign bit flipped: the signature differs,
    ``failed``."""
    from sim.encoder_image import build_image
    from gen.blocks.encoder import encoder_model, encoder_params
    config = _config()
    block = build_component(config)
    vectors = copy.deepcopy(selftest_vectors(config, 1, block))
    params = encoder_params(config.params)
    image = build_image(encoder_model(config.params), params)
    gemm = next(d for d in image.descriptors() if d["op"] == 2)       # OPS["gemm"]
    vectors["memory"][gemm["addr"]] ^= 0x80808080      # four weights' sign bits
    rom = ReadPortRom(words=vectors["memory"], request=block.req.payload.shape(),
                      width=params.port_width)
    result = _run(SelfTest(block=RomBacked(block, rom), vectors=vectors))
    assert result.get("failed") == 1 and result["passed"] == 0, result


def test_encoder_selftest_needs_debug_off():
    config = _config(debug=True)
    with pytest.raises(ValueError, match="give --debug false"):
        config.block.selftest(dict(config.params), 1)
