"""cocotb regression of the generated softmax engine Verilog against the golden model.

The configuration comes from the manifest (``LUTRA_MANIFEST``); rows of random logits with
random lengths stream in back to back and every output row is compared, ``last`` flags and
beat count included, with :func:`sim.golden.softmax.lut_softmax` or
:func:`sim.golden.softmax.shiftmax`.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np

from sim.cocotb_streams import (StreamSink, StreamSource, load_manifest, seed, start_clock_reset,
                                 watch_handshakes)
from sim.golden.softmax import lut_softmax, shiftmax
from sim.stalls import Stalls

TABLE_PARAMS = ("in_bits", "exp_bits", "recip_index_bits", "recip_bits", "frac_bits",
                "log_steps", "pow_index_bits", "pow_steps", "pow_bits")


def golden(row: np.ndarray, cfg: dict) -> list[int]:
    if cfg["method"] == "shiftmax":
        y, _ = shiftmax(row, cfg["scale"], n=cfg["n"], out_bits=cfg["out_bits"])
        return y.tolist()
    return lut_softmax(row, scale=cfg["scale"], method=cfg["method"], out_bits=cfg["out_bits"],
                       **{k: cfg[k] for k in TABLE_PARAMS}).tolist()


class TB:
    """Owns the clock, reset, the logit source and the probability sink of one engine."""

    def __init__(self, dut, *, in_stall: float, out_stall: float, seed: int):
        self.dut = dut
        self.manifest = load_manifest()
        self.cfg = self.manifest["config"]
        self.figures = self.manifest["figures"]
        self.source = StreamSource(dut, self.manifest, "i", Stalls(in_stall, 4, seed))
        self.sink = StreamSink(dut, self.manifest, "o", Stalls(out_stall, 6, seed + 1))

    async def start(self):
        await start_clock_reset(self.dut)

    def random_rows(self, rng, count: int) -> list[np.ndarray]:
        bits, max_len = self.cfg["in_bits"], self.cfg["max_len"]
        lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
        short = min(max_len, 40)          # keep long configurations quick; max_len rows below
        lengths = [int(n) for n in rng.integers(1, short + 1, count)] + [1, max_len, 1]
        rows = [rng.integers(lo, hi, n) for n in lengths]
        rows.append(np.full(max_len, lo))
        rows.append(np.array([hi - 1] + [lo] * (max_len - 1)))
        return rows

    async def run(self, rows: list[np.ndarray]) -> None:
        beats = [{"data": int(v), "last": int(j == len(r) - 1)}
                 for r in rows for j, v in enumerate(r)]
        feed = cocotb.start_soon(self.source.send_all(beats))
        got = [await self.sink.recv() for _ in range(len(beats))]
        await feed
        await self.sink.expect_idle(2 * self.cfg["max_len"] + 40)
        start = 0
        for n, row in enumerate(rows):
            out = got[start:start + len(row)]
            start += len(row)
            want = golden(row, self.cfg)
            assert [b["data"] for b in out] == want, (
                f"row {n} (length {len(row)}): {[b['data'] for b in out]} != {want}")
            assert [b["last"] for b in out] == [0] * (len(row) - 1) + [1], f"row {n} last"


def _rows() -> int:
    return int(os.environ.get("LUTRA_ROWS", "30"))


@cocotb.test()
async def random_rows_with_stalls(dut):
    """Random rows and lengths back to back; random gaps on the input, backpressure on the
    output."""
    tb = TB(dut, in_stall=0.3, out_stall=0.4, seed=seed())
    await tb.start()
    await tb.run(tb.random_rows(np.random.default_rng(seed()), _rows()))


@cocotb.test()
async def full_rate_and_latency(dut):
    """Never stalled: every element of back-to-back rows enters on consecutive clocks, and an
    idle engine's first row meets the manifest's latency."""
    tb = TB(dut, in_stall=0.0, out_stall=0.0, seed=seed() + 7)
    await tb.start()
    rng = np.random.default_rng(seed() + 7)
    rows = tb.random_rows(rng, _rows())
    total = sum(len(r) for r in rows)
    watcher = cocotb.start_soon(watch_handshakes(dut, tb.manifest, total))
    await tb.run(rows)
    accepted, delivered = await watcher
    span = accepted[-1] - accepted[0] + 1
    assert span == total, f"{total} elements took {span} input cycles (bubbles)"
    first_len = len(rows[0])
    first_latency = delivered[0] - accepted[first_len - 1]
    want = tb.figures["first_out_latency_const"] + first_len
    assert first_latency == want, f"first-row latency {first_latency} != manifest {want}"
