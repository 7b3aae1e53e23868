"""The integer-only BERT-style encoder: Lutra's specification of a whole transformer layer stack.

This module composes the blocks' golden functions into an encoder; the RTL encoder (issue 13) and
the attention unit (issue 12) must match :func:`forward` bit for bit at every stage boundary.
From the quantized token ids to the pooled sum everything is integer: floats appear only in
:func:`quantize` (calibration, folding scales into multipliers) and in the reported embedding.

The recipe (why: the README's "Encoder" section and ``lutra bench encoder``)
-------------------------------------------------------------------------
Weights int8, symmetric, one scale per output channel (``[-127, 127]``); biases int32 at
``S_in * S_w[c]``. Activations: int8 where the values are well behaved (Q, K, V, attention
scores, the attention context), **int16** for the residual stream (attention and FFN outputs,
residual sums, LayerNorm inputs and outputs) and for the GELU output that enters the second FFN
GEMM: all-MiniLM-L6-v2 carries outlier channels there, and int8 loses them (cosine to float
0.54-0.80 with every activation int8). The GEMM core takes 16-bit activations at no extra DSP cost
(``a_width=16``). Every change of scale is one TFLite requantization
(``quantize_multiplier`` + ``multiply_by_quantized_multiplier``), per channel where the weights are.

Stages of one layer (``T`` tokens, ``H`` hidden, ``h`` heads of ``d = H / h``, ``F`` FFN width):

=================  =============================================================  ==========
stage              integer operation (golden function)                            output
=================  =============================================================  ==========
``q``, ``k``, ``v``  ``gemm(x, W, bias, per-channel M)`` (``sim.golden.gemm``)     int8
``scores``         per head ``gemm(q_h, k_h^T)`` requantized with the scalar            int8
                   ``S_q S_k / (sqrt(d) S_s)``; ``S_s`` a power of two
``probs``          softmax of each score row over the keys it may see:            uint8, 2**-8
                   ``lut_softmax`` (``recip``, ``lut2d``) or ``shiftmax`` with
                   ``out_bits = 9`` (``sim.golden.softmax``)
``context``        per head ``gemm(p - 128, v_h, a_offset=128)`` requantized to      int8
                   ``S_c`` (TFLite's zero point -128 for unsigned probabilities)
``attn_out``       ``gemm(context, W_o, ...)``                                       int16
``resid1``         TFLite ``ADD(x, attn_out)`` (:func:`add_int`, int16 recipe,       int16
                   left shift 15)
``ln1``            ``layer_norm_int`` (``sim.golden.layernorm``), gamma/beta folded   int16
``ffn1``           ``gemm(ln1, W_1, ...)`` to the GELU input scale (power of two)    method's
``gelu``           ``shift_gelu`` (row max), ``i_gelu`` or ``lut_gelu``            raw
                   (``sim.golden.gelu``), then one requantization to int16            int16
``ffn2``           ``gemm(gelu, W_2, ...)``                                          int16
``resid2``         ``ADD(ln1, ffn2)``                                                int16
``ln2``            ``layer_norm_int``: the layer's output                            int16
=================  =============================================================  ==========

Embeddings: the word, position and token-type tables are int8 (one scale per table); a token's
three rows are brought to a common int16 scale and summed by the same N-input TFLite ADD recipe
(left shift 20 for int8 inputs), then the integer LayerNorm. The host looks the rows up (they
are table reads, not arithmetic). Pooling: the integer sum over the tokens of the last layer's
output (int64); the reported embedding is that sum as float32, L2-normalised (mean pooling's
division by ``T`` does not change the direction).

Attention masks: dense by default (one sequence per call, so there are no padded keys); with
``pattern`` (``block``, ``window``, ``n_global``, ``causal``) each query row sees the keys of
``sim.golden.attention.token_mask`` only, and its softmax runs over those keys alone.

Scale rules (:func:`quantize`): per-tensor activation scales from calibration sentences, by the
largest magnitude (``clip="max"``) or by OCTAV (``clip="octav"``, Sakr et al. ICML 2022, the
MSE-optimal clipping ``s <- E[|x| 1{|x|>s}] / (4**-B / 3 E[1{|x|<=s}] + E[1{|x|>s}])``, a few
Newton-Raphson steps from ``E|x|``). The softmax and GELU input scales are rounded **up to
powers of two** (every table the blocks build accepts any positive scale; powers of two make
``x0 = floor(-1/S)`` and the table indices exact shifts in the hardware and never clip more than
calibration asked).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .add import AddParams, add_int
from .attention import token_mask
from .gelu import gelu_exact, i_gelu, lut_gelu, shift_gelu
from .gemm import gemm_accumulate, quantize_multiplier, requantize
from .layernorm import LayerNormFold, fold_layer_norm, layer_norm_int
from .softmax import lut_softmax, shiftmax

__all__ = ["SOFTMAX_METHODS", "GELU_METHODS", "CLIP_RULES", "STAGES", "Requant", "Linear",
           "AddParams", "LayerNormQ", "GeluQ", "EmbeddingQ", "LayerQ", "QuantizedEncoder",
           "quantize", "forward", "forward_float", "layer_norm_int", "add_int", "octav_clip",
           "linear_int", "attention_int", "softmax_int", "gelu_int", "random_weights",
           "encoder_dims"]

SOFTMAX_METHODS = ("recip", "lut2d", "shiftmax")
GELU_METHODS = ("shift", "poly", "lut")
CLIP_RULES = ("octav", "max")

#: Stage boundaries of one layer, in order (keys of ``forward(...)["layers"][n]``).
STAGES = ("input", "q", "k", "v", "scores", "probs", "context", "attn_out", "resid1", "ln1",
          "ffn1", "gelu", "ffn2", "resid2", "ln2")

#: Bits of each activation tensor (the recipe above). GELU input widths depend on the method.
ACT_BITS = {"emb_sum": 16, "hidden": 16, "q": 8, "k": 8, "v": 8, "scores": 8, "context": 8,
            "attn_out": 16, "resid1": 16, "ln1": 16, "gelu": 16, "ffn2": 16, "resid2": 16}
GELU_IN_BITS = {"shift": 8, "poly": 16, "lut": 12}
#: Probabilities: unsigned 8-bit at scale 2**-8 for every softmax method.
PROB_BITS = 8
PROB_SCALE = 2.0 ** -PROB_BITS
#: ShiftMax settings: I-ViT's n, and out_bits 9 so that its 2**-(out_bits-1) scale is 2**-8.
SHIFTMAX_N = 15
SHIFTMAX_OUT_BITS = PROB_BITS + 1
#: ShiftGELU settings (I-ViT): n and the sigmoid bits.
SHIFT_GELU_N = 23
GELU_SIG_BITS = 8


# ---- integer building blocks ------------------------------------------------------------------

@dataclass
class Requant:
    """One TFLite requantization: ``clamp(MBQM(acc, multiplier, shift) + zero_point)`` to a
    signed ``bits``-bit range (``multiplier``/``shift`` scalars or one per channel)."""

    multiplier: np.ndarray
    shift: np.ndarray
    zero_point: int = 0
    bits: int = 8

    @classmethod
    def from_real(cls, real, *, bits: int, zero_point: int = 0) -> Requant:
        real = np.atleast_1d(np.asarray(real, np.float64))
        pairs = [quantize_multiplier(float(r)) for r in real]
        mult = np.array([m for m, _ in pairs], np.int64)
        shift = np.array([s for _, s in pairs], np.int64)
        if mult.size == 1:
            mult, shift = mult.reshape(()), shift.reshape(())
        return cls(mult, shift, int(zero_point), int(bits))

    def __call__(self, acc) -> np.ndarray:
        top = 1 << (self.bits - 1)
        return requantize(acc, self.multiplier, self.shift, out_zero_point=self.zero_point,
                          act_min=-top, act_max=top - 1)


@dataclass
class Linear:
    """A GEMM stage: ``weight`` int8 ``[K, N]`` (per-channel scales folded into ``out``), int32
    ``bias`` at ``S_in * S_w``, ``a_offset`` (``-zero_point`` of the input) and the
    requantization of the int32 accumulators."""

    weight: np.ndarray
    bias: np.ndarray
    a_offset: int
    out: Requant


def linear_int(x, lin: Linear) -> np.ndarray:
    """``lin.out(gemm_accumulate(x, W) + bias)``: the GEMM core with its requantizer."""
    return lin.out(gemm_accumulate(x, lin.weight, bias=lin.bias, a_offset=lin.a_offset))


@dataclass
class LayerNormQ:
    """An integer LayerNorm stage: ``gamma``/``beta`` folded (``fold_layer_norm``)."""

    multiplier: np.ndarray
    shift: np.ndarray
    bias: np.ndarray
    negate: np.ndarray
    zero_point: int = 0
    bits: int = 16
    #: The float gamma/beta the fold came from: only for the float ablation of the benchmark.
    gamma: np.ndarray | None = None
    beta: np.ndarray | None = None

    def __call__(self, x) -> np.ndarray:
        return layer_norm_int(x, multiplier=self.multiplier, shift=self.shift, bias=self.bias,
                              negate=self.negate, out_zero_point=self.zero_point,
                              out_bits=self.bits)


def _ln_q(gamma, beta, out_scale: float, bits: int) -> LayerNormQ:
    f: LayerNormFold = fold_layer_norm(gamma, beta, out_scale=out_scale)
    return LayerNormQ(f.multiplier, f.shift, f.bias, f.negate.astype(bool), 0, bits,
                      np.asarray(gamma, np.float64), np.asarray(beta, np.float64))


@dataclass
class GeluQ:
    """The GELU stage: method, input scale (a power of two) and width, then the requantization
    of the method's raw output to the int16 FFN2 input."""

    method: str
    scale: float
    in_bits: int
    out: Requant


