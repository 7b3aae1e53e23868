"""Elaborate a configuration to Verilog plus a JSON manifest, written atomically."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil, verilog
from amaranth.lib import stream, wiring

from .config import BlockConfig, build_component
from .layout import describe_shape, flatten_shape
from .outputs import OutputDir

__all__ = ["PRIMITIVES", "BUSES", "PrimitiveTarget", "top_name", "wrap", "convert",
           "convert_rtlil", "rtlil_to_verilog", "manifest", "write_outputs", "generate"]

#: Vendor primitive sets the Verilog may instantiate: ``generic`` (portable Verilog, what the
#: simulators run) or a device family whose DSP primitives blocks use directly.
PRIMITIVES = ("generic", "ecp5", "ice40")

#: Stream conventions of the top level: the block's own ``lib.stream`` ports (``native``:
#: ``<name>__valid/ready/payload``, ``clk``/``rst``) or AXI4-Stream interfaces (``axi-stream``,
#: see ``hw/common/axis.py`` and docs/axi-stream.md).
BUSES = ("native", "axi-stream")


@dataclass(frozen=True)
class PrimitiveTarget:
    """Stands in for an Amaranth platform during elaboration.

    Blocks see it as ``platform`` in ``elaborate``; its only member, ``family``, tells them
    which vendor primitives they may instantiate (see ``hw/common/mul.py``).
    """

    family: str

VERSION = "0.1.0"


def top_name(config: BlockConfig, bus: str = "native") -> str:
    return f"lutra_{config.name}" + ("_axis" if bus == "axi-stream" else "")


def wrap(component, *, bus: str = "native", aresetn: bool = False):
    """``component`` as the top level of ``bus`` (an ``AxiStreamTop`` for ``axi-stream``)."""
    if bus not in BUSES:
        raise ValueError(f"bus must be one of {', '.join(BUSES)}, not {bus!r}")
    if aresetn and bus != "axi-stream":
        raise ValueError("aresetn needs bus 'axi-stream'")
    if bus == "native":
        return component
    from hw.common.axis import AxiStreamTop
    return AxiStreamTop(component, aresetn=aresetn)


def convert(component, name: str, *, primitives: str = "generic") -> str:
    """Verilog text of ``component`` (no source attributes, so output is reproducible).

    ``primitives`` other than ``"generic"`` lets blocks instantiate that family's primitives.
    """
    return verilog.convert(component, name=name, platform=_platform(primitives), emit_src=False)


def convert_rtlil(component, name: str, *, primitives: str = "generic") -> str:
    """RTLIL text of ``component``, as :func:`convert` elaborates it (what ``lutra build``
    synthesises: Yosys reads it far faster than Verilog with large memory initialisers)."""
    return rtlil.convert(component, name=name, platform=_platform(primitives), emit_src=False)


def rtlil_to_verilog(text: str) -> str:
    """The Verilog that :func:`convert` writes, from the RTLIL text :func:`convert_rtlil` made.

    ``amaranth.back.verilog.convert`` is ``rtlil.convert`` followed by this Yosys pass, so a
    build that needs both texts elaborates and converts the design once (the attention unit
    takes ~12 s per conversion). The pass is Amaranth's own (private in 0.5, pinned in
    ``requirements.lock``); ``tests/test_fpga_flow.py`` checks the texts are byte-identical.
    """
    from amaranth.back.verilog import _convert_rtlil_text
    return _convert_rtlil_text(text)


def _platform(primitives: str) -> PrimitiveTarget | None:
    if primitives not in PRIMITIVES:
        raise ValueError(f"primitives must be one of {', '.join(PRIMITIVES)}, "
                         f"not {primitives!r}")
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    return None if primitives == "generic" else PrimitiveTarget(primitives)


def _ports(component, meanings: dict) -> tuple[list, dict]:
    ports = [
        {"name": "clk", "direction": "in", "width": 1, "meaning": "clock (rising edge)"},
        {"name": "rst", "direction": "in", "width": 1,
         "meaning": "synchronous reset, active high"},
    ]
    streams = {}
    for name, member in component.signature.members.items():
        meaning = meanings.get(name, "")
        inward = member.flow == wiring.In
        signature = member.signature if member.is_signature else None
        if isinstance(signature, wiring.FlippedSignature):
            signature = signature.flip()
        if isinstance(signature, stream.Signature):
            payload = signature.members["payload"].shape
            desc = describe_shape(payload)
            streams[name] = {
                "direction": "in" if inward else "out",
                "valid": f"{name}__valid", "ready": f"{name}__ready",
                "payload": f"{name}__payload", "meaning": meaning,
                "layout": desc, "fields": flatten_shape(desc),
            }
            ports += [
                {"name": f"{name}__valid", "direction": "in" if inward else "out", "width": 1,
                 "meaning": f"{name}: beat offered"},
                {"name": f"{name}__ready", "direction": "out" if inward else "in", "width": 1,
                 "meaning": f"{name}: beat taken when valid & ready"},
                {"name": f"{name}__payload", "direction": "in" if inward else "out",
                 "width": desc["width"], "meaning": meaning},
            ]
        elif member.is_port:
            ports.append({"name": name, "direction": "in" if inward else "out",
                          "width": member.shape.width if hasattr(member.shape, "width")
                          else describe_shape(member.shape)["width"], "meaning": meaning})
        else:
            raise NotImplementedError(f"port {name}: only streams and plain ports are described")
    return ports, streams


def manifest(config: BlockConfig, component, *, primitives: str = "generic") -> dict:
    """Everything needed to integrate the Verilog: configuration, ports, timing figures.

    For an AXI4-Stream top level (``wrap(..., bus="axi-stream")``) the streams are under
    ``axi_streams`` (port names and ``tdata`` field layout) instead of ``streams``.
    """
    from hw.common.axis import AxiStreamTop
    bus = "axi-stream" if isinstance(component, AxiStreamTop) else "native"
    if bus == "axi-stream":
        from .axis import axis_ports
        ports, streams = axis_ports(component, config.block.ports)
        block = component.block
    else:
        ports, streams = _ports(component, config.block.ports)
        block = component
    return {
        "primitives": primitives,
        "lutra_version": VERSION,
        "block": config.name,
        "summary": config.block.summary,
        "bus": bus,
        "top": top_name(config, bus),
        "verilog": f"{top_name(config, bus)}.v",
        "config": dict(config.params),
        "ports": ports,
        "axi_streams" if bus == "axi-stream" else "streams": streams,
        "figures": config.block.figures(block),
    }


def write_outputs(config: BlockConfig, directory: Path, *, primitives: str = "generic",
                  bus: str = "native", aresetn: bool = False) -> dict:
    """Write ``<top>.v`` and ``<top>.json`` for ``config`` into ``directory``; ``bus`` and
    ``aresetn`` as :func:`wrap` takes them."""
    component = wrap(build_component(config), bus=bus, aresetn=aresetn)
    info = manifest(config, component, primitives=primitives)
    text = convert(component, info["top"], primitives=primitives)
    (directory / info["verilog"]).write_text(text)
    if config.block.extra_outputs is not None:
        info.update(config.block.extra_outputs(config.params, directory))
    (directory / f"{info['top']}.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def generate(configs: list[BlockConfig], out: Path, *, per_block_dirs: bool,
             primitives: str = "generic", force: bool = False, bus: str = "native",
             aresetn: bool = False) -> list[dict]:
    """Generate every configuration into ``out`` (``out/<block>/`` when ``per_block_dirs``)
    with the top level of ``bus``.

    Only Lutra's own outputs in ``out`` are replaced, once all are written (see
    :mod:`gen.outputs`; ``force`` writes into a directory Lutra has not written before).
    """
    infos = []
    with OutputDir(out, owner="generate", force=force) as staged:
        tmp = staged.stage
        for config in configs:
            directory = tmp / config.name if per_block_dirs else tmp
            directory.mkdir(exist_ok=True)
            infos.append(write_outputs(config, directory, primitives=primitives, bus=bus,
                                       aresetn=aresetn))
    return infos
