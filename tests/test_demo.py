"""``lutra demo`` (gen/cli.py, gen/cli_run.py): the encoder accelerator on two sentences through
its RTL, here with the tiny encoder (the MiniLM demo, ``make demo``, is too long for a test), and
the single-block flow's selection."""

import re

import pytest

from gen.cli import main
from gen.cli_run import DEMO_TEXTS
from sim.runner import missing_reason


@pytest.mark.cocotb
@pytest.mark.skipif(missing_reason("verilator") is not None, reason="no Verilator")
def test_demo_tiny(tmp_path, capsys):
    """Both sentences bit-exact as one batch, near the float model and each other; the second
    run reuses the Verilator build."""
    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    work = out / "encoder-tiny"
    assert {"lutra_encoder.v", "lutra_encoder.json", "image.bin"} <= {p.name for p in
                                                                      work.iterdir()}
    assert text.count("bit-exact to the integer specification: yes") == 2, text
    for sentence in DEMO_TEXTS:
        assert repr(sentence) in text, text
    cosines = [float(c) for c in re.findall(r"cosine to the float model ([0-9.]+)", text)]
    assert len(cosines) == 2 and min(cosines) > 0.99, cosines
    rtl, ref = map(float, re.search(r"two sentences: RTL ([0-9.]+), float ([0-9.]+)",
                                    text).groups())
    assert abs(rtl - ref) < 0.05, text
    cycles = int(re.search(r"cycles: ([0-9,]+) for the batch", text)[1].replace(",", ""))
    assert cycles > 10_000, text
    assert "== all bit-exact" in text and "(cached" not in text
    assert main(["demo", "--model", "tiny", "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert "(cached: same Verilog)" in again, again
    assert f"cycles: {cycles:,} for the batch" in again, again


@pytest.mark.parametrize("argv, message", [
    (["--block", "nosuch"], "has no [nosuch] table"),
    (["--model", "big"], "argument --model: invalid choice: 'big'"),
    (["gemm"], "unrecognized arguments: gemm"),
])
def test_demo_errors(argv, message, tmp_path, capsys):
    assert main(["demo", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lutra: error: ") and message in err and err.count("\n") == 1, err


def test_demo_block_flow_selects_the_block(tmp_path, capsys):
    """``--block gemm``: the single-block flow on that block of the default configuration only
    (generation, simulation and FPGA tools replaced by gen.fuzz's quick stand-ins)."""
    from gen.fuzz import stand_ins
    with stand_ins():
        assert main(["demo", "--block", "gemm", "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "== generate (default.toml)" in text and "   gemm " in text, text
    assert "softmax" not in text and "encoder" not in text, text
    assert (tmp_path / "o" / "verilog" / "gemm").is_dir()
