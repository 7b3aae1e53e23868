"""Attention unit: a batch of variable-length sequences in, multi-head block-sparse attention
out, on ``engines`` attention engines fed by the length-aware scheduler."""

from __future__ import annotations

from typing import NamedTuple

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..common.params import params_or_keywords
from ..common.arith import times_constant
from ..common.pipeline import delayed
from .engine import AttentionEngine, Quant, Word, WordPair, _StreamRegister
from .params import UnitParams
from .scheduler import AttentionScheduler

__all__ = ["SequenceIn", "ContextOut", "AttentionUnit", "READ_LATENCY"]

#: Cycles from an engine's read request handshake to its answer: the request registered on
#: its way to the arbiter; the registered grant; the sequence-table entry looked up (token
#: position in the batch, head and chunk offset, past the length or not); the word address (a
#: constant product by ``hidden / block``, shifted adds); the block RAM read; the two banks'
#: words registered; the answer registered in a copy per engine. Each stage reads registers
#: only.
READ_LATENCY = 7


def SequenceIn(max_len: int) -> data.StructLayout:
    """One sequence of the batch: its length in tokens (1..max_len); ``last`` ends the batch."""
    return data.StructLayout({"length": unsigned(max_len.bit_length()), "last": unsigned(1)})


def ContextOut(block: int) -> data.StructLayout:
    """A word of the attention output; ``last`` marks the batch's final word."""
    return data.StructLayout({"data": Word(block), "last": unsigned(1)})


class _Batch(NamedTuple):
    """The batch's registers: sequences and tokens described, all described, its words."""
    n_seqs: Signal
    n_tokens: Signal
    all_desc: Signal
    total_words: Signal
    all_words: Signal


class _Feed(NamedTuple):
    """The scheduler feed: feeding, and the (sequence, head) it gives next."""
    feeding: Signal
    seq: Signal
    head: Signal


class State(enum.Enum, shape=2):
    LOAD = 0        # descriptors and Q, K, V words in
    COMPUTE = 1     # the scheduler's rows on the engines
    OUTPUT = 2      # O words out, in token order


