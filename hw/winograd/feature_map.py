"""Feature-map front and back ends of the Winograd unit: a line-buffered tiler that turns an
input feature map streamed row by row into the unit's overlapping, zero-padded input tiles, and
an untiler that turns the unit's output tiles back into an output feature map row by row."""

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..common.params import params_or_keywords
from ..common.arith import unsigned_width
from ..common.checks import check_bool, check_choice, check_int
from .core import InputTile, PassParams, WeightBeat, WinogradOut, WinogradUnit
from .params import (POINTS, WinogradFMParams, line_buffer_depth, line_buffers,
                     output_buffer_depth, output_buffer_tile_bits)

__all__ = ["FrameShape", "FeatureMapParams", "PixelIn", "PixelOut", "Tiler", "Untiler",
           "WinogradFeatureMap"]


def FrameShape(max_height: int, max_width: int) -> data.StructLayout:
    """Run-time size of the input feature map and its zero padding (0 or 1)."""
    return data.StructLayout({"height": unsigned(unsigned_width(max_height)),
                              "width": unsigned(unsigned_width(max_width)),
                              "padding": unsigned(1)})


def FeatureMapParams(requantize: bool, max_height: int, max_width: int) -> data.StructLayout:
    """One beat per pass (= per output channel): the frame shape and the unit's pass params."""
    fields = dict(FrameShape(max_height, max_width).members)
    fields.update(PassParams(requantize).members)
    return data.StructLayout(fields)


def PixelIn() -> data.StructLayout:
    """One int8 value of the input map; values arrive row by row, pixel by pixel, with the
    channels of a pixel consecutive (NHWC order)."""
    return data.StructLayout({"data": signed(8)})


def PixelOut(requantize: bool) -> data.StructLayout:
    """One output value; ``last`` ends an output row, ``end`` (with ``last``) the map."""
    return data.StructLayout({"data": signed(8) if requantize else signed(32),
                              "last": unsigned(1), "end": unsigned(1)})


def _check_frame_bounds(m: int, max_height: int, max_width: int) -> None:
    check_choice("m", m, POINTS)
    check_int("max_height", max_height, 1, 4096)
    check_int("max_width", max_width, 1, 4096)


