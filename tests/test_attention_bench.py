"""The attention schedule benchmark (sim/bench_attention.py) and its real lengths."""


def test_real_lengths_are_tokenized_paragraphs():
    from sim.attention_driver import real_lengths
    lengths = real_lengths()
    assert len(lengths) > 500
    assert min(lengths) >= 3            # [CLS], at least one token, [SEP]


def test_bench_runs(tmp_path, capsys):
    from sim.bench_attention import main
    assert main(["--batches", "1", "--batch", "6", "--engines", "1,2", "--cost", "8",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "target (d) <= 1.05 x lower bound" in out
    assert (tmp_path / "attention_schedule.png").stat().st_size > 10_000
