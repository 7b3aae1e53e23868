"""cocotb benchmark of the generated GEMM core: cycles and PE utilization of one whole GEMM.

The problem size comes from ``LUTRA_BENCH_SHAPE`` (``MxKxN``); the figures are written as JSON
to ``LUTRA_BENCH_OUT``. Tiles are streamed back to back with the sink always ready, the way an
integrator feeding the core from on-chip buffers would; the result is checked against the golden
model so the figures are of a correct run.
"""

import json
import os

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from sim.cocotb_streams import StreamSink, StreamSource, load_manifest, start_clock_reset
from sim.gemm_driver import assemble, plan, random_problem


@cocotb.test()
async def gemm_utilization(dut):
    manifest = load_manifest()
    cfg, figures = manifest["config"], manifest["figures"]
    rows, cols, lanes = cfg["rows"], cfg["cols"], cfg["out_lanes"]
    m, k, n = (int(x) for x in os.environ["LUTRA_BENCH_SHAPE"].split("x"))
    widths = {"a_width": cfg["a_width"], "out_width": cfg["out_width"]}
    problem = random_problem(np.random.default_rng(0), m, k, n, **widths)
    tiles = plan(problem, rows, cols, cfg["requantize"], **widths, k_per_pe=cfg["k_per_pe"])
    await start_clock_reset(dut)
    slices = StreamSource(dut, manifest, "i")
    params = StreamSource(dut, manifest, "params")
    out = StreamSink(dut, manifest, "o")
    total_beats = len(tiles) * figures["output_beats_per_tile"]
    cycles = {"first_in": None, "last_out": None, "stalled_in": 0}

    async def count():
        cycle = 0
        while cycles["last_out"] is None:
            await ReadOnly()
            if dut.i__valid.value:
                if dut.i__ready.value:
                    if cycles["first_in"] is None:
                        cycles["first_in"] = cycle
                else:
                    cycles["stalled_in"] += 1
            if dut.o__valid.value and dut.o__ready.value and out.received == total_beats - 1:
                cycles["last_out"] = cycle
            await RisingEdge(dut.clk)
            cycle += 1

    counter = cocotb.start_soon(count())
    cocotb.start_soon(slices.send_all(s for t in tiles for s in t.slices))
    cocotb.start_soon(params.send_all(t.params for t in tiles))
    beats = [await out.recv() for _ in range(total_beats)]
    await counter
    got = assemble(beats, (m, n), rows, cols, lanes)
    assert np.array_equal(got, problem.expected(cfg["requantize"])), "wrong GEMM result"
    span = cycles["last_out"] - cycles["first_in"] + 1
    padded_tiles = len(tiles)
    result = {
        "array": f"{rows}x{cols}", "shape": f"{m}x{k}x{n}", "cycles": span,
        "useful_macs": m * k * n, "pe_cycles": rows * cols * span,
        "utilization": m * k * n / (rows * cols * span),
        "input_stall_cycles": cycles["stalled_in"], "tiles": padded_tiles,
        "latency_cycles": figures["latency_cycles"],
    }
    with open(os.environ["LUTRA_BENCH_OUT"], "w") as f:
        json.dump(result, f)