class Tiler(wiring.Component):
    """Input feature map, row by row, to overlapping (m+2) x (m+2) zero-padded tiles.

    A ``frame`` beat starts a map; its ``height * width * channels`` values then arrive on ``i``
    (NHWC order). The rows go to ``2m + 2`` line buffers, one block RAM each (``max_width x
    2**ceil(log2 channels)`` bytes), used as a ring: while the ``m + 2`` rows of one tile row are
    read, the ``m`` new rows of the next are written. Tiles leave in raster order, each as one
    beat per input channel (the ``WinogradUnit`` input order); rows and columns outside the
    map (the padding, and the bottom/right of partial edge tiles) read as zero. A tile beat is
    gathered one column per clock from the ``m + 2`` buffers that hold its rows, so one beat
    leaves every ``m + 2`` clocks when the sink is ready.

    Parameters
    ----------
    m : int
        Output tile size, 2 or 4.
    channels : int
        Input channels of the map (1..1024).
    max_height, max_width : int
        Largest map the counters and line buffers hold (1..4096).

    Members
    -------
    frame : In(stream.Signature(FrameShape(max_height, max_width)))
        Taken when the previous map has been fully read and emitted.
    i : In(stream.Signature(PixelIn()))
        The map's values.
    o : Out(stream.Signature(InputTile(m + 2)))
        Tiles, one beat per input channel; ``last`` on the final channel, ``end`` (with
        ``last``) on the map's final tile.
    """

    def __init__(self, *, m: int = 2, channels: int = 8, max_height: int = 32,
                 max_width: int = 32):
        _check_frame_bounds(m, max_height, max_width)
        check_int("channels", channels, 1, 1024)
        self._m, self._channels = m, channels
        self._max_height, self._max_width = max_height, max_width
        super().__init__({
            "frame": In(stream.Signature(FrameShape(max_height, max_width))),
            "i": In(stream.Signature(PixelIn())),
            "o": Out(stream.Signature(InputTile(m + 2))),
        })

    m = property(lambda self: self._m)
    channels = property(lambda self: self._channels)
    max_height = property(lambda self: self._max_height)
    max_width = property(lambda self: self._max_width)

    @property
    def line_buffers(self) -> int:
        """Rows held: ``m + 2`` being read and ``m`` being written."""
        return line_buffers(self._m)

    @property
    def channel_bits(self) -> int:
        return (self._channels - 1).bit_length()

    @property
    def buffer_depth(self) -> int:
        """Bytes per line buffer (the channel index is the low address bits)."""
        return line_buffer_depth(self._max_width, self._channels)

    @property
    def clocks_per_beat(self) -> int:
        """Clocks per tile beat, sink ready: one per column."""
        return self._m + 2

    def elaborate(self, platform):
        m = Module()
        tm, n, rows = self._m, self._m + 2, self.line_buffers
        chans, cb = self._channels, self.channel_bits
        hb, wb = unsigned_width(self._max_height + tm), unsigned_width(self._max_width + tm)

        height, width, pad = Signal(hb), Signal(wb), Signal()
        out_h, out_w = Signal(hb), Signal(wb)
        active = Signal()

        # Writer: next input value at (row written, column, channel) into line buffer `w_slot`.
        w_row, w_col = Signal(hb), Signal(wb)
        w_chan = Signal(range(max(chans, 2)))
        w_slot = Signal(range(rows))
        # Reader: tile row at output row `r_row0`, tile at output column `r_col0`.
        r_row0, r_col0 = Signal(hb), Signal(wb)
        r_chan = Signal(range(max(chans, 2)))
        r_k = Signal(range(n))
        top_slot = Signal(range(rows))            # line buffer of the tile row's first row

        def address(col, chan):
            return Cat(chan[:cb], col) if cb else col

        buffers = []
        for s in range(rows):
            mem = Memory(shape=signed(8), depth=self.buffer_depth, init=[])
            m.submodules[f"line{s}"] = mem
            buffers.append((mem.write_port(), mem.read_port(domain="sync")))

        # ---- frame -------------------------------------------------------------------------
        tile = Signal(InputTile(n))
        gather = Signal(data.ArrayLayout(data.ArrayLayout(signed(8), n - 1), n))
        o_valid = Signal()
        land_valid, land_final = Signal(), Signal()
        m.d.comb += [self.frame.ready.eq(~active), self.o.valid.eq(o_valid),
                     self.o.payload.eq(tile)]
        with m.If(self.frame.valid & self.frame.ready):
            f = self.frame.payload
            m.d.sync += [height.eq(f.height), width.eq(f.width), pad.eq(f.padding),
                         out_h.eq(f.height + 2 * f.padding - 2),
                         out_w.eq(f.width + 2 * f.padding - 2),
                         active.eq(1), w_row.eq(0), w_col.eq(0), w_chan.eq(0), w_slot.eq(0),
                         r_row0.eq(0), r_col0.eq(0), r_chan.eq(0), r_k.eq(0),
                         top_slot.eq(Mux(f.padding, rows - 1, 0))]
        with m.If(active & (r_row0 >= out_h) & (w_row == height) & ~o_valid & ~land_valid):
            m.d.sync += active.eq(0)

        # ---- writer: a row may overwrite the row `rows` above it once no tile row needs it --
        accept = Signal()
        m.d.comb += [
            self.i.ready.eq(active & (w_row < height) & (w_row + pad < r_row0 + rows)),
            accept.eq(self.i.valid & self.i.ready),
        ]
        for s, (wr, _) in enumerate(buffers):
            m.d.comb += [wr.addr.eq(address(w_col, w_chan)), wr.data.eq(self.i.payload.data),
                         wr.en.eq(accept & (w_slot == s))]
        with m.If(accept):
            with m.If(w_chan == chans - 1):
                m.d.sync += w_chan.eq(0)
                with m.If(w_col == width - 1):
                    m.d.sync += [w_col.eq(0), w_row.eq(w_row + 1),
                                 w_slot.eq(Mux(w_slot == rows - 1, 0, w_slot + 1))]
                with m.Else():
                    m.d.sync += w_col.eq(w_col + 1)
            with m.Else():
                m.d.sync += w_chan.eq(w_chan + 1)

        # ---- reader: issue one column read per clock, land it the clock after ---------------
        # Columns 0..n-2 land in `gather`; the final column lands with them in the output
        # register, so the final column is issued only when that register will be free.
        # Rows r_row0 - pad .. r_row0 - pad + n - 1 must be written (or lie below the map).
        rows_ready = (w_row == height) | (w_row + pad >= r_row0 + n)
        issue = Signal()
        m.d.comb += issue.eq(active & (r_row0 < out_h) & rows_ready
                             & ((r_k != n - 1) | ~o_valid | self.o.ready))
        col = r_col0 + r_k                                  # padded column
        col_ok = (col >= pad) & (col < width + pad)
        in_col = Mux(col_ok, col - pad, 0)[:wb]
        for _, rd in buffers:
            m.d.comb += rd.addr.eq(address(in_col, r_chan))

        last_k, last_chan = r_k == n - 1, r_chan == chans - 1
        last_tile_in_row = r_col0 + tm >= out_w
        last_tile_row = r_row0 + tm >= out_h
        land_k = Signal(range(n))
        land_ok = Signal(n)                                 # row i inside the map, column too
        land_slot = Signal(data.ArrayLayout(range(rows), n))
        land_last, land_end = Signal(), Signal()
        m.d.sync += land_valid.eq(issue)
        with m.If(issue):
            m.d.sync += [land_k.eq(r_k), land_final.eq(last_k), land_last.eq(last_chan),
                         land_end.eq(last_chan & last_tile_in_row & last_tile_row)]
            for i in range(n):
                row = r_row0 + i
                slot = top_slot + i
                m.d.sync += [land_ok[i].eq(col_ok & (row >= pad) & (row < height + pad)),
                             land_slot[i].eq(Mux(slot >= rows, slot - rows, slot))]
            with m.If(last_k):
                m.d.sync += r_k.eq(0)
                with m.If(last_chan):
                    m.d.sync += r_chan.eq(0)
                    with m.If(last_tile_in_row):
                        next_top = top_slot + tm
                        m.d.sync += [r_col0.eq(0), r_row0.eq(r_row0 + tm),
                                     top_slot.eq(Mux(next_top >= rows, next_top - rows,
                                                     next_top))]
                    with m.Else():
                        m.d.sync += r_col0.eq(r_col0 + tm)
                with m.Else():
                    m.d.sync += r_chan.eq(r_chan + 1)
            with m.Else():
                m.d.sync += r_k.eq(r_k + 1)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += o_valid.eq(0)
        with m.If(land_valid):
            for i in range(n):
                value = Signal(signed(8), name=f"land_row{i}")
                # The last buffer as the default: a complete case (Verilator's CASEINCOMPLETE).
                with m.Switch(land_slot[i]):
                    for s, (_, rd) in enumerate(buffers[:-1]):
                        with m.Case(s):
                            m.d.comb += value.eq(rd.data)
                    with m.Default():
                        m.d.comb += value.eq(buffers[-1][1].data)
                value = Mux(land_ok[i], value, 0)
                for k in range(n - 1):
                    with m.If(land_k == k):
                        m.d.sync += gather[i][k].eq(value)
                with m.If(land_final):
                    m.d.sync += [tile.d[i][k].eq(gather[i][k]) for k in range(n - 1)]
                    m.d.sync += tile.d[i][n - 1].eq(value)
            with m.If(land_final):
                m.d.sync += [o_valid.eq(1), tile.last.eq(land_last), tile.end.eq(land_end)]
        return m


