"""Transitional re-export of ``sim.testing`` for the test files not yet moved to it.

This file goes once tests/test_gemm.py, tests/test_golden_gemm.py and tests/test_attention_unit.py
import ``from sim.testing import SIMULATORS, cocotb_run``; new tests must import from there.
"""

from sim.testing import SIMULATORS, cocotb_run

__all__ = ["SIMULATORS", "cocotb_run"]
