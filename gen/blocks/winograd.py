"""The Winograd F(2x2,3x3) / F(4x4,3x3) convolution unit as a Lutra block."""

from hw.winograd import WinogradUnit
from sim.golden.winograd import parse_tap_shifts

from . import BlockSpec, Param


def _build(p: dict) -> WinogradUnit:
    n = p["m"] + 2
    shifts = None
    if p["mode"] == "tapwise":
        shifts = parse_tap_shifts(p["tap_shifts"], p["m"])
    elif p["tap_shifts"]:
        raise ValueError(f"tap_shifts must be empty in exact mode, not {p['tap_shifts']!r}")
    return WinogradUnit(m=p["m"], mode=p["mode"], in_channels=p["in_channels"],
                        taps_per_clock=p["taps_per_clock"] or n * n,
                        requantize=p["requantize"], out_lanes=p["out_lanes"] or p["m"],
                        tap_shifts=shifts)


def _figures(unit: WinogradUnit) -> dict:
    n = unit.tile_size
    return {
        "multipliers": unit.multipliers,
        "winograd_multipliers": unit.taps_per_clock,
        "latency_cycles": unit.latency,
        "latency_meaning": "cycles from the handshake of a tile's last input-channel beat to "
                           "the handshake of its first output beat, sink always ready",
        "cycles_per_input_beat": unit.cycles_per_beat,
        "input_rate": f"one input channel of one {n}x{n} tile every {unit.cycles_per_beat} "
                      "clock(s), back to back across tiles",
        "output_beats_per_tile": unit.beats_per_tile,
        "output_rate": f"one {unit.m}x{unit.m} tile per in_channels x {unit.cycles_per_beat} "
                       f"clocks; needs in_channels x {unit.cycles_per_beat} >= "
                       f"{unit.beats_per_tile} to sustain the input rate",
        "multiplications_per_output_per_channel": f"{n * n}/{unit.m * unit.m} "
                                                  f"(direct: 9)",
        "weight_memory_words": unit.weight_words,
        "weight_width": unit.weight_width,
        "input_tap_width": unit.input_width,
        "accumulator_width": unit.accumulator_width,
    }


def _bench(argv: list[str]) -> int:
    from sim.bench_winograd import main
    return main(argv)


BLOCK = BlockSpec(
    name="winograd",
    summary="Winograd F(2x2,3x3)/F(4x4,3x3) conv unit, exact or tap-wise quantized",
    params=(
        Param("m", int, 2, "output tile size (2: F(2x2,3x3), 4: F(4x4,3x3))", choices=(2, 4)),
        Param("mode", str, "exact", "exact (== direct conv) or tapwise (int8 per-tap scales)",
              choices=("exact", "tapwise")),
        Param("in_channels", int, 8, "input channels per pass (weight memory depth)",
              lo=1, hi=1024),
        Param("taps_per_clock", int, 0, "Winograd-domain multipliers (divides (m+2)^2; "
              "0: all taps)", lo=0, hi=36),
        Param("requantize", bool, True, "requantize to int8 (false: raw int32 out)"),
        Param("out_lanes", int, 0, "outputs per beat (divides m*m; 0: m)", lo=0, hi=16),
        Param("tap_shifts", str, "", "tapwise: 2*(m+2)^2 comma-separated ints, V right shifts "
              "then U exponents (sim.golden.winograd.format_tap_shifts); empty: data-free"),
    ),
    build=_build,
    figures=_figures,
    ports={
        "params": "one beat per pass (output channel): bias, multiplier (Q31), shift (TFLite, "
                  ">0 left), out_zero_point, act_min, act_max",
        "weights": "the pass's Winograd-domain weights U[c] (sim.golden.winograd."
                   "transform_weights), taps_per_clock row-major taps per beat, channel after "
                   "channel; last = final beat",
        "i": "one input channel of one (m+2)x(m+2) int8 tile, row-major; last = final channel "
             "of the tile; end (with last) = final tile of the pass",
        "o": "output tile row-major, out_lanes values per beat; last = final beat of the tile",
    },
    tb_module="sim.tb.winograd_tb",
    sim_configs=({}, {"m": 4, "taps_per_clock": 9, "out_lanes": 16},
                 {"m": 4, "mode": "tapwise", "requantize": False},
                 {"m": 2, "mode": "tapwise", "taps_per_clock": 4}),
    bench=_bench,
)
