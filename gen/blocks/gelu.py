"""The GELU unit (I-ViT ShiftGELU, I-BERT i-GELU or a table) as a Lutra block."""

from hw.gelu import Gelu, GeluParams

from ..resources import netlist_hook
from . import BlockSpec, params_from


def _build(p: dict) -> Gelu:
    return Gelu(GeluParams(**p))


def _figures(gelu: Gelu) -> dict:
    cfg = gelu.parameters
    period = cfg.beat_period
    figures = {
        "method": cfg.method,
        "out_width": cfg.out_width,
        "out_scale": cfg.out_scale,
        "output_meaning": "real value = o.data * out_scale (one output per input, same order)",
        "latency_cycles": cfg.latency,
        "latency_meaning": ("cycles from the handshake of a row's last input beat to the row's "
                            "first output beat, sink always ready" if cfg.buffers_rows else
                            "cycles from an input beat's handshake to its output beat, sink "
                            "always ready"),
        "beat_period_cycles": period,
        "throughput": (f"{cfg.lanes} element(s) per clock" if period == 1 else
                       f"{cfg.lanes} element(s) every {period} clocks (iterative divider)"),
        "row_buffer_beats": cfg.row_buffer_depth,
    }
    k = cfg.constants
    if cfg.method == "shift":
        figures.update({"x0": k.x0, "quotient_bits": k.quotient_bits,
                        "max_row_elements": cfg.max_row if cfg.buffers_rows else None})
    elif cfg.method == "poly":
        figures.update({"b": k.b, "c": k.c, "shift_int": k.shift_int})
    return figures


def _bench(argv: list[str]) -> int:
    from sim.bench_gelu import main
    return main(argv)


BLOCK = BlockSpec(
    name="gelu",
    summary="Integer GELU: I-ViT ShiftGELU (default), I-BERT i-GELU (poly) or a table (lut)",
    params=params_from(GeluParams),
    build=_build,
    param_class=GeluParams,
    figures=_figures,
    ports={
        "i": "lanes signed in_width-bit inputs at scale S; last ends a row",
        "o": "lanes signed out_width-bit GELU outputs at scale out_scale (see figures); last "
             "where the input had it",
    },
    tb_module="sim.tb.gelu_tb",
    sim_configs=({"max_row": 64}, {"max_mode": "static"}, {"divider": "iterative", "max_row": 32},
                 {"method": "poly", "in_width": 16, "scale": 2.0 ** -10}, {"method": "lut"},
                 {"lanes": 2, "max_row": 64}),
    bench=_bench,
    # Fit check counted on the elaborated netlist (gen/resources.py); LUT factor fitted
    # to synth_ice40: 1,929 LUT4 for the default.
    resources=netlist_hook(_build, lut_factor=0.45),
)
