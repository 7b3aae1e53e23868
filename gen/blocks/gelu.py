"""The GELU unit (I-ViT ShiftGELU, I-BERT i-GELU or a table) as a Lutra block."""

from hw.gelu import DIVIDERS, MAX_MODES, METHODS, Gelu

from ..resources import netlist_hook
from . import BlockSpec, Param


def _build(p: dict) -> Gelu:
    return Gelu(method=p["method"], scale=p["scale"], in_width=p["in_width"], lanes=p["lanes"],
                n=p["n"], out_bits=p["out_bits"], max_mode=p["max_mode"], max_row=p["max_row"],
                divider=p["divider"])


def _figures(gelu: Gelu) -> dict:
    period = gelu.beat_period
    figures = {
        "method": gelu.method,
        "out_width": gelu.out_width,
        "out_scale": gelu.out_scale,
        "output_meaning": "real value = o.data * out_scale (one output per input, same order)",
        "latency_cycles": gelu.latency,
        "latency_meaning": ("cycles from the handshake of a row's last input beat to the row's "
                            "first output beat, sink always ready" if gelu.buffers_rows else
                            "cycles from an input beat's handshake to its output beat, sink "
                            "always ready"),
        "beat_period_cycles": period,
        "throughput": (f"{gelu.lanes} element(s) per clock" if period == 1 else
                       f"{gelu.lanes} element(s) every {period} clocks (iterative divider)"),
        "row_buffer_beats": gelu.row_buffer_depth,
    }
    k = gelu.constants
    if gelu.method == "shift":
        figures.update({"x0": k.x0, "quotient_bits": k.quotient_bits,
                        "max_row_elements": gelu.max_row if gelu.buffers_rows else None})
    elif gelu.method == "poly":
        figures.update({"b": k.b, "c": k.c, "shift_int": k.shift_int})
    return figures


def _bench(argv: list[str]) -> int:
    from sim.bench_gelu import main
    return main(argv)



BLOCK = BlockSpec(
    name="gelu",
    summary="Integer GELU: I-ViT ShiftGELU (default), I-BERT i-GELU (poly) or a table (lut)",
    params=(
        Param("method", str, "shift", "shift (I-ViT ShiftGELU), poly (I-BERT i-GELU) or lut",
              choices=METHODS),
        Param("scale", float, 2.0 ** -4, "input scale S (real = integer * S)",
              lo=2.0 ** -24, hi=16.0),
        Param("in_width", int, 8, "input bits (lut: at most 12)", lo=2, hi=16),
        Param("lanes", int, 1, "elements per beat", lo=1, hi=16),
        Param("n", int, 23, "ShiftGELU exponent range (I-ViT: 23)", lo=1, hi=30),
        Param("out_bits", int, 8, "sigmoid bits (shift) / output fraction (lut): output scale "
              "S * 2**-(out_bits - 1)", lo=1, hi=16),
        Param("max_mode", str, "row", "shift: subtract each row's max (row, buffered) or the "
              "largest input (static)", choices=MAX_MODES),
        Param("max_row", int, 1536, "shift/row: longest row in elements (multiple of lanes)",
              lo=1, hi=1 << 16),
        Param("divider", str, "pipelined", "shift: pipelined (one beat per clock) or iterative",
              choices=DIVIDERS),
    ),
    build=_build,
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
