"""Property-based fuzzing of Lutra's inputs: TOML configurations and command lines.

Every input must end in exit status 0 with valid outputs, or exit status 2 with exactly one
line on stderr; never a traceback, and never a partial output (foreign files untouched, no
staging debris, no new directory after a failure). The slow steps behind a valid input
(elaboration to Verilog, Yosys / nextpnr, cocotb simulations, benchmarks) are replaced by
stand-ins (:func:`stand_ins`), so thousands of inputs run in minutes; what is fuzzed is
everything from the command line to the files written.

``tests/test_fuzz.py`` runs a few hundred inputs, seeded, in ``make test``; the long run is
``python -m gen.fuzz --examples 5000 [--seed N]``, which prints how many inputs it tried.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from .blocks import BlockSpec, Param, blocks
from .cli_common import add_report_out
from .outputs import MARKER, OutputDir, report_files

__all__ = ["argv_strategy", "check_argv", "stand_ins", "toml_strategy", "main"]

SUBCOMMANDS = ("generate", "sim", "bench", "list", "demo", "build", "report", "soak")
SLOW_SECONDS = 5.0      # inputs taking longer are named on stderr
_known: dict[str, BlockSpec] = {}


def _model_benches() -> list[str]:
    from .cli import MODEL_BENCHES
    return list(MODEL_BENCHES)


def _blocks() -> dict[str, BlockSpec]:
    """The registry as first seen: the strategies' choices must not change during a run."""
    if not _known:
        _known.update(blocks())
    return _known

# ---- TOML documents ---------------------------------------------------------------------------

_odd_text = st.text(st.characters(codec="utf-8"), max_size=12)
_numbers = st.one_of(
    st.integers(-3, 70), st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, 0.5]))


def _scalars():
    return st.one_of(_numbers, st.booleans(), _odd_text,
                     st.sampled_from(["", "shift", "row", "exact", "tapwise", "recip",
                                      "iterative", "pipelined", "1,2", "generic"]))


def _values():
    return st.recursive(_scalars(), lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_odd_text, inner, max_size=3)),
        max_leaves=6)


def _param_value(p: Param):
    """Values near what ``p`` accepts (so valid documents are common), and anything else."""
    near = {int: st.integers(int(p.lo if p.lo is not None else -4) - 2,
                             int(min(p.hi if p.hi is not None else 64, 64)) + 2),
            float: st.floats(-2.0, 2.0), bool: st.booleans(), str: _odd_text}[p.kind]
    options = [near, st.just(p.default), _values()]
    if p.choices:
        options.append(st.sampled_from(p.choices))
    return st.one_of(*options)


@st.composite
def _block_table(draw, block: BlockSpec):
    names = draw(st.lists(st.sampled_from([p.name for p in block.params]), max_size=4,
                          unique=True))
    table = {name: draw(_param_value(block.param(name))) for name in names}
    if draw(st.integers(0, 5)) == 0:
        table[draw(_odd_text)] = draw(_values())         # an unknown key
    return table


def _toml_key(key: str) -> str:
    return json.dumps(key)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(document: dict) -> str:
    """A TOML text for ``document``: top-level tables as ``[name]``, anything else inline."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in document.items()
             if not isinstance(v, dict)]
    for name, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{_toml_key(name)}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


@st.composite
def toml_strategy(draw):
    """A TOML text: mostly block tables with near-valid values, sometimes garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40))
    known = _blocks()
    names = draw(st.lists(st.sampled_from(sorted(known)), max_size=2, unique=True))
    document = {name: draw(_block_table(known[name])) for name in names}
    if draw(st.integers(0, 5)) == 0:
        document[draw(_odd_text)] = draw(_values())       # an unknown block or a bare value
    if draw(st.integers(0, 7)) == 0:
        document[draw(st.sampled_from(sorted(known)))] = {}
    return to_toml(document)


# ---- command lines ----------------------------------------------------------------------------

_paths = st.sampled_from(["out", "new/deeper", "file.txt", "foreign", ".", "owned", "",
                          "file.txt/x", "c.toml", "nope.toml"])
