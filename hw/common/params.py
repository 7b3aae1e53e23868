"""Block parameters declared once: a frozen dataclass per block whose fields carry their help
text and bounds; validation of every field from that metadata (messages from
:mod:`hw.common.checks`). ``gen/blocks`` derives the CLI flags, the TOML schema and
``lutra list`` from the same fields (``gen.blocks.params_from``)."""

import math
from dataclasses import field, fields

from .checks import check_bool, check_choice, check_int

__all__ = ["param", "field_kind", "validate_fields", "params_or_keywords"]

_KINDS = {"int": int, "bool": bool, "float": float, "str": str}


def param(default, help: str, *, lo=None, hi=None, choices=None):
    """A dataclass field with its default, its help text and its bounds (``lo``/``hi``
    inclusive) or ``choices``."""
    return field(default=default, metadata={"help": help, "lo": lo, "hi": hi,
                                            "choices": choices})


def field_kind(f) -> type:
    """The Python type of a parameter field (annotations may be strings)."""
    return _KINDS[f.type] if isinstance(f.type, str) else f.type


def validate_fields(obj, *, exclude=()) -> None:
    """Check every field of the parameter dataclass ``obj`` but those named in ``exclude``
    against its metadata: type, bounds, choices; ``TypeError``/``ValueError`` name the field and
    echo the value. (A field whose bound depends on another is excluded and checked by the
    dataclass itself, with the tighter bound in its message.)"""
    for f in fields(obj):
        if f.name in exclude:
            continue
        value, meta = getattr(obj, f.name), f.metadata
        kind = field_kind(f)
        if kind is int:
            check_int(f.name, value, -(1 << 64) if meta["lo"] is None else meta["lo"],
                      meta["hi"])
        elif kind is bool:
            check_bool(f.name, value)
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{f.name} must be a number, not {value!r}")
            lo = -math.inf if meta["lo"] is None else meta["lo"]
            hi = math.inf if meta["hi"] is None else meta["hi"]
            if not (math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"{f.name} must be in [{lo}, {hi}], not {value!r}")
        elif kind is str and meta["choices"] is None and not isinstance(value, str):
            raise TypeError(f"{f.name} must be a string, not {value!r}")
        if meta["choices"] is not None:
            check_choice(f.name, value, meta["choices"])


def params_or_keywords(cls, params, kwargs: dict, *, build=None, name: str = "params"):
    """What a component's ``__init__(self, params=None, **kwargs)`` takes: ``params``, an
    instance of the parameter dataclass ``cls``, or its fields as keywords (``build(**kwargs)``,
    default ``cls``); not both. ``TypeError`` names ``name`` otherwise."""
    if params is None:
        return (build or cls)(**kwargs)
    if kwargs:
        raise TypeError(f"give either {name} or keyword parameters, not both")
    if not isinstance(params, cls):
        article = "an" if cls.__name__[0] in "AEIO" else "a"          # "a UnitParams"
        raise TypeError(f"{name} must be {article} {cls.__name__}, not {params!r}")
    return params
