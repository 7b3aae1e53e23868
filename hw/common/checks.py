"""Up-front parameter validation shared by every component: messages name the parameter and
echo the bad value."""

__all__ = ["check_int", "check_bool", "check_choice"]


def check_int(name: str, value, lo: int, hi: int | None = None) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``value`` is an int in [lo, hi]."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {bound}, not {value!r}")


def check_bool(name: str, value) -> None:
    """Raise ``TypeError`` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {value!r}")


def check_choice(name: str, value, choices) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}, not {value!r}")