def gelu_int(x, g: GeluQ) -> np.ndarray:
    """The GELU stage: Lutra's GELU unit, then one requantization to ``g.out.bits`` bits."""
    if g.method == "shift":
        y, _ = shift_gelu(x, g.scale, n=SHIFT_GELU_N, out_bits=GELU_SIG_BITS, max_mode="row",
                          in_width=g.in_bits)
    elif g.method == "poly":
        y, _ = i_gelu(x, g.scale, in_width=g.in_bits)
        y = -y                  # i-GELU's output scale is negative: fold the sign here
    else:
        y, _ = lut_gelu(x, g.scale, out_bits=GELU_SIG_BITS, in_width=g.in_bits)
    return g.out(y)


def _gelu_raw_scale(method: str, scale: float, in_bits: int) -> float:
    """Real value of one unit of the method's raw output (positive; poly's sign is folded)."""
    if method == "poly":
        return abs(i_gelu(np.zeros(1, np.int64), scale, in_width=in_bits)[1])
    return scale * 2.0 ** -(GELU_SIG_BITS - 1)


def softmax_int(scores, method: str, scale: float) -> np.ndarray:
    """Lutra's softmax of integer score rows (last axis): unsigned ``PROB_BITS``-bit
    probabilities at scale ``2**-PROB_BITS``."""
    if method == "shiftmax":
        y, _ = shiftmax(scores, scale, n=SHIFTMAX_N, out_bits=SHIFTMAX_OUT_BITS)
        return y
    return lut_softmax(scores, scale=scale, method=method, out_bits=PROB_BITS)


