"""AXI4-Stream top level (``hw.common.axis``, ``lutra generate --bus axi-stream``): construction,
the ``tdata`` mapping in the Amaranth simulator, the manifest, the command line, and every block's
regression data through cocotbext-axi under Icarus and Verilator (``sim/tb/axis_tb.py``)."""

from __future__ import annotations

import json
import os

import pytest
from amaranth import Module, Shape, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from sim.testing import SIMULATORS

from gen.blocks import get_block
from gen.cli import main
from gen.config import validate_params
from gen.verilog import manifest, wrap
from hw.common.axis import AxiStreamTop, tdata_shape
from sim.runner import missing_reason, run_cocotb

BEAT = data.StructLayout({"a": signed(3), "last": 1, "b": unsigned(6)})


class Loopback(wiring.Component):
    """``o`` is ``i`` (combinational), and a plain port ``gain`` comes back as ``level``."""

    def __init__(self):
        super().__init__({"i": In(stream.Signature(BEAT)), "o": Out(stream.Signature(BEAT)),
                          "n": In(stream.Signature(signed(12))),
                          "gain": In(4), "level": Out(4)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid),
                     self.i.ready.eq(self.o.ready), self.level.eq(self.gain),
                     self.n.ready.eq(1)]
        return m


# ---- construction -------------------------------------------------------------------------------

def test_init():
    top = AxiStreamTop(Loopback(), aresetn=True)
    members = top.signature.members
    assert top.reset_port == "aresetn" and top.reset_active_low
    assert {name: (m.flow, Shape.cast(m.shape)) for name, m in members.items()} == {
        "aclk": (In, unsigned(1)), "aresetn": (In, unsigned(1)),
        "s_axis_i_tvalid": (In, unsigned(1)), "s_axis_i_tready": (Out, unsigned(1)),
        "s_axis_i_tdata": (In, unsigned(16)), "s_axis_i_tlast": (In, unsigned(1)),
        "m_axis_o_tvalid": (Out, unsigned(1)), "m_axis_o_tready": (In, unsigned(1)),
        "m_axis_o_tdata": (Out, unsigned(16)), "m_axis_o_tlast": (Out, unsigned(1)),
        "s_axis_n_tvalid": (In, unsigned(1)), "s_axis_n_tready": (Out, unsigned(1)),
        "s_axis_n_tdata": (In, unsigned(16)),
        "gain": (In, unsigned(4)), "level": (Out, unsigned(4))}
    assert AxiStreamTop(Loopback()).reset_port == "areset"
    assert not AxiStreamTop(Loopback()).reset_active_low


def test_init_wrong_block():
    with pytest.raises(TypeError, match=r"^block must be an Amaranth wiring.Component, not 3$"):
        AxiStreamTop(3)


def test_init_wrong_aresetn():
    with pytest.raises(TypeError, match=r"^aresetn must be True or False, not 1$"):
        AxiStreamTop(Loopback(), aresetn=1)


def test_init_port_name_taken():
    class Clash(wiring.Component):
        def __init__(self):
            super().__init__({"i": In(stream.Signature(8)), "s_axis_i_tdata": In(8)})

    with pytest.raises(ValueError, match=r"^block member 's_axis_i_tdata' gives port "
                                         r"'s_axis_i_tdata', which the AXI4-Stream top level "
                                         r"already has$"):
        AxiStreamTop(Clash())


def test_init_wrong_member():
    class Nested(wiring.Component):
        def __init__(self):
            super().__init__({"bus": Out(wiring.Signature({"x": Out(1)}))})

    with pytest.raises(TypeError, match=r"^block member 'bus' is neither a stream nor a port"):
        AxiStreamTop(Nested())


def test_tdata_shape():
    shape, last = tdata_shape(BEAT)
    assert last and shape == data.StructLayout({"a": signed(3), "b": unsigned(6)})
    assert tdata_shape(signed(12)) == (signed(12), False)
    wide_last = data.StructLayout({"x": 4, "last": 2})           # not a one-bit flag: data
    assert tdata_shape(wide_last) == (wide_last, False)


# ---- the mapping, in the Amaranth simulator -----------------------------------------------------

@pytest.mark.parametrize("aresetn", [False, True])
def test_mapping(aresetn):
    """Input padding is ignored, output padding is 0, ``last`` travels on ``tlast`` and the
    other fields sit in ``tdata`` from bit 0 (``a`` at 0..2, ``b`` at 3..8)."""
    top = AxiStreamTop(Loopback(), aresetn=aresetn)

    async def bench(ctx):
        ctx.set(getattr(top, top.reset_port), int(aresetn))     # reset released
        for a, b, last in [(-4, 63, 1), (3, 0, 0), (-1, 37, 1)]:
            padding = 0b1111111 << 9
            ctx.set(top.s_axis_i_tdata, (a & 7) | b << 3 | padding)
            ctx.set(top.s_axis_i_tlast, last)
            ctx.set(top.s_axis_i_tvalid, 1)
            ctx.set(top.m_axis_o_tready, 1)
            ctx.set(top.gain, b & 15)
            assert ctx.get(top.m_axis_o_tdata) == (a & 7) | b << 3, f"beat {a}, {b}"
            assert ctx.get(top.m_axis_o_tlast) == last
            assert ctx.get(top.m_axis_o_tvalid) == 1 and ctx.get(top.s_axis_i_tready) == 1
            assert ctx.get(top.level) == b & 15
            ctx.set(top.m_axis_o_tready, 0)
            assert ctx.get(top.s_axis_i_tready) == 0

    sim = Simulator(top)
    sim.add_testbench(bench)
    sim.run()


