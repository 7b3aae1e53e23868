"""The softmax engine's parameters, their bounds and help text, and every derived figure
(tables, widths, latencies, buffer and FIFO depths)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from sim.golden.ivit import DIV_NUMERATOR
from sim.golden.softmax import (LUT_DEFAULTS, METHODS, TABLE_PARAM_BOUNDS, SoftmaxTables,
                                shiftmax_min_sum, shiftmax_x0, softmax_tables)

from ..common.arith import constant_product_levels
from ..common.params import param, validate_fields

__all__ = ["SoftmaxParams", "METHODS", "TABLE_PARAMS"]

#: The table parameters of the LUT methods (``sim.golden.softmax.softmax_tables``).
TABLE_PARAMS = ("exp_bits", "recip_index_bits", "recip_bits", "frac_bits", "log_steps",
                "pow_index_bits", "pow_steps", "pow_bits")

def _bounds(name: str) -> dict:
    """``lo``/``hi`` of a width or table parameter, as the golden model's ``softmax_tables``
    declares them."""
    lo, hi = TABLE_PARAM_BOUNDS[name]
    return {"lo": lo, "hi": hi}


# Cycles each part of the engine adds, fixed by its passes (hw/softmax/core.py and the method
# modules); the latency figures, the row buffer's slack and the output FIFO depth are derived
# from them (and checked by the tests).
INGEST = 1           # the row descriptor is written one cycle after the row's last element
DESC_FIFO = 3        # SyncFIFOBuffered (written at t, readable at t + 2), head register
SUM_PIPE = 3         # buffer read, d register, (exponent), accumulator
OUT_PIPE = 4         # buffer read, d register, (exponent), product / quotient, output register
RECIP_OUT_EXTRA = 2  # recip: the product's operand registers, the shift to the leading one
OUT_FIFO = 1         # output FIFO write -> o.valid


@dataclass(frozen=True)
class SoftmaxParams:
    """Generation-time parameters of :class:`hw.softmax.SoftmaxEngine`, checked on construction.

    Each field's metadata holds its help text and bounds (``lo``/``hi``, or ``choices``); the
    command line, the TOML schema and ``lutra list`` are derived from them
    (``gen/blocks/softmax.py``). The table parameters are checked by the golden model's
    :func:`~sim.golden.softmax.softmax_tables` too, which also checks how they combine.
    ``scale`` is stored as a float.
    """

    method: str = param("recip", "recip (exp + reciprocal tables, one multiply), lut2d (2-D "
                        "quotient table stored along its log-domain anti-diagonals, no "
                        "multiplier) or shiftmax (I-ViT, no tables)", choices=METHODS)
    scale: float = param(0.125, "input scale S: logit = x * S (fixes the tables)",
                         lo=1e-6, hi=1e6)
    in_bits: int = param(8, "signed logit width", **_bounds("in_bits"))
    out_bits: int = param(8, "probability width", **_bounds("out_bits"))
    max_len: int = param(512, "longest row (rows of 1..max_len chosen by last)",
                         lo=1, hi=65536)
    exp_bits: int = param(LUT_DEFAULTS["exp_bits"], "recip/lut2d: exp table entry bits",
                          **_bounds("exp_bits"))
    recip_index_bits: int = param(LUT_DEFAULTS["recip_index_bits"], "recip: reciprocal table "
                                  "index bits (1.5 * 2**bits entries)",
                                  **_bounds("recip_index_bits"))
    recip_bits: int = param(LUT_DEFAULTS["recip_bits"], "recip: reciprocal entry bits",
                            **_bounds("recip_bits"))
    frac_bits: int = param(LUT_DEFAULTS["frac_bits"],
                           "lut2d: fraction bits of the log-domain quotient index",
                           **_bounds("frac_bits"))
    log_steps: int = param(LUT_DEFAULTS["log_steps"],
                           "lut2d: shift-and-add normalisation stages of log2(sum)",
                           **_bounds("log_steps"))
    pow_index_bits: int = param(LUT_DEFAULTS["pow_index_bits"],
                                "lut2d: exp2 table index bits (2**bits entries)",
                                **_bounds("pow_index_bits"))
    pow_steps: int = param(LUT_DEFAULTS["pow_steps"],
                           "lut2d: shift-and-add refinement stages after the exp2 table",
                           **_bounds("pow_steps"))
    pow_bits: int = param(LUT_DEFAULTS["pow_bits"], "lut2d: exp2 table entry bits",
                          **_bounds("pow_bits"))
    n: int = param(15, "shiftmax: I-ViT n (exponent range)", lo=1, hi=30)

    def __post_init__(self):
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)):
            raise TypeError(f"scale must be a positive number, not {self.scale!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a positive finite number, not {self.scale!r}")
        validate_fields(self)
        object.__setattr__(self, "scale", float(self.scale))
        if self.method == "shiftmax":
            if self.max_len * self.e_max > DIV_NUMERATOR:
                # Beyond this I-ViT clamps the sum and its outputs exceed out_bits bits.
                n_max = max((k for k in range(1, 31) if self.max_len
                             * int(shiftmax_min_sum(self.scale, k)) <= DIV_NUMERATOR),
                            default=0)
                raise ValueError(f"n must be <= {n_max} for scale {self.scale} and max_len "
                                 f"{self.max_len} (a row's sum must fit I-ViT's 31 bits), "
                                 f"not {self.n!r}")
        else:
            _ = self.tables             # built here: ValueError names a bad table parameter

    # ---- derived figures ---------------------------------------------------------------------

    @cached_property
    def tables(self) -> SoftmaxTables | None:
        """The tables of a LUT method (``sim.golden.softmax.softmax_tables``), or ``None``."""
        if self.method == "shiftmax":
            return None
        return softmax_tables(method=self.method, scale=self.scale, in_bits=self.in_bits,
                              out_bits=self.out_bits,
                              **{name: getattr(self, name) for name in TABLE_PARAMS})

    @property
    def table_bytes(self) -> int:
        return 0 if self.tables is None else self.tables.bytes

    @property
    def x0(self) -> int:
        """ShiftMax: I-ViT's ``x0 = floor(-1 / S)``."""
        return shiftmax_x0(self.scale)

    @property
    def e_max(self) -> int:
        """Largest exponential ``e`` of an element: the row maximum's (``exp[0]`` of the table,
        or ShiftMax's ``shift_exp(0)``)."""
        if self.method == "shiftmax":
            return int(shiftmax_min_sum(self.scale, self.n))
        return (1 << self.exp_bits) - 1

    @property
    def sum_width(self) -> int:
        """Bits of a row's sum of exponentials."""
        return (self.max_len * self.e_max).bit_length()

    @property
    def quotient_bits(self) -> int:
        """ShiftMax: bits of ``f = (2**31 - 1) // sum``, with ``e_max <= sum <= 2**31 - 1``."""
        return (DIV_NUMERATOR // self.e_max).bit_length()

    @property
    def exp_latency(self) -> int:
        """Cycles from a registered ``d`` to its ``e``: a table read and a register, or three
        logic stages."""
        if self.method == "shiftmax":
            from ..common.ivit import SHIFT_EXP_COMPARE_LATENCY
            return SHIFT_EXP_COMPARE_LATENCY
        return 2

    @property
    def normaliser_latency(self) -> int:
        """Cycles from a row's sum to its normaliser entering the descriptor FIFO: leading-one
        detection and a table read (recip); leading one, mantissa, one stage per
        normalisation step, the residual, its constant product and the sum (lut2d); or a
        register and one stage per quotient bit (shiftmax)."""
        if self.method == "shiftmax":
            return 1 + self.quotient_bits
        if self.method == "lut2d":
            return 4 + self.log_steps + constant_product_levels(self.tables.tail_const)
        return 2

    @property
    def out_pipe(self) -> int:
        """Cycles of the output pass from a buffer read to the output FIFO write."""
        if self.method == "lut2d":
            # buffer read, d, capped d, the constant product and its rounding, T, the exp2
            # table read, one stage per refinement step, output register
            return 7 + constant_product_levels(self.tables.num_const) + self.pow_steps
        if self.method == "recip":
            return OUT_PIPE + RECIP_OUT_EXTRA + self.exp_latency
        return OUT_PIPE + self.exp_latency

    def first_out_latency(self, length: int) -> int:
        """Cycles from a row's last input handshake to its first output handshake, for a row
        entering an idle engine with the sink always ready."""
        # the sum pass reads the whole row before the output pass can start it
        return (INGEST + DESC_FIFO + length + SUM_PIPE + self.exp_latency
                + self.normaliser_latency + DESC_FIFO + self.out_pipe + OUT_FIFO)

    def row_latency(self, length: int) -> int:
        """Cycles from a row's last input handshake to its last output handshake (idle engine,
        sink always ready)."""
        return self.first_out_latency(length) + length - 1

    @property
    def buffer_depth(self) -> int:
        """Elements the row buffer holds. Each pass serves one element per clock but waits for
        whole rows, so it lags the pass before it by at most ``max_len`` plus its fixed
        delays; two such lags bound the elements in flight when the sink never stalls."""
        return 2 * self.first_out_latency(self.max_len) + 4

    @property
    def out_fifo_depth(self) -> int:
        """Output FIFO entries: the credits cover the loop read -> output FIFO -> sink ->
        credit back, so an always-ready sink never throttles the output pass."""
        return self.out_pipe + OUT_FIFO + 3