@dataclass
class EmbeddingQ:
    """int8 embedding tables (one scale per table), their int16 sum and LayerNorm."""

    word: np.ndarray
    position: np.ndarray
    token_type: np.ndarray
    add: AddParams
    ln: LayerNormQ


@dataclass
class LayerQ:
    """Every integer tensor and requantization parameter of one encoder layer."""

    q: Linear
    k: Linear
    v: Linear
    scores: Requant         # scalar: S_q S_k / (sqrt(d) S_s), to int8
    softmax_scale: float    # S_s (power of two)
    context: Requant        # scalar: 2**-8 S_v / S_c, to int8
    o: Linear
    add1: AddParams
    ln1: LayerNormQ
    ffn1: Linear
    gelu: GeluQ
    ffn2: Linear
    add2: AddParams
    ln2: LayerNormQ


@dataclass
class QuantizedEncoder:
    """A quantized BERT-style encoder: every integer tensor and requantization parameter.

    ``scales`` keeps the real scale of every activation tensor (for reports and for decoding
    stage outputs; the forward pass never reads it). ``save``/``load`` use one ``.npz``.
    """

    hidden: int
    heads: int
    ffn: int
    max_len: int
    softmax: str
    gelu: str
    clip: str
    embeddings: EmbeddingQ
    layers: list[LayerQ]
    scales: dict = field(default_factory=dict)
    pattern: dict | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def save(self, path) -> None:
        """Write every field to one ``.npz`` (arrays as arrays, the rest as JSON)."""
        arrays, meta = {}, {}
        _flatten(self, "", arrays, meta)
        arrays["__meta__"] = np.array(json.dumps(meta))
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path) -> QuantizedEncoder:
        """Read a model written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("__meta__")))
        return _unflatten(cls, "", arrays, meta)


def _flatten(obj, prefix, arrays, meta):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _flatten(value, key + ".", arrays, meta)
        elif isinstance(value, list):
            meta[key] = len(value)
            for n, item in enumerate(value):
                _flatten(item, f"{key}.{n}.", arrays, meta)
        elif isinstance(value, np.ndarray):
            arrays[key] = value
        else:
            meta[key] = value


_TYPES = {}


def _unflatten(cls, prefix, arrays, meta):
    kwargs = {}
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    for name, hint in hints.items():
        key = f"{prefix}{name}"
        hint = str(hint)
        if key in arrays:
            kwargs[name] = arrays[key]
        elif hint.startswith("list["):
            item = _TYPES[re.match(r"list\[(\w+)\]", hint).group(1)]
            kwargs[name] = [_unflatten(item, f"{key}.{n}.", arrays, meta)
                            for n in range(meta[key])]
        elif hint in _TYPES:
            kwargs[name] = _unflatten(_TYPES[hint], key + ".", arrays, meta)
        else:
            kwargs[name] = meta[key]
    return cls(**kwargs)


for _cls in (Requant, Linear, AddParams, LayerNormQ, GeluQ, EmbeddingQ, LayerQ):
    _TYPES[_cls.__name__] = _cls


# ---- forward ------------------------------------------------------------------------------------

def attention_int(q, k, v, layer: LayerQ, *, heads: int, softmax: str, mask=None) -> dict:
    """Multi-head attention of one sequence from its int8 ``q``, ``k``, ``v`` ``[T, H]``.

    Returns ``scores`` (int8 ``[h, T, T]``; entries outside ``mask`` are 0 and unused),
    ``probs`` (uint8 ``[h, T, T]``, 0 outside ``mask``) and ``context`` (int8 ``[T, H]``, heads
    concatenated). This is the contract of the attention unit (``hw/attention``).
    """
    length, hidden = q.shape
    d = hidden // heads
    scores = np.zeros((heads, length, length), np.int64)
    probs = np.zeros((heads, length, length), np.int64)
    context = np.zeros((length, hidden), np.int64)
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        s = layer.scores(gemm_accumulate(q[:, cols], k[:, cols].T))
        if mask is None:
            p = softmax_int(s, softmax, layer.softmax_scale)
        else:
            s = np.where(mask, s, 0)
            p = np.zeros_like(s)
            for row in range(length):
                keys = np.flatnonzero(mask[row])
                p[row, keys] = softmax_int(s[row, keys], softmax, layer.softmax_scale)
        scores[h], probs[h] = s, p
        # P in [0, 255] enters the GEMM as int8 p - 128 with a_offset 128 (TFLite zero point)
        context[:, cols] = layer.context(gemm_accumulate(p - 128, v[:, cols], a_offset=128))
    return {"scores": scores, "probs": probs, "context": context}


def _check_ids(model: QuantizedEncoder, token_ids) -> np.ndarray:
    ids = np.asarray(token_ids)
    if ids.dtype.kind not in "iu" or ids.ndim != 1:
        raise TypeError(f"token_ids must be a 1-D integer array, not {ids.dtype} of shape "
                        f"{ids.shape}")
    if ids.size == 0:
        raise ValueError("token_ids must hold at least one token")
    if ids.size > model.max_len:
        raise ValueError(f"token_ids holds {ids.size} tokens; this model takes at most "
                         f"{model.max_len}")
    vocab = model.embeddings.word.shape[0]
    if ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(f"token_ids must be in [0, {vocab - 1}]")
    return ids.astype(np.int64)


def embed_int(model: QuantizedEncoder, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The int16 embedding sum of each token and its integer LayerNorm."""
    e = model.embeddings
    length = len(ids)
    word = e.word[ids]
    rows = (word, e.position[:length], np.broadcast_to(e.token_type[0], word.shape))
    total = add_int(rows, e.add)
    return total, e.ln(total)


