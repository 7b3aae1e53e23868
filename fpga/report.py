"""Reading Yosys / nextpnr reports into Lutra's build report, and writing report tables.

nextpnr's ``--report`` JSON gives utilisation, per-clock Fmax and critical paths; Yosys's
``stat -json`` gives cell counts per module (so the block and the OOC wrapper are separate).
No figure is scraped from log text.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

__all__ = [
    "timing_summary",
    "worst_clocked_path",
    "REPORT_NAME",
    "critical_path",
    "gather",
    "markdown_report",
    "parse_nextpnr",
    "parse_yosys_stat",
    "resources",
    "table",
]

REPORT_NAME = "report.json"

# nextpnr utilisation keys per family: our name -> nextpnr bel type.
_PLACED = {
    "ice40": {"lc": "ICESTORM_LC", "dsp": "ICESTORM_DSP", "bram": "ICESTORM_RAM",
              "spram": "ICESTORM_SPRAM", "io": "SB_IO"},
    "ecp5": {"lc": "TRELLIS_COMB", "ff": "TRELLIS_FF", "dsp": "MULT18X18D", "bram": "DP16KD",
             "io": "TRELLIS_IO", "ramw": "TRELLIS_RAMW"},
}


def parse_nextpnr(report: dict) -> dict:
    """Utilisation, clocks and critical paths from nextpnr's ``--report`` JSON."""
    clocks = []
    for net, fmax in sorted(report.get("fmax", {}).items()):
        clocks.append({"net": net, "requested_mhz": round(float(fmax["constraint"]), 2),
                       "achieved_mhz": round(float(fmax["achieved"]), 2),
                       "met": fmax["achieved"] >= fmax["constraint"]})
    return {"utilization": report.get("utilization", {}), "clocks": clocks,
            "critical_paths": [critical_path(p) for p in report.get("critical_paths", [])]}


def critical_path(path: dict) -> dict:
    """One nextpnr critical path, summarised: end points, logic / routing split, cells."""
    steps = path.get("path", [])
    logic = sum(s["delay"] for s in steps if s.get("type") in ("logic", "clk-to-q", "setup"))
    routing = sum(s["delay"] for s in steps if s.get("type") == "routing")
    cells = []
    for step in steps:
        cell = step["to"]["cell"]
        if not cells or cells[-1] != cell:
            cells.append(cell)
    return {
        "from_clock": path.get("from", ""), "to_clock": path.get("to", ""),
        "start": steps[0]["from"]["cell"] if steps else "",
        "end": steps[-1]["to"]["cell"] if steps else "",
        "delay_ns": round(logic + routing, 3), "logic_ns": round(logic, 3),
        "routing_ns": round(routing, 3),
        "levels": sum(1 for s in steps if s.get("type") == "logic"),
        "cells": cells,
    }


def parse_yosys_stat(stat: dict, block_module: str) -> dict:
    """Cells by type of the block module and of everything else (the wrapper)."""
    modules = {name.lstrip("\\"): m.get("num_cells_by_type", {})
               for name, m in stat.get("modules", {}).items()}
    drop = {"$scopeinfo"} | set(modules)           # submodule instances are not cells
    block = {k: v for k, v in modules.get(block_module, {}).items() if k not in drop}
    wrapper: dict[str, int] = {}
    for name, cells in modules.items():
        if name != block_module:
            for k, v in cells.items():
                if k not in drop:
                    wrapper[k] = wrapper.get(k, 0) + v
    return {"block": block, "wrapper": wrapper}


def _sum(cells: dict, prefixes) -> int:
    return sum(v for k, v in cells.items() if k.startswith(prefixes))