# ---- manifest and command line ------------------------------------------------------------------

def test_manifest_layout():
    """The gemm core's input stream: the operands in tdata, ``last`` on tlast, 64 bits."""
    config = validate_params(get_block("gemm"), {"rows": 2, "cols": 3})
    info = manifest(config, wrap(get_block("gemm").build(config.params), bus="axi-stream"))
    assert info["bus"] == "axi-stream" and info["top"] == "lutra_gemm_axis"
    i = info["axi_streams"]["i"]
    assert (i["interface"], i["tlast"], i["tdata_width"], i["tdata_bits_used"]) == (
        "s_axis_i", "s_axis_i_tlast", 40, 40)
    assert [(f["name"], f["offset"], f["width"], f["signed"]) for f in i["fields"]] == [
        ("a[0]", 0, 8, True), ("a[1]", 8, 8, True), ("b[0]", 16, 8, True),
        ("b[1]", 24, 8, True), ("b[2]", 32, 8, True)]
    o = info["axi_streams"]["o"]
    assert o["direction"] == "out" and o["tdata_width"] == 8 and o["tlast"] == "m_axis_o_tlast"
    names = [p["name"] for p in info["ports"]]
    assert names[:2] == ["aclk", "areset"] and "clk" not in names


def test_cli_generate(tmp_path, capsys):
    assert main(["generate", "layernorm", "--hidden", "8", "--bus", "axi-stream", "--aresetn",
                 "--out", str(tmp_path)]) == 0
    text = (tmp_path / "lutra_layernorm_axis.v").read_text()
    assert "module lutra_layernorm_axis(" in text
    for port in ("input aclk;", "input aresetn;", "input [15:0] s_axis_i_tdata;",
                 "output [15:0] m_axis_o_tdata;", "output m_axis_o_tlast;",
                 "input [87:0] s_axis_params_tdata;"):
        assert port in text, port
    assert "s_axis_i_tlast" not in text          # the input rows carry no 'last'
    info = json.loads((tmp_path / "lutra_layernorm_axis.json").read_text())
    assert info["axi_streams"]["i"]["tlast"] is None
    assert "lutra_layernorm_axis.v" in capsys.readouterr().out


def test_cli_aresetn_needs_axi_stream(tmp_path, capsys):
    assert main(["generate", "add", "--aresetn", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "lutra: error: --aresetn needs --bus axi-stream\n"
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_cli_unknown_bus(tmp_path, capsys):
    assert main(["generate", "add", "--bus", "axi", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lutra: error: argument --bus: invalid choice: 'axi'") and \
        err.count("\n") == 1


# ---- every block through cocotbext-axi ----------------------------------------------------------

#: One small configuration per block (those of the blocks' own regressions).
COCOTB_CONFIGS = {
    "add": {"in_width": 16, "inputs": 2, "lanes": 2, "out_width": 8},
    "gemm": {"rows": 2, "cols": 3},
    "softmax": {"method": "recip", "max_len": 48},
    "gelu": {"max_row": 32, "lanes": 2},
    "layernorm": {"hidden": 12, "in_width": 8, "out_width": 8, "divider": "pipelined"},
    "winograd": {"in_channels": 3},
    "winograd_fm": {"in_channels": 2, "max_width": 7, "max_height": 8},
    "attention": {"engines": 2, "block": 4, "max_len": 32, "lookahead": 4},
    # one engine, one head: Icarus runs the two-engine unit at a few cycles per second
    "attention_unit": {"block": 4, "head_dim": 8, "heads": 1, "max_len": 8, "max_tokens": 16,
                       "max_seqs": 3, "engines": 1, "lookahead": 2},
    "encoder": {"model_layers": 1, "max_tokens": 16, "max_seqs": 2},
}

#: The encoder under Verilator only: under Icarus one tiny layer takes many minutes (its
#: registry names Verilator for ``lutra demo`` for the same reason).
RUNS = [(block, sim) for block in COCOTB_CONFIGS for sim in SIMULATORS
        if not (block == "encoder" and sim == "icarus")]


def _run(block: str, simulator: str, tmp_path, *, aresetn: bool = True, **env) -> None:
    reason = missing_reason(simulator)
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{simulator} is required in CI: {reason}")
        pytest.skip(reason)
    config = validate_params(get_block(block), COCOTB_CONFIGS[block])
    result = run_cocotb(config, simulator, build_root=tmp_path, quiet=True,
                        tb_module="sim.tb.axis_tb", bus="axi-stream", aresetn=aresetn,
                        extra_env={k: str(v) for k, v in env.items()})
    log = result.build_dir / "test.log"
    tail = log.read_text()[-6000:] if log.exists() else "(no log)"
    assert result.tests == 1, f"{result.tests} cocotb tests ran; log tail:\n{tail}"
    assert result.failed == 0, f"failed under {simulator}; log tail:\n{tail}"


@pytest.mark.cocotb
@pytest.mark.parametrize(("block", "simulator"), RUNS)
def test_cocotb(block, simulator, tmp_path):
    _run(block, simulator, tmp_path)


@pytest.mark.cocotb
def test_cocotb_active_high_reset(tmp_path):
    """``areset`` (active high) instead of ``aresetn``, no pauses: the same data through."""
    _run("add", "icarus", tmp_path, aresetn=False, LUTRA_AXIS_STALL=0)
