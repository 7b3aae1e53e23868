"""Checks that the NumPy all-MiniLM-L6-v2 forward pass computes the real model."""

import numpy as np
import pytest

from sim.minilm import SENTENCES, forward, load_tokenizer, load_weights


def cosine(a: str, b: str) -> float:
    return float(forward(a)["embedding"] @ forward(b)["embedding"])


def test_sentences_cover_the_lengths_the_blocks_are_measured_on():
    tok = load_tokenizer()
    lengths = [len(tok.encode(s).ids) for s in SENTENCES]
    assert len(SENTENCES) >= 40
    assert min(lengths) <= 8, lengths
    assert max(lengths) >= 55, lengths
    assert len(set(SENTENCES)) == len(SENTENCES)


def test_tokenizer_does_not_pad():
    ids = load_tokenizer().encode("A dog barked.").ids
    # [CLS] a dog barked . [SEP]
    assert len(ids) == 6, ids
    assert ids[0] == 101 and ids[-1] == 102, ids


def test_shapes_and_types():
    result = forward(SENTENCES[0])
    length = len(load_tokenizer().encode(SENTENCES[0]).ids)
    assert len(result["scores"]) == 6 and len(result["ffn_pre"]) == 6
    for scores, ffn in zip(result["scores"], result["ffn_pre"], strict=True):
        assert scores.shape == (12, length, length) and scores.dtype == np.float32
        assert ffn.shape == (length, 1536) and ffn.dtype == np.float32
    assert result["embedding"].shape == (384,) and result["embedding"].dtype == np.float32
    assert abs(float(np.linalg.norm(result["embedding"])) - 1.0) < 1e-5


def test_weights_are_cached_and_read_only():
    assert load_weights() is load_weights()
    with pytest.raises(ValueError):
        load_weights()["pooler.dense.bias"][0] = 0.0


def test_paraphrases_are_closer_than_unrelated_sentences():
    # A wrong head split, a missing LayerNorm or a tanh GELU where erf belongs destroys this.
    markets = cosine(SENTENCES[6], SENTENCES[7])
    sandcastle = cosine(
        "The children built a sandcastle and decorated it with shells.",
        "Kids made a castle out of sand on the beach and covered it in seashells.")
    unrelated = [cosine(SENTENCES[6], SENTENCES[8]), cosine(SENTENCES[0], SENTENCES[13]),
                 cosine(SENTENCES[19], SENTENCES[31])]
    assert markets > 0.6 and sandcastle > 0.6, (markets, sandcastle)
    assert max(unrelated) < 0.3, unrelated


def test_scores_give_sensible_attention():
    scores = forward(SENTENCES[4])["scores"]
    for layer, s in enumerate(scores):
        assert np.isfinite(s).all(), f"layer {layer}"
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        # Trained heads are selective: most rows put far more than uniform weight on one token.
        uniform = 1.0 / s.shape[-1]
        assert np.median(p.max(axis=-1)) > 3 * uniform, f"layer {layer}"
    # Scaled dot products of a trained BERT stay within tens, not thousands.
    assert 1.0 < max(float(np.abs(s).max()) for s in scores) < 100.0


def test_forward_rejects_an_empty_sentence():
    with pytest.raises(ValueError, match=r"sentence must be a non-empty string, not ''"):
        forward("")
