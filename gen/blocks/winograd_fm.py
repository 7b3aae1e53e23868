"""The Winograd convolution of whole feature maps (tiler -> unit -> untiler) as a Lutra block."""

from hw.winograd import WinogradFeatureMap, WinogradFMParams

from . import BlockSpec, params_from
from .winograd import unit_figures, unit_resources


def _build(p: dict) -> WinogradFeatureMap:
    return WinogradFeatureMap(WinogradFMParams(**p))


def _figures(fm: WinogradFeatureMap) -> dict:
    p = fm.parameters
    unit = p.unit
    m, n, cpb = unit.m, unit.tile_size, unit.cycles_per_beat
    chans = unit.in_channels
    tile = max(chans * p.tiler_clocks_per_beat, chans * cpb + unit.beats_per_tile - 1)
    figures = {k: v for k, v in unit_figures(unit).items()
               if k in ("multipliers", "winograd_multipliers", "multiplications_per_output_"
                        "per_channel", "weight_memory_words", "weight_width",
                        "input_tap_width", "accumulator_width")}
    figures.update({
        "input_beat": "one int8 value; a map arrives row by row, pixel by pixel, channels "
                      "innermost (NHWC), once per output channel",
        "output_beat": "one value of the output channel's map, row by row",
        "input_rate": "one value per clock while the line buffers have room",
        "tiler_clocks_per_tile_beat": p.tiler_clocks_per_beat,
        "unit_clocks_per_tile": chans * cpb + unit.beats_per_tile - 1,
        "clocks_per_tile": tile,
        "pass_clocks": f"about max(H*W*{chans} input values, "
                       f"ceil(Ho/{m})*ceil(Wo/{m})*{tile} tiles, "
                       "Ho*Wo output values) clocks per output channel with the three "
                       "overlapped, plus the pipeline fill of one tile row",
        "unit_latency_cycles": unit.latency,
        "line_buffers": f"{p.line_buffers} x {p.line_buffer_depth} x 8 bits",
        "output_buffer": f"{p.output_buffer_depth} x {m * p.output_value_bits} bits",
        "tile": f"{n}x{n} input, {m}x{m} output, 2-pixel overlap, partial edge tiles cropped",
    })
    return figures


def _resources(p: dict) -> dict:
    """FPGA needs, for ``lutra build``'s fit check: the unit's multipliers (the Winograd-domain
    ones, ``v_bits x u_bits``, and the requantizer's 32 x 32 per lane), the line and output
    buffers as memories, logic from the unit's registers (a rough count, not fitted)."""
    fm = WinogradFMParams(**p)
    return unit_resources(fm.unit, [(fm.line_buffer_depth, 8)] * fm.line_buffers
                           + [(fm.output_buffer_depth, fm.m * fm.output_value_bits)])


def _bench(argv: list[str]) -> int:
    from sim.bench_winograd import main
    return main(argv)


BLOCK = BlockSpec(
    name="winograd_fm",
    summary="Winograd 3x3 conv of whole feature maps: line-buffer tiler, unit, untiler",
    params=params_from(WinogradFMParams),
    build=_build,
    param_class=WinogradFMParams,
    figures=_figures,
    ports={
        "params": "one beat per pass (output channel): height, width (run time, >= 1, <= the "
                  "max), padding (0 or 1), bias, multiplier (Q31), shift, out_zero_point, "
                  "act_min, act_max",
        "weights": "the pass's Winograd-domain weights U[c] (sim.golden.winograd."
                   "transform_weights), taps_per_clock row-major taps per beat, channel after "
                   "channel; last = final beat",
        "i": "the input map, one int8 per beat, NHWC order (row by row, channels innermost), "
             "height*width*in_channels beats per pass",
        "o": "the output channel's map, one value per beat, row by row; last = end of a row, "
             "end = end of the map",
    },
    tb_module="sim.tb.winograd_fm_tb",
    sim_configs=({"in_channels": 2, "max_width": 7, "max_height": 8},
                 {"m": 4, "mode": "tapwise", "in_channels": 2, "taps_per_clock": 9,
                  "max_width": 9, "max_height": 10}),
    bench=_bench,
    resources=_resources,
)
