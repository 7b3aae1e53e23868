"""The length-aware block-sparse attention scheduler as a Lutra block."""

from hw.attention import AttentionScheduler, SchedulerParams

from ..resources import netlist_hook
from . import BlockSpec, params_from


def _build(p: dict) -> AttentionScheduler:
    return AttentionScheduler(SchedulerParams(**p))


def _figures(dut: AttentionScheduler) -> dict:
    cfg = dut.parameters
    return {
        "engines": cfg.engines,
        "first_command_cycle": cfg.FIRST_COMMAND_CYCLE,
        "first_command_meaning": "cycles from the first descriptor handshake to the first "
                                 "command handshake (engine 0 ready)",
        "row_latency_cycles": cfg.ROW_LATENCY,
        "row_latency_meaning": "a row generated in cycle t (staged, then inserted into the "
                               f"window) can be dispatched from cycle t + {cfg.ROW_LATENCY}",
        "handover_cycles": cfg.HANDOVER,
        "handover_meaning": "an engine whose done is taken in cycle t receives its next row's "
                            f"first command in cycle t + {cfg.HANDOVER} (if a row is in the "
                            "window)",
        "row_engine_cycles": "pairs x cost_per_pair + 1 with an engine of cost_per_pair cycles "
                             "per command",
        "rows_per_cycle_generated": 1,
        "rows_per_cycle_dispatched": cfg.dispatch_width,
        "commands_per_cycle": f"up to {cfg.engines} (one per engine whose stream is ready)",
        "lookahead_rows": cfg.lookahead,
        "policy": ("longest row first within the window, ties in descriptor order"
                   if cfg.longest_first else "descriptor order"),
        "pairs_per_row_max_non_global": cfg.max_pairs_non_global,
        "golden": "sim.golden.attention.schedule (cycle-exact with exact-cost engines)",
    }


def _bench(argv: list[str]) -> int:
    from sim.bench_attention import main
    return main(argv)


BLOCK = BlockSpec(
    name="attention",
    summary="Length-aware scheduler of block-sparse attention rows onto P engines",
    params=params_from(SchedulerParams),
    build=_build,
    param_class=SchedulerParams,
    figures=_figures,
    ports={
        "desc": "sequence descriptors: seq (id), length (tokens; 0 = skipped)",
        **{f"cmd_{e}": f"commands for engine {e}: seq, query_block, key_block, last (the row "
                       f"ends: normalise), valid (bit t = key token t exists)" for e in range(16)},
        **{f"done_{e}": f"engine {e} finished its row; held until done_ready_{e}"
           for e in range(16)},
        **{f"done_ready_{e}": f"done_{e} is taken in a cycle where both are high"
           for e in range(16)},
    },
    tb_module="sim.tb.attention_tb",
    sim_configs=({}, {"engines": 1, "lookahead": 1, "longest_first": False},
                 {"engines": 8, "block": 4, "causal": True, "window": 2, "n_global": 0,
                  "max_len": 64, "lookahead": 8}),
    bench=_bench,
    # Fit check counted on the elaborated netlist (gen/resources.py); LUT factor fitted
    # to synth_ice40 after the scheduler was pipelined: 5,701 LUT4 for the default (4 engines)
    # and 8,082 for 8 engines, where the netlist count grows faster than the LUTs (-18 % / +19 %).
    resources=netlist_hook(_build, lut_factor=0.40),
)
