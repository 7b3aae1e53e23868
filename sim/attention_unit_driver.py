"""Shared test and benchmark pieces for the attention engine and the attention unit.

* :func:`random_layer` / :func:`minilm_case`: the requantization parameters (and Q, K, V) of a
  random problem or of all-MiniLM-L6-v2's layer 0, as ``sim.golden.encoder`` defines them.
* :func:`expected_context`: the contract, ``sim.golden.encoder.attention_int`` with the
  block-sparse mask of the configuration.
* :func:`engine_rows`: the commands of every (sequence, head, query block) row, as the
  scheduler issues them to one engine.
* :func:`to_words` / :func:`from_words`: token rows <-> the unit's stream words.
* :class:`MemoryServer`: what the unit's memories answer to an engine's read requests.

Used by the Amaranth-simulator tests, the cocotb testbench and ``lutra bench attention_unit``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .golden.attention import key_block_valid, rows_of, token_mask
from .golden.encoder import Requant, attention_int

__all__ = ["pattern_of", "random_layer", "random_qkv", "expected_context", "quant_payload",
           "engine_rows", "seq_id", "to_words", "from_words", "MemoryServer", "minilm_case"]


def pattern_of(params) -> dict:
    """The block pattern of an engine or unit parameter set."""
    return {"block": params.block, "window": params.window, "n_global": params.n_global,
            "causal": params.causal}


def random_layer(rng: np.random.Generator, head_dim: int, *, softmax_scale: float = 0.25):
    """The three attention fields of a ``LayerQ`` for int8 Q, K, V of random values: scores
    requantized to about +-60 (so the softmax sees a real spread), context to about +-100."""
    spread = 127 * 127 * np.sqrt(head_dim) / 2
    scores = Requant.from_real(rng.uniform(0.5, 1.5) * 60 / spread, bits=8)
    context = Requant.from_real(rng.uniform(0.3, 0.8) * 2.0 ** -8, bits=8)
    return SimpleNamespace(scores=scores, softmax_scale=softmax_scale, context=context)


def random_qkv(rng: np.random.Generator, length: int, hidden: int) -> tuple:
    return tuple(rng.integers(-128, 128, size=(length, hidden)) for _ in range(3))


def expected_context(q, k, v, layer, *, heads: int, softmax: str, pattern: dict) -> np.ndarray:
    """``attention_int``'s int8 context ``[T, hidden]`` under the configuration's mask."""
    mask = token_mask(len(q), **pattern)
    return attention_int(q, k, v, layer, heads=heads, softmax=softmax, mask=mask)["context"]


def quant_payload(layer) -> dict:
    """The engine's ``quant`` port value for a layer's scores and context requantizations."""
    def scalar(x):
        return int(np.asarray(x).reshape(()))
    return {"scores_multiplier": scalar(layer.scores.multiplier),
            "scores_shift": scalar(layer.scores.shift),
            "scores_zero_point": int(layer.scores.zero_point),
            "context_multiplier": scalar(layer.context.multiplier),
            "context_shift": scalar(layer.context.shift),
            "context_zero_point": int(layer.context.zero_point)}


def seq_id(seq: int, head: int, head_bits: int) -> int:
    """The scheduler's sequence id of (sequence, head): the head in the low bits."""
    return (seq << head_bits) | head


def engine_rows(lengths, *, heads: int, head_bits: int, pattern: dict) -> list[tuple]:
    """Every row as ``(seq, head, query_block, [command payload, ...])``, commands in the
    scheduler's order (key blocks increasing)."""
    rows = []
    for seq, length in enumerate(lengths):
        for head in range(heads):
            for qb, key_blocks in enumerate(rows_of(length, **pattern)):
                cmds = [{"seq": seq_id(seq, head, head_bits), "query_block": qb,
                         "key_block": kb, "last": int(n == len(key_blocks) - 1),
                         "valid": key_block_valid(length, kb, pattern["block"])}
                        for n, kb in enumerate(key_blocks)]
                rows.append((seq, head, qb, cmds))
    return rows


def to_words(x: np.ndarray, block: int) -> list[list[int]]:
    """Token rows ``[T, hidden]`` as stream words of ``block`` elements, row-major."""
    return [[int(e) for e in word] for word in np.asarray(x).reshape(-1, block)]


def from_words(words, length: int, hidden: int) -> np.ndarray:
    return np.asarray(words, np.int64).reshape(length, hidden)


class MemoryServer:
    """The contents of Q, K and V of a batch, answering ``(seq, token, chunk)`` reads as the
    unit does: the head's chunk of the rows of ``token`` and ``token + 1``, zeros past the
    sequence."""

    def __init__(self, qkv: list[tuple], *, heads: int, head_dim: int, block: int):
        self.qkv = qkv                  # per sequence: (q, k, v), each [T, hidden]
        self.head_bits = (heads - 1).bit_length()
        self.head_dim, self.block = head_dim, block

    def read(self, tensor: int, req: dict) -> list[list[int]]:
        seq, head = req["seq"] >> self.head_bits, req["seq"] & ((1 << self.head_bits) - 1)
        x = self.qkv[seq][tensor]
        col = head * self.head_dim + req["chunk"] * self.block
        return [[int(e) for e in x[token, col:col + self.block]] if token < len(x)
                else [0] * self.block for token in (req["token"], req["token"] + 1)]


def minilm_case(sentences, *, softmax: str = "recip"):
    """Layer-0 Q, K, V and context of all-MiniLM-L6-v2 for ``sentences`` (the integer encoder,
    calibrated on six calibration sentences), and the layer's quantization."""
    from .golden import encoder as enc
    from .minilm import CALIBRATION, load_weights, token_ids

    model = enc.quantize(load_weights(), [token_ids(s) for s in CALIBRATION[:6]],
                         softmax=softmax)
    layer = model.layers[0]
    cases = []
    for sentence in sentences:
        stage = enc.forward(model, token_ids(sentence))["layers"][0]
        cases.append(tuple(np.asarray(stage[name], np.int64)
                           for name in ("q", "k", "v", "context")))
    heads = model.layers[0].q.weight.shape[1] // model.head_dim
    return SimpleNamespace(layer=layer, cases=cases, heads=heads, head_dim=model.head_dim)
