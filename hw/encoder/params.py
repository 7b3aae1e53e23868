"""Parameters of the encoder accelerator, the layouts its sequencer and the weight image share,
and every derived figure (memory sizes, descriptor layout, cycle model). Plain Python: no
Amaranth, so the weight-image writer, the block entry, the fit check and the benchmark read them
without building a component."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..common.checks import check_int
from ..common.params import param, validate_fields


__all__ = ["EncoderParams", "OPS", "MEMORIES", "SECOND_SOURCE", "DESCRIPTOR_FIELDS",
           "DESCRIPTOR_BITS", "LN_RECORD_BITS", "PORT_WIDTHS", "TAG_BITS", "INPUT_TAG",
           "EMBEDDING_LN_TAG", "stage_tag"]

#: Pass opcodes of a descriptor: the sequencer executes one pass per descriptor.
OPS = {"end": 0, "layernorm": 1, "gemm": 2, "attention": 3, "add": 4, "gelu": 5, "pool": 6}

#: Activation memories: name -> (element bits, width in elements: "hidden" or "ffn").
#: ``c`` receives the host's embedding sums; ``a`` holds a layer's input and output.
MEMORIES = {"a": (16, "hidden"), "b": (16, "hidden"), "c": (16, "hidden"),
            "q": (8, "hidden"), "k": (8, "hidden"), "v": (8, "hidden"), "e": (16, "ffn")}
#: The memory that is every ADD's second input (``src2``), and read by nothing else: the
#: residual branch (the attention output's and FFN2's projections). The readers select a
#: pass's ``src`` among the other memories and take source b from this one alone, so no select
#: or lane index runs to every memory (``sim.encoder_image`` writes no other program).
SECOND_SOURCE = "b"

#: Bits of a debug tag: ``layer * 16 + stage`` (``sim.golden.encoder.STAGES`` index).
TAG_BITS = 12
#: Tags of the tensors that are not a layer's stage.
INPUT_TAG = (1 << TAG_BITS) - 1
EMBEDDING_LN_TAG = (1 << TAG_BITS) - 2

#: One pass descriptor: (name, bits, signed), packed little-endian from bit 0 in this order.
#: ``k``: input width (GEMM K); ``n``: output width; ``addr``/``paddr``: word addresses of the
#: weight tiles and of the per-channel parameter records; ``mul``/``sh``/``zp``: scalar
#: requantizations (ADD: inputs 0, 1 and output 2; GELU: 0; attention: scores 0, context 1).
DESCRIPTOR_FIELDS = (
    ("op", 3, False), ("src", 3, False), ("src2", 3, False), ("dst", 3, False),
    ("tag", TAG_BITS, False), ("k", 16, False), ("n", 16, False),
    ("addr", 32, False), ("paddr", 32, False),
    ("mul0", 32, True), ("mul1", 32, True), ("mul2", 32, True),
    ("sh0", 8, True), ("sh1", 8, True), ("sh2", 8, True),
    ("zp0", 16, True), ("zp1", 16, True), ("act_min", 16, True), ("act_max", 16, True),
)
#: A descriptor occupies 512 bits (64 bytes) of the image.
DESCRIPTOR_BITS = 512
#: One LayerNorm channel record: multiplier (32), bias (32), shift (8), negate (8), padding.
LN_RECORD_BITS = 128
PORT_WIDTHS = (16, 32, 64, 128, 256, 512)


def stage_tag(layer: int, stage: str) -> int:
    """Debug tag of ``stage`` (a ``sim.golden.encoder.STAGES`` name) of ``layer``."""
    from sim.golden.encoder import STAGES
    return layer * 16 + STAGES.index(stage)


@dataclass(frozen=True)
class EncoderParams:
    """Generation-time parameters of :class:`hw.encoder.EncoderAccelerator`, checked on
    construction. The model fields come from a ``QuantizedEncoder`` (:meth:`for_model`); the
    rest is the array configuration. Field metadata holds the help text and bounds."""

    # ---- the model (from the QuantizedEncoder) ------------------------------------------------
    hidden: int = param(32, "model width H (from the model)", lo=2, hi=1024)
    heads: int = param(2, "attention heads (from the model)", lo=1, hi=64)
    ffn: int = param(64, "FFN width F (from the model)", lo=2, hi=4096)
    layers: int = param(2, "encoder layers (from the model)", lo=1, hi=(1 << TAG_BITS) // 16 - 1)
    max_len: int = param(16, "longest sequence in tokens (from the model)", lo=1, hi=512)
    softmax: str = param("recip", "softmax method (from the model)",
                          choices=("recip", "lut2d", "shiftmax"))
    softmax_scale: float = param(0.25, "shared softmax input scale (from the model)",
                                  lo=2.0 ** -12, hi=4.0)
    gelu_scale: float = param(2.0 ** -6, "shared GELU input scale, a power of two (from the "
                               "model)", lo=2.0 ** -24, hi=16.0)
    # ---- the array configuration --------------------------------------------------------------
    rows: int = param(4, "GEMM array rows (tokens per tile)", lo=1, hi=32)
    cols: int = param(4, "GEMM array columns (output channels per tile)", lo=1, hi=32)
    fabric_cols: int = param(0, "GEMM columns (the last ones, at most cols) whose multipliers "
                             "are logic instead of DSPs: a wider array than the DSPs allow",
                             lo=0, hi=32)
    port_width: int = param(32, "bits of the external read port's data stream",
                             choices=PORT_WIDTHS)
    max_tokens: int = param(32, "tokens of a batch (activation memory depth)", lo=1, hi=4096)
    max_seqs: int = param(8, "sequences of a batch", lo=1, hi=256)
    block: int = param(4, "attention block (tokens); each engine is block x block PEs",
                        choices=(2, 4, 8, 16))
    engines: int = param(1, "attention engines", lo=1, hi=16)
    ln_divider: str = param("iterative", "LayerNorm statistics: iterative or pipelined",
                             choices=("iterative", "pipelined"))
    debug: bool = param(True, "debug stream: every stage boundary's elements, tagged")

    def __post_init__(self):
        # fabric_cols is bounded by cols, checked below with that bound in the message.
        validate_fields(self, exclude=("fabric_cols",))
        check_int("fabric_cols", self.fabric_cols, 0, self.cols)
        if self.hidden % self.heads:
            raise ValueError(f"heads must divide hidden ({self.hidden}), not {self.heads!r}")
        if self.head_dim % self.block:
            raise ValueError(f"block must divide the head size ({self.head_dim}), "
                             f"not {self.block!r}")
        for name in ("hidden", "ffn"):
            if getattr(self, name) % self.cols:
                raise ValueError(f"cols must divide {name} ({getattr(self, name)}), "
                                 f"not {self.cols!r}")
        if self.max_len > self.max_tokens:
            raise ValueError(f"max_tokens must be >= max_len ({self.max_len}), "
                             f"not {self.max_tokens!r}")

    @classmethod
    def for_model(cls, model, **config) -> EncoderParams:
        """The parameters of ``model`` (a ``QuantizedEncoder``) with the array ``config``."""
        if model.gelu != "lut":
            raise ValueError(f"the encoder accelerator runs the 'lut' GELU, not {model.gelu!r}")
        if model.pattern:
            raise ValueError("the encoder accelerator runs dense attention (pattern None)")
        scales = {layer.softmax_scale for layer in model.layers}
        gelu_scales = {layer.gelu.scale for layer in model.layers}
        if len(scales) != 1 or len(gelu_scales) != 1:
            raise ValueError("the model must share one softmax and one GELU input scale "
                             "(quantize(..., shared_tables=True))")
        return cls(hidden=model.hidden, heads=model.heads, ffn=model.ffn,
                   layers=model.num_layers, max_len=model.max_len, softmax=model.softmax,
                   softmax_scale=float(scales.pop()), gelu_scale=float(gelu_scales.pop()),
                   **config)

    def replace(self, **changes) -> EncoderParams:
        return replace(self, **changes)

    # ---- derived figures ----------------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def token_words(self) -> int:
        """Memory words of the tokens of a batch: one word holds ``rows`` tokens' element."""
        return -(-self.max_tokens // self.rows)

    def memory_width(self, name: str) -> int:
        bits, width = MEMORIES[name]
        return self.hidden if width == "hidden" else self.ffn

    def memory_depth(self, name: str) -> int:
        return self.token_words * self.memory_width(name)

    @property
    def activation_bits(self) -> int:
        """Bits of the activation memories (a word is ``rows`` elements)."""
        return sum(self.memory_depth(n) * self.rows * MEMORIES[n][0] for n in MEMORIES)

    @property
    def max_k(self) -> int:
        return max(self.hidden, self.ffn)

    @property
    def weight_buffer_bits(self) -> int:
        """Two weight tiles (``K x cols`` int8 each) on chip: the fetcher fills one while the
        GEMM core computes from the other."""
        return 2 * self.max_k * self.cols * 8

    def row_words(self, bits: int) -> int:
        """Port words of one record row of ``bits``."""
        return -(-bits // self.port_width)

    @property
    def descriptor_words(self) -> int:
        return self.row_words(DESCRIPTOR_BITS)

    @property
    def weight_row_words(self) -> int:
        """Port words of one k-row of a weight tile (``cols`` int8)."""
        return self.row_words(8 * self.cols)

    @property
    def param_row_words(self) -> int:
        """Port words of one row of a tile's bias, multiplier or shift (``cols`` int32)."""
        return self.row_words(32 * self.cols)

    @property
    def ln_row_words(self) -> int:
        return self.row_words(LN_RECORD_BITS)

    @property
    def fetch_row_bits(self) -> int:
        """The row assembler's register: the widest record row."""
        words = max(self.descriptor_words, self.weight_row_words, self.param_row_words,
                    self.ln_row_words)
        return words * self.port_width

    @property
    def gemm(self):
        """The GEMM core's parameters: ``rows x cols`` (the last ``fabric_cols`` columns
        multiplying in logic), 16-bit activations and outputs, one product per PE per clock
        (``k_per_pe`` 1: a k-slice is one activation memory word, and each memory gives one
        word per clock)."""
        from ..gemm.params import GemmParams
        return GemmParams(rows=self.rows, cols=self.cols, a_width=16, out_width=16,
                          fabric_cols=self.fabric_cols)

    @property
    def layernorm(self):
        """The LayerNorm block's parameters: ``hidden`` channels, 16-bit in and out."""
        from ..layernorm.params import LayerNormParams
        return LayerNormParams(hidden=self.hidden, in_width=16, out_width=16,
                               divider=self.ln_divider)

    @property
    def gemm_macs(self) -> int:
        """Products per clock of the GEMM array, DSP and fabric: ``rows * cols``."""
        return self.gemm.macs

    @property
    def fabric_macs(self) -> int:
        """Products per clock built from logic (``rows * fabric_cols``)."""
        return self.gemm.fabric_macs

    @property
    def attention_unit(self):
        """The attention unit's parameters (dense attention over ``max_len``)."""
        from ..attention.params import UnitParams
        blocks = -(-self.max_len // self.block)
        return UnitParams(engines=self.engines, heads=self.heads, head_dim=self.head_dim,
                          block=self.block, max_len=self.max_len, max_tokens=self.max_tokens,
                          max_seqs=self.max_seqs, window=max(blocks - 1, 0), n_global=0,
                          causal=False, softmax=self.softmax, softmax_scale=self.softmax_scale)

    @property
    def add(self):
        """The residual ADD unit's parameters: two int16 inputs, int16 out, one lane."""
        from ..add.params import AddUnitParams
        return AddUnitParams(in_width=16, out_width=16, inputs=2, lanes=1)

    @property
    def multipliers(self) -> int:
        """DSP products, unit by unit: the GEMM core (``GemmParams.multipliers``); per attention
        engine its ``block x block`` PEs, four per requantizer lane (``out_lanes``) and the
        softmax's reciprocal product (none with ``lut2d``); LayerNorm's seven (the square, two
        17 x 17 normalisation products, four for its requantizer); the GELU output
        requantizer's four (one lane); the ADD unit's (``AddUnitParams.multipliers``: four per
        requantized value)."""
        e = self.attention_unit
        engine = e.block * e.block + 4 * e.out_lanes + (0 if e.softmax == "lut2d" else 1)
        return self.gemm.multipliers + self.engines * engine + 7 + 4 + self.add.multipliers

    @property
    def ram_bits(self) -> int:
        """Block RAM of the design: activations, both weight tiles, attention memories,
        LayerNorm row buffer and parameters, the GELU table (4096 entries)."""
        unit = self.attention_unit.memory_bits
        layernorm = 2 * self.hidden * 16 + 2 * self.hidden * 110
        return (self.activation_bits + self.weight_buffer_bits + unit + layernorm
                + 4096 * 16 + self.hidden * 32)
