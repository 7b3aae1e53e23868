"""Operand widths and the bounds derived from them, for the GEMM core, its driver and its block
entry (plain Python: no Amaranth, so the tiling driver and the fit check can use it)."""

__all__ = ["A_WIDTHS", "OUT_WIDTHS", "B_WIDTH", "a_offset_width", "a_offset_range",
           "max_abs_product", "max_k", "pe_product_width", "check_widths"]

from ..common.checks import check_bool, check_choice, check_int

#: Bits of the activation operand ``a``: int8 (default) or int16.
A_WIDTHS = (8, 16)
#: Bits of a requantized result (and of its zero point and clamp bounds).
OUT_WIDTHS = (8, 16)
#: Bits of the weight operand ``b``.
B_WIDTH = 8


def a_offset_width(a_width: int) -> int:
    """Bits of the ``a_offset`` field of the ``params`` stream.

    int8: 9 bits (TFLite's -zero point is in [-127, 128]; the field allows [-256, 255]).
    int16: 17 bits, of which [-32767, 32768] (-zero point of every int16 zero point) is legal:
    the core applies the offset through the negated zero point, a 16-bit value.
    """
    return {8: 9, 16: 17}[a_width]


def a_offset_range(a_width: int) -> tuple[int, int]:
    """Inclusive range of ``a_offset`` the core computes exactly with."""
    if a_width == 8:
        return -256, 255
    return -(1 << 15) + 1, 1 << 15


def max_abs_product(a_width: int = 8) -> int:
    """Largest ``|(a + a_offset) * b|`` over every legal ``a``, ``a_offset`` and int8 ``b``."""
    lo, hi = a_offset_range(a_width)
    a_min, a_max = -(1 << (a_width - 1)), (1 << (a_width - 1)) - 1
    return max(-(a_min + lo), a_max + hi) * (1 << (B_WIDTH - 1))


def max_k(acc_width: int, a_width: int = 8) -> int:
    """Largest K for which every partial sum ``sum_k (a + a_offset) * b`` provably fits a signed
    ``acc_width``-bit accumulator, whatever the operands."""
    return ((1 << (acc_width - 1)) - 1) // max_abs_product(a_width)


def pe_product_width(a_width: int) -> int:
    """Bits of one PE's product: int8 ``a + a_offset`` (10 bits) x int8, or int16 ``a`` x int8
    (with int16 activations the offset is applied per column, not in the PE)."""
    return {8: 10, 16: 16}[a_width] + B_WIDTH


def check_widths(*, acc_width: int, requantize: bool, a_width: int, out_width: int) -> None:
    """Validate the width parameters of the core, with messages naming the parameter."""
    for name, value, choices in (("a_width", a_width, A_WIDTHS),
                                 ("out_width", out_width, OUT_WIDTHS)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        check_choice(name, value, choices)
    check_bool("requantize", requantize)
    lo = pe_product_width(a_width)
    if a_width == 8:
        check_int("acc_width", acc_width, lo, 32)
    else:
        check_int("acc_width", acc_width, 18, 32)
        if acc_width < lo:
            raise ValueError(f"acc_width must be in [{lo}, 32] when a_width is {a_width}, "
                             f"not {acc_width!r}")
    if not requantize and out_width != 8:
        raise ValueError(f"out_width must be 8 when requantize is False (the raw output is "
                         f"int32), not {out_width!r}")
