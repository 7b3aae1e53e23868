"""``lutra run encoder`` (gen/cli_run.py): sentences through the simulated RTL, bit-exact to the
integer specification; its one-line errors."""

import json

import numpy as np
import pytest

from gen.cli import main
from sim.runner import missing_reason


@pytest.mark.cocotb
@pytest.mark.skipif(missing_reason("verilator") is not None, reason="no Verilator")
def test_run_tiny_verilator(tmp_path, capsys):
    """The tiny model under Verilator: text and token ids, pooled sums bit-exact."""
    ids = tmp_path / "ids.npy"
    np.save(ids, np.array([[1, 7, 42, 99], [3, 3, 3, 3]]))
    status = main(["run", "encoder", "--model", "tiny", "--text", "A sentence.",
                   "--token-ids", str(ids), "--json", "--build-dir", str(tmp_path / "b")])
    out = json.loads(capsys.readouterr().out)
    assert status == 0
    assert [s["text"] for s in out["sentences"]] == ["A sentence.", None, None]
    assert out["sentences"][1]["tokens"] == [1, 7, 42, 99]
    for s in out["sentences"]:
        assert s["bit_exact"] is True, s
        assert s["cosine"] > 0.95 and s["cycles"] > 1000, s
    assert out["layers"] == 2 and out["simulator"] == "verilator"


@pytest.mark.parametrize("argv, message", [
    (["--text", " "], "--text 1: empty sentence"),
    (["--text", "word " * 20], "sentence 1 is 22 tokens long; this configuration takes at most "
                               "16 (max_len)"),
    ([], "give at least one --text or --token-ids"),
    (["--text", "A.", "--layers", "3"], "--layers must be at most 2 for tiny, not 3"),
    (["--text", "A.", "--model-layers", "1"], "use --model and --layers to choose the model"),
    (["--token-ids", "{missing}"], "No such file or directory"),
    (["--token-ids", "{bad}"], "bad.npy: not a NumPy .npy file; expected a .npy file of "
                               "integer token ids (numpy.save), 1-D or 2-D"),
    (["--token-ids", "{text}"], "ids.txt: not a NumPy .npy file; expected a .npy file of "
                                "integer token ids"),
    (["--token-ids", "{npz}"], "ids.npz: a .npz archive, not a .npy file; expected a .npy file "
                               "of integer token ids"),
    (["--token-ids", "{cut}"], "cut.npy: not a readable .npy file ("),
    (["--token-ids", "{objects}"], "objects.npy: not a readable .npy file (Object arrays"),
    (["--token-ids", "{directory}"], "Is a directory"),
    (["--token-ids", "{floats}"], "expected a non-empty 1-D or 2-D integer array, not float64"),
    (["--token-ids", "{range}"], "token ids must be in [0, 99]"),
    (["--text", "A.", "--text", "B.", "--text", "C.", "--batch"],
     "--batch: 3 sentences; this configuration takes at most 2 (max_seqs)"),
    (["--text", "word " * 14, "--text", "word " * 3, "--batch"],
     "--batch: 21 tokens; this configuration takes at most 16 (max_tokens)"),
])
def test_run_errors(argv, message, tmp_path, capsys):
    files = {"missing": tmp_path / "none.npy", "bad": tmp_path / "bad.npy",
             "floats": tmp_path / "floats.npy", "range": tmp_path / "range.npy"}
    files.update(text=tmp_path / "ids.txt", npz=tmp_path / "ids.npz", cut=tmp_path / "cut.npy",
                 objects=tmp_path / "objects.npy", directory=tmp_path)
    files["bad"].write_text("not numpy")
    files["text"].write_text("101 2023 102\n")
    np.savez(files["npz"], ids=np.array([1, 2, 3]))
    np.save(files["cut"], np.arange(100))
    files["cut"].write_bytes(files["cut"].read_bytes()[:-40])
    np.save(files["objects"], np.array([{}, 1], dtype=object), allow_pickle=True)
    np.save(files["floats"], np.zeros(3))
    np.save(files["range"], np.array([1, 100]))
    argv = [a.format(**files) for a in argv]
    out = tmp_path / "out"
    assert main(["run", "encoder", "--model", "tiny", "--build-dir", str(out), *argv]) == 2
    assert not out.exists(), "a refused run wrote files"
    err = capsys.readouterr().err
    assert err.startswith("lutra: error: ") and message in err and err.count("\n") == 1, err
    assert "pickle" not in err.split("Object arrays")[0], err       # a text file is not pickled


def test_run_refuses_a_build_dir_of_the_users(tmp_path, capsys, monkeypatch):
    """--build-dir follows gen.outputs: a non-empty directory Lutra has not written is refused
    (before any work) unless --force, and a user's file there is never touched."""
    def reached(*args, **kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr("gen.cli_run.simulate", reached)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file\n")
    assert main(["run", "encoder", "--model", "tiny", "--text", "A.",
                 "--build-dir", str(mine)]) == 2
    err = capsys.readouterr().err
    assert err == f"lutra: error: {mine}: directory is not empty and holds no Lutra outputs; " \
                  f"choose another directory or use --force\n", err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "a user's file\n"


def test_cycle_model_minilm_layer():
    """The cycle model against the RTL count of MiniLM layer 0 on a 9-token sentence (528,709
    cycles at 23a51a2, after the attention engines' earlier row hand-over; 528,832 before it,
    968,903 before the double-buffered weight tile; `lutra run encoder --layers 1 --text "The
    cat sat on the mat."`)."""
    from hw.encoder.params import EncoderParams
    from sim.bench_encoder_rtl import ATTENTION_FIT, bounds, cycle_model
    p = EncoderParams(hidden=384, heads=12, ffn=1536, layers=1, max_len=64, rows=8, cols=8,
                      engines=2, max_tokens=64, debug=False)
    model = cycle_model(p, [9], ATTENTION_FIT[(12, 32, 4, 2)])
    assert abs(model["total"] / 528_709 - 1) < 0.005, model
    b = bounds(p, [9])
    assert b["weight_bytes"] == 1_769_472 and b["mac_bound"] == b["macs"] / 64


def test_cycle_model_minilm_layer_fabric_array():
    """The cycle model against the RTL count of MiniLM layer 0 on a 9-token sentence on the
    largest array the fit check accepts on the ECP5-85F: 12 x 12, the last 5 columns in logic,
    1 attention engine (528,182 cycles at f373fea, after the attention engines' earlier row
    hand-over, a 9-token sequence through ``sim.bench_encoder_rtl._run`` with these flags, the
    same harness as `lutra run encoder --layers 1 --rows 12 --cols 12 --fabric-cols 5
    --engines 1 --text "The cat sat on the mat."`; 528,577 at 5f86439)."""
    from hw.encoder.params import EncoderParams
    from sim.bench_encoder_rtl import ATTENTION_FIT, cycle_model
    p = EncoderParams(hidden=384, heads=12, ffn=1536, layers=1, max_len=64, rows=12, cols=12,
                      fabric_cols=5, engines=1, max_tokens=64, debug=False)
    model = cycle_model(p, [9], ATTENTION_FIT[(12, 32, 4, 1)])
    assert abs(model["total"] / 528_182 - 1) < 0.005, model


def test_bench_arrays_wrong(capsys):
    """``lutra bench encoder --rtl --arrays``: a malformed array is an error, status 2."""
    assert main(["bench", "encoder", "--rtl", "--model-only", "--arrays", "8x8,12by12"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "--arrays 12by12: an array is ROWSxCOLS[+FABRIC_COLS][eENGINES], e.g. 12x12+5e1, " \
           "not '12by12'" in err, err
