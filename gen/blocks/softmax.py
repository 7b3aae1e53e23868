"""The streaming softmax engine (recip / lut2d / shiftmax) as a Lutra block."""

from hw.softmax import SoftmaxEngine, SoftmaxParams

from ..resources import netlist_hook
from . import BlockSpec, params_from


def _build(p: dict) -> SoftmaxEngine:
    return SoftmaxEngine(SoftmaxParams(**p))


def _figures(dut: SoftmaxEngine) -> dict:
    cfg = dut.parameters
    if cfg.method == "shiftmax":
        meaning = (f"y / 2**{cfg.out_bits - 1} ~ softmax (I-ViT ShiftMax output scale "
                   f"2**-(out_bits - 1)); 1.0 would be {1 << (cfg.out_bits - 1)}")
    else:
        meaning = (f"q / 2**{cfg.out_bits} ~ softmax; 1.0 is not representable and saturates "
                   f"at {(1 << cfg.out_bits) - 1}")
    return {
        "method": cfg.method,
        "output_meaning": meaning,
        "table_bytes": cfg.table_bytes,
        "throughput": "one element per clock in and out, sustained across back-to-back rows of "
                      "any lengths 1..max_len when the sink never stalls",
        "first_out_latency_cycles": f"L + {cfg.first_out_latency(0)}",
        "row_latency_cycles": f"2 * L + {cfg.row_latency(0)}",
        "first_out_latency_const": cfg.first_out_latency(0),
        "row_latency_const": cfg.row_latency(0),
        "latency_meaning": "cycles from the handshake of a row's last input (row length L) to "
                           "its first / last output handshake, row entering an idle engine, "
                           "sink always ready; rows queued behind others wait up to 2 * "
                           "max_len more",
        "row_latency_max_len": cfg.row_latency(cfg.max_len),
        "row_buffer_elements": cfg.buffer_depth,
        "row_buffer_bits": cfg.buffer_depth * cfg.in_bits,
        "descriptor_fifo_depth": cfg.buffer_depth,
    }


def _bench(argv: list[str]) -> int:
    from sim.bench_softmax import main  # NumPy / matplotlib / MiniLM only when benchmarking
    return main(argv)


BLOCK = BlockSpec(
    name="softmax",
    summary="Streaming softmax, one element per clock: LUT (recip, lut2d) or I-ViT ShiftMax",
    params=params_from(SoftmaxParams),
    build=_build,
    param_class=SoftmaxParams,
    figures=_figures,
    ports={
        "i": "logits: data = signed in_bits-bit x (value x * scale), last = final element of "
             "the row",
        "o": "probabilities, one per logit in the same order: data (unsigned out_bits), "
             "last copied from the input",
    },
    tb_module="sim.tb.softmax_tb",
    sim_configs=({}, {"method": "lut2d"}, {"method": "shiftmax"},
                 {"method": "recip", "max_len": 16, "out_bits": 12, "scale": 0.3,
                  "exp_bits": 14, "recip_index_bits": 6, "recip_bits": 12}),
    bench=_bench,
    # Fit check counted on the elaborated netlist (gen/resources.py); LUT factor fitted
    # to synth_ice40: lut2d 1,774 LUT4.
    resources=netlist_hook(_build, lut_factor=0.6),
)
