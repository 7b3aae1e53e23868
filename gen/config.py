"""Configuration: TOML files or CLI flags, validated once into typed parameter sets."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .blocks import BlockSpec, Param, blocks

__all__ = ["ConfigError", "BlockConfig", "validate_params", "load_config", "build_component",
           "not_utf8"]


class ConfigError(Exception):
    """A configuration problem, with a one-line message naming the offending key."""


@dataclass(frozen=True)
class BlockConfig:
    """A validated configuration of one block."""

    block: BlockSpec
    params: dict

    @property
    def name(self) -> str:
        return self.block.name

    def key(self) -> str:
        """A short stable name for this configuration (build directories)."""
        parts = [self.block.name]
        for p in self.block.params:
            value = self.params[p.name]
            if value != p.default:
                parts.append(f"{p.name}={value}")
        return "-".join(str(x).replace("/", "_") for x in parts)


def _check_value(where: str, p: Param, value):
    if p.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, not {value!r}")
        return value
    if p.kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: must be an integer, not {value!r}")
    elif p.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: must be a number, not {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: must be a finite number, not {value!r}")
    elif p.kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, not {value!r}")
    if p.choices is not None and value not in p.choices:
        options = ", ".join(repr(c) for c in p.choices)
        raise ConfigError(f"{where}: must be one of {options}, not {value!r}")
    if (p.lo is not None and value < p.lo) or (p.hi is not None and value > p.hi):
        lo = "-inf" if p.lo is None else p.lo
        hi = "inf" if p.hi is None else p.hi
        raise ConfigError(f"{where}: must be in [{lo}, {hi}], not {value!r}")
    return value


def validate_params(block: BlockSpec, raw: dict, *, source: str = "") -> BlockConfig:
    """Check ``raw`` (possibly partial) against the block's parameters; fill defaults.

    Cross-parameter constraints are checked by constructing the block's parameter dataclass
    (``BlockSpec.param_class``), whose messages name the parameter; they are returned as a
    ``ConfigError``. No component is built.
    """
    prefix = f"{source}: " if source else ""
    known = {p.name: p for p in block.params}
    params = block.defaults()
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{prefix}{block.name}.{key}: unknown key "
                              f"(known: {', '.join(known)})")
        params[key] = _check_value(f"{prefix}{block.name}.{key}", known[key], value)
    config = BlockConfig(block, params)
    try:
        block.parameters(params)                     # cross-parameter checks
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix}{block.name}: {error}") from None
    return config


def build_component(config: BlockConfig, *, source: str = ""):
    """Elaborate-ready component for ``config``; constructor errors become ``ConfigError``."""
    prefix = f"{source}: " if source else ""
    try:
        return config.block.build(dict(config.params))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix}{config.block.name}: {error}") from None


def not_utf8(error: UnicodeDecodeError) -> str:
    """The reason a TOML file could not be decoded, for a one-line message."""
    return (f"not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}); "
            f"a TOML file must be UTF-8")


def load_config(path: str | Path) -> list[BlockConfig]:
    """Read a TOML file with one table per block; every key is validated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: {not_utf8(error)}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None
    known = blocks()
    configs = []
    for name, table in document.items():
        if name not in known:
            raise ConfigError(f"{path}: {name}: unknown block (known: {', '.join(known)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {name}: must be a table ([{name}]), not {table!r}")
        configs.append(validate_params(known[name], table, source=str(path)))
    if not configs:
        raise ConfigError(f"{path}: no block tables (expected e.g. [gemm])")
    return configs
