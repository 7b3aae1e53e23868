"""The LayerNorm block's parameters, their bounds and help text, and every derived figure."""

from dataclasses import dataclass

from ..common.params import param, validate_fields
from .steps import DIVIDERS

__all__ = ["LayerNormParams", "WIDTHS"]

#: Element widths of the input and output streams (int8 or int16).
WIDTHS = (8, 16)


@dataclass(frozen=True)
class LayerNormParams:
    """Generation-time parameters of :class:`hw.layernorm.LayerNorm`, checked on construction.

    Each field's metadata holds its help text and bounds (``lo``/``hi``, or ``choices``); the
    command line, the TOML schema and ``lutra list`` are derived from them
    (``gen/blocks/layernorm.py``).
    """

    hidden: int = param(384, "elements per row (channels), n", lo=1, hi=1024)
    in_width: int = param(16, "input element bits (int8 or int16)", choices=WIDTHS)
    out_width: int = param(16, "output element bits (int8 or int16; the encoder recipe: 16)",
                            choices=WIDTHS)
    divider: str = param("iterative", "mean division, isqrt and reciprocal: iterative (one "
                          "step per clock, one row per 34 clocks) or pipelined (one row per "
                          "clock)", choices=DIVIDERS)

    def __post_init__(self):
        validate_fields(self)

    # ---- derived figures ---------------------------------------------------------------------

    @property
    def row_buffer_depth(self) -> int:
        """Elements of row buffer: two rows, so one streams in while the other is normalised."""
        return 2 * self.hidden

    @property
    def param_memory_depth(self) -> int:
        """Entries of the per-channel parameter memory: two banks of ``hidden``."""
        return 2 * self.hidden

    @property
    def stats_latency(self) -> int:
        """Cycles from a row's sums to its ``mean`` and ``recip`` (no stalls)."""
        from .stats import RowStats
        return RowStats.latency_for(self.hidden, self.in_width, self.divider)

    @property
    def stats_period(self) -> int:
        """Cycles between rows the statistics units accept at full rate."""
        from .stats import RowStats
        return RowStats.period_for(self.hidden, self.in_width, self.divider)

    @property
    def latency(self) -> int:
        """Cycles from the handshake of a row's last input element to the row's first output
        beat, sink always ready and the statistics units idle."""
        from .core import INTAKE_LATENCY, NORM_LATENCY, READ_LATENCY
        from ..common.requant import REQUANT_LATENCY
        return (INTAKE_LATENCY + self.stats_latency + READ_LATENCY + NORM_LATENCY
                + REQUANT_LATENCY)

    @property
    def row_gap(self) -> int:
        """Cycles from a row's last input handshake to its first read from the row buffer."""
        from .core import INTAKE_LATENCY, READ_LATENCY
        return INTAKE_LATENCY + self.stats_latency + READ_LATENCY - 1

    @property
    def pair_period(self) -> int:
        """Clock cycles per two consecutive rows in steady state (rows back to back, sink
        always ready); exact, checked by the cycle tests.

        A row takes ``hidden`` clocks to enter and the statistics units take one every
        ``stats_period``. The two-row buffer frees a row's place only as it is read back,
        ``row_gap`` cycles after its last element came in, so a row can start no sooner than
        ``hidden + row_gap`` cycles after the row before the previous one started.
        """
        n = self.hidden
        return max(2 * n, n + self.row_gap, 2 * self.stats_period)

    @property
    def full_rate(self) -> bool:
        """Whether rows stream at one element per clock: ``hidden >= row_gap``."""
        return self.pair_period == 2 * self.hidden

    @property
    def elements_per_clock(self) -> float:
        """Steady-state input (and output) rate."""
        return 2 * self.hidden / self.pair_period
