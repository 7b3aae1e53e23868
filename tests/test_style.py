"""The code base stays ruff-clean (100 columns, pyflakes and pycodestyle errors) and the tests
follow one layout (docs/testing.md)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", "hw", "gen", "sim", "fpga", "tests"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# The layout rule of docs/testing.md: per block <b>, test_<b>_golden.py (the golden model),
# test_<b>.py (the gateware) and test_<b>_<tool>.py; cross-cutting tests by their own names.
CROSS_CUTTING = {"cli", "fuzz", "soak", "prove", "outputs", "imports", "style", "axis", "credit",
                 "requant", "explore", "progress", "demo", "fpga", "fpga_flow", "minilm"}
TOOLS = ("golden", "bench", "run", "selftest")


def test_test_files_follow_one_naming_rule():
    from gen.blocks import blocks
    names = set(blocks()) | {p.stem for p in (ROOT / "sim" / "golden").glob("*.py")} - {"__init__"}
    allowed = CROSS_CUTTING | names | {f"{b}_{tool}" for b in names for tool in TOOLS}
    stray = sorted(p.name for p in (ROOT / "tests").glob("test_*.py")
                   if p.stem.removeprefix("test_") not in allowed)
    assert stray == [], f"test files outside the rule of docs/testing.md: {stray}"


def test_tests_import_the_harness_not_conftest():
    users = sorted(p.name for p in (ROOT / "tests").glob("test_*.py")
                   if re.search(r"^\s*(from conftest import|import conftest)", p.read_text(),
                                re.MULTILINE))
    assert users == [], f"import sim.testing instead of conftest: {users}"
