"""The residual adder's parameters, their bounds and help text, and every derived figure."""

from dataclasses import dataclass

from sim.golden.add import ADD_LEFT_SHIFT

from ..common.params import param, validate_fields

__all__ = ["AddUnitParams", "WIDTHS"]

#: Element widths of the input and output streams (int8 or int16).
WIDTHS = (8, 16)


@dataclass(frozen=True)
class AddUnitParams:
    """Generation-time parameters of :class:`hw.add.AddUnit`, checked on construction.

    Each field's metadata holds its help text and bounds (``lo``/``hi``, or ``choices``); the
    command line, the TOML schema and ``lutra list`` are derived from them
    (``gen/blocks/add.py``). The run-time quantization parameters are not here: they arrive on
    the block's ``params`` stream.
    """

    in_width: int = param(16, "input element bits (int8 or int16; TFLite's left shift is 20 "
                           "for int8, 15 for int16)", choices=WIDTHS)
    out_width: int = param(16, "output element bits (int8 or int16)", choices=WIDTHS)
    inputs: int = param(2, "tensors summed element-wise (2: residual add, 3: embedding sum)",
                         lo=2, hi=3)
    lanes: int = param(1, "elements of each tensor per beat", lo=1, hi=16)

    def __post_init__(self):
        validate_fields(self)

    # ---- derived figures ---------------------------------------------------------------------

    @property
    def left_shift(self) -> int:
        """TFLite's ``left_shift`` for the input width (``kernels/add.cc``): 20 or 15."""
        return ADD_LEFT_SHIFT[self.in_width]

    @property
    def offset_width(self) -> int:
        """Bits of each input offset: ``in_width + 1`` (an int8 zero point negated spans
        [-127, 128])."""
        return self.in_width + 1

    @property
    def latency(self) -> int:
        """Cycles from an input beat's handshake to its output beat, sink always ready: the
        input legs' requantizer, the register of their sum, the output requantizer."""
        from ..common.requant import REQUANT_LATENCY
        return 2 * REQUANT_LATENCY + 1

    @property
    def beats_per_clock(self) -> float:
        """Steady-state rate of input (and output) beats: one per clock."""
        return 1.0

    @property
    def elements_per_clock(self) -> int:
        """Output elements per clock in steady state: ``lanes``."""
        return self.lanes

    @property
    def multipliers(self) -> int:
        """17 x 17 multipliers (DSPs): four per requantized value, ``inputs + 1`` per lane."""
        return 4 * (self.inputs + 1) * self.lanes