def forward(model: QuantizedEncoder, token_ids, *, float_stages=()) -> dict:
    """Run one sequence of token ids through the integer encoder.

    Returns ``"embedding"`` (float32, L2-normalised pooled sum), ``"pooled"`` (the int64 sum of
    the last layer's outputs over the tokens), ``"embeddings"`` (``{"sum", "ln"}``) and
    ``"layers"``: per layer a dict of the integer tensors at every stage boundary (keys
    :data:`STAGES`; ``scores``/``probs`` are ``[heads, T, T]``, the rest ``[T, width]``).

    ``float_stages`` (a subset of ``{"softmax", "gelu", "layernorm"}``) replaces those
    nonlinearities by their float versions on the dequantized inputs, re-quantized to the same
    integer outputs: only for the accuracy ablation of ``lutra bench encoder``, never the
    specification.
    """
    ids = _check_ids(model, token_ids)
    float_stages = frozenset(float_stages)
    unknown = float_stages - {"softmax", "gelu", "layernorm"}
    if unknown:
        raise ValueError(f"float_stages: unknown stage(s) {sorted(unknown)}")
    sc = model.scales
    mask = None
    if model.pattern:
        mask = token_mask(len(ids), **model.pattern)
    total, x = embed_int(model, ids)
    if "layernorm" in float_stages:
        x = _float_ln(total, sc["emb_sum"], model.embeddings.ln, sc["hidden"])
    layers = []
    for n, layer in enumerate(model.layers):
        st = {"input": x}
        st["q"] = linear_int(x, layer.q)
        st["k"] = linear_int(x, layer.k)
        st["v"] = linear_int(x, layer.v)
        if "softmax" in float_stages:
            att = _float_attention(st["q"], st["k"], st["v"], layer, model, n, mask)
        else:
            att = attention_int(st["q"], st["k"], st["v"], layer, heads=model.heads,
                                softmax=model.softmax, mask=mask)
        st.update(att)
        st["attn_out"] = linear_int(st["context"], layer.o)
        st["resid1"] = add_int((x, st["attn_out"]), layer.add1)
        if "layernorm" in float_stages:
            st["ln1"] = _float_ln(st["resid1"], sc[f"{n}.resid1"], layer.ln1, sc[f"{n}.ln1"])
        else:
            st["ln1"] = layer.ln1(st["resid1"])
        st["ffn1"] = linear_int(st["ln1"], layer.ffn1)
        if "gelu" in float_stages:
            st["gelu"] = _float_gelu(st["ffn1"], layer.gelu, sc[f"{n}.gelu"])
        else:
            st["gelu"] = gelu_int(st["ffn1"], layer.gelu)
        st["ffn2"] = linear_int(st["gelu"], layer.ffn2)
        st["resid2"] = add_int((st["ln1"], st["ffn2"]), layer.add2)
        if "layernorm" in float_stages:
            st["ln2"] = _float_ln(st["resid2"], sc[f"{n}.resid2"], layer.ln2, sc[f"{n}.ln2"])
        else:
            st["ln2"] = layer.ln2(st["resid2"])
        x = st["ln2"]
        layers.append(st)
    pooled = x.sum(axis=0)
    norm = float(np.sqrt(np.sum(pooled.astype(np.float64) ** 2)))
    embedding = (pooled / norm if norm > 0 else pooled * 0.0).astype(np.float32)
    return {"embedding": embedding, "pooled": pooled,
            "embeddings": {"sum": total, "ln": layers[0]["input"] if layers else x},
            "layers": layers}


