"""The Winograd F(2x2,3x3) / F(4x4,3x3) convolution unit as a Lutra block."""

from hw.winograd import WinogradParams, WinogradUnit

from . import BlockSpec, params_from

# LUT4 model (see unit_resources): LUTS_PER_ADD_BIT x (m+2)**3 x input_width, plus per lane.
LUTS_PER_ADD_BIT, LUTS_PER_LANE = 3.5, 300


def _build(p: dict) -> WinogradUnit:
    return WinogradUnit(WinogradParams(**p))


def _figures(unit: WinogradUnit) -> dict:
    return unit_figures(unit.parameters)


def unit_figures(unit: WinogradParams) -> dict:
    """The manifest figures of a unit's parameters (shared with the feature-map block)."""
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


def unit_resources(unit: WinogradParams, memories_extra: list | None = None) -> dict:
    """FPGA needs of a ``WinogradUnit`` of parameters ``unit`` (plus further memories
    ``memories_extra``).

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
    vt = unit.exact_input_width
    luts = round(LUTS_PER_ADD_BIT * unit.tile_size ** 3 * vt) + LUTS_PER_LANE * lanes
    if unit.mode == "tapwise":
        luts += 2 * n2 * vt                 # per-tap rounding shift and saturation of V
    return {"multipliers": products, "memories": memories,
            "ram_bits": sum(d * w for d, w in memories), "luts": luts, "ffs": ffs}


def _resources(p: dict) -> dict:
    return unit_resources(WinogradParams(**p))


def _bench(argv: list[str]) -> int:
    from sim.bench_winograd import main
    return main(argv)


BLOCK = BlockSpec(
    name="winograd",
    summary="Winograd F(2x2,3x3)/F(4x4,3x3) conv unit, exact or tap-wise quantized",
    params=params_from(WinogradParams),
    build=_build,
    param_class=WinogradParams,
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
