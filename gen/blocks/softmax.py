"""The streaming softmax engine (recip / lut2d / shiftmax) as a Lutra block."""

from hw.softmax import SoftmaxEngine
from sim.golden.softmax import LUT_DEFAULTS, METHODS

from ..resources import netlist_hook
from . import BlockSpec, Param

_TABLE_PARAMS = ("exp_bits", "recip_index_bits", "recip_bits", "frac_bits", "log_steps",
                 "pow_index_bits", "pow_steps", "pow_bits")


def _build(p: dict) -> SoftmaxEngine:
    return SoftmaxEngine(method=p["method"], scale=p["scale"], in_bits=p["in_bits"],
                         out_bits=p["out_bits"], max_len=p["max_len"], n=p["n"],
                         **{k: p[k] for k in _TABLE_PARAMS})


def _figures(dut: SoftmaxEngine) -> dict:
    if dut.method == "shiftmax":
        meaning = (f"y / 2**{dut.out_bits - 1} ~ softmax (I-ViT ShiftMax output scale "
                   f"2**-(out_bits - 1)); 1.0 would be {1 << (dut.out_bits - 1)}")
    else:
        meaning = (f"q / 2**{dut.out_bits} ~ softmax; 1.0 is not representable and saturates "
                   f"at {(1 << dut.out_bits) - 1}")
    return {
        "method": dut.method,
        "output_meaning": meaning,
        "table_bytes": dut.table_bytes,
        "throughput": "one element per clock in and out, sustained across back-to-back rows of "
                      "any lengths 1..max_len when the sink never stalls",
        "first_out_latency_cycles": f"L + {dut.first_out_latency(0)}",
        "row_latency_cycles": f"2 * L + {dut.row_latency(0)}",
        "first_out_latency_const": dut.first_out_latency(0),
        "row_latency_const": dut.row_latency(0),
        "latency_meaning": "cycles from the handshake of a row's last input (row length L) to "
                           "its first / last output handshake, row entering an idle engine, "
                           "sink always ready; rows queued behind others wait up to 2 * "
                           "max_len more",
        "row_latency_max_len": dut.row_latency(dut.max_len),
        "row_buffer_elements": dut.buffer_depth,
        "row_buffer_bits": dut.buffer_depth * dut.in_bits,
        "descriptor_fifo_depth": dut.buffer_depth,
    }


def _bench(argv: list[str]) -> int:
    from sim.bench_softmax import main  # NumPy / matplotlib / MiniLM only when benchmarking
    return main(argv)



BLOCK = BlockSpec(
    name="softmax",
    summary="Streaming softmax, one element per clock: LUT (recip, lut2d) or I-ViT ShiftMax",
    params=(
        Param("method", str, "recip", "recip (exp + reciprocal tables, one multiply), lut2d "
              "(2-D quotient table stored along its log-domain anti-diagonals, no "
              "multiplier) or shiftmax (I-ViT, no tables)",
              choices=METHODS),
        Param("scale", float, 0.125, "input scale S: logit = x * S (fixes the tables)",
              lo=1e-6, hi=1e6),
        Param("in_bits", int, 8, "signed logit width", lo=2, hi=16),
        Param("out_bits", int, 8, "probability width", lo=4, hi=16),
        Param("max_len", int, 512, "longest row (rows of 1..max_len chosen by last)",
              lo=1, hi=65536),
        Param("exp_bits", int, LUT_DEFAULTS["exp_bits"], "recip/lut2d: exp table entry bits",
              lo=4, hi=24),
        Param("recip_index_bits", int, LUT_DEFAULTS["recip_index_bits"],
              "recip: reciprocal table index bits (1.5 * 2**bits entries)", lo=1, hi=12),
        Param("recip_bits", int, LUT_DEFAULTS["recip_bits"], "recip: reciprocal entry bits",
              lo=3, hi=24),
        Param("frac_bits", int, LUT_DEFAULTS["frac_bits"],
              "lut2d: fraction bits of the log-domain quotient index", lo=4, hi=24),
        Param("log_steps", int, LUT_DEFAULTS["log_steps"],
              "lut2d: shift-and-add normalisation stages of log2(sum)", lo=1, hi=16),
        Param("pow_index_bits", int, LUT_DEFAULTS["pow_index_bits"],
              "lut2d: exp2 table index bits (2**bits entries)", lo=1, hi=12),
        Param("pow_steps", int, LUT_DEFAULTS["pow_steps"],
              "lut2d: shift-and-add refinement stages after the exp2 table", lo=0, hi=12),
        Param("pow_bits", int, LUT_DEFAULTS["pow_bits"], "lut2d: exp2 table entry bits",
              lo=4, hi=24),
        Param("n", int, 15, "shiftmax: I-ViT n (exponent range)", lo=1, hi=30),
    ),
    build=_build,
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