# ---- float stand-ins for the ablation (not the specification) --------------------------------

def _quant(x, scale: float, bits: int) -> np.ndarray:
    top = 1 << (bits - 1)
    return np.clip(np.round(x / scale), -top, top - 1).astype(np.int64)


def _float_ln(x, in_scale, ln: LayerNormQ, out_scale) -> np.ndarray:
    g, b = ln.gamma, ln.beta
    xf = x * in_scale
    mu = xf.mean(-1, keepdims=True)
    var = ((xf - mu) ** 2).mean(-1, keepdims=True)
    return _quant((xf - mu) / np.sqrt(var + 1e-12) * g + b, out_scale, ln.bits)


def _float_gelu(x, g: GeluQ, out_scale) -> np.ndarray:
    return _quant(gelu_exact(x * g.scale), out_scale, g.out.bits)


def _float_attention(q, k, v, layer: LayerQ, model: QuantizedEncoder, n: int, mask) -> dict:
    sc = model.scales
    heads, d = model.heads, model.head_dim
    length = q.shape[0]
    scores = np.zeros((heads, length, length), np.int64)
    probs = np.zeros((heads, length, length), np.int64)
    context = np.zeros_like(q)
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        s = layer.scores(gemm_accumulate(q[:, cols], k[:, cols].T))
        sf = s * layer.softmax_scale
        if mask is not None:
            sf = np.where(mask, sf, -np.inf)
        e = np.exp(sf - sf.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
        ctx = p @ (v[:, cols] * sc[f"{n}.v"])
        scores[h] = s
        probs[h] = np.clip(np.round(p / PROB_SCALE), 0, 255)
        context[:, cols] = _quant(ctx, sc[f"{n}.context"], ACT_BITS["context"])
    return {"scores": scores, "probs": probs, "context": context}


# ---- float reference and calibration ----------------------------------------------------------

def encoder_dims(weights: dict, heads: int | None = None) -> dict:
    """Dimensions of a BERT-style encoder read from its weights (HuggingFace names).

    The number of heads is not in the weights: ``heads`` if given, else a 0-d
    ``"num_attention_heads"`` entry of ``weights``, else ``hidden // 32`` (all-MiniLM-L6-v2's
    head size).
    """
    try:
        word = weights["embeddings.word_embeddings.weight"]
    except KeyError:
        raise ValueError("weights: no 'embeddings.word_embeddings.weight' (not a BERT-style "
                         "encoder)") from None
    hidden = int(word.shape[1])
    layers = 0
    while f"encoder.layer.{layers}.attention.self.query.weight" in weights:
        layers += 1
    if heads is None:
        heads = int(weights["num_attention_heads"]) if "num_attention_heads" in weights \
            else max(1, hidden // 32)
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or hidden % heads:
        raise ValueError(f"heads must be a positive divisor of hidden={hidden}, not {heads!r}")
    ffn = int(weights["encoder.layer.0.intermediate.dense.weight"].shape[0]) if layers else 0
    return {"hidden": hidden, "heads": heads, "ffn": ffn, "layers": layers,
            "vocab": int(word.shape[0]),
            "max_len": int(weights["embeddings.position_embeddings.weight"].shape[0])}


def _dynamic_uint8(x: np.ndarray) -> np.ndarray:
    """ONNX Runtime's dynamic activation quantization: uint8, asymmetric, range of this very
    tensor (including 0), round half to even; returned dequantized."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zero = np.clip(np.round(-lo / scale), 0, 255)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def forward_float(weights: dict, token_ids, *, heads: int | None = None,
                  trace: bool = False, dynamic_int8: bool = False) -> dict:
    """The float encoder (BERT post-LayerNorm, exact-erf GELU, mean pooling) in float64.

    With ``trace`` it also returns every stage's float tensor, keyed as the integer stages,
    for calibration. This is the reference the integer encoder is measured against; on
    all-MiniLM-L6-v2 it matches ``sim.minilm.forward``. ``dynamic_int8`` is the baseline users
    know from ONNX Runtime's dynamic quantization: every dense layer's input quantized to uint8
    per tensor at run time and its weights to int8 per output channel, everything else float.
    """
    dims = encoder_dims(weights, heads)
    hidden, nh = dims["hidden"], dims["heads"]
    d = hidden // nh
    ids = np.asarray(token_ids, np.int64)
    length = len(ids)
    w = {k: np.asarray(v, np.float64) for k, v in weights.items() if k != "num_attention_heads"}
    t = {}

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def dense(x, name):
        weight = w[f"{name}.weight"]
        if dynamic_int8:
            peak = np.abs(weight).max(axis=1, keepdims=True)
            step = np.where(peak > 0, peak / 127.0, 1.0)
            weight = np.clip(np.round(weight / step), -127, 127) * step
            x = _dynamic_uint8(x)
        return x @ weight.T + w[f"{name}.bias"]

    t["emb_word"] = w["embeddings.word_embeddings.weight"][ids]
    t["emb_sum"] = (t["emb_word"] + w["embeddings.position_embeddings.weight"][:length]
                    + w["embeddings.token_type_embeddings.weight"][0])
    x = ln(t["emb_sum"], "embeddings.LayerNorm")
    t["hidden"] = x
    for n in range(dims["layers"]):
        p = f"encoder.layer.{n}"
        q = dense(x, f"{p}.attention.self.query")
        k = dense(x, f"{p}.attention.self.key")
        v = dense(x, f"{p}.attention.self.value")
        qh = q.reshape(length, nh, d).transpose(1, 0, 2)
        kh = k.reshape(length, nh, d).transpose(1, 0, 2)
        vh = v.reshape(length, nh, d).transpose(1, 0, 2)
        s = qh @ kh.transpose(0, 2, 1) / math.sqrt(d)
        e = np.exp(s - s.max(-1, keepdims=True))
        prob = e / e.sum(-1, keepdims=True)
        ctx = (prob @ vh).transpose(1, 0, 2).reshape(length, hidden)
        attn = dense(ctx, f"{p}.attention.output.dense")
        r1 = attn + x
        h1 = ln(r1, f"{p}.attention.output.LayerNorm")
        f1 = dense(h1, f"{p}.intermediate.dense")
        g = gelu_exact(f1)
        f2 = dense(g, f"{p}.output.dense")
        r2 = f2 + h1
        x = ln(r2, f"{p}.output.LayerNorm")
        t.update({f"{n}.q": q, f"{n}.k": k, f"{n}.v": v, f"{n}.scores": s, f"{n}.context": ctx,
                  f"{n}.attn_out": attn, f"{n}.resid1": r1, f"{n}.ln1": h1, f"{n}.ffn1": f1,
                  f"{n}.gelu": g, f"{n}.ffn2": f2, f"{n}.resid2": r2, f"{n}.ln2": x})
    pooled = x.mean(0)
    out = {"embedding": (pooled / np.linalg.norm(pooled)).astype(np.float32)}
    if trace:
        out["trace"] = t
    return out


def octav_clip(samples, bits: int, *, iterations: int = 20) -> float:
    """OCTAV's MSE-optimal clipping scalar for ``bits``-bit symmetric quantization (Sakr et al.,
    ICML 2022): ``s <- E[|x| 1{|x|>s}] / (4**-bits / 3 E[1{|x|<=s}] + E[1{|x|>s}])`` from
    ``s = E|x|``, until it stops moving."""
    a = np.abs(np.asarray(samples, np.float64).ravel())
    if a.size == 0 or not np.any(a > 0):
        return 1.0
    s = float(a.mean())
    for _ in range(iterations):
        over = a > s
        num = float(a[over].sum()) / a.size
        den = (4.0 ** -bits / 3) * float((~over).sum()) / a.size + float(over.sum()) / a.size
        new = num / den if den > 0 else s
        if abs(new - s) <= 1e-9 * max(s, 1e-30):
            s = new
            break
        s = new
    return min(s, float(a.max()))


def _scale(samples, bits: int, clip: str, *, pow2: bool = False) -> float:
    a = np.abs(np.asarray(samples, np.float64))
    peak = float(a.max()) if a.size else 1.0
    limit = octav_clip(a, bits) if clip == "octav" else peak
    limit = max(limit, 1e-12)
    scale = limit / ((1 << (bits - 1)) - 1)
    if pow2:
        scale = 2.0 ** math.ceil(math.log2(scale))
    return scale


def _quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel: ``w`` is ``[out, in]`` (PyTorch); returns the int8
    ``[in, out]`` (GEMM ``B``) and the per-channel scales."""
    peak = np.abs(w).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0)
    q = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int64)
    return q.T.copy(), scale