class Untiler(wiring.Component):
    """The unit's m x m output tiles (raster order, one tile row per beat) to an output feature
    map streamed row by row, one value per beat.

    Two banks of ``m`` output rows (one memory of ``2 * m * 2**ceil(log2 ceil(max_width / m))``
    words of ``m`` values): the unit fills one tile row while the other is read out. Values of
    partial edge tiles outside the ``out_height x out_width`` map are written but never read.

    Parameters
    ----------
    m : int
        Output tile size, 2 or 4.
    requantize : bool
        int8 values (True) or int32.
    max_height, max_width : int
        Largest input map (1..4096); the output map is at most as large.

    Members
    -------
    frame : In(stream.Signature(FrameShape(max_height, max_width)))
        The input map's shape; the output is ``(height + 2 padding - 2) x (width + 2 padding
        - 2)``. Taken once the previous map has left.
    i : In(stream.Signature(WinogradOut(m, requantize)))
        Output tiles, ``m`` beats (tile rows) each.
    o : Out(stream.Signature(PixelOut(requantize)))
        The output map row by row.
    """

    def __init__(self, *, m: int = 2, requantize: bool = True, max_height: int = 32,
                 max_width: int = 32):
        _check_frame_bounds(m, max_height, max_width)
        check_bool("requantize", requantize)
        self._m, self._requantize = m, requantize
        self._max_height, self._max_width = max_height, max_width
        super().__init__({
            "frame": In(stream.Signature(FrameShape(max_height, max_width))),
            "i": In(stream.Signature(WinogradOut(m, requantize))),
            "o": Out(stream.Signature(PixelOut(requantize))),
        })

    m = property(lambda self: self._m)
    requantize = property(lambda self: self._requantize)
    max_height = property(lambda self: self._max_height)
    max_width = property(lambda self: self._max_width)

    @property
    def tile_bits(self) -> int:
        """Address bits of a tile column."""
        return output_buffer_tile_bits(self._m, self._max_width)

    @property
    def depth(self) -> int:
        """Words (of ``m`` values) of the output buffer."""
        return output_buffer_depth(self._m, self._max_width)

    def elaborate(self, platform):
        m = Module()
        tm, tb = self._m, self.tile_bits
        lane_bits = tm.bit_length() - 1
        hb, wb = unsigned_width(self._max_height + tm), unsigned_width(self._max_width + tm)
        value_shape = signed(8) if self._requantize else signed(32)

        m.submodules.buffer = mem = Memory(shape=data.ArrayLayout(value_shape, tm),
                                           depth=self.depth, init=[])
        wr = mem.write_port()
        rd = mem.read_port(domain="sync")

        def address(tile_col, row, bank):
            return Cat(tile_col[:tb], row, bank) if tb else Cat(row, bank)

        out_h, out_w = Signal(hb), Signal(wb)
        active = Signal()
        full = Signal(2)                        # bank holds a complete tile row not yet read
        # Writer: tile column, row within the tile, bank, output row / column of the tile.
        w_tile, w_row, w_bank = Signal(range(1 << tb)), Signal(range(tm)), Signal()
        w_row0, w_col0 = Signal(hb), Signal(wb)
        # Reader: row within the bank, output column, bank, output row of the bank's first row.
        r_row, r_col, r_bank = Signal(range(tm)), Signal(wb), Signal()
        r_row0 = Signal(hb)
        o_valid, o_last, o_end = Signal(), Signal(), Signal()
        lane = Signal(range(tm))

        with m.If(self.frame.valid & self.frame.ready):
            f = self.frame.payload
            m.d.sync += [out_h.eq(f.height + 2 * f.padding - 2),
                         out_w.eq(f.width + 2 * f.padding - 2), active.eq(1), full.eq(0),
                         w_tile.eq(0), w_row.eq(0), w_bank.eq(0), w_row0.eq(0), w_col0.eq(0),
                         r_row.eq(0), r_col.eq(0), r_bank.eq(0), r_row0.eq(0)]
        with m.If(active & (r_row0 >= out_h) & ~o_valid):
            m.d.sync += active.eq(0)

        accept = Signal()
        w_full = full.bit_select(w_bank, 1)
        m.d.comb += [
            self.frame.ready.eq(~active),
            self.i.ready.eq(active & ~w_full & (w_row0 < out_h)),
            accept.eq(self.i.valid & self.i.ready),
            wr.addr.eq(address(w_tile, w_row, w_bank)),
            wr.data.eq(self.i.payload.data),
            wr.en.eq(accept),
        ]
        with m.If(accept):
            with m.If(w_row == tm - 1):
                m.d.sync += w_row.eq(0)
                with m.If(w_col0 + tm >= out_w):
                    m.d.sync += [w_tile.eq(0), w_col0.eq(0), w_full.eq(1),
                                 w_bank.eq(~w_bank), w_row0.eq(w_row0 + tm)]
                with m.Else():
                    m.d.sync += [w_tile.eq(w_tile + 1), w_col0.eq(w_col0 + tm)]
            with m.Else():
                m.d.sync += w_row.eq(w_row + 1)

        # Reader: the read port's enable is the output register's, so a held beat keeps its word.
        advance = ~o_valid | self.o.ready
        issue = Signal()
        r_full = full.bit_select(r_bank, 1)
        last_col = r_col == out_w - 1
        last_row = (r_row == tm - 1) | (r_row0 + r_row + 1 >= out_h)
        m.d.comb += [
            issue.eq(advance & active & r_full),
            rd.en.eq(advance),
            rd.addr.eq(address(r_col[lane_bits:], r_row, r_bank)),
            self.o.valid.eq(o_valid),
            self.o.payload.data.eq(rd.data[lane]),
            self.o.payload.last.eq(o_last),
            self.o.payload.end.eq(o_end),
        ]
        with m.If(advance):
            m.d.sync += [o_valid.eq(issue), lane.eq(r_col[:lane_bits]), o_last.eq(last_col),
                         o_end.eq(last_col & (r_row0 + r_row + 1 >= out_h))]
        with m.If(issue):
            with m.If(last_col):
                m.d.sync += r_col.eq(0)
                with m.If(last_row):
                    m.d.sync += [r_row.eq(0), r_full.eq(0), r_bank.eq(~r_bank),
                                 r_row0.eq(r_row0 + tm)]
                with m.Else():
                    m.d.sync += r_row.eq(r_row + 1)
            with m.Else():
                m.d.sync += r_col.eq(r_col + 1)
        return m