def synth_figures(cells: dict, family: str) -> dict:
    """LUT4 / FF / carry / DSP / block RAM counts of one module's synthesised cells.

    ``comb`` counts LUT4-sized combinational cells as the placer sees them: on ECP5 a CCU2C
    (two-bit carry) fills two TRELLIS_COMB slots; on iCE40 a carry rides in a LUT's logic cell.
    """
    if family == "ice40":
        lut4 = cells.get("SB_LUT4", 0)
        carry = cells.get("SB_CARRY", 0)
        return {"lut4": lut4, "ff": _sum(cells, ("SB_DFF",)), "carry": carry,
                "comb": lut4, "dsp": cells.get("SB_MAC16", 0),
                "bram": _sum(cells, ("SB_RAM40",)), "spram": cells.get("SB_SPRAM256KA", 0)}
    lut4 = cells.get("LUT4", 0)
    carry = cells.get("CCU2C", 0)
    return {"lut4": lut4, "ff": cells.get("TRELLIS_FF", 0), "carry": carry,
            "comb": lut4 + 2 * carry, "dsp": cells.get("MULT18X18D", 0),
            "bram": cells.get("DP16KD", 0), "spram": 0,
            "lutram": cells.get("TRELLIS_DPR16X4", 0)}


def _pct(used: int, available: int) -> float:
    return round(100.0 * used / available, 1) if available else 0.0


def resources(placed: dict, cells_total: dict | None, family: str) -> dict:
    """The report's resource table: used / available / percent for each resource kind.

    LUT4, FF and carry counts come from synthesis (nextpnr packs them into LCs/slices); logic
    cells, DSPs, block RAMs, SPRAMs and IOs from nextpnr's placement.
    """
    keys = _PLACED[family]

    def placed_use(kind):
        entry = placed.get(keys.get(kind, ""), {"used": 0, "available": 0})
        return entry["used"], entry["available"]

    out = {}
    lc_used, lc_avail = placed_use("lc")
    for kind in ("lut4", "ff", "carry") if cells_total else ():
        avail = lc_avail if kind != "carry" else lc_avail // (2 if family == "ecp5" else 1)
        out[kind] = {"used": cells_total[kind], "available": avail,
                     "percent": _pct(cells_total[kind], avail)}
    out["lc"] = {"used": lc_used, "available": lc_avail, "percent": _pct(lc_used, lc_avail)}
    for kind in ("dsp", "bram", "spram", "io"):
        used, avail = placed_use(kind)
        if kind == "spram" and family == "ecp5":
            continue
        out[kind] = {"used": used, "available": avail, "percent": _pct(used, avail)}
    return out


def markdown_report(report: dict) -> str:
    """A build report as Markdown."""
    lines = [f"# {report['block']} on {report['target']} ({report['kind']})", "",
             f"- device: {report['device']}",
             "- configuration: " + ", ".join(f"{k}={v}" for k, v in report["config"].items()),
             f"- tools: {', '.join(f'{k} {v}' for k, v in report['tools'].items())}",
             f"- seed: {report['seed']}",
             f"- router: {report.get('router', 'router1')}",
             f"- source: {report.get('source', 'unknown')}"]
    if report.get("wrapper"):
        lines.append(f"- wrapper: {report['wrapper']['description']}")
    if report.get("synth_note"):
        lines.append(f"- synthesis: {report['synth_note']}")
    lines += ["", "## Timing", "", "| clock | requested MHz | achieved MHz | met |",
              "|---|---:|---:|---|"]
    for c in report["clocks"]:
        lines.append(f"| {c['domain']} | {c['requested_mhz']} | {c['achieved_mhz']} | "
                     f"{'yes' if c['met'] else 'NO'} |")
    lines += ["", report["timing_summary"], ""]
    path = report.get("critical_path")
    if path:
        lines += [(f"Critical path: {path['start']} -> {path['end']}, {path['delay_ns']} ns "
                   f"({path['logic_ns']} ns logic in {path['levels']} levels, "
                   f"{path['routing_ns']} ns routing)."), ""]
    lines += ["## Resources (whole design, after place and route)", "",
              "| resource | used | available | % |", "|---|---:|---:|---:|"]
    for kind, r in report["resources"].items():
        lines.append(f"| {kind} | {r['used']:,} | {r['available']:,} | {r['percent']} |")
    if report.get("synth"):
        lines += ["", "## Synthesised cells: block vs wrapper", "",
                  "| part | " + " | ".join(report["synth"]["block"]) + " |",
                  "|---|" + "---:|" * len(report["synth"]["block"])]
        for part in ("block", "wrapper"):
            lines.append(f"| {part} | " + " | ".join(
                f"{report['synth'][part].get(k, 0):,}" for k in report["synth"]["block"]) + " |")
    if report.get("figures"):
        lines += ["", "## Figures", ""]
        lines += [f"- {k}: {v}" for k, v in report["figures"].items()]
    lines += ["", "## Steps (wall time)", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report["steps"].items()]
    return "\n".join(lines) + "\n"