_flag_values = st.one_of(
    st.sampled_from(["0", "1", "-1", "2", "4", "99999999999999999999", "nan", "inf", "-inf",
                     "1e9", "0.5", "true", "false", "yes", "maybe", "", " ", "ecp5",
                     "generic", "ice40-up5k", "ecp5-25f", "icebreaker", "icarus", "verilator",
                     "all", "x", "--out", "é", "\u202e"]),
    _odd_text.filter(lambda s: "\x00" not in s))
_lone_flags = ["--force", "--waves", "--all-configs", "--list-targets", "--bitstream",
               "--allow-lut-multipliers", "--csv", "--skip-reference", "--bogus", "-x"]
_valued_flags = ["--out", "--config", "--primitives", "--simulator", "--seed", "--build-dir",
                 "--target", "--speed", "--freq", "--shape", "--arrays"]


@st.composite
def argv_strategy(draw, command: str | None = None):
    """A command line: a subcommand, maybe a block, and a mix of its flags and others."""
    command = command or draw(st.sampled_from(SUBCOMMANDS))
    argv = [command]
    known = _blocks()
    if draw(st.integers(0, 4)):
        names = sorted(known) + (sorted(_model_benches()) if command == "bench" else [])
        argv.append(draw(st.one_of(st.sampled_from(names), _odd_text)))
    block = known.get(argv[-1]) if len(argv) > 1 else None
    if command in ("generate", "build", "report") and draw(st.integers(0, 4)):
        flag = {"generate": "--out", "build": "--out", "report": "--out"}[command]
        argv += [flag, draw(_paths)]
    if command == "report":
        argv[1:2] = [draw(_paths)] if len(argv) > 1 else []
    if command == "build" and draw(st.integers(0, 3)):
        argv += ["--target", draw(st.sampled_from(["ice40-up5k", "ecp5-25f", "icebreaker",
                                                    "ulx3s", "nope"]))]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 3))
        if kind == 0 and block is not None:
            p = draw(st.sampled_from(block.params))
            value = draw(st.one_of(_flag_values, st.sampled_from(
                [str(p.default), *(str(c) for c in p.choices or ())])))
            argv += [p.flag, value]
        elif kind == 1:
            argv.append(draw(st.sampled_from(_lone_flags)))
        elif kind == 2:
            flag = draw(st.sampled_from(_valued_flags))
            argv += [flag, draw(_paths if flag in ("--out", "--config", "--build-dir")
                                else _flag_values)]
        else:
            argv.append(draw(_flag_values))
    return argv


# ---- stand-ins for the slow steps -------------------------------------------------------------

def _fake_convert(component, name, **kwargs) -> str:
    return f"module {name}();\nendmodule\n"


def _fake_encoder_demo(model: str, out, *, progress) -> int:
    out.claim(f"encoder-{model}")       # where the real one writes
    return 0


def _fake_netlist_resources(component, *, lut_factor: float = 1.0) -> dict:
    return {"multipliers": [(8, 8, 1)], "memories": [], "ram_bits": 0, "luts": 100, "ffs": 50}


def _fake_run_tool(tool, args, *, cwd, log, tick=None):
    from fpga.ooc import OOC_TOP
    cwd = Path(cwd)
    Path(log).write_text(f"{tool} stand-in\n")
    if tool == "yosys":
        block = next(p.stem for p in cwd.glob("lutra_*.v") if p.stem != OOC_TOP)
        (cwd / "stat.json").write_text(json.dumps({"modules": {
            f"\\{block}": {"num_cells_by_type": {"SB_LUT4": 10, "LUT4": 10}},
            f"\\{OOC_TOP}": {"num_cells_by_type": {"SB_DFF": 3}}}}))
        (cwd / "synth.json").write_text("{}")
    else:
        (cwd / "nextpnr.json").write_text(json.dumps({
            "utilization": {}, "fmax": {"clk": {"achieved": 60.0, "constraint": 50.0}},
            "critical_paths": []}))
    return 0.0


