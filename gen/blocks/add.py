"""The residual adder (TFLite ``ADD``) as a Lutra block; its parameters come from
``AddUnitParams``."""

from hw.add import AddUnit, AddUnitParams

from ..resources import netlist_hook
from . import BlockSpec, params_from


def _build(p: dict) -> AddUnit:
    return AddUnit(**p)


def _figures(block: AddUnit) -> dict:
    cfg = block.parameters
    return {
        "latency_cycles": cfg.latency,
        "latency_meaning": "cycles from an input beat's handshake to its output beat, sink "
                           "always ready",
        "throughput": f"one beat ({cfg.lanes} elements of each input) per clock",
        "elements_per_clock": cfg.elements_per_clock,
        "left_shift": cfg.left_shift,
        "multipliers_17x17": cfg.multipliers,
        "params_rule": "a load (one params beat, always accepted) applies to input beats "
                       "accepted in a later cycle; earlier beats keep the previous load; "
                       "before the first load all parameters are 0",
        "output_meaning": "clamp(MBQM(sum_k MBQM((x_k + offset_k) << left_shift, multiplier_k, "
                          "shift_k), out_multiplier, out_shift) + out_offset): "
                          "sim.golden.add.add_int",
    }


BLOCK = BlockSpec(
    name="add",
    summary="Residual adder: TFLite int8/int16 ADD of 2 or 3 tensors (the encoder's residual "
            "sums and embedding sum), requantization loaded at run time",
    params=params_from(AddUnitParams),
    build=_build,
    param_class=AddUnitParams,
    figures=_figures,
    ports={
        "i": "lanes signed in_width-bit elements of each input tensor per beat (data[input]"
             "[lane]); last passes through",
        "params": "one load per beat: per input offset, Q31 multiplier and shift; the output's "
                  "out_multiplier, out_shift and out_offset",
        "o": "lanes signed out_width-bit sums per input beat, in order, with its last",
    },
    tb_module="sim.tb.add_tb",
    sim_configs=({"in_width": 8, "inputs": 3, "lanes": 1},
                 {"in_width": 16, "inputs": 2, "lanes": 4},
                 {"in_width": 8, "out_width": 8, "inputs": 3, "lanes": 3},
                 {"in_width": 16, "out_width": 8, "inputs": 2, "lanes": 1}),
    # Fit check counted on the elaborated netlist (gen/resources.py).
    resources=netlist_hook(_build, lut_factor=1.0),
)
