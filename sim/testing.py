"""Pytest-aware helpers for Lutra's test suite: run a block's cocotb regression under one simulator,
synthesize a block's netlist as ``lutra build`` does and trace its connectivity.

Tests import these as a module (``from sim.testing import SIMULATORS, cocotb_run``); they need
pytest, so nothing outside ``tests/`` should import this module.
"""

from __future__ import annotations

import json
import os

import pytest

from gen.blocks import get_block
from gen.config import validate_params
from sim.runner import SIMULATORS, missing_reason, run_cocotb

__all__ = ["SIMULATORS", "build_netlist", "cocotb_run", "connectivity", "run_selftest"]


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


def build_netlist(block: str, params: dict, device_name: str, tmp_path) -> dict:
    """``block``'s netlist for ``params`` as ``lutra build`` synthesizes it for ``device_name``
    (flattened, the block's names under ``block.``): the Yosys JSON module."""
    from fpga.flow import _synth_script, build_primitives
    from fpga.ooc import OOC_TOP, OocWrapper
    from fpga.targets import DEVICES
    from fpga.tools import run_tool
    from gen.config import build_component
    from gen.verilog import convert, convert_rtlil, manifest
    device = DEVICES[device_name]
    config = validate_params(get_block(block), params)
    component = build_component(config)
    primitives = build_primitives(device, False)
    (tmp_path / "blk.il").write_text(convert_rtlil(component, "blk", primitives=primitives))
    ports = manifest(config, component, primitives=primitives)["ports"]
    (tmp_path / f"{OOC_TOP}.v").write_text(convert(OocWrapper(module="blk", ports=ports), OOC_TOP))
    (tmp_path / "synth.ys").write_text(_synth_script("blk", device, False))
    run_tool("yosys", ["-q", "synth.ys"], cwd=tmp_path, log=tmp_path / "yosys.log")
    return json.loads((tmp_path / "synth.json").read_text())["modules"][OOC_TOP]


def connectivity(module: dict) -> tuple[dict, dict]:
    """Every bit's drivers and readers in a Yosys JSON ``module``: two dicts from bit to a list
    of ``(cell name, cell type, port)``."""
    drivers, readers = {}, {}
    for name, cell in module["cells"].items():
        for port, bits in cell["connections"].items():
            table = drivers if cell["port_directions"][port] == "output" else readers
            for bit in bits:
                table.setdefault(bit, []).append((name, cell["type"], port))
    return drivers, readers