class WinogradFeatureMap(wiring.Component):
    """Winograd 3x3 convolution of whole feature maps: ``Tiler -> WinogradUnit -> Untiler``.

    Works in passes, one output channel per pass, like the ``WinogradUnit``: a ``params`` beat
    (map height and width, padding 0 or 1, bias and requantization of this output channel), the
    pass's Winograd-domain weights on ``weights``, then the whole input map on ``i`` (NHWC,
    one int8 per beat); the output channel's map leaves on ``o`` row by row, one value per
    beat. The map is streamed once per output channel. Stride 1; the output is
    ``(height + 2 padding - 2) x (width + 2 padding - 2)``; partial edge tiles are computed
    whole and cropped. The next ``params`` beat is taken once the tiler, unit and untiler have
    finished the previous pass.

    Run-time requirements (not checked by the gateware): ``1 <= height <= max_height``,
    ``1 <= width <= max_width``, output at least 1 x 1.

    Parameters
    ----------
    parameters : WinogradFMParams
        The generation-time parameters (``hw/winograd/params.py``); or its fields as keyword
        arguments (``taps_per_clock`` and ``tap_shifts`` as for ``WinogradUnit``). They are:
    m, mode, in_channels, taps_per_clock, requantize, tap_shifts
        As for ``WinogradUnit`` (``in_channels`` is the map's channel count; ``out_lanes`` is
        ``m``: one tile row per unit output beat).
    max_height, max_width : int
        Largest input map (1..4096).

    Members
    -------
    params : In(stream.Signature(FeatureMapParams(requantize, max_height, max_width)))
        One beat per pass.
    weights : In(stream.Signature(WeightBeat(taps_per_clock, weight_width)))
        As for ``WinogradUnit``.
    i : In(stream.Signature(PixelIn()))
        The input map, ``height * width * in_channels`` beats per pass.
    o : Out(stream.Signature(PixelOut(requantize)))
        The output channel's map; ``last`` ends a row, ``end`` the map.
    """

    def __init__(self, parameters: WinogradFMParams | None = None, **kwargs):
        parameters = params_or_keywords(WinogradFMParams, parameters, kwargs,
                                        build=WinogradFMParams.of, name="parameters")
        self._params = p = parameters
        # The parts are elaborated by this component's elaborate().
        self._unit = WinogradUnit(p.unit)
        self._tiler = Tiler(m=p.m, channels=p.in_channels, max_height=p.max_height,
                            max_width=p.max_width)
        self._untiler = Untiler(m=p.m, requantize=p.requantize, max_height=p.max_height,
                                max_width=p.max_width)
        super().__init__({
            "params": In(stream.Signature(FeatureMapParams(p.requantize, p.max_height,
                                                           p.max_width))),
            "weights": In(stream.Signature(WeightBeat(p.taps_per_clock, p.weight_width))),
            "i": In(stream.Signature(PixelIn())),
            "o": Out(stream.Signature(PixelOut(p.requantize))),
        })

    @property
    def parameters(self) -> WinogradFMParams:
        """The generation-time parameters and every figure derived from them."""
        return self._params

    unit = property(lambda self: self._unit)
    tiler = property(lambda self: self._tiler)
    untiler = property(lambda self: self._untiler)
    max_height = property(lambda self: self._params.max_height)
    max_width = property(lambda self: self._params.max_width)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tiler = tiler = self._tiler
        m.submodules.unit = unit = self._unit
        m.submodules.untiler = untiler = self._untiler
        wiring.connect(m, wiring.flipped(self.weights), unit.weights)
        wiring.connect(m, wiring.flipped(self.i), tiler.i)
        wiring.connect(m, tiler.o, unit.i)
        wiring.connect(m, unit.o, untiler.i)
        wiring.connect(m, untiler.o, wiring.flipped(self.o))

        # The params beat goes to all three at once, when all three can take it.
        ready = tiler.frame.ready & unit.params.ready & untiler.frame.ready
        p = self.params.payload
        m.d.comb += [self.params.ready.eq(ready)]
        for sink in (tiler.frame, untiler.frame):
            m.d.comb += [sink.valid.eq(self.params.valid & ready),
                         sink.payload.height.eq(p.height), sink.payload.width.eq(p.width),
                         sink.payload.padding.eq(p.padding)]
        m.d.comb += unit.params.valid.eq(self.params.valid & ready)
        for name, _ in unit.params.payload.shape():
            m.d.comb += unit.params.payload[name].eq(p[name])
        return m
