"""The attention scheduler's parameters, their bounds and help text, and every derived figure.
Plain Python: the block entry and the fit check read them without building a component."""

from __future__ import annotations

from dataclasses import dataclass

from ..common.params import param, validate_fields
from .params import block_width

__all__ = ["SchedulerParams", "BLOCK_SIZES"]

#: Tokens per block the scheduler handles (a power of two: the valid mask has ``block`` bits).
BLOCK_SIZES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class SchedulerParams:
    """Generation-time parameters of :class:`hw.attention.AttentionScheduler`, checked on
    construction.

    Each field's metadata holds its help text and bounds (``lo``/``hi``, or ``choices``); the
    command line, the TOML schema and ``lutra list`` are derived from them
    (``gen/blocks/attention.py``).
    """

    engines: int = param(4, "attention engines (one command stream each)", lo=1, hi=16)
    block: int = param(8, "tokens per block (power of two)", choices=BLOCK_SIZES)
    window: int = param(1, "band half-width in blocks: |i - j| <= window", lo=0, hi=255)
    n_global: int = param(1, "global blocks (see and are seen by all)", lo=0, hi=255)
    causal: bool = param(False, "keep key blocks j <= i only")
    max_len: int = param(256, "longest sequence in tokens (sizes the length field)",
                         lo=1, hi=65535)
    seq_width: int = param(8, "bits of the sequence id", lo=1, hi=16)
    lookahead: int = param(32, "rows held in the dispatch window", lo=1, hi=64)
    longest_first: bool = param(True, "longest row first in the window (else FIFO)")

    def __post_init__(self):
        validate_fields(self)

    # ---- derived figures ---------------------------------------------------------------------

    @property
    def length_width(self) -> int:
        """Bits of a descriptor's length field: any length up to ``2**bits(max_len) - 1``."""
        return self.max_len.bit_length()

    @property
    def block_width(self) -> int:
        """Bits of a block index: enough for the longest length the length field holds."""
        return block_width(self.max_len, self.block)

    @property
    def dispatch_width(self) -> int:
        """Most rows dispatched in one cycle: one per engine, at most the window's rows."""
        return min(self.engines, self.lookahead)

    @property
    def max_pairs_non_global(self) -> int:
        """Most key blocks of a row that is not global: the globals and the band."""
        return self.n_global + 2 * self.window + 1

    #: Cycles from the first descriptor handshake to the first command handshake (engine 0
    #: ready): the generator's size register, the row, its staging and its insertion.
    FIRST_COMMAND_CYCLE = 4
    #: A row generated in cycle t (staged, then inserted into the window) can be dispatched
    #: from cycle t + ROW_LATENCY.
    ROW_LATENCY = 2
    #: An engine whose done is taken in cycle t receives its next row's first command in
    #: cycle t + HANDOVER (if a row is in the window).
    HANDOVER = 1