def _linear_q(w, b, in_scale, out_scale, out_bits) -> Linear:
    wq, ws = _quantize_weight(np.asarray(w, np.float64))
    bias = np.round(np.asarray(b, np.float64) / (in_scale * ws)).astype(np.int64)
    bias = np.clip(bias, -(1 << 31), (1 << 31) - 1)
    return Linear(wq, bias, 0, Requant.from_real(in_scale * ws / out_scale, bits=out_bits))


def _collect(weights, calibration, heads) -> dict[str, np.ndarray]:
    """Float activations of every stage over the calibration set (flattened, subsampled)."""
    rng = np.random.default_rng(0)
    pools: dict[str, list] = {}
    for ids in calibration:
        t = forward_float(weights, ids, heads=heads, trace=True)["trace"]
        for key, value in t.items():
            pools.setdefault(key, []).append(np.asarray(value).ravel())
    out = {}
    for key, parts in pools.items():
        a = np.concatenate(parts)
        if a.size > 400_000:
            a = rng.choice(a, 400_000, replace=False)
        out[key] = a
    return out


def quantize(weights: dict, calibration, *, softmax: str = "recip", gelu: str = "lut",
             clip: str = "octav", heads: int | None = None, pattern: dict | None = None,
             max_len: int | None = None, shared_tables: bool = True) -> QuantizedEncoder:
    """Quantize a BERT-style encoder (``sim.minilm.load_weights()`` naming) to the integer
    recipe, calibrating activation scales on ``calibration`` (a list of token-id arrays).

    ``softmax``: ``recip``, ``lut2d`` or ``shiftmax``; ``gelu``: ``shift``, ``poly`` or
    ``lut``; ``clip``: ``octav`` or ``max``; ``pattern``: optional block-sparse attention
    (``block``, ``window``, ``n_global``, ``causal``, as ``sim.golden.attention.token_mask``);
    ``shared_tables``: one softmax input scale and one GELU input scale for every layer (the
    largest layer's), so that one softmax engine and one GELU table, generated for those
    scales, serve every layer, as in the RTL encoder; ``False`` gives each layer its own.
    """
    if softmax not in SOFTMAX_METHODS:
        raise ValueError(f"softmax must be one of {', '.join(SOFTMAX_METHODS)}, not {softmax!r}")
    if gelu not in GELU_METHODS:
        raise ValueError(f"gelu must be one of {', '.join(GELU_METHODS)}, not {gelu!r}")
    if clip not in CLIP_RULES:
        raise ValueError(f"clip must be one of {', '.join(CLIP_RULES)}, not {clip!r}")
    calibration = [np.asarray(c) for c in calibration]
    if not calibration or any(c.ndim != 1 or c.size == 0 or c.dtype.kind not in "iu"
                              for c in calibration):
        raise ValueError("calibration must be a non-empty list of 1-D integer token-id arrays")
    if not isinstance(shared_tables, bool):
        raise TypeError(f"shared_tables must be a bool, not {shared_tables!r}")
    if pattern is not None:
        token_mask(1, **pattern)            # validates the pattern's keys and values
    dims = encoder_dims(weights, heads)
    hidden, nh, d = dims["hidden"], dims["heads"], dims["hidden"] // dims["heads"]
    w = {k: np.asarray(v, np.float64) for k, v in weights.items() if k != "num_attention_heads"}
    acts = _collect(weights, calibration, dims["heads"])
    sc: dict[str, float] = {}

    def scale(key, bits, *, pow2=False, name=None):
        sc[name or key] = _scale(acts[key], bits, clip, pow2=pow2)
        return sc[name or key]

    # Embeddings: tables per tensor by their own max-abs (they are weights), sum at int16.
    tables, table_scales = [], []
    for name in ("word", "position", "token_type"):
        t = w[f"embeddings.{name}_embeddings.weight"]
        s = max(float(np.abs(t).max()), 1e-12) / 127.0
        tables.append(np.clip(np.round(t / s), -127, 127).astype(np.int64))
        table_scales.append(s)
    s_sum = scale("emb_sum", ACT_BITS["emb_sum"])
    s_hidden = scale("hidden", ACT_BITS["hidden"])
    emb = EmbeddingQ(*tables, AddParams.from_scales(table_scales, s_sum, in_bits=8, bits=16),
                     _ln_q(w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"],
                           s_hidden, ACT_BITS["hidden"]))
    sc["word"], sc["position"], sc["token_type"] = table_scales

    g_bits = GELU_IN_BITS[gelu]
    if shared_tables:
        # One softmax and one GELU input scale for every layer: the largest of the layers'
        # (so nothing clips more than calibration asked), so one generated softmax engine and
        # one GELU table serve the whole encoder.
        s_s_all = max(scale(f"{n}.scores", ACT_BITS["scores"], pow2=True)
                      for n in range(dims["layers"]))
        s_g_all = max(scale(f"{n}.ffn1", g_bits, pow2=True) for n in range(dims["layers"]))
    layers = []
    s_x = s_hidden
    for n in range(dims["layers"]):
        p = f"encoder.layer.{n}"
        s_q, s_k, s_v = (scale(f"{n}.{t}", 8) for t in "qkv")
        s_s = scale(f"{n}.scores", ACT_BITS["scores"], pow2=True)
        if shared_tables:
            s_s = sc[f"{n}.scores"] = s_s_all
        s_c = scale(f"{n}.context", ACT_BITS["context"])
        s_ao = scale(f"{n}.attn_out", 16)
        s_r1 = scale(f"{n}.resid1", 16)
        s_ln1 = scale(f"{n}.ln1", 16)
        s_g = scale(f"{n}.ffn1", g_bits, pow2=True)
        if shared_tables:
            s_g = sc[f"{n}.ffn1"] = s_g_all
        s_gelu = scale(f"{n}.gelu", 16)
        s_f2 = scale(f"{n}.ffn2", 16)
        s_r2 = scale(f"{n}.resid2", 16)
        s_ln2 = scale(f"{n}.ln2", 16)

        def lin(name, s_in, s_out, bits):
            return _linear_q(w[f"{p}.{name}.weight"], w[f"{p}.{name}.bias"], s_in, s_out, bits)

        ln1 = _ln_q(w[f"{p}.attention.output.LayerNorm.weight"],
                    w[f"{p}.attention.output.LayerNorm.bias"], s_ln1, 16)
        ln2 = _ln_q(w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"], s_ln2, 16)
        layer = LayerQ(
            q=lin("attention.self.query", s_x, s_q, 8),
            k=lin("attention.self.key", s_x, s_k, 8),
            v=lin("attention.self.value", s_x, s_v, 8),
            scores=Requant.from_real(s_q * s_k / (math.sqrt(d) * s_s), bits=8),
            softmax_scale=s_s,
            context=Requant.from_real(PROB_SCALE * s_v / s_c, bits=8),
            o=lin("attention.output.dense", s_c, s_ao, 16),
            add1=AddParams.from_scales([s_x, s_ao], s_r1, in_bits=16, bits=16),
            ln1=ln1,
            ffn1=lin("intermediate.dense", s_ln1, s_g, g_bits),
            gelu=GeluQ(gelu, s_g, g_bits,
                       Requant.from_real(_gelu_raw_scale(gelu, s_g, g_bits) / s_gelu, bits=16)),
            ffn2=lin("output.dense", s_gelu, s_f2, 16),
            add2=AddParams.from_scales([s_ln1, s_f2], s_r2, in_bits=16, bits=16),
            ln2=ln2,
        )
        layers.append(layer)
        s_x = s_ln2
    max_len = dims["max_len"] if max_len is None else max_len
    return QuantizedEncoder(hidden=hidden, heads=nh, ffn=dims["ffn"], max_len=int(max_len),
                            softmax=softmax, gelu=gelu, clip=clip, embeddings=emb,
                            layers=layers, scales=sc, pattern=pattern)


def random_weights(*, layers: int = 2, hidden: int = 32, heads: int = 2, ffn: int = 64,
                   vocab: int = 100, max_len: int = 16, seed: int = 0) -> dict:
    """A tiny random BERT-style encoder in HuggingFace naming (for fast RTL tests)."""
    for name, value, lo in (("layers", layers, 0), ("hidden", hidden, 1), ("heads", heads, 1),
                            ("ffn", ffn, 1), ("vocab", vocab, 1), ("max_len", max_len, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if value < lo:
            raise ValueError(f"{name} must be >= {lo}, not {value!r}")
    if hidden % heads:
        raise ValueError(f"heads must divide hidden={hidden}, not {heads!r}")
    rng = np.random.default_rng(seed)

    def mat(rows, cols, s):
        return (rng.standard_normal((rows, cols)) * s).astype(np.float32)

    def vec(n, s, base=0.0):
        return (base + rng.standard_normal(n) * s).astype(np.float32)

    w = {"embeddings.word_embeddings.weight": mat(vocab, hidden, 0.5),
         "embeddings.position_embeddings.weight": mat(max_len, hidden, 0.2),
         "embeddings.token_type_embeddings.weight": mat(2, hidden, 0.1),
         "embeddings.LayerNorm.weight": vec(hidden, 0.1, 1.0),
         "embeddings.LayerNorm.bias": vec(hidden, 0.1),
         "num_attention_heads": np.array(heads)}
    scale_h, scale_f = 1 / math.sqrt(hidden), 1 / math.sqrt(ffn)
    for n in range(layers):
        p = f"encoder.layer.{n}"
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            w[f"{p}.{name}.weight"] = mat(hidden, hidden, scale_h)
            w[f"{p}.{name}.bias"] = vec(hidden, 0.05)
        w[f"{p}.intermediate.dense.weight"] = mat(ffn, hidden, scale_h)
        w[f"{p}.intermediate.dense.bias"] = vec(ffn, 0.05)
        w[f"{p}.output.dense.weight"] = mat(hidden, ffn, scale_f)
        w[f"{p}.output.dense.bias"] = vec(hidden, 0.05)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[f"{p}.{ln}.weight"] = vec(hidden, 0.1, 1.0)
            w[f"{p}.{ln}.bias"] = vec(hidden, 0.1)
    return w
