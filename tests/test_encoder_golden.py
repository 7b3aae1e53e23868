"""The integer encoder specification (sim/golden/encoder.py) and the integer LayerNorm golden model.

Checked from first principles: the TFLite ADD against a line-by-line transcription of
``reference_integer_ops/add.h`` in Python integers, every stage's dequantized value against the
float encoder, the composition against the blocks' own golden functions, OCTAV against the
quantization MSE it minimises, LayerNorm against float LayerNorm and its proved bounds at the
extremes; one real all-MiniLM-L6-v2 sentence end to end.
"""

import math

import numpy as np
import pytest

from sim.golden import encoder as enc
from sim.golden.gemm import gemm, quantize_multiplier
from sim.golden.layernorm import (BIAS_LIMIT, fold_layer_norm, isqrt, layer_norm_int,
                                  layer_norm_stages, norm_scale)
from sim.golden.softmax import lut_softmax

# ---- TFLite ADD, transcribed from reference_integer_ops/add.h with Python integers ------------


def _srdhm(a: int, b: int) -> int:
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    num = ab + nudge
    return -((-num) >> 31) if num < 0 else num >> 31          # truncating division


def _rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def _tflite_add(x1, x2, p: enc.AddParams) -> int:
    def stoe(x, m, s):          # MultiplyByQuantizedMultiplierSmallerThanOneExp
        return _rdbpot(_srdhm(x, m), -s)
    a = stoe((x1 + int(p.offsets[0])) * (1 << p.left_shift), int(p.multipliers[0]),
             int(p.shifts[0]))
    b = stoe((x2 + int(p.offsets[1])) * (1 << p.left_shift), int(p.multipliers[1]),
             int(p.shifts[1]))
    raw = stoe(a + b, p.out_multiplier, p.out_shift) + p.out_offset
    top = 1 << (p.bits - 1)
    return min(top - 1, max(-top, raw))


@pytest.mark.parametrize("in_bits", [8, 16])
def test_add_matches_tflite_reference(in_bits):
    rng = np.random.default_rng(in_bits)
    top = 1 << (in_bits - 1)
    for trial in range(20):
        s1, s2 = rng.uniform(1e-4, 1e-2, 2)
        s_out = max(s1, s2) * rng.uniform(0.6, 3.0)
        p = enc.AddParams.from_scales([s1, s2], s_out, in_bits=in_bits, bits=in_bits)
        assert p.left_shift == {8: 20, 16: 15}[in_bits]
        assert all(s <= 0 for s in p.shifts), "input multipliers must be < 1 (SmallerThanOne)"
        x1 = rng.integers(-top, top, 200)
        x2 = rng.integers(-top, top, 200)
        x1[:4], x2[:4] = [-top, top - 1, -top, top - 1], [-top, top - 1, top - 1, -top]
        got = enc.add_int((x1, x2), p)
        want = [_tflite_add(int(a), int(b), p) for a, b in zip(x1, x2)]
        assert got.tolist() == want, f"trial {trial}"
        real = (x1 * s1 + x2 * s2) / s_out
        assert np.abs(got - np.clip(real, -top, top - 1)).max() <= 1.01


def test_add_multipliers_follow_tflite_formulas():
    s1, s2, s_out = 0.003, 0.0011, 0.004
    p = enc.AddParams.from_scales([s1, s2], s_out, in_bits=16, bits=16)
    twice_max = 2 * max(s1, s2)
    for m, s, real in ((p.multipliers[0], p.shifts[0], s1 / twice_max),
                       (p.multipliers[1], p.shifts[1], s2 / twice_max),
                       (p.out_multiplier, p.out_shift, twice_max / ((1 << 15) * s_out))):
        assert (int(m), int(s)) == quantize_multiplier(real)


# ---- integer LayerNorm ------------------------------------------------------------------------


def test_isqrt_exact():
    v = np.arange(0, 70_000)
    assert isqrt(v).tolist() == [math.isqrt(int(x)) for x in v]
    rng = np.random.default_rng(1)
    big = rng.integers(0, 1 << 62, 2000)
    assert isqrt(big).tolist() == [math.isqrt(int(x)) for x in big]
    edges = np.array([(1 << 42) - 1, 1 << 42, (1 << 62) - 1])
    assert isqrt(edges).tolist() == [math.isqrt(int(x)) for x in edges]


