"""Table GELU: one block-RAM read per element, the accuracy ceiling for narrow inputs."""

from amaranth import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..common.checks import check_int
from ..common.arith import signed_width
from .pipeline import GeluBeat

__all__ = ["LutGelu"]


class LutGelu(wiring.Component):
    """``y = table[x]``, the correctly rounded GELU of every input code at scale
    ``S * 2**-(out_bits - 1)`` (:func:`sim.golden.gelu.lut_gelu_table`, computed once by
    ``GeluParams.lut_table``).

    The table lives in one ``Memory`` with a synchronous read port per lane; one beat per clock,
    ``LATENCY`` cycle.

    Parameters
    ----------
    table : list of int
        The output of every input code, two's-complement order (``GeluParams.lut_table``).
    in_width : int
    lanes : int

    Members
    -------
    i : In(stream.Signature(GeluBeat(lanes, in_width)))
    o : Out(stream.Signature(GeluBeat(lanes, out_width)))
    """

    LATENCY = 1

    def __init__(self, *, table: list[int], in_width: int, lanes: int):
        check_int("lanes", lanes, 1, 64)
        check_int("in_width", in_width, 2, 12)            # lut_gelu_table's bound
        if not isinstance(table, list) or not all(isinstance(v, int) for v in table):
            raise TypeError(f"table must be a list of integers, not {table!r:.60}")
        if len(table) != 1 << in_width:
            raise ValueError(f"table must have 2**in_width = {1 << in_width} entries, "
                             f"not {len(table)}")
        self._table = table
        self._in_width, self._lanes = in_width, lanes
        super().__init__({
            "i": In(stream.Signature(GeluBeat(lanes, in_width))),
            "o": Out(stream.Signature(GeluBeat(lanes, self.out_width))),
        })

    @property
    def out_width(self) -> int:
        return signed_width(min(self._table), max(self._table))

    def elaborate(self, platform):
        m = Module()
        w = self._in_width
        m.submodules.table = table = Memory(shape=signed(self.out_width), depth=1 << w,
                                            init=self._table)
        advance = Signal()
        out_valid = Signal()
        m.d.comb += [
            advance.eq(~out_valid | self.o.ready),
            self.i.ready.eq(advance),
            self.o.valid.eq(out_valid),
        ]
        for lane in range(self._lanes):
            port = table.read_port()
            x = self.i.payload.data[lane]
            # Entry i holds code i - 2**(w-1): flipping the sign bit is that offset.
            m.d.comb += [
                port.addr.eq(x.as_unsigned() ^ (1 << (w - 1))),
                port.en.eq(advance),            # the read data holds while the sink stalls
                self.o.payload.data[lane].eq(port.data),
            ]
        with m.If(advance):
            m.d.sync += [out_valid.eq(self.i.valid), self.o.payload.last.eq(self.i.payload.last)]
        return m
