"""Parameters of the attention engine and the attention unit, their bounds, help text and every
derived figure (buffer sizes, bandwidth, cycle model). Plain Python: no Amaranth, so the block
entry, the fit check and the benchmark read them without building a component."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..common.params import param, validate_fields


__all__ = ["RowParams", "EngineParams", "UnitParams", "BLOCKS", "SOFTMAX_METHODS",
           "V_FIFO_DEPTH", "block_width", "token_width"]

#: Tokens per block: the GEMM core of an engine is ``block x block`` PEs.
BLOCKS = (2, 4, 8, 16)
SOFTMAX_METHODS = ("recip", "lut2d", "shiftmax")
#: Words of V an engine may have requested and not yet given to its GEMM core (two a request):
#: covers the unit's read round trip (request register, grant, table, address, block RAM read,
#: words register, answer register: 7 cycles, ``hw.attention.unit.READ_LATENCY``) and the
#: arbiter's waits at one word a clock.
V_FIFO_DEPTH = 16


def block_width(max_len: int, block: int) -> int:
    """Bits of a block index in the scheduler's commands (``AttentionScheduler``'s formula: its
    length field holds ``2**bits(max_len) - 1``)."""
    longest = (1 << max_len.bit_length()) - 1
    return max(1, (-(-longest // block) - 1).bit_length())


def token_width(max_len: int, block: int) -> int:
    """Bits of a token position: a block index and a position in the block."""
    return block_width(max_len, block) + block.bit_length() - 1


@dataclass(frozen=True)
class RowParams:
    """The parameters of one row's computation, shared by the engine and the unit (declared
    here once), and every figure derived from them. Field metadata holds the help text and
    bounds."""

    block: int = param(4, "tokens per block; each engine's GEMM core is block x block PEs",
                        choices=BLOCKS)
    head_dim: int = param(32, "elements per head (a multiple of block)", lo=2, hi=256)
    max_len: int = param(128, "longest sequence in tokens", lo=1, hi=4096)
    window: int = param(1, "band half-width in blocks: |i - j| <= window", lo=0, hi=255)
    n_global: int = param(1, "global blocks (see and are seen by all)", lo=0, hi=255)
    causal: bool = param(False, "keep keys at or before the query position only")
    softmax: str = param("recip", "softmax method of the engines",
                          choices=SOFTMAX_METHODS)
    softmax_scale: float = param(0.25, "softmax input scale (fixes its tables)",
                                  lo=2.0 ** -12, hi=4.0)
    out_lanes: int = param(2, "GEMM output elements per clock per engine (requantizer lanes, "
                            "4 DSPs each); divides block", lo=1, hi=16)

    def __post_init__(self):
        validate_fields(self)
        if self.head_dim % self.block:
            raise ValueError(f"head_dim must be a multiple of block ({self.block}), "
                             f"not {self.head_dim!r}")
        if self.block % self.out_lanes:
            raise ValueError(f"out_lanes must divide block ({self.block}), "
                             f"not {self.out_lanes!r}")

    @property
    def n_blocks(self) -> int:
        """Blocks of the longest sequence."""
        return -(-self.max_len // self.block)

    @property
    def max_pairs(self) -> int:
        """Most key blocks one row can have: a global row sees every block of the sequence,
        a banded one ``n_global + 2 window + 1`` (``window + 1`` and the globals when causal)."""
        if self.n_global > 0:
            return self.n_blocks
        band = self.window + 1 if self.causal else 2 * self.window + 1
        return min(band, self.n_blocks)

    @property
    def row_keys(self) -> int:
        """Longest softmax row: every key of the longest row."""
        return self.max_pairs * self.block

    @property
    def chunks(self) -> int:
        """Words (``block`` int8 each) of one head of one token."""
        return self.head_dim // self.block

    @property
    def prob_out_bits(self) -> int:
        """Bits of the softmax engine's output: 8, or 9 for ShiftMax (its scale is
        ``2**-(out_bits - 1)``, so 9 bits give the contract's ``2**-8``; values stay < 256)."""
        return 9 if self.softmax == "shiftmax" else 8

    @property
    def score_buffer_bits(self) -> int:
        """Row buffer of int8 scores: ``block`` query rows x ``row_keys`` keys."""
        return self.block * self.row_keys * 8

    @property
    def prob_buffer_bits(self) -> int:
        """Probability buffer: the same shape, uint8."""
        return self.block * self.row_keys * 8

    @property
    def macs(self) -> int:
        """Multiply-accumulates per clock of one engine's GEMM core."""
        return self.block * self.block


@dataclass(frozen=True)
class EngineParams(RowParams):
    """Generation-time parameters of :class:`hw.attention.engine.AttentionEngine`: the row's
    (:class:`RowParams`) and the width of the command's sequence id."""

    seq_width: int = param(8, "bits of the command's sequence id", lo=1, hi=16)


@dataclass(frozen=True)
class UnitParams(RowParams):
    """Generation-time parameters of :class:`hw.attention.unit.AttentionUnit`: the row's
    (:class:`RowParams`, every engine gets them) and the unit's own."""

    engines: int = param(4, "attention engines", lo=1, hi=16)
    heads: int = param(12, "attention heads (hidden = heads x head_dim)", lo=1, hi=64)
    max_tokens: int = param(128, "tokens of a batch (depth of the Q, K, V, O memories)",
                             lo=1, hi=65536)
    max_seqs: int = param(16, "sequences of a batch", lo=1, hi=1024)
    read_ports: int = param(1, "read ports of each of the Q, K, V memories (each a copy of "
                             "its block RAM); engine e uses port e % read_ports", lo=1, hi=16)
    lookahead: int = param(16, "rows held in the scheduler's dispatch window", lo=1, hi=64)
    longest_first: bool = param(True, "longest row first in the window (else FIFO)")

    def __post_init__(self):
        super().__post_init__()
        if self.read_ports > self.engines:
            raise ValueError(f"read_ports must be <= engines ({self.engines}), "
                             f"not {self.read_ports!r}")
        if self.max_len > self.max_tokens:
            raise ValueError(f"max_len must be <= max_tokens ({self.max_tokens}), "
                             f"not {self.max_len!r}")

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    @property
    def head_bits(self) -> int:
        """Low bits of a scheduler sequence id that hold the head."""
        return (self.heads - 1).bit_length()

    @property
    def seq_bits(self) -> int:
        return max(1, (self.max_seqs - 1).bit_length())

    @property
    def words_per_token(self) -> int:
        """Memory words (``block`` int8 each) of one token row."""
        return self.hidden // self.block

    @property
    def memory_words(self) -> int:
        """Depth of each of the Q, K, V and O memories."""
        return self.max_tokens * self.words_per_token

    @property
    def bank_words(self) -> int:
        """Depth of each of the two banks (even and odd token rows) of the Q, K and V
        memories: one read gives a word of two consecutive tokens."""
        return max(-(-self.max_tokens // 2) * self.words_per_token, 2)

    @property
    def memory_bits(self) -> int:
        """Q, K, V (two banks each, ``read_ports`` copies of each) and O together."""
        return (6 * self.read_ports * self.bank_words + self.memory_words) * self.block * 8

    @property
    def engine(self) -> EngineParams:
        """The parameters every engine of the unit gets."""
        row = {f.name: getattr(self, f.name) for f in fields(RowParams)}
        return EngineParams(**row, seq_width=self.seq_bits + self.head_bits)
