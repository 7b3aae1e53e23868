"""The Winograd F(2x2,3x3) / F(4x4,3x3) convolution unit as a Lutra block."""

from hw.winograd import WinogradUnit
from hw.common.arith import signed_width
from sim.golden.winograd import input_bounds, parse_tap_shifts

from . import BlockSpec, Param

# LUT4 model (see unit_resources): LUTS_PER_ADD_BIT x (m+2)**3 x input_width, plus per lane.
LUTS_PER_ADD_BIT, LUTS_PER_LANE = 3.5, 300


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
                       f"+ {unit.beats_per_tile - 1} clocks in steady state (the output "
                       "sequencer holds the pipeline while a tile's beats leave)",
        "multiplications_per_output_per_channel": f"{n * n}/{unit.m * unit.m} "
                                                  f"(direct: 9)",
        "weight_memory_words": unit.weight_words,
        "weight_width": unit.weight_width,
        "input_tap_width": unit.input_width,
        "accumulator_width": unit.accumulator_width,
    }


def unit_resources(unit: WinogradUnit, memories_extra: list | None = None) -> dict:
    """FPGA needs of a ``WinogradUnit`` (plus further memories ``memories_extra``).

    Multipliers: ``taps_per_clock`` products of ``input_width x weight_width`` bits and, with
    requantization, one 32 x 32 (Q31) per output lane. Memories: the weight memory. FFs: the
    pipeline registers counted from the widths (input tile, V, products, accumulators and M,
    the two output-transform stages, rescale and bias stages, output beat) plus about 480 per
    requantizer lane. LUT4s: the shift-and-add transforms grow as ``(m+2)**3`` additions of
    V-sized values (plus V's quantization in tapwise mode). Both fitted to the builds in the
    README (F2 exact on iCE40 UP5K and ECP5-85F, F4 exact and tapwise on ECP5-85F): FFs
    within 10 %, LUT4s within 15 % (carry cells not counted).
    """
    m, n2 = unit.m, unit.tile_size ** 2
    vw, uw, aw, mw = (unit.input_width, unit.weight_width, unit.accumulator_width,
                      unit.transform_width)
    products = [(vw, uw, unit.taps_per_clock)]
    if unit.requantize:
        products.append((32, 32, unit.out_lanes))
    memories = [(max(unit.weight_words, 2), unit.taps_per_clock * uw)]
    memories += list(memories_extra or [])
    lanes = unit.out_lanes if unit.requantize else 0
    ffs = (80 + n2 * (8 + vw + 2 * aw) + unit.taps_per_clock * (vw + uw)
           + m * (2 * m + 2) * mw + 2 * m * m * 32
           + (70 * unit.out_lanes + 118 if unit.requantize else 32 * unit.out_lanes + 32)
           + 480 * lanes)
    # The input transform is computed at its exact width in both modes (then quantized).
    vt = signed_width(*input_bounds(m))
    luts = round(LUTS_PER_ADD_BIT * unit.tile_size ** 3 * vt) + LUTS_PER_LANE * lanes
    if unit.mode == "tapwise":
        luts += 2 * n2 * vt                 # per-tap rounding shift and saturation of V
    return {"multipliers": products, "memories": memories,
            "ram_bits": sum(d * w for d, w in memories), "luts": luts, "ffs": ffs}


def _resources(p: dict) -> dict:
    unit = _build(p)
    unit._MustUse__silence = True           # inspected for its sizes, never elaborated
    return unit_resources(unit)


def unit_params(in_channels_help: str) -> tuple[Param, ...]:
    """The unit's parameters, shared with the feature-map block that contains it."""
    return (
        Param("m", int, 2, "output tile size (2: F(2x2,3x3), 4: F(4x4,3x3))", choices=(2, 4)),
        Param("mode", str, "exact", "exact (== direct conv) or tapwise (int8 per-tap scales)",
              choices=("exact", "tapwise")),
        Param("in_channels", int, 8, in_channels_help, lo=1, hi=1024),
        Param("taps_per_clock", int, 0, "Winograd-domain multipliers (divides (m+2)^2; "
              "0: all taps)", lo=0, hi=36),
        Param("requantize", bool, True, "requantize to int8 (false: raw int32 out)"),
        Param("tap_shifts", str, "", "tapwise: 2*(m+2)^2 comma-separated ints, V right shifts "
              "then U exponents (sim.golden.winograd.format_tap_shifts); empty: data-free"),
    )


def _bench(argv: list[str]) -> int:
    from sim.bench_winograd import main
    return main(argv)


BLOCK = BlockSpec(
    name="winograd",
    summary="Winograd F(2x2,3x3)/F(4x4,3x3) conv unit, exact or tap-wise quantized",
    params=(
        *unit_params("input channels per pass (weight memory depth)"),
        Param("out_lanes", int, 0, "outputs per beat (divides m*m; 0: m)", lo=0, hi=16),
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
    resources=_resources,
)
