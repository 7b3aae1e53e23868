"""gen.progress: plain lines when output is not a terminal, a tqdm line when it is; the build
flow's step reports (yosys, then nextpnr's placement and routing read from its log)."""

from __future__ import annotations

import io
import os
import stat
import sys
import time

import pytest

from fpga.flow import _pnr_ticker
from fpga.tools import run_tool
from gen.progress import Progress, format_seconds


class _Recorder:
    """A stand-in progress display that records what it is told."""

    def __init__(self):
        self.steps, self.ticks = [], 0

    def step(self, name):
        if not self.steps or self.steps[-1] != name:
            self.steps.append(name)

    def tick(self):
        self.ticks += 1


def test_init_wrong_total():
    with pytest.raises(ValueError, match=r"^total must be a non-negative integer or None, "
                                         r"not -1$"):
        Progress("lutra x", total=-1, stream=io.StringIO(), tty=False)


@pytest.mark.parametrize("seconds, text", [(0.04, "0.0 s"), (42.14, "42.1 s"),
                                           (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_plain_steps_when_not_a_terminal(capsys):
    with Progress("lutra build gemm", tty=False) as progress:
        progress.step("synthesis (yosys)")
        progress.step("synthesis (yosys)")         # the same step again: no new line
        progress.step("placement (nextpnr)")
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert lines[0].startswith("lutra build gemm: synthesis (yosys) (") and \
        lines[0].endswith(" s so far)"), lines[0]
    assert lines[1].startswith("lutra build gemm: placement (nextpnr) ("), lines[1]
    assert lines[2].startswith("lutra build gemm: done in "), lines[2]
    assert "\r" not in err and "\x1b" not in err, repr(err)


def test_plain_counts_with_estimate(capsys):
    with Progress("lutra sim gemm", total=4, tty=False) as progress:
        progress.advance(1, "PASS gemm icarus")
        progress.advance(3)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("lutra sim gemm: 1/4 done, "), lines[0]
    assert "left: PASS gemm icarus" in lines[0], lines[0]
    assert lines[1].startswith("lutra sim gemm: 4/4 done, "), lines[1]
    assert lines[-1].startswith("lutra sim gemm: done in "), lines[-1]


def test_heartbeat_and_nothing_when_nothing_ran():
    stream = io.StringIO()
    progress = Progress("lutra soak add", stream=stream, tty=False, interval=0.0)
    progress.step("1000 beats")
    with progress.ticking(every=0.01):
        deadline = time.monotonic() + 10
        while "still running" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    progress.close()
    assert "lutra soak add: 1000 beats, still running (" in stream.getvalue()
    quiet = io.StringIO()
    with Progress("lutra build add", stream=quiet, tty=False):
        pass                            # e.g. a fit error before any step
    assert quiet.getvalue() == ""


def test_terminal_form_is_one_redrawn_line():
    stream = io.StringIO()
    with Progress("lutra explore gemm", total=2, stream=stream, tty=True) as progress:
        progress.advance(1, "gemm@ice40-up5k-seed1: ok")
        progress.status("1 running, 0 failed")
        progress.advance(1)
    text = stream.getvalue()
    assert "\r" in text and "lutra explore gemm" in text, repr(text)
    assert "2/2" in text and "1 running, 0 failed" in text, repr(text)


def test_run_tool_ticks_while_the_tool_runs(tmp_path, monkeypatch):
    tool = tmp_path / "slow-yosys"
    tool.write_text("#!/bin/sh\nsleep 1.2\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("LUTRA_YOSYS", str(tool))
    recorder = _Recorder()
    run_tool("yosys", [], cwd=tmp_path, log=tmp_path / "out.log", tick=recorder.tick)
    assert recorder.ticks >= 2, f"{recorder.ticks} ticks in 1.2 s (one per 0.5 s expected)"


def test_pnr_ticker_tells_placement_from_routing(tmp_path):
    log = tmp_path / "pnr.log"
    recorder = _Recorder()
    tick = _pnr_ticker(recorder, log)
    tick()                                       # no log yet
    log.write_text("Info: Running main analytical placer.\nInfo: Rou")
    tick()
    assert recorder.steps == [], recorder.steps
    with open(log, "a") as text:                 # the line completed after the first read
        text.write("ting..\nInfo: Setting up routing queue.\n")
    tick()
    assert recorder.steps == ["routing (nextpnr)"], recorder.steps
    assert recorder.ticks == 3


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_stdout_lines_go_above_the_bar(monkeypatch):
    master, slave = os.openpty()
    with open(slave, "w") as terminal, open(master, "rb", buffering=0) as reader:
        monkeypatch.setattr(sys, "stdout", terminal)
        bar = io.StringIO()
        with Progress("lutra sim add", total=1, stream=bar, tty=True) as progress:
            print("PASS add icarus")
            progress.advance(1)
        terminal.flush()
        assert reader.read(4096).decode().replace("\r", "") == "PASS add icarus\n"
