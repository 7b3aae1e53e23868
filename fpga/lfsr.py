"""Pseudo-random bits and output signatures shared by the OOC wrapper and the self-test top.

The MISR (multiple-input signature register) is defined once here, in Python and in gateware,
so the self-test's expected checksum and the hardware's running checksum cannot drift apart.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value

__all__ = [
    "LFSR_TAPS",
    "LFSR_WIDTH",
    "MISR_POLY",
    "MISR_WIDTH",
    "add_lfsr",
    "fold",
    "lfsr_step",
    "misr",
    "misr_next",
    "misr_update",
]

# x^31 + x^28 + 1 is a maximal-length trinomial: 2^31 - 1 states, two taps, one XOR gate.
LFSR_WIDTH = 31
LFSR_TAPS = (30, 27)

# CRC-32 (IEEE 802.3) polynomial, Galois form, as the MISR's feedback.
MISR_WIDTH = 32
MISR_POLY = 0x04C11DB7


def lfsr_step(state: int) -> int:
    """One shift of the Fibonacci LFSR: new bit 0 is the XOR of the tap bits."""
    bit = ((state >> LFSR_TAPS[0]) ^ (state >> LFSR_TAPS[1])) & 1
    return ((state << 1) | bit) & ((1 << LFSR_WIDTH) - 1)


def fold(word: int, width: int) -> int:
    """XOR of ``word``'s 32-bit slices (``width`` bits in all), zero-padded at the top."""
    folded = 0
    for lo in range(0, width, MISR_WIDTH):
        folded ^= (word >> lo) & ((1 << MISR_WIDTH) - 1)
    return folded


def misr_update(state: int, word: int, width: int) -> int:
    """The MISR after absorbing one ``width``-bit output beat."""
    msb = (state >> (MISR_WIDTH - 1)) & 1
    shifted = ((state << 1) & ((1 << MISR_WIDTH) - 1)) ^ (MISR_POLY if msb else 0)
    return shifted ^ fold(word, width)


def misr(words, width: int, init: int = 0xFFFFFFFF) -> int:
    """Signature of a sequence of ``width``-bit beats."""
    state = init
    for word in words:
        state = misr_update(state, word, width)
    return state


def add_lfsr(m: Module, name: str, init: int = 1) -> Signal:
    """A free-running LFSR in ``m``'s sync domain; returns its state."""
    state = Signal(LFSR_WIDTH, init=init, name=name)
    m.d.sync += state.eq(Cat(state[LFSR_TAPS[0]] ^ state[LFSR_TAPS[1]], state[:-1]))
    return state


def misr_next(state: Value, word: Value) -> Value:
    """Gateware twin of :func:`misr_update` (``word`` of any width)."""
    folded = Const(0, MISR_WIDTH)
    for lo in range(0, len(word), MISR_WIDTH):
        folded = folded ^ word[lo:lo + MISR_WIDTH]
    feedback = Mux(state[-1], Const(MISR_POLY, MISR_WIDTH), 0)
    return (Cat(Const(0, 1), state[:-1]) ^ feedback ^ folded)[:MISR_WIDTH]