def _fake_selftest(config, board, out, *, force=False, **kwargs) -> dict:
    with OutputDir(out, owner="build", force=force) as staged:
        (staged.stage / "top.bin").write_bytes(b"\0")
    return {"block": config.name, "target": board.name, "device": "stand-in",
            "kind": "selftest", "timing_summary": "stand-in", "resources": {},
            "timing_met": True, "selftest": {"bitstream": "top.bin"}, "_path": str(out)}


def _fake_run_cocotb(config, simulator, *, build_root, primitives="generic", **kwargs):
    from sim.runner import SimResult
    suffix = "" if primitives == "generic" else f"-{primitives}"
    build_dir = Path(build_root) / f"{config.key()}{suffix}-{simulator}"
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "results.xml").write_text("<stand-in/>\n")
    return SimResult(simulator, 1, 0, build_dir, build_dir / "results.xml", None)


def _fake_soak_block(config, simulator, *, beats, build_root, **kwargs):
    from gen.cli_soak import SoakResult
    build_dir = Path(build_root) / f"{config.key()}-{simulator}"
    build_dir.mkdir(parents=True, exist_ok=True)
    report = {"block": config.name, "beats_in": beats, "beats_out": beats,
              "expected_out": beats, "mismatches": 0, "lost": 0, "repeated": 0, "cycles": beats,
              "sim_seconds": 1.0, "first_error": None}
    return SoakResult(report, 1.0, build_dir)


def _fake_bench(argv: list[str]) -> int:
    """Writes its report as the real benchmarks do (:func:`gen.outputs.report_files`)."""
    parser = argparse.ArgumentParser(prog="bench stand-in")
    add_report_out(parser, "bench.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with report_files(args.out, ["bench.json"], owner="bench", force=args.force) as out:
        (out.stage / "bench.json").write_text(json.dumps({"seed": args.seed}) + "\n")
    return 0


@contextlib.contextmanager
def stand_ins():
    """Replace elaboration (Verilog and the netlist-counted fit estimates), FPGA tools,
    simulations and benchmarks by quick stand-ins. The components the stand-ins are given are
    never elaborated, on purpose: Amaranth's warning about them is ignored meanwhile."""
    from amaranth.hdl import UnusedElaboratable
    import fpga.flow
    import fpga.selftest
    import gen.cli
    import gen.cli_run
    import gen.cli_soak
    import gen.resources
    import gen.verilog
    import sim.runner
    real_get_block = gen.cli.get_block

    def get_block(name):
        block = real_get_block(name)
        return dataclasses.replace(block, bench=_fake_bench) if block.bench else block

    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", category=UnusedElaboratable)
        for module, name, value in [
                (gen.verilog, "convert", _fake_convert), (fpga.flow, "convert", _fake_convert),
                (gen.resources, "netlist_resources", _fake_netlist_resources),
                (fpga.flow, "run_tool", _fake_run_tool),
                (fpga.flow, "tool_version", lambda tool: "stand-in"),
                (fpga.selftest, "build_selftest", _fake_selftest),
                (fpga.flow, "demo", lambda block, out, **kwargs: ""),
                (gen.cli_run, "demo", _fake_encoder_demo),
                (sim.runner, "run_cocotb", _fake_run_cocotb), (gen.cli, "get_block", get_block),
                (gen.cli_soak, "soak_block", _fake_soak_block)]:
            stack.enter_context(mock.patch.object(module, name, value))
        # Model benchmarks (``lutra bench encoder``) are modules with a ``main``: this one's.
        stack.enter_context(mock.patch.dict(gen.cli.MODEL_BENCHES,
                                            dict.fromkeys(gen.cli.MODEL_BENCHES, __name__)))
        stack.enter_context(mock.patch.object(sys.modules[__name__], "main", _fake_bench))
        yield


# ---- the property -----------------------------------------------------------------------------

def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _prepare(root: Path, config_text: str) -> None:
    (root / "file.txt").write_text("a user's file\n")
    (root / "foreign").mkdir()
    (root / "foreign" / "keep.v").write_text("module keep; endmodule\n")
    (root / "owned").mkdir()
    (root / "owned" / MARKER).write_text(json.dumps({"lutra_outputs": 1, "owners": {}}))
    (root / "c.toml").write_text(config_text)


def check_argv(argv: list[str], config_text: str = "[gemm]\nrows = 2\ncols = 2\n") -> int:
    """Run ``lutra argv`` in a fresh directory and check the promise; return the status.

    The directory holds ``file.txt`` and ``foreign/keep.v`` (a user's), ``owned/`` (a
    directory Lutra wrote into before) and ``c.toml`` (``config_text``).
    """
    from .cli import main
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="lutra-fuzz-") as tmp:
        root = Path(tmp)
        _prepare(root, config_text)
        before = _tree(root)
        stdout, stderr = io.StringIO(), io.StringIO()
        os.chdir(root)
        start = time.monotonic()
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                status = main(list(argv))
        except BaseException:
            raise AssertionError(f"lutra {argv!r} raised:\n{traceback.format_exc()}") from None
        finally:
            os.chdir(here)
            if time.monotonic() - start > SLOW_SECONDS:
                print(f"fuzz: slow input ({time.monotonic() - start:.1f} s): lutra {argv!r}",
                      file=sys.__stderr__, flush=True)
        err = stderr.getvalue()
        after = _tree(root)
        assert "Traceback" not in err, f"lutra {argv!r}: traceback on stderr:\n{err}"
        debris = [k for k in after if ".lutra-tmp-" in k]
        assert not debris, f"lutra {argv!r}: staging debris left: {debris}"
        for name in ("file.txt", "foreign/keep.v", "c.toml"):
            assert after.get(name) == before[name], f"lutra {argv!r}: {name} changed"
        if status == 2:
            errors = [line for line in err.splitlines() if not line.startswith("lutra: note:")]
            assert len(errors) == 1 and errors[0].startswith("lutra: error: ") \
                and len(errors[0]) > len("lutra: error: "), \
                f"lutra {argv!r}: exit 2 wants one error line, got {err!r}"
            if argv and argv[0] != "list":
                assert after == before, f"lutra {argv!r}: failed but changed files: " \
                    f"{sorted(set(after) ^ set(before))}"
        else:
            assert status == 0, f"lutra {argv!r}: exit status {status}; stderr {err!r}"
            _check_outputs(root, argv)
    return status


