"""The integer LayerNorm as a Lutra block; its parameters come from ``LayerNormParams``."""

from hw.layernorm import LayerNorm, LayerNormParams

from ..resources import netlist_hook
from . import BlockSpec, params_from


def _build(p: dict) -> LayerNorm:
    return LayerNorm(**p)


def _figures(block: LayerNorm) -> dict:
    cfg = block.parameters
    return {
        "latency_cycles": cfg.latency,
        "latency_meaning": "cycles from the handshake of a row's last input element to the "
                           "row's first output beat, sink always ready, statistics units idle",
        "row_gap_cycles": cfg.row_gap,
        "pair_period_cycles": cfg.pair_period,
        "throughput": ("one element per clock (hidden >= row_gap)" if cfg.full_rate else
                       f"{2 * cfg.hidden} elements every {cfg.pair_period} clocks (rows shorter "
                       f"than row_gap = {cfg.row_gap} wait for the row buffer)"),
        "stats_latency_cycles": cfg.stats_latency,
        "stats_period_cycles": cfg.stats_period,
        "row_buffer_elements": cfg.row_buffer_depth,
        "param_memory_entries": cfg.param_memory_depth,
        "parametersrule": "a load (hidden beats on params) applies to rows whose first element is "
                       "accepted after its last beat; before the first load all parameters are 0",
        "output_meaning": "clamp(MBQM(+-norm + bias, multiplier, shift) + out_zero_point) per "
                          "channel: sim.golden.layernorm.layer_norm_int",
    }


BLOCK = BlockSpec(
    name="layernorm",
    summary="Integer LayerNorm (exact mean, variance, isqrt, reciprocal; gamma/beta folded "
            "into a per-channel requantization loaded at run time)",
    params=params_from(LayerNormParams),
    build=_build,
    param_class=LayerNormParams,
    figures=_figures,
    ports={
        "i": "one signed in_width-bit element per beat; a row is hidden consecutive beats",
        "params": "one channel's multiplier (Q31), shift, bias, negate and out_zero_point per "
                  "beat, hidden beats per load (channel 0 first)",
        "o": "one signed out_width-bit output per input element, in order; last on each row's "
             "final element",
    },
    tb_module="sim.tb.layernorm_tb",
    sim_configs=({"hidden": 16, "out_width": 8}, {"hidden": 1, "in_width": 8},
                 {"hidden": 12, "in_width": 8, "divider": "pipelined"},
                 {"hidden": 5, "out_width": 8, "divider": "pipelined"}),
    # Fit check counted on the elaborated netlist (gen/resources.py); LUT factor fitted to
    # synth_ice40 of the default configuration: 2,005 LUT4 (2,277 counted).
    resources=netlist_hook(_build, lut_factor=0.88),
)
