"""Pytest-aware helpers for Lutra's test suite: run a block's cocotb regression under one simulator.

Tests import these as a module (``from sim.testing import SIMULATORS, cocotb_run``); they need
pytest, so nothing outside ``tests/`` should import this module.
"""

from __future__ import annotations

import os

import pytest

from gen.blocks import get_block
from gen.config import validate_params
from sim.runner import SIMULATORS, missing_reason, run_cocotb

__all__ = ["SIMULATORS", "cocotb_run", "run_selftest"]


def cocotb_run(block: str, params: dict, simulator: str, tmp_path, *, seed: int = 1,
               testcase: str | None = None, primitives: str = "generic", **env) -> None:
    """Run ``block``'s cocotb module on the Verilog of ``params`` under ``simulator``.

    A simulator that is not installed skips the test on a developer's machine but fails in CI
    (``CI`` set), where the set-up must have provided both.
    """
    reason = missing_reason(simulator)
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{simulator} is required in CI: {reason}")
        pytest.skip(reason)
    config = validate_params(get_block(block), params)
    result = run_cocotb(config, simulator, build_root=tmp_path, quiet=True, seed=seed,
                        testcase=testcase, extra_env={k: str(v) for k, v in env.items()},
                        primitives=primitives)
    log = result.build_dir / "test.log"
    tail = log.read_text()[-6000:] if log.exists() else "(no log)"
    assert result.tests > 0, f"no cocotb test ran; log tail:\n{tail}"
    assert result.failed == 0, (f"{result.failed} of {result.tests} cocotb tests failed under "
                                f"{simulator}; log tail:\n{tail}")


def run_selftest(dut, *, max_cycles: int, period: float = 1e-6) -> dict:
    """Simulate a board self-test top (``fpga.selftest.SelfTest``) in Amaranth until it stops
    ``running`` or ``max_cycles`` pass; ``{"cycle", "passed", "failed"}`` when it stopped, ``{}``
    when it was still running."""
    from amaranth.sim import Simulator
    sim = Simulator(dut)
    sim.add_clock(period)
    result = {}

    async def bench(ctx):
        for cycle in range(max_cycles):
            await ctx.tick()
            if not ctx.get(dut.running):
                result.update(cycle=cycle, passed=ctx.get(dut.passed),
                              failed=ctx.get(dut.failed))
                return

    sim.add_testbench(bench)
    sim.run()
    return result