def _check_outputs(root: Path, argv: list[str]) -> None:
    """Every marker's names exist; every manifest written is a JSON object naming its top."""
    for marker in root.rglob(MARKER):
        owners = json.loads(marker.read_text())["owners"]
        for names in owners.values():
            for name in names:
                assert (marker.parent / name).exists(), \
                    f"lutra {argv!r}: {marker} names missing {name}"
    for manifest in root.rglob("lutra_*.json"):
        info = json.loads(manifest.read_text())
        assert info["top"] == manifest.stem and (manifest.parent / info["verilog"]).exists()


def check_config(text: str) -> int:
    """``lutra generate --config`` of the TOML ``text``."""
    return check_argv(["generate", "--config", "c.toml", "--out", "out"], config_text=text)


# ---- long run ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gen.fuzz", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000,
                        help="inputs per property (command lines, TOML documents)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tried = {"command lines": 0, "TOML documents": 0}
    config = settings(max_examples=args.examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))

    @seed(args.seed)
    @config
    @given(argv_strategy())
    def command_lines(argv):
        tried["command lines"] += 1
        check_argv(argv)

    @seed(args.seed)
    @config
    @given(toml_strategy())
    def documents(text):
        tried["TOML documents"] += 1
        check_config(text)

    start = time.monotonic()
    failed = False
    with stand_ins():
        for prop in (command_lines, documents):
            try:
                prop()
            except AssertionError as error:
                failed = True
                print(error, file=sys.stderr)
    elapsed = time.monotonic() - start
    total = sum(tried.values())
    print(f"fuzz: {total} inputs tried ({', '.join(f'{v} {k}' for k, v in tried.items())}) in "
          f"{elapsed:.1f} s, seed {args.seed}: {'FAILED' if failed else 'no failure'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
