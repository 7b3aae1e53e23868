"""Attention unit: a batch of variable-length sequences in, multi-head block-sparse attention
out, on ``engines`` attention engines fed by the length-aware scheduler."""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..common.arith import times_constant
from .engine import AttentionEngine, Quant, Word
from .params import UnitParams
from .scheduler import AttentionScheduler

__all__ = ["SequenceIn", "ContextOut", "AttentionUnit", "READ_LATENCY"]

#: Cycles from an engine's read request handshake to its answer: the registered grant; the
#: sequence-table entry looked up (token position in the batch, head and chunk offset, past
#: the length or not); the word address (a constant product by ``hidden / block``, shifted
#: adds); the block RAM read; the answer registered. Each stage reads registers only.
READ_LATENCY = 5


def SequenceIn(max_len: int) -> data.StructLayout:
    """One sequence of the batch: its length in tokens (1..max_len); ``last`` ends the batch."""
    return data.StructLayout({"length": unsigned(max_len.bit_length()), "last": unsigned(1)})


def ContextOut(block: int) -> data.StructLayout:
    """A word of the attention output; ``last`` marks the batch's final word."""
    return data.StructLayout({"data": Word(block), "last": unsigned(1)})


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
        if params is None:
            params = UnitParams(**kwargs)
        elif kwargs:
            raise TypeError("give either params or keyword parameters, not both")
        if not isinstance(params, UnitParams):
            raise TypeError(f"params must be a UnitParams, not {params!r}")
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
        p = self._params
        E, B, heads = p.engines, p.block, p.heads
        wpt, chunks = p.words_per_token, p.chunks
        depth = p.memory_words
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
        for e, engine in enumerate(engines):
            wiring.connect(m, sched.cmd[e], engine.cmd)
            m.d.comb += [sched.done[e].eq(engine.done), engine.done_ready.eq(sched.done_ready[e])]

        state = Signal(State)
        tokens_shape = range(p.max_tokens + 1)
        Seq = data.StructLayout({"base": tokens_shape, "length": SequenceIn(p.max_len)["length"]
                                 .shape})
        m.submodules.table = table = Memory(shape=Seq, depth=p.max_seqs, init=[])
        table_write = table.write_port()

        def lookup(seq_id):
            """The sequence of a scheduler id: (its table entry, its head)."""
            port = table.read_port(domain="comb")
            m.d.comb += port.addr.eq(seq_id[hb:])
            return port.data, (seq_id[:hb] if hb else Const(0, 1))

        def locate(name, entry, head, token, chunk):
            """Registered: the token's row in the batch, the head's chunk in the row and
            whether the token is past the sequence (the address's first stage)."""
            row = Signal(tokens_shape, name=f"{name}_row")
            column = Signal(range(wpt), name=f"{name}_column")
            outside = Signal(name=f"{name}_outside")
            m.d.sync += [row.eq(entry.base + token), column.eq(times_constant(head, chunks) + chunk),
                         outside.eq(token >= entry.length)]
            return row, column, outside

        def word_address(name, row, column):
            """Registered: ``row x hidden / block + column`` (shifted adds, no multiplier)."""
            addr = Signal(range(depth), name=f"{name}_addr")
            m.d.sync += addr.eq(times_constant(row, wpt) + column)
            return addr

        # ---- load ----------------------------------------------------------------------
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

        memories, loaded = [], []
        for name in ("q", "k", "v"):
            mem = Memory(shape=Word(B), depth=depth, init=[])
            m.submodules[f"{name}_memory"] = mem
            port, write = getattr(self, name), mem.write_port()
            count = Signal(range(depth + 1), name=f"{name}_words")
            room = Mux(all_words, count != total_words, ~all_desc & (count != depth))
            m.d.comb += [port.ready.eq((state == State.LOAD) & room),
                         write.addr.eq(count), write.data.eq(port.payload),
                         write.en.eq(port.valid & port.ready)]
            with m.If(port.valid & port.ready):
                m.d.sync += count.eq(count + 1)
            memories.append(mem)
            loaded.append(count)

        # ---- reads: one round-robin arbiter per memory ----------------------------------
        def round_robin(name, requests):
            """Index of the granted request (the first at or after the rotating priority)
            and whether any is granted; the priority moves past each grant."""
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

        # Engine e reads through port e % read_ports of each memory (each port a copy of
        # the memory's block RAM when there are several).
        for t, name in enumerate(("q", "k", "v")):
            for port in range(p.read_ports):
                group = engines[port::p.read_ports]
                tag = f"{name}{port}"
                reqs = [getattr(engine, f"{name}_req") for engine in group]
                resps = [getattr(engine, f"{name}_resp") for engine in group]
                grant, granted = round_robin(tag, [r.valid for r in reqs])
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
                # stage 2: the sequence-table entry; stage 3: the word address
                entry, head = lookup(req1.seq)
                row, column, outside2 = locate(f"{tag}_2", entry, head, req1.token, req1.chunk)
                addr = word_address(f"{tag}_3", row, column)
                read = memories[t].read_port()
                m.d.comb += read.addr.eq(addr)
                valid2, valid3, valid4, valid5 = (Signal(name=f"{tag}_valid{n}")
                                                  for n in range(2, 6))
                engine2, engine3, engine4, engine5 = (Signal.like(grant, name=f"{tag}_engine{n}")
                                                      for n in range(2, 6))
                outside3, outside4 = Signal(name=f"{tag}_outside3"), Signal(name=f"{tag}_outside4")
                answer = Signal(Word(B), name=f"{tag}_answer")
                m.d.sync += [valid2.eq(valid1), engine2.eq(engine1),
                             valid3.eq(valid2), engine3.eq(engine2), outside3.eq(outside2),
                             valid4.eq(valid3), engine4.eq(engine3), outside4.eq(outside3),
                             valid5.eq(valid4), engine5.eq(engine4),
                             answer.eq(Mux(outside4, 0, read.data))]
                # stage 4: the block RAM read; stage 5: the answer, registered (engines always
                # have room for what they asked)
                for e, resp in enumerate(resps):
                    m.d.comb += [resp.valid.eq(valid5 & (engine5 == e)),
                                 resp.payload.eq(answer)]

        # ---- writes of the context into O ------------------------------------------------
        m.submodules.o_memory = o_memory = Memory(shape=Word(B), depth=depth, init=[])
        o_write = o_memory.write_port()
        outs = [engine.o for engine in engines]
        grant, granted = round_robin("o", [o.valid for o in outs])
        for e, o in enumerate(outs):
            m.d.comb += o.ready.eq(granted & (grant == e))
        o_valid1 = Signal()
        o_word1 = Signal.like(outs[0].payload)
        m.d.sync += o_valid1.eq(granted)
        for e, o in enumerate(outs):
            with m.If(grant == e):
                m.d.sync += o_word1.eq(o.payload)
        entry, head = lookup(o_word1.seq)
        o_row, o_column, _ = locate("o_2", entry, head, o_word1.token, o_word1.chunk)
        o_addr = word_address("o_3", o_row, o_column)
        o_valid2, o_valid3 = Signal(), Signal()
        o_data2, o_data3 = Signal(Word(B)), Signal(Word(B))
        m.d.sync += [o_valid2.eq(o_valid1), o_data2.eq(o_word1.data),
                     o_valid3.eq(o_valid2), o_data3.eq(o_data2)]
        written = Signal(range(depth + 1))
        m.d.comb += [o_write.addr.eq(o_addr), o_write.data.eq(o_data3), o_write.en.eq(o_valid3)]
        with m.If(o_valid3):
            m.d.sync += written.eq(written + 1)

        # ---- compute: every (sequence, head) to the scheduler --------------------------
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

        # ---- output: O in token order ----------------------------------------------------
        out_fifo_depth = 4
        m.submodules.out_fifo = out_fifo = SyncFIFOBuffered(width=B * 8 + 1,
                                                            depth=out_fifo_depth)
        o_read = o_memory.read_port()
        read_addr = Signal(range(depth + 1))
        reading = Signal()          # a read issued last cycle: its word enters the FIFO now
        issue = Signal()
        last_read = Signal()
        m.d.comb += [
            issue.eq((state == State.OUTPUT) & (read_addr != total_words)
                     & (out_fifo.level + reading < out_fifo_depth)),
            o_read.addr.eq(read_addr),
            o_read.en.eq(issue),
            out_fifo.w_en.eq(reading),
            out_fifo.w_data.eq(Cat(o_read.data, last_read)),
            self.o.valid.eq(out_fifo.r_rdy),
            self.o.payload.eq(out_fifo.r_data),
            out_fifo.r_en.eq(self.o.ready),
        ]
        m.d.sync += [reading.eq(issue), last_read.eq(read_addr == total_words - 1)]
        with m.If(issue):
            m.d.sync += read_addr.eq(read_addr + 1)

        # ---- batch states ------------------------------------------------------------------
        with m.If(state == State.LOAD):
            with m.If(all_words & (loaded[0] == total_words) & (loaded[1] == total_words)
                      & (loaded[2] == total_words)):
                m.d.sync += [state.eq(State.COMPUTE), feeding.eq(n_seqs != 0),
                             feed_seq.eq(0), feed_head.eq(0), written.eq(0)]
        with m.Elif(state == State.COMPUTE):
            with m.If(~feeding & (written == total_words)):
                m.d.sync += [state.eq(State.OUTPUT), read_addr.eq(0)]
        with m.Elif(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.sync += [state.eq(State.LOAD), n_seqs.eq(0), n_tokens.eq(0),
                         all_desc.eq(0), all_words.eq(0)] + [count.eq(0) for count in loaded]
        return m