class AttentionUnit(wiring.Component):
    """Multi-head block-sparse attention of a batch of sequences, bit-exact to
    ``sim.golden.encoder.attention_int`` with the mask ``token_mask(length, block=, window=,
    n_global=, causal=)`` of each sequence.

    A batch is loaded, computed and streamed out in turn. *Load*: one descriptor per
    sequence (its length; ``last`` on the batch's final one) and the sequences' Q, K and V
    token rows, each as ``hidden / block`` words of ``block`` int8 values, sequence after
    sequence, into one block-RAM memory per tensor. *Compute*: each sequence enters the
    scheduler once per head, as sequence id ``seq << head_bits | head``, so the scheduler
    balances (sequence, head, query block) rows over the engines; each engine computes two
    overlapping rows at a time (:class:`hw.attention.engine.AttentionEngine`) and writes its
    context words into the O memory. *Output*: once every word of O is written, O streams out in token order.

    Each of the Q, K, V memories has ``read_ports`` read ports (copies of its block RAM);
    engine ``e`` uses port ``e % read_ports``, shared with the other engines of its group
    through a round-robin arbiter (one request a clock, answered ``READ_LATENCY`` cycles later,
    in order per engine; tokens past a sequence's length read as zeros). The O memory's write
    port is shared by all engines the same way. An engine waits at most ``engines /
    read_ports - 1`` cycles for a grant.

    Parameters
    ----------
    params : UnitParams
        Generation-time parameters (``hw/attention/params.py``).

    Members
    -------
    desc : In(stream.Signature(SequenceIn(max_len)))
        The batch's sequences, in order; at most ``max_seqs`` and ``max_tokens`` tokens.
    q, k, v : In(stream.Signature(Word(block)))
        Token rows of the batch's sequences, ``hidden / block`` words per token, row-major.
    o : Out(stream.Signature(ContextOut(block)))
        The attention output in the same order (heads concatenated per token).
    quant : In(Quant)
        Scores and context requantization; held during a batch.
    """

    def __init__(self, params: UnitParams | None = None, **kwargs):
        params = params_or_keywords(UnitParams, params, kwargs)
        self._params = params
        word = stream.Signature(Word(params.block))
        super().__init__({
            "desc": In(stream.Signature(SequenceIn(params.max_len))),
            "q": In(word), "k": In(word), "v": In(word),
            "o": Out(stream.Signature(ContextOut(params.block))),
            "quant": In(Quant),
        })

    @property
    def params(self) -> UnitParams:
        return self._params

    def elaborate(self, platform):
        m = Module()
        engines, sched = self._engines(m)
        state = Signal(State)
        Seq = data.StructLayout({"base": range(self._params.max_tokens + 1),
                                 "length": SequenceIn(self._params.max_len)["length"].shape})
        # (memories of at least 2 words: a 1-word memory has a zero-width address, which
        # Verilator rejects)
        m.submodules.table = table = Memory(shape=Seq, depth=max(self._params.max_seqs, 2),
                                            init=[])
        table_write = table.write_port()
        batch = self._load_descriptors(m, state, table_write)
        memories, loaded = self._load_words(m, state, batch)
        self._read_ports(m, engines, memories, table)
        o_memory, written = self._context_writes(m, engines, table)
        feed = self._feed(m, sched, table, batch.n_seqs)
        read_addr = self._output(m, state, o_memory, batch.total_words)
        self._batch_states(m, state, batch, loaded, feed, written, read_addr)
        return m

    def _engines(self, m):
        """The engines (quantization from the port) and the scheduler driving them."""
        p = self._params
        E, B = p.engines, p.block
        hb = p.head_bits
        engines = []
        for e in range(E):
            engine = AttentionEngine(p.engine)
            m.submodules[f"engine_{e}"] = engine
            m.d.comb += engine.quant.eq(self.quant)
            engines.append(engine)
        m.submodules.scheduler = sched = AttentionScheduler(
            engines=E, block=B, window=p.window, n_global=p.n_global, causal=p.causal,
            max_len=p.max_len, seq_width=p.seq_bits + hb, lookahead=p.lookahead,
            longest_first=p.longest_first)
        # Every stream between the scheduler and an engine goes through a register stage (a
        # skid buffer: valid, payload and ready all from registers), so no combinational path
        # runs from the scheduler's slot logic into an engine's state or back; the engines are
        # spread over the device and those routes are long.
        for e, engine in enumerate(engines):
            _through_register(m, f"cmd_{e}", sched.cmd[e], engine.cmd)
            # (a 1-bit payload, constant: Verilator rejects zero-width signals)
            done = stream.Signature(1).create(path=(f"done_{e}",))
            done_reg = _StreamRegister(m, f"done_{e}", done)
            m.d.comb += [done_reg.valid.eq(engine.done), done_reg.payload.eq(0),
                         engine.done_ready.eq(done_reg.ready),
                         sched.done[e].eq(done.valid), done.ready.eq(sched.done_ready[e])]
        return engines, sched

    def _load_descriptors(self, m, state, table_write) -> _Batch:
        """Load: the sequence descriptors into the sequence table (base token and length)."""
        p = self._params
        wpt, depth = p.words_per_token, p.memory_words
        tokens_shape = range(p.max_tokens + 1)
        n_seqs = Signal(range(p.max_seqs + 1))
        n_tokens = Signal(tokens_shape)
        all_desc = Signal()
        # the batch's words, a register a cycle behind n_tokens: the room check below uses
        # it from the cycle after the last descriptor on (all_words), none in that cycle
        total_words = Signal(range(depth + 1))
        all_words = Signal()
        m.d.sync += [total_words.eq(times_constant(n_tokens, wpt)), all_words.eq(all_desc)]
        desc_fire = self.desc.valid & self.desc.ready
        m.d.comb += [
            self.desc.ready.eq((state == State.LOAD) & ~all_desc),
            table_write.addr.eq(n_seqs),
            table_write.data.base.eq(n_tokens),
            table_write.data.length.eq(self.desc.payload.length),
            table_write.en.eq(desc_fire),
        ]
        with m.If(desc_fire):
            m.d.sync += [n_seqs.eq(n_seqs + 1),
                         n_tokens.eq(n_tokens + self.desc.payload.length),
                         all_desc.eq(self.desc.payload.last)]
        return _Batch(n_seqs, n_tokens, all_desc, total_words, all_words)

    def _load_words(self, m, state, batch: _Batch):
        """Load: the Q, K, V words into their memories; (the memories, their word counts).

        Each memory is two banks, the even and the odd token rows of the batch, so that one
        read gives the words of two consecutive tokens; a bank receives its rows' words in
        order, at consecutive addresses."""
        p = self._params
        B, depth, wpt = p.block, p.memory_words, p.words_per_token
        all_words, all_desc, total_words = batch.all_words, batch.all_desc, batch.total_words
        memories, loaded = [], []
        for name in ("q", "k", "v"):
            banks = [Memory(shape=Word(B), depth=p.bank_words, init=[]) for _ in range(2)]
            port = getattr(self, name)
            count = Signal(range(depth + 1), name=f"{name}_words")
            column = Signal(range(max(wpt, 2)), name=f"{name}_load_column")
            odd = Signal(name=f"{name}_load_odd")       # the token row being loaded is odd
            room = Mux(all_words, count != total_words, ~all_desc & (count != depth))
            fire = port.valid & port.ready
            m.d.comb += port.ready.eq((state == State.LOAD) & room)
            # the word is written a cycle after it is taken, from registers: the room check
            # ran through the handshake into the bank's write address enable, placed by its
            # block RAMs (the 4-engine build at df7b046's worst path, 11.1 of 13.3 ns routing).
            # Compute starts at least two cycles after the last word is taken (its count, then
            # the state), after its write.
            w_fire = Signal(name=f"{name}_load_fire")
            w_odd = Signal(name=f"{name}_load_write_odd")
            w_data = Signal(Word(B), name=f"{name}_load_data", reset_less=True)
            m.d.sync += [w_fire.eq(fire), w_odd.eq(odd), w_data.eq(port.payload)]
            for parity, bank in enumerate(banks):
                m.submodules[f"{name}_memory_{('even', 'odd')[parity]}"] = bank
                write = bank.write_port()
                addr = Signal(range(p.bank_words), name=f"{name}_load_addr_{parity}")
                m.d.comb += [write.addr.eq(addr), write.data.eq(w_data),
                             write.en.eq(w_fire & (w_odd == parity))]
                with m.If(w_fire & (w_odd == parity)):
                    m.d.sync += addr.eq(addr + 1)
                with m.If(state != State.LOAD):
                    m.d.sync += addr.eq(0)
            with m.If(fire):
                m.d.sync += [count.eq(count + 1),
                             column.eq(Mux(column == wpt - 1, 0, column + 1))]
                with m.If(column == wpt - 1):
                    m.d.sync += odd.eq(~odd)
            with m.If(state != State.LOAD):
                m.d.sync += [column.eq(0), odd.eq(0)]
            memories.append(banks)
            loaded.append(count)
        return memories, loaded

    def _read_ports(self, m, engines, memories, table):
        """Reads: one round-robin arbiter and seven-stage read pipeline per memory port.

        Engine e reads through port e % read_ports of each memory (each port a copy of the
        memory's block RAM when there are several). A request names an even token; the
        answer is its word and the next token's, one from each bank."""
        p = self._params
        for t, name in enumerate(("q", "k", "v")):
            for port in range(p.read_ports):
                group = engines[port::p.read_ports]
                tag = f"{name}{port}"
                reqs = [_registered(m, f"{tag}_req_{e}", getattr(engine, f"{name}_req"))
                        for e, engine in enumerate(group)]
                resps = [getattr(engine, f"{name}_resp") for engine in group]
                grant, granted = _round_robin(m, tag, [r.valid for r in reqs])
                for e, req in enumerate(reqs):
                    m.d.comb += req.ready.eq(granted & (grant == e))
                # stage 1: the granted request, registered
                valid1 = Signal(name=f"{tag}_valid1")
                engine1 = Signal.like(grant, name=f"{tag}_engine1")
                req1 = Signal.like(reqs[0].payload, name=f"{tag}_req1")
                m.d.sync += [valid1.eq(granted), engine1.eq(grant)]
                for e, req in enumerate(reqs):
                    with m.If(grant == e):
                        m.d.sync += req1.eq(req.payload)
                # stage 2: the sequence-table entry; stage 3: the two banks' word addresses
                entry, head = self._lookup(m, table, req1.seq)
                row, column, outside = self._locate(m, f"{tag}_2", entry, head, req1.token,
                                                    req1.chunk)
                second = Signal.like(row, name=f"{tag}_2_second_row")   # the next token's
                second_outside = Signal(name=f"{tag}_2_second_outside")
                odd_token = Cat(Const(1, 1), req1.token[1:])            # token + 1 (even token)
                m.d.sync += [second.eq(entry.base + odd_token),
                             second_outside.eq(odd_token >= entry.length)]
                outside2 = Cat(outside, second_outside)
                # the even bank holds the even one of the two rows, the odd bank the odd one:
                # rows row and row + 1 are at row // 2 in the odd bank, (row + 1) // 2 in the even
                reads = [bank.read_port() for bank in memories[t]]
                m.d.comb += [
                    reads[0].addr.eq(self._word_address(m, f"{tag}_3_even", second[1:], column)),
                    reads[1].addr.eq(self._word_address(m, f"{tag}_3_odd", row[1:], column)),
                ]
                self._answer(m, tag, valid1, engine1, outside2, row[0], reads, resps)

    def _answer(self, m, tag, valid1, engine1, outside2, swap2, reads, resps):
        """Stages 2 to 6 of a read port's pipeline: the valid bit, engine, outside flags and
        whether the first token's row is odd follow the request; stage 4 is the block RAM
        read; stage 5 the two banks' words, registered; stage 6 the answer (the words in token
        order, zeros past the length) in a register of its own per engine (engines always have
        room for what they asked).

        At the default sizes a bank is several DP16KD deep and the engines are spread over the
        device: with one answer register for all engines, the block RAMs' output multiplexer,
        the token swap and the long wires to four engines were one stage (the 4-engine
        build's worst path, 16.4 ns, 15.0 of it routing). Now the words are registered beside
        the block RAMs and each engine's copy can sit beside its engine; a copy loads only the
        answers for its engine, so Yosys does not merge the copies into one."""
        B = self._params.block
        valid5 = delayed(m, f"{tag}_valid1", valid1, 4)
        engine5 = delayed(m, f"{tag}_engine1", engine1, 4)
        outside5 = delayed(m, f"{tag}_outside2", outside2, 3, shape=2)
        swap5 = delayed(m, f"{tag}_swap2", swap2, 3, shape=1)
        words = Signal(WordPair(B), name=f"{tag}_words")      # [even bank, odd bank]
        m.d.sync += [words[0].eq(reads[0].data), words[1].eq(reads[1].data)]
        first = Mux(outside5[0], 0, Mux(swap5, words[1], words[0]))
        second = Mux(outside5[1], 0, Mux(swap5, words[0], words[1]))
        for e, resp in enumerate(resps):
            mine = valid5 & (engine5 == e)
            valid = Signal(name=f"{tag}_valid6_{e}")
            answer = Signal(WordPair(B), name=f"{tag}_answer_{e}")
            m.d.sync += valid.eq(mine)
            with m.If(mine):
                m.d.sync += [answer[0].eq(first), answer[1].eq(second)]
            m.d.comb += [resp.valid.eq(valid), resp.payload.eq(answer)]

    def _context_writes(self, m, engines, table):
        """Writes of the context into O through one round-robin arbiter; (the O memory, the
        count of words written)."""
        B, depth = self._params.block, self._params.memory_words
        m.submodules.o_memory = o_memory = Memory(shape=Word(B), depth=max(depth, 2), init=[])
        o_write = o_memory.write_port()
        outs = [_registered(m, f"o_{e}", engine.o) for e, engine in enumerate(engines)]
        grant, granted = _round_robin(m, "o", [o.valid for o in outs])
        for e, o in enumerate(outs):
            m.d.comb += o.ready.eq(granted & (grant == e))
        o_valid1 = Signal()
        o_word1 = Signal.like(outs[0].payload)
        m.d.sync += o_valid1.eq(granted)
        for e, o in enumerate(outs):
            with m.If(grant == e):
                m.d.sync += o_word1.eq(o.payload)
        entry, head = self._lookup(m, table, o_word1.seq)
        o_row, o_column, _ = self._locate(m, "o_2", entry, head, o_word1.token, o_word1.chunk)
        o_addr = self._word_address(m, "o_3", o_row, o_column)
        o_valid2, o_valid3 = Signal(), Signal()
        o_data2, o_data3 = Signal(Word(B)), Signal(Word(B))
        m.d.sync += [o_valid2.eq(o_valid1), o_data2.eq(o_word1.data),
                     o_valid3.eq(o_valid2), o_data3.eq(o_data2)]
        written = Signal(range(depth + 1))
        m.d.comb += [o_write.addr.eq(o_addr), o_write.data.eq(o_data3), o_write.en.eq(o_valid3)]
        with m.If(o_valid3):
            m.d.sync += written.eq(written + 1)
        return o_memory, written

    def _feed(self, m, sched, table, n_seqs) -> _Feed:
        """Compute: every (sequence, head) to the scheduler."""
        p = self._params
        heads, hb = p.heads, p.head_bits
        feed_seq = Signal(range(max(p.max_seqs, 2)))
        feed_head = Signal(range(max(heads, 2)))
        feeding = Signal()
        feed_port = table.read_port(domain="comb")
        m.d.comb += [
            feed_port.addr.eq(feed_seq),
            sched.desc.valid.eq(feeding),
            sched.desc.payload.seq.eq(Cat(feed_head[:hb], feed_seq) if hb else feed_seq),
            sched.desc.payload.length.eq(feed_port.data.length),
        ]
        with m.If(sched.desc.valid & sched.desc.ready):
            m.d.sync += feed_head.eq(Mux(feed_head == heads - 1, 0, feed_head + 1))
            with m.If(feed_head == heads - 1):
                m.d.sync += feed_seq.eq(feed_seq + 1)
                with m.If(feed_seq == n_seqs - 1):
                    m.d.sync += feeding.eq(0)
        return _Feed(feeding, feed_seq, feed_head)

    def _output(self, m, state, o_memory, total_words):
        """Output: O in token order through a small FIFO; returns the read address."""
        B, depth = self._params.block, self._params.memory_words
        out_fifo_depth = 4
        m.submodules.out_fifo = out_fifo = SyncFIFOBuffered(width=B * 8 + 1,
                                                            depth=out_fifo_depth)
        o_read = o_memory.read_port()
        read_addr = Signal(range(depth + 1))
        reading = Signal()          # a read issued last cycle: its word is on the read port now
        issue = Signal()
        last_read = Signal()
        # the word is registered before the FIFO: the block RAMs' clock-to-output and their
        # output multiplexer (O is many DP16KD deep) would otherwise run into the FIFO's LUT
        # RAM write (the 2-engine default-heads build's worst path, 84.6 MHz)
        o_word = Signal(B * 8 + 1)
        o_word_valid = Signal()
        m.d.comb += [
            issue.eq((state == State.OUTPUT) & (read_addr != total_words)
                     & (out_fifo.level + reading + o_word_valid < out_fifo_depth)),
            # no read enable: the port reads read_addr every cycle and only the issued reads
            # are taken (`reading`); an enable from `issue` ran to every DP16KD of O, across
            # the device (the 4-engine build h's worst path, 13.7 ns, 11.5 of it routing)
            o_read.addr.eq(read_addr),
            out_fifo.w_en.eq(o_word_valid),
            out_fifo.w_data.eq(o_word),
            self.o.valid.eq(out_fifo.r_rdy),
            self.o.payload.eq(out_fifo.r_data),
            out_fifo.r_en.eq(self.o.ready),
        ]
        m.d.sync += [reading.eq(issue), last_read.eq(read_addr == total_words - 1),
                     o_word_valid.eq(reading), o_word.eq(Cat(o_read.data, last_read))]
        with m.If(issue):
            m.d.sync += read_addr.eq(read_addr + 1)
        return read_addr

    def _batch_states(self, m, state, batch: _Batch, loaded, feed: _Feed, written, read_addr):
        """The batch's states: load, compute, output, and back to load."""
        total_words = batch.total_words
        with m.If(state == State.LOAD):
            with m.If(batch.all_words & (loaded[0] == total_words) & (loaded[1] == total_words)
                      & (loaded[2] == total_words)):
                m.d.sync += [state.eq(State.COMPUTE), feed.feeding.eq(batch.n_seqs != 0),
                             feed.seq.eq(0), feed.head.eq(0), written.eq(0)]
        with m.Elif(state == State.COMPUTE):
            with m.If(~feed.feeding & (written == total_words)):
                m.d.sync += [state.eq(State.OUTPUT), read_addr.eq(0)]
        with m.Elif(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.sync += [state.eq(State.LOAD), batch.n_seqs.eq(0), batch.n_tokens.eq(0),
                         batch.all_desc.eq(0), batch.all_words.eq(0)] + [count.eq(0)
                                                                         for count in loaded]

    def _lookup(self, m, table, seq_id):
        """The sequence of a scheduler id: (its table entry, its head)."""
        hb = self._params.head_bits
        port = table.read_port(domain="comb")
        m.d.comb += port.addr.eq(seq_id[hb:])
        return port.data, (seq_id[:hb] if hb else Const(0, 1))

    def _locate(self, m, name, entry, head, token, chunk):
        """Registered: the token's row in the batch, the head's chunk in the row and
        whether the token is past the sequence (the address's first stage)."""
        p = self._params
        row = Signal(range(p.max_tokens + 1), name=f"{name}_row")
        column = Signal(range(max(p.words_per_token, 2)), name=f"{name}_column")
        outside = Signal(name=f"{name}_outside")
        m.d.sync += [row.eq(entry.base + token),
                     column.eq(times_constant(head, p.chunks) + chunk),
                     outside.eq(token >= entry.length)]
        return row, column, outside

    def _word_address(self, m, name, row, column):
        """Registered: ``row x hidden / block + column`` (shifted adds, no multiplier)."""
        p = self._params
        addr = Signal(range(max(p.memory_words, 2)), name=f"{name}_addr")
        m.d.sync += addr.eq(times_constant(row, p.words_per_token) + column)
        return addr


def _through_register(m, name, source, sink) -> None:
    """The stream ``source`` into ``sink`` through a register stage
    (:class:`~.engine._StreamRegister`)."""
    reg = _StreamRegister(m, name, sink)
    m.d.comb += [reg.valid.eq(source.valid), reg.payload.eq(source.payload),
                 source.ready.eq(reg.ready)]


def _registered(m, name, source):
    """``source`` through a register stage; returns the stream the arbiter sees. An
    arbiter's grant is a function of every engine's request, and its ``ready`` went straight
    back into each engine's counters (O: into the GEMM core's output handshake): with the
    stage, an engine's side of the handshake is registers only."""
    sink = stream.Signature(source.payload.shape()).create(path=(name,))
    _through_register(m, name, source, sink)
    return sink


def _round_robin(m, name, requests):
    """Index of the granted request (the first at or after the rotating priority) and
    whether any is granted; the priority moves past each grant."""
    n = len(requests)
    first = Signal(range(max(n, 2)), name=f"{name}_priority")
    grant = Signal(range(max(n, 2)), name=f"{name}_grant")
    any_ = Signal(name=f"{name}_granted")
    m.d.comb += any_.eq(Cat(*requests).any())
    # (If chains, not Switch: Verilator wants complete case statements)
    for start in range(n):
        with m.If(first == start):
            for offset in reversed(range(n)):
                e = (start + offset) % n
                with m.If(requests[e]):
                    m.d.comb += grant.eq(e)
    with m.If(any_):
        m.d.sync += first.eq(Mux(grant == n - 1, 0, grant + 1))
    return grant, any_
