"""The manifest's description of an AXI4-Stream top level (``lutra generate --bus axi-stream``).

The gateware is :class:`hw.common.axis.AxiStreamTop`; this module lists its ports and, for each
interface, its port names and the field layout of ``tdata`` (bit offset, width and signedness
of every field), which is what an integrator or a testbench packs and unpacks.
"""

from __future__ import annotations

from amaranth import Shape
from amaranth.lib.wiring import In

from hw.common.axis import AxiStreamTop

from .layout import describe_shape, flatten_shape

__all__ = ["axis_ports"]


def axis_ports(top: AxiStreamTop, meanings: dict) -> tuple[list, dict]:
    """The manifest's ``ports`` and ``axi_streams`` of ``top``; ``meanings`` gives the meaning
    of each of the block's members."""
    reset = ("synchronous reset, active low" if top.reset_active_low
             else "synchronous reset, active high")
    ports = [{"name": "aclk", "direction": "in", "width": 1, "meaning": "clock (rising edge)"},
             {"name": top.reset_port, "direction": "in", "width": 1, "meaning": reset}]
    streams = {}
    for name, member in top.block.signature.members.items():
        meaning = meanings.get(name, "")
        axis = top.streams.get(name)
        if axis is None:
            ports.append({"name": name, "direction": "in" if member.flow == In else "out",
                          "width": Shape.cast(member.shape).width, "meaning": meaning})
            continue
        forward, back = ("in", "out") if axis.inward else ("out", "in")
        desc = describe_shape(axis.shape)
        streams[name] = {
            "direction": forward, "interface": axis.prefix, "meaning": meaning,
            "tvalid": axis.port("tvalid"), "tready": axis.port("tready"),
            "tdata": axis.port("tdata"), "tlast": axis.port("tlast") if axis.last else None,
            "tdata_width": axis.width, "tdata_bits_used": desc["width"],
            "last": "payload field 'last'" if axis.last else None,
            "layout": desc, "fields": flatten_shape(desc),
        }
        ports += [
            {"name": axis.port("tvalid"), "direction": forward, "width": 1,
             "meaning": f"{name}: beat offered"},
            {"name": axis.port("tready"), "direction": back, "width": 1,
             "meaning": f"{name}: beat taken when tvalid & tready"},
            {"name": axis.port("tdata"), "direction": forward, "width": axis.width,
             "meaning": f"{name}: fields at bits 0..{desc['width'] - 1} (see 'fields'); "
                        + ("bits above are 0" if not axis.inward else "bits above ignored")},
        ]
        if axis.last:
            ports.append({"name": axis.port("tlast"), "direction": forward, "width": 1,
                          "meaning": f"{name}: the payload's 'last' field"})
    return ports, streams
