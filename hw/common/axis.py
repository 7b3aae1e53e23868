"""AXI4-Stream top level of any block whose streams are ``amaranth.lib.stream`` interfaces.

Every stream member ``<name>`` of the block becomes an AXI4-Stream interface: ``s_axis_<name>_*``
for a stream the block takes, ``m_axis_<name>_*`` for one it gives, each with ``tvalid``,
``tready``, ``tdata`` and, when the payload is a struct with a one-bit ``last`` field, ``tlast``
(carrying that field; otherwise the interface has no ``tlast``). ``tdata`` holds the other
fields of the payload packed in their order from bit 0 (see :func:`tdata_shape`), zero-padded
to whole bytes on outputs; the padding bits of inputs are ignored. Plain ports pass through
under their own names. The clock is ``aclk``; the synchronous reset ``areset`` (active high)
or, with ``aresetn=True``, ``aresetn`` (active low, as AMBA names it).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockDomain, Module, Shape, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AxisStream", "tdata_shape", "AxiStreamTop"]


def tdata_shape(payload) -> tuple[object, bool]:
    """The shape of the bits ``tdata`` carries for a stream of ``payload``, and whether the
    payload's ``last`` field goes to ``tlast`` instead.

    A struct payload with a one-bit unsigned ``last`` field gives a struct of its other fields
    in their order (so ``tdata`` holds them from bit 0, without a hole where ``last`` was);
    any other payload is carried whole.
    """
    if isinstance(payload, data.StructLayout):
        fields = dict(payload)
        last = fields.get("last")
        if last is not None and Shape.cast(last.shape) == Shape(1, signed=False):
            return data.StructLayout({name: field.shape for name, field in fields.items()
                                      if name != "last"}), True
    return payload, False


@dataclass(frozen=True)
class AxisStream:
    """One AXI4-Stream interface of an :class:`AxiStreamTop`.

    ``name`` is the block's stream member, ``prefix`` the interface's (``s_axis_<name>`` or
    ``m_axis_<name>``), ``inward`` whether the block takes it, ``payload`` the block's payload
    shape, ``shape`` what ``tdata`` carries from bit 0 (``tdata_shape``), ``width`` the
    ``tdata`` port's width in bits (a whole number of bytes, at least one) and ``last``
    whether the interface has ``tlast``.
    """

    name: str
    prefix: str
    inward: bool
    payload: object
    shape: object
    width: int
    last: bool

    def port(self, signal: str) -> str:
        """The top-level port name of ``signal`` (``"tvalid"``, ``"tdata"``, ...)."""
        return f"{self.prefix}_{signal}"


def _stream_signature(member) -> stream.Signature | None:
    if not member.is_signature:
        return None
    signature = member.signature
    if isinstance(signature, wiring.FlippedSignature):
        signature = signature.flip()
    return signature if isinstance(signature, stream.Signature) else None


class AxiStreamTop(wiring.Component):
    """A block with AXI4-Stream interfaces, its own clock and reset ports.

    Parameters
    ----------
    block : wiring.Component
        The block; each member is a ``lib.stream`` interface or a plain port.
    aresetn : bool
        Name the reset ``aresetn``, active low; otherwise ``areset``, active high. Either is
        synchronous to ``aclk``.

    Members
    -------
    aclk : In(1)
        The clock (rising edge).
    aresetn or areset : In(1)
        Synchronous reset.
    s_axis_<name>_tvalid, _tready, _tdata[, _tlast] : In(1), Out(1), In(width)[, In(1)]
        Each stream the block takes (see :attr:`streams`).
    m_axis_<name>_tvalid, _tready, _tdata[, _tlast] : Out(1), In(1), Out(width)[, Out(1)]
        Each stream the block gives.
    <port> : the block's plain ports, unchanged.
    """

    def __init__(self, block: wiring.Component, *, aresetn: bool = False):
        if not isinstance(block, wiring.Component):
            raise TypeError(f"block must be an Amaranth wiring.Component, not {block!r}")
        if not isinstance(aresetn, bool):
            raise TypeError(f"aresetn must be True or False, not {aresetn!r}")
        self._block = block
        self._aresetn = aresetn
        self._reset = "aresetn" if aresetn else "areset"
        members = {"aclk": In(1), self._reset: In(1)}
        streams = {}
        for name, member in block.signature.members.items():
            signature = _stream_signature(member)
            if signature is None and not member.is_port:
                raise TypeError(f"block member {name!r} is neither a stream nor a port; an "
                                f"AXI4-Stream top level cannot carry it")
            if signature is None:
                new = {name: member}
            else:
                inward = member.flow == In
                payload = signature.members["payload"].shape
                shape, last = tdata_shape(payload)
                width = max(8, -(-Shape.cast(shape).width // 8) * 8)
                axis = AxisStream(name, f"{'s' if inward else 'm'}_axis_{name}", inward,
                                  payload, shape, width, last)
                flow, back = (In, Out) if inward else (Out, In)
                new = {axis.port("tvalid"): flow(1), axis.port("tready"): back(1),
                       axis.port("tdata"): flow(width)}
                if last:
                    new[axis.port("tlast")] = flow(1)
                streams[name] = axis
            for port in new:
                if port in members:
                    raise ValueError(f"block member {name!r} gives port {port!r}, which the "
                                     f"AXI4-Stream top level already has")
            members.update(new)
        self._streams = streams
        super().__init__(members)

    @property
    def block(self) -> wiring.Component:
        """The wrapped block."""
        return self._block

    @property
    def reset_active_low(self) -> bool:
        """Whether the reset is ``aresetn`` (active low) rather than ``areset``."""
        return self._aresetn

    @property
    def reset_port(self) -> str:
        """The reset port's name: ``"aresetn"`` or ``"areset"``."""
        return self._reset

    @property
    def streams(self) -> dict[str, AxisStream]:
        """Every AXI4-Stream interface, by the block's stream member name."""
        return dict(self._streams)

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = block = self._block
        m.domains.sync = sync = ClockDomain("sync")
        reset = getattr(self, self._reset)
        m.d.comb += [sync.clk.eq(self.aclk), sync.rst.eq(~reset if self._aresetn else reset)]

        for name, member in block.signature.members.items():
            if name not in self._streams:
                inner, outer = getattr(block, name), getattr(self, name)
                m.d.comb += inner.eq(outer) if member.flow == In else outer.eq(inner)
                continue
            axis = self._streams[name]
            port = getattr(block, name)
            tvalid, tready, tdata = (getattr(self, axis.port(s))
                                     for s in ("tvalid", "tready", "tdata"))
            bits = Value.cast(port.payload)
            # (payload bit offset, tdata bit offset, width) of each carried piece
            if axis.last:
                pieces = [(axis.payload[f].offset, field.offset, Shape.cast(field.shape).width)
                          for f, field in axis.shape]
            else:
                pieces = [(0, 0, Shape.cast(axis.shape).width)]
            if axis.inward:
                m.d.comb += [port.valid.eq(tvalid), tready.eq(port.ready)]
                m.d.comb += [bits[p:p + w].eq(tdata[t:t + w]) for p, t, w in pieces if w]
                if axis.last:
                    m.d.comb += port.payload.last.eq(getattr(self, axis.port("tlast")))
            else:
                m.d.comb += [tvalid.eq(port.valid), port.ready.eq(tready)]
                # bits of tdata no piece drives stay 0: the zero padding
                m.d.comb += [tdata[t:t + w].eq(bits[p:p + w]) for p, t, w in pieces if w]
                if axis.last:
                    m.d.comb += getattr(self, axis.port("tlast")).eq(port.payload.last)
        return m
