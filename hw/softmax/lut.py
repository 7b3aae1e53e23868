"""The table methods' shared pieces (the exp table, the sum's leading one) and ``recip``:
``e / sum`` as ``e`` times a reciprocal table entry, shifted by the sum's leading-one position
(:func:`sim.golden.softmax.lut_softmax`, ``method="recip"``)."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory

from ..common.mul import MAX_UNSIGNED_WIDTH, MULTIPLIER_LATENCY, PipelinedMultiplier
from ..common.pipeline import delayed
from .params import SoftmaxParams

__all__ = ["ExpTable", "k_span", "leading_one", "RecipMethod"]


class ExpTable:
    """``e = exp[d]`` from a block-RAM table, one read port per pass, ``e`` registered two
    cycles after the registered ``d``."""

    def __init__(self, m: Module, params: SoftmaxParams):
        lut = params.tables
        self._m = m
        # Zero-padded to a power of two so that d addresses it without a range check; d beyond
        # the padding is caught by its upper bits (table_bytes counts the defined entries only).
        self._addr_bits = max(1, (len(lut.exp) - 1).bit_length())
        self._exp_bits = lut.exp_bits
        m.submodules.exp_table = self._table = Memory(
            shape=unsigned(lut.exp_bits), depth=1 << self._addr_bits,
            init=list(lut.exp) + [0] * ((1 << self._addr_bits) - len(lut.exp)))

    def exponent(self, name: str, d):
        """``e`` of the registered ``d``, valid ``exp_latency`` (2) cycles after ``d``: the
        table read, then a register. The block RAM's word is registered before anything uses
        it because its clock-to-output (a DP16KD without its output register) takes most of
        a 100 MHz cycle: read straight into the product or the sum it was the critical path."""
        m = self._m
        port = self._table.read_port()
        in_range = Signal(name=f"{name}_in_range")
        m.d.comb += port.addr.eq(d[:self._addr_bits])
        m.d.sync += in_range.eq(d[self._addr_bits:] == 0)
        e = Signal(unsigned(self._exp_bits), name=f"{name}_e")
        m.d.sync += e.eq(Mux(in_range, port.data, 0))
        return e


def k_span(params: SoftmaxParams) -> int:
    """Positions the sum's leading one can take: ``sum >= exp[0] = 2**exp_bits - 1``."""
    return params.sum_width - (params.exp_bits - 1)


def leading_one(m: Module, params: SoftmaxParams, row_sum, row_done, row_desc):
    """Stage 1 of both table normalisers: the position of the sum's leading one above
    ``exp_bits - 1`` (``k_off``), registered with the sum, its strobe and its descriptor.
    Returns ``(valid1, desc1, k1, sum1)``."""
    k_min = params.exp_bits - 1
    k_off = Signal(range(max(k_span(params), 2)))
    for bit in range(k_min, params.sum_width):
        with m.If(row_sum[bit]):
            m.d.comb += k_off.eq(bit - k_min)
    valid1 = Signal()
    desc1 = Signal(row_desc.shape())
    k1 = Signal(range(max(k_span(params), 2)))
    sum1 = Signal.like(row_sum)
    m.d.sync += [valid1.eq(row_done), desc1.eq(row_desc), k1.eq(k_off), sum1.eq(row_sum)]
    return valid1, desc1, k1, sum1


class RecipMethod:
    """``recip``: the exp table, a reciprocal of the sum's mantissa from a second table (two
    cycles from the sum), and one product per element."""

    def __init__(self, m: Module, params: SoftmaxParams):
        self._m, self._p = m, params
        self._exp = ExpTable(m, params)

    def norm_layout(self) -> data.StructLayout:
        """The sum's leading-one offset and the reciprocal of its mantissa."""
        return data.StructLayout({"k_off": range(max(k_span(self._p), 2)),
                                  "recip": unsigned(self._p.recip_bits)})

    def exponent(self, name: str, d):
        return self._exp.exponent(name, d)

    def normaliser(self, row_sum, row_done, row_desc, info_valid, info) -> None:
        """Stage 1: leading one of the sum; stage 2: rounding of its mantissa into the
        reciprocal table's index, and the table read."""
        m, lut = self._m, self._p.tables
        k_min = lut.exp_bits - 1
        valid1, desc1, k1, sum1 = leading_one(m, self._p, row_sum, row_done, row_desc)
        valid2 = delayed(m, "norm_valid", valid1, 1)
        desc2 = delayed(m, "norm_desc", desc1, 1)
        k2 = delayed(m, "norm_k", k1, 1)
        m.d.comb += [info_valid.eq(valid2), info.desc.eq(desc2), info.norm.k_off.eq(k2)]
        r = lut.recip_index_bits
        m.submodules.recip_table = recip_table = Memory(
            shape=unsigned(lut.recip_bits), depth=len(lut.recip), init=lut.recip)
        recip_port = recip_table.read_port()
        # the r + 1 bits after the leading one; k >= k_min >= r + 1
        frac = (sum1 >> (k1 + (k_min - r - 1)))[:r + 1]
        m.d.comb += recip_port.addr.eq(
            Mux(frac < (1 << r), frac, (1 << r) + ((frac - (1 << r)) >> 1)))
        m.d.comb += info.norm.recip.eq(recip_port.data)

    def output(self, o1, o_d, result):
        """``e * recip`` rounded at the sum's leading one, saturated to ``out_bits``; returns
        the element's tag aligned with ``result``. The product is pipelined on both sides
        (:func:`_product`) and the shift to the leading one has a stage of its own, before the
        rounding and saturation."""
        m, p, lut = self._m, self._p, self._p.tables
        o_e = self.exponent("out", o_d)
        o2 = delayed(m, "out_tag", o1, 1 + p.exp_latency)          # e is valid
        product = _product(m, o_e, o2.info.norm.recip)
        o3 = delayed(m, "product_tag", o2, MULTIPLIER_LATENCY)      # product is valid
        # round half up: (p + 2**(sh-1)) >> sh == ((p >> (sh-1)) + 1) >> 1; base >= 0 because
        # softmax_tables asks recip_bits + exp_bits >= out_bits + 2
        base = lut.recip_bits + (lut.exp_bits - 1) - p.out_bits - 1
        shifted = Signal(unsigned(len(product) - base), name="out_shifted")
        m.d.sync += shifted.eq((product >> base) >> o3.info.norm.k_off)
        o4 = delayed(m, "shifted_tag", o3, 1)                       # shifted is valid
        rounded = (shifted + 1) >> 1
        q_max = (1 << p.out_bits) - 1
        m.d.comb += result.eq(Mux(rounded > q_max, q_max, rounded))
        return o4


def _product(m: Module, e, recip):
    """``e * recip`` registered ``MULTIPLIER_LATENCY`` cycles later, operands and product
    registered: in the DSP's own registers when both fit it (a MULT18X18D read combinationally
    between fabric registers was a 66 MHz path), else flip-flops around a ``*``."""
    if len(e) <= MAX_UNSIGNED_WIDTH and len(recip) <= MAX_UNSIGNED_WIDTH:
        m.submodules.out_product = mul = PipelinedMultiplier(
            a_width=len(e), b_width=len(recip), a_signed=False, b_signed=False)
        m.d.comb += [mul.a.eq(e), mul.b.eq(recip)]
        return mul.p
    e_reg = Signal.like(e, name="out_product_a")
    recip_reg = Signal.like(recip, name="out_product_b")
    product = Signal(unsigned(len(e) + len(recip)), name="out_product")
    m.d.sync += [e_reg.eq(e), recip_reg.eq(recip), product.eq(e_reg * recip_reg)]
    return product
