"""Integer helpers shared by the gateware: widths of value ranges and constant products."""

from amaranth import Const, Signal, signed, unsigned

__all__ = ["signed_width", "unsigned_width", "csd_digits", "times_constant",
           "constant_product_levels", "pipelined_constant_product"]


def signed_width(lo: int, hi: int) -> int:
    """Bits of the smallest signed shape holding every integer in [lo, hi]."""
    return max((-lo - 1).bit_length() if lo < 0 else 0, hi.bit_length() if hi > 0 else 0) + 1


def unsigned_width(hi: int) -> int:
    """Bits of the smallest unsigned shape holding every integer in [0, hi]."""
    return max(1, hi.bit_length())


def csd_digits(const: int) -> list[tuple[int, int]]:
    """Canonical signed digits of ``const >= 0``: ``[(shift, +1 or -1), ...]`` with
    ``const == sum(sign << shift)``, so a constant product is a few shifted adds."""
    digits, shift = [], 0
    while const:
        if const & 1:
            sign = 2 - (const & 3)          # +1 if the next bit is 0, -1 if it is 1
            digits.append((shift, sign))
            const -= sign
        const >>= 1
        shift += 1
    return digits


def times_constant(x, c: int):
    """``x * c`` for an integer constant ``c`` as shifts and adds of its binary digits, one
    combinational expression (no multiplier is inferred); pipelined products split it."""
    if c == 0:
        return Const(0, 1)
    total = None
    for bit in range(abs(c).bit_length()):
        if (abs(c) >> bit) & 1:
            term = x << bit if bit else x
            total = term if total is None else total + term
    return -total if c < 0 else total


def constant_product_levels(const: int) -> int:
    """Register stages of :func:`pipelined_constant_product` by ``const``."""
    return max(1, (len(csd_digits(const)) - 1).bit_length())


def pipelined_constant_product(m, name: str, value, const: int):
    """``value * const`` (``value`` unsigned, ``const >= 0``) by shifted adds of the constant's
    canonical signed digits (no multiplier), a ``sync`` register after each level of the adder
    tree: valid ``constant_product_levels(const)`` cycles after ``value``."""
    width = max(1, (((1 << len(value)) - 1) * const).bit_length())
    terms = [(value << shift) if sign > 0 else -(value << shift)
             for shift, sign in csd_digits(const)] or [value - value]
    for level in range(constant_product_levels(const)):
        sums = []
        for j in range(0, len(terms), 2):
            reg = Signal(signed(width + 3), name=f"{name}_l{level}_{j // 2}")
            m.d.sync += reg.eq(sum(terms[j:j + 2]))
            sums.append(reg)
        terms = sums
    product = Signal(unsigned(width), name=name)
    m.d.comb += product.eq(terms[0])
    return product