def test_layer_norm_constant_row_gives_beta():
    gamma, beta = np.array([1.0, -2.0, 0.5]), np.array([0.25, -0.5, 0.0])
    f = fold_layer_norm(gamma, beta, out_scale=1 / 256)
    s = layer_norm_stages(np.full((1, 3), 77))
    assert s.var.item() == 0 and s.std.item() == 0 and not s.norm.any()
    out = layer_norm_int(np.full((1, 3), 77), multiplier=f.multiplier, shift=f.shift,
                         bias=f.bias, negate=f.negate, out_bits=16)
    assert out.tolist() == [[64, -128, 0]]


def test_layer_norm_hand_checked_row():
    x = np.array([[1, 2, 3, 6]])                    # sum 12, mean 3
    s = layer_norm_stages(x)
    assert s.mean.item() == 3 and s.centered.tolist() == [[-2, -1, 0, 3]]
    assert s.var.item() == 14 and s.std.item() == 3
    assert s.recip.item() == (1 << 31) // 3
    assert s.norm.tolist() == [[((-2 * ((1 << 31) // 3)) >> 11), ((-1 * ((1 << 31) // 3)) >> 11),
                                0, (3 * ((1 << 31) // 3)) >> 11]]


def test_layer_norm_mean_rounds_half_up():
    assert layer_norm_stages(np.array([[0, 1]])).mean.item() == 1          # 0.5 -> 1
    assert layer_norm_stages(np.array([[-1, 0]])).mean.item() == 0         # -0.5 -> 0
    assert layer_norm_stages(np.array([[-3, 0, 0]])).mean.item() == -1     # -1.0


@pytest.mark.parametrize("n", [1, 2, 384, 1024])
@pytest.mark.parametrize("lo,hi", [(-128, 127), (-32768, 32767)])
def test_layer_norm_extremes_stay_in_proved_bounds(n, lo, hi):
    rows = [np.full(n, lo), np.full(n, hi), np.where(np.arange(n) % 2, lo, hi),
            np.r_[hi, np.full(n - 1, lo)], np.r_[lo, np.full(n - 1, hi)]]
    s = layer_norm_stages(np.array(rows))
    assert np.abs(s.total).max() <= 1 << 25
    assert np.abs(s.centered).max() < 1 << 16
    assert s.var.max() < 1 << 42 and s.std.max() < 1 << 21
    assert s.recip.max() <= 1 << 31
    assert np.all(np.abs(s.centered) <= s.std)
    assert np.abs(s.norm).max() <= 1 << 20
    f = fold_layer_norm(np.full(n, -1.5), np.full(n, 3.0), out_scale=2 ** -12)
    out = layer_norm_int(np.array(rows), multiplier=f.multiplier, shift=f.shift, bias=f.bias,
                         negate=f.negate, out_bits=16)
    assert out.min() >= -32768 and out.max() <= 32767


def test_layer_norm_one_outlier_and_float_agreement():
    rng = np.random.default_rng(3)
    n = 384
    x = np.clip(rng.normal(0, 2000, (40, n)), -32768, 32767).astype(np.int64)
    x[:, 7] = 32767                                   # an outlier channel
    gamma, beta = rng.uniform(-1.5, 1.5, n), rng.uniform(-1, 1, n)
    s_out = 8 / 32767
    f = fold_layer_norm(gamma, beta, out_scale=s_out)
    out = layer_norm_int(x, multiplier=f.multiplier, shift=f.shift, bias=f.bias,
                         negate=f.negate, out_bits=16)
    xf = x.astype(np.float64)
    ref = (xf - xf.mean(-1, keepdims=True)) / xf.std(-1, keepdims=True) * gamma + beta
    err = np.abs(out * s_out - np.clip(ref, -32768 * s_out, 32767 * s_out)) / s_out
    # the integer mean (rounded) and the 2**-20 normalised grid cost about one int16 LSB
    assert err.max() < 2.0, f"max error {err.max():.2f} LSB"
    f8 = fold_layer_norm(gamma, beta, out_scale=8 / 127)
    out8 = layer_norm_int(x, multiplier=f8.multiplier, shift=f8.shift, bias=f8.bias,
                          negate=f8.negate, out_bits=8)
    err8 = np.abs(out8 * 8 / 127 - np.clip(ref, -128 * 8 / 127, 8)) / (8 / 127)
    assert err8.max() <= 0.51, f"int8: max error {err8.max():.3f} LSB"


def test_fold_layer_norm_negative_and_zero_gamma():
    f = fold_layer_norm(np.array([-1.0, 0.0, 1e-40]), np.array([0.5, 0.5, 0.5]),
                        out_scale=1 / 128)
    assert f.negate.tolist() == [True, False, False]
    assert f.multiplier[1] == 0 and f.bias[1] == 0
    assert f.multiplier[2] == 0
    assert f.bias[0] == round(0.5 / norm_scale(3))
    assert np.abs(f.bias).max() <= BIAS_LIMIT


@pytest.mark.parametrize("bad,error,message", [
    (np.zeros((1, 0), np.int64), ValueError, "x must have at least one element"),
    (np.zeros((1, 1025), np.int64), ValueError, "x rows must have at most 1024 elements"),
    (np.full((1, 3), 40000), ValueError, "x must fit signed 16 bits"),
    (np.zeros((1, 3)), TypeError, "x must hold integers, not float64"),
])
def test_layer_norm_rejects_bad_input(bad, error, message):
    with pytest.raises(error, match=message):
        layer_norm_stages(bad)


# ---- OCTAV --------------------------------------------------------------------------------------


def _quant_mse(x, clip, bits):
    step = clip / ((1 << (bits - 1)) - 1)
    q = np.clip(np.round(x / step), -(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1) * step
    return float(np.mean((x - q) ** 2))


@pytest.mark.parametrize("bits", [4, 8])
def test_octav_minimises_quantization_mse(bits):
    x = np.random.default_rng(bits).standard_t(3, 200_000)       # heavy tails: clipping pays
    s = enc.octav_clip(x, bits)
    mse = _quant_mse(x, s, bits)
    assert mse < _quant_mse(x, np.abs(x).max(), bits)
    for factor in (0.8, 1.25):
        assert mse <= _quant_mse(x, s * factor, bits) * 1.02


# ---- the encoder specification on a tiny random encoder ----------------------------------------


@pytest.fixture(scope="module")
def tiny():
    weights = enc.random_weights(layers=2, hidden=32, heads=2, ffn=64, vocab=100, max_len=16)
    rng = np.random.default_rng(7)
    calibration = [rng.integers(0, 100, n) for n in (5, 9, 16, 12, 3, 14)]
    return weights, enc.quantize(weights, calibration)


def test_shared_tables_give_every_layer_one_softmax_and_gelu_scale(tiny):
    weights, model = tiny
    assert len({layer.softmax_scale for layer in model.layers}) == 1
    assert len({layer.gelu.scale for layer in model.layers}) == 1
    for layer in model.layers:
        assert math.log2(layer.softmax_scale).is_integer()
        assert math.log2(layer.gelu.scale).is_integer()
    with pytest.raises(TypeError, match="shared_tables must be a bool, not 'yes'"):
        enc.quantize(weights, [np.arange(4)], shared_tables="yes")


def test_tiny_dimensions_from_weights(tiny):
    weights, model = tiny
    assert (model.hidden, model.heads, model.ffn, model.num_layers, model.max_len) == \
        (32, 2, 64, 2, 16)
    assert enc.encoder_dims(weights)["vocab"] == 100


@pytest.mark.parametrize("length", [1, 7, 16])
def test_tiny_stage_widths_and_shapes(tiny, length):
    _, model = tiny
    ids = np.random.default_rng(length).integers(0, 100, length)
    out = enc.forward(model, ids)
    assert out["embedding"].dtype == np.float32
    assert abs(float(np.linalg.norm(out["embedding"])) - 1) < 1e-5
    bits = {"q": 8, "k": 8, "v": 8, "context": 8, "attn_out": 16, "resid1": 16, "ln1": 16,
            "gelu": 16, "ffn2": 16, "resid2": 16, "ln2": 16, "scores": 8, "ffn1": 12}
    for n, layer in enumerate(out["layers"]):
        assert set(layer) == set(enc.STAGES)
        for stage, width in bits.items():
            v = layer[stage]
            assert v.dtype == np.int64, f"layer {n} {stage}"
            assert v.min() >= -(1 << (width - 1)) and v.max() < 1 << (width - 1), \
                f"layer {n} {stage} outside int{width}"
        assert layer["probs"].min() >= 0 and layer["probs"].max() <= 255
        assert layer["scores"].shape == (2, length, length)
        assert layer["ffn1"].shape == (length, 64)
    assert out["pooled"].tolist() == out["layers"][-1]["ln2"].sum(axis=0).tolist()


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_tiny_stages_dequantize_to_the_float_encoder(tiny):
    weights, model = tiny
    ids = np.random.default_rng(11).integers(0, 100, 12)
    out = enc.forward(model, ids)
    trace = enc.forward_float(weights, ids, trace=True)["trace"]
    sc = model.scales
    for stage in ("q", "k", "v", "context", "attn_out", "resid1", "ln1", "gelu", "ffn2",
                  "resid2", "ln2"):
        got = out["layers"][0][stage] * sc[f"0.{stage}"]
        assert _cos(got, trace[f"0.{stage}"]) > 0.995, stage
    assert _cos(out["embedding"], enc.forward_float(weights, ids)["embedding"]) > 0.995


def test_tiny_composes_the_block_golden_functions(tiny):
    _, model = tiny
    ids = np.random.default_rng(5).integers(0, 100, 10)
    st = enc.forward(model, ids)["layers"][1]
    layer = model.layers[1]
    q = gemm(st["input"], layer.q.weight, bias=layer.q.bias, multiplier=layer.q.out.multiplier,
             shift=layer.q.out.shift)
    assert q.tolist() == st["q"].tolist()
    d = model.head_dim
    for h in range(model.heads):
        cols = slice(h * d, (h + 1) * d)
        s = gemm(st["q"][:, cols], st["k"][:, cols].T, multiplier=layer.scores.multiplier,
                 shift=layer.scores.shift)
        assert s.tolist() == st["scores"][h].tolist()
        p = lut_softmax(s, scale=layer.softmax_scale, method="recip")
        assert p.tolist() == st["probs"][h].tolist()
        c = gemm(p - 128, st["v"][:, cols], a_offset=128, multiplier=layer.context.multiplier,
                 shift=layer.context.shift)
        assert c.tolist() == st["context"][:, cols].tolist()
    ln = layer.ln1
    assert layer_norm_int(st["resid1"], multiplier=ln.multiplier, shift=ln.shift, bias=ln.bias,
                          negate=ln.negate, out_bits=16).tolist() == st["ln1"].tolist()


def test_save_load_round_trip(tiny, tmp_path):
    _, model = tiny
    path = tmp_path / "tiny.npz"
    model.save(path)
    back = enc.QuantizedEncoder.load(path)
    ids = np.arange(1, 12)
    a, b = enc.forward(model, ids), enc.forward(back, ids)
    assert a["pooled"].tolist() == b["pooled"].tolist()
    for la, lb in zip(a["layers"], b["layers"]):
        for stage in enc.STAGES:
            assert np.array_equal(la[stage], lb[stage]), stage
    assert back.scales == model.scales and back.softmax == model.softmax


def test_block_sparse_pattern_masks_keys(tiny):
    weights, _ = tiny
    rng = np.random.default_rng(2)
    calibration = [rng.integers(0, 100, 16) for _ in range(3)]
    pattern = {"block": 4, "window": 0, "n_global": 1, "causal": True}
    model = enc.quantize(weights, calibration, pattern=pattern)
    ids = rng.integers(0, 100, 14)
    out = enc.forward(model, ids)
    from sim.golden.attention import token_mask
    mask = token_mask(14, **pattern)
    for layer in out["layers"]:
        assert not layer["probs"][:, ~mask].any()
        sums = layer["probs"].sum(-1)
        assert np.all(np.abs(sums - 256) <= 16), "each row's probabilities sum to ~1"


@pytest.mark.parametrize("softmax", enc.SOFTMAX_METHODS)
@pytest.mark.parametrize("gelu", enc.GELU_METHODS)
def test_every_method_runs_and_stays_close(tiny, softmax, gelu):
    weights, _ = tiny
    rng = np.random.default_rng(9)
    calibration = [rng.integers(0, 100, n) for n in (8, 16, 11)]
    model = enc.quantize(weights, calibration, softmax=softmax, gelu=gelu, clip="max")
    ids = rng.integers(0, 100, 9)
    cos = _cos(enc.forward(model, ids)["embedding"], enc.forward_float(weights, ids)["embedding"])
    assert cos > 0.9, f"{softmax}/{gelu}: cosine {cos:.4f}"


@pytest.mark.parametrize("kwargs,message", [
    ({"softmax": "exp"}, "softmax must be one of recip, lut2d, shiftmax, not 'exp'"),
    ({"gelu": "tanh"}, "gelu must be one of shift, poly, lut, not 'tanh'"),
    ({"clip": "mse"}, "clip must be one of octav, max, not 'mse'"),
])
def test_quantize_rejects_bad_options(tiny, kwargs, message):
    weights, _ = tiny
    with pytest.raises(ValueError) as info:
        enc.quantize(weights, [np.arange(4)], **kwargs)
    assert str(info.value) == message


def test_forward_rejects_bad_tokens(tiny):
    _, model = tiny
    with pytest.raises(ValueError, match="at least one token"):
        enc.forward(model, np.array([], np.int64))
    with pytest.raises(ValueError, match="at most 16"):
        enc.forward(model, np.zeros(17, np.int64))
    with pytest.raises(ValueError, match=r"token_ids must be in \[0, 99\]"):
        enc.forward(model, np.array([100]))
    with pytest.raises(TypeError, match="1-D integer array"):
        enc.forward(model, np.zeros(3))


# ---- one real all-MiniLM-L6-v2 sentence -------------------------------------------------------


def test_minilm_one_sentence_end_to_end():
    from sim.minilm import CALIBRATION, SENTENCES, forward, load_weights, token_ids
    weights = load_weights()
    model = enc.quantize(weights, [token_ids(s) for s in CALIBRATION[:6]])
    assert (model.hidden, model.heads, model.ffn, model.num_layers) == (384, 12, 1536, 6)
    sentence = SENTENCES[6]
    want = forward(sentence)["embedding"]
    ids = token_ids(sentence)
    assert _cos(enc.forward_float(weights, ids)["embedding"], want) > 0.99999
    assert _cos(enc.forward(model, ids)["embedding"], want) > 0.99


def test_lutra_bench_encoder_defaults(capsys):
    from gen.cli import main
    assert main(["bench", "encoder", "--defaults-only", "--sentences", "3"]) == 0
    out = capsys.readouterr().out
    assert "| integer only, defaults |" in out
    assert "targets (cos min >= 0.99, mean >= 0.995, Spearman >= 0.98): met" in out
    assert main(["bench", "encoder", "--sentences", "1"]) == 2
    assert capsys.readouterr().err.strip() == \
        "lutra: error: --sentences must be in [3, 41], not 1"


@pytest.mark.parametrize("call,error,message", [
    (lambda: enc.random_weights(hidden=8.0), TypeError, "hidden must be an integer, not 8.0"),
    (lambda: enc.random_weights(heads=0), ValueError, "heads must be >= 1, not 0"),
    (lambda: enc.random_weights(hidden=32, heads=3), ValueError,
     "heads must divide hidden=32, not 3"),
    (lambda: quantize_multiplier("x"), TypeError, "real multiplier must be a number, not 'x'"),
    (lambda: norm_scale("x"), TypeError, "hidden must be an integer, not 'x'"),
    (lambda: norm_scale(0), ValueError, "hidden must be in [1, 1024], not 0"),
])
def test_golden_helpers_name_bad_arguments(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message
