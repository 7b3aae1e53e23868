"""FPGA devices and boards that ``lutra build`` can target, with their resources.

Resource counts are the datasheet figures, cross-checked against the ``available`` column of
nextpnr 0.11's utilisation report for the same part (ICESTORM_LC / TRELLIS_COMB, DSPs, block
RAMs, SPRAMs).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BOARDS", "DEVICES", "Board", "Device", "TargetError", "get_target", "list_targets"]


class TargetError(Exception):
    """An unknown target name or an option the target does not take."""


@dataclass(frozen=True)
class Device:
    """One FPGA part in one package and speed grade.

    ``lcs`` counts logic cells of one LUT4 + one FF (iCE40 LC, ECP5 TRELLIS_COMB slot);
    ``dsps`` hard multipliers (iCE40 SB_MAC16 16x16, ECP5 MULT18X18D 18x18); ``bram_bits`` one
    block RAM's bits (EBR 4 kbit, DP16KD 18 kbit), ``brams`` their count; ``sprams`` the UP5K's
    256 kbit single-port RAMs.
    """

    name: str           # target name on the command line, e.g. "ecp5-85f"
    family: str         # "ice40" or "ecp5"
    part: str           # e.g. "iCE40UP5K", "LFE5U-85F"
    package: str        # nextpnr package name, e.g. "sg48", "CABGA381"
    lcs: int
    ffs: int
    dsps: int
    dsp_width: int      # operand bits one DSP multiplies (signed: one bit less of magnitude)
    brams: int
    bram_bits: int
    sprams: int
    ios: int
    speed: int | None = None    # ECP5 speed grade (6, 7 or 8); None for iCE40

    @property
    def dsp_name(self) -> str:
        return "SB_MAC16" if self.family == "ice40" else "MULT18X18D"

    @property
    def bram_name(self) -> str:
        return "EBR" if self.family == "ice40" else "DP16KD"

    def with_speed(self, speed: int | None) -> Device:
        """This device at another speed grade (ECP5 only)."""
        if speed is None or speed == self.speed:
            return self
        if self.family != "ecp5":
            raise TargetError(f"--speed: {self.name} has no speed grades (ECP5 only), "
                              f"not {speed!r}")
        if speed not in (6, 7, 8):
            raise TargetError(f"--speed: must be 6, 7 or 8, not {speed!r}")
        return Device(**{**self.__dict__, "speed": speed})

    def nextpnr_args(self) -> list[str]:
        """Device selection arguments of ``nextpnr-<family>``."""
        if self.family == "ice40":
            flag = {"iCE40UP5K": "--up5k", "iCE40HX8K": "--hx8k"}[self.part]
            return [flag, "--package", self.package]
        size = {"LFE5U-25F": "--25k", "LFE5U-45F": "--45k", "LFE5U-85F": "--85k"}[self.part]
        return [size, "--package", self.package, "--speed", str(self.speed)]

    def describe(self) -> str:
        speed = f", speed {self.speed}" if self.speed is not None else ""
        return f"{self.part} ({self.package}{speed})"


@dataclass(frozen=True)
class Board:
    """A board from amaranth-boards: its device, clock and LEDs come from the platform class."""

    name: str
    platform: str       # "module:Class" in amaranth_boards
    device: Device
    summary: str

    def platform_class(self):
        import importlib
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(f"amaranth_boards.{module}"), cls)


_UP5K = Device("ice40-up5k", "ice40", "iCE40UP5K", "sg48", lcs=5280, ffs=5280, dsps=8,
               dsp_width=16, brams=30, bram_bits=4096, sprams=4, ios=39)
_HX8K = Device("ice40-hx8k", "ice40", "iCE40HX8K", "ct256", lcs=7680, ffs=7680, dsps=0,
               dsp_width=16, brams=32, bram_bits=4096, sprams=0, ios=206)
_ECP5_25 = Device("ecp5-25f", "ecp5", "LFE5U-25F", "CABGA381", lcs=24288, ffs=24288, dsps=28,
                  dsp_width=18, brams=56, bram_bits=18432, sprams=0, ios=197, speed=6)
_ECP5_45 = Device("ecp5-45f", "ecp5", "LFE5U-45F", "CABGA381", lcs=43848, ffs=43848, dsps=72,
                  dsp_width=18, brams=108, bram_bits=18432, sprams=0, ios=203, speed=6)
_ECP5_85 = Device("ecp5-85f", "ecp5", "LFE5U-85F", "CABGA381", lcs=83640, ffs=83640, dsps=156,
                  dsp_width=18, brams=208, bram_bits=18432, sprams=0, ios=205, speed=6)

DEVICES: dict[str, Device] = {d.name: d for d in (_UP5K, _HX8K, _ECP5_25, _ECP5_45, _ECP5_85)}

BOARDS: dict[str, Board] = {b.name: b for b in (
    Board("icebreaker", "icebreaker:ICEBreakerPlatform", _UP5K, "1BitSquared iCEBreaker"),
    Board("ulx3s", "ulx3s:ULX3S_85F_Platform", _ECP5_85, "Radiona ULX3S (85F)"),
    # The OrangeCrab's 25F sits in a csfBGA285 package at speed grade 8.
    Board("orangecrab", "orangecrab_r0_2:OrangeCrabR0_2_25FPlatform",
          Device(**{**_ECP5_25.__dict__, "name": "ecp5-25f", "package": "CSFBGA285",
                    "speed": 8, "ios": 118}),
          "Good Stuff Department OrangeCrab r0.2 (25F)"),
)}


def get_target(name: str, *, speed: int | None = None) -> tuple[Device, Board | None]:
    """The device (and board, if ``name`` is a board) called ``name``."""
    if name in DEVICES:
        return DEVICES[name].with_speed(speed), None
    if name in BOARDS:
        board = BOARDS[name]
        if speed is not None and speed != board.device.speed:
            raise TargetError(f"--speed: board {name} has a speed-{board.device.speed} part, "
                              f"not {speed!r}")
        return board.device, board
    known = ", ".join([*DEVICES, *BOARDS])
    raise TargetError(f"--target: unknown target {name!r} (known: {known})")


def list_targets() -> str:
    """A Markdown table of every target and its resources."""
    lines = ["| target | kind | part | LCs/LUT4s | DSPs | block RAMs | SPRAMs | IOs |",
             "|---|---|---|---:|---:|---:|---:|---:|"]

    def row(name, kind, d):
        brams = f"{d.brams} x {d.bram_bits // 1024} kbit {d.bram_name}"
        lines.append(f"| {name} | {kind} | {d.describe()} | {d.lcs:,} | "
                     f"{d.dsps} {d.dsp_name} | {brams} | {d.sprams} | {d.ios} |")

    for d in DEVICES.values():
        row(d.name, "device", d)
    for b in BOARDS.values():
        row(b.name, f"board: {b.summary}", b.device)
    return "\n".join(lines)
