"""cocotb regression of the generated softmax Verilog under Icarus and Verilator."""

from __future__ import annotations

import pytest
from conftest import SIMULATORS, cocotb_run

CONFIGS = {
    "recip": {"method": "recip", "max_len": 48},
    "lut2d": {"method": "lut2d", "max_len": 48},
    "shiftmax": {"method": "shiftmax", "max_len": 48},
    "recip-wide": {"method": "recip", "max_len": 16, "out_bits": 12, "scale": 0.3,
                   "exp_bits": 14, "recip_index_bits": 6, "recip_bits": 12},
}

# Every method under both simulators; the extra configuration under Icarus only, because a
# Verilator build costs ~25 s of compilation and the suite must stay within its time budget.
RUNS = [(name, sim) for name in ("recip", "lut2d", "shiftmax") for sim in SIMULATORS]
RUNS.append(("recip-wide", "icarus"))


@pytest.mark.cocotb
@pytest.mark.parametrize(("name", "simulator"), RUNS)
def test_softmax_cocotb(name, simulator, tmp_path):
    cocotb_run("softmax", CONFIGS[name], simulator, tmp_path, LUTRA_ROWS=20)
