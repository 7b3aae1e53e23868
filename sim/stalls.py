"""Random idle cycles between stream beats, shared by the Amaranth and cocotb testbenches."""

import random

__all__ = ["Stalls"]


class Stalls:
    """With probability ``prob`` wait 1..``max_cycles`` idle cycles before a beat."""

    def __init__(self, prob: float = 0.0, max_cycles: int = 4, seed: int = 0):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], not {prob!r}")
        self.prob = prob
        self.max_cycles = max_cycles
        self._rng = random.Random(seed)

    def cycles(self) -> int:
        if self.prob and self._rng.random() < self.prob:
            return self._rng.randint(1, self.max_cycles)
        return 0