def gather(directory: Path) -> list[dict]:
    """Every build report (``report.json``) under ``directory``, sorted by block and target."""
    reports = []
    for path in sorted(Path(directory).rglob(REPORT_NAME)):
        if any(part.startswith(".lutra-tmp-") for part in path.parts):
            continue                # a build in progress (see gen.outputs)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):       # not JSON, not UTF-8: not one of Lutra's reports
            continue
        if isinstance(data, dict) and data.get("lutra_report") == 1:
            try:
                _row(data)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError):
                print(f"lutra: note: skipped {path}: not a complete build report",
                      file=sys.stderr)
                continue
            data["_path"] = str(path.parent)
            reports.append(data)
    return reports


_COLUMNS = ("block", "config", "target", "kind", "requested MHz", "achieved MHz", "timing",
            "LCs", "LC %", "block comb", "block FF", "DSP", "BRAM", "MACs", "comb/MAC",
            "peak GOPS")


def _row(r: dict) -> list:
    clock = r["clocks"][0] if r["clocks"] else {"requested_mhz": 0.0, "achieved_mhz": 0.0}
    block = r.get("synth", {}).get("block", {})
    fig = r.get("figures", {})
    config = " ".join(f"{k}={v}" for k, v in r["config"].items()
                      if v != r.get("defaults", {}).get(k))
    return [r["block"], config or "default", r["target"], r["kind"],
            float(clock["requested_mhz"]), float(clock["achieved_mhz"]), "met" if r["timing_met"] else "missed",
            r["resources"]["lc"]["used"], r["resources"]["lc"]["percent"],
            block.get("comb", ""), block.get("ff", ""), r["resources"]["dsp"]["used"],
            r["resources"]["bram"]["used"], fig.get("macs", ""), fig.get("comb_per_mac", ""),
            fig.get("peak_gops", "")]


def table(reports: list[dict], *, fmt: str = "markdown") -> str:
    """One row per report: Markdown (default) or CSV."""
    rows = [_row(r) for r in reports]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(_COLUMNS)
        writer.writerows(rows)
        return buf.getvalue()
    lines = ["| " + " | ".join(_COLUMNS) + " |",
             "|" + "|".join("---" if i < 4 or i == 6 else "---:" for i in range(len(_COLUMNS)))
             + "|"]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in row)
                     + " |")
    return "\n".join(lines) + "\n"


def timing_summary(clocks: list[dict]) -> str:
    """One line: each clock domain's achieved and requested frequency, met or missed."""
    parts = []
    for c in clocks:
        verdict = "met" if c["met"] else "MISSED"
        parts.append(f"{c['domain']}: achieved {c['achieved_mhz']:.1f} MHz of "
                     f"{c['requested_mhz']:.1f} MHz requested ({verdict})")
    return "; ".join(parts) if parts else "no clock constrained"


def worst_clocked_path(paths: list[dict]) -> dict | None:
    """The longest register-to-register path (nextpnr also lists pin-to-register paths, which
    the OOC wrapper's ``rst`` and ``out`` pins create and which do not limit Fmax)."""
    clocked = [p for p in paths if "posedge" in p["from_clock"] and "posedge" in p["to_clock"]]
    return max(clocked, key=lambda p: p["delay_ns"], default=None)
