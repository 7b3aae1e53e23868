"""Attention engine: one (sequence, query block, head) row of block-sparse attention, bit-exact
to ``sim.golden.encoder.attention_int``."""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..common.params import params_or_keywords
from ..common.arith import times_constant
from ..gemm import GemmCore
from ..softmax import SoftmaxEngine
from .params import V_FIFO_DEPTH, EngineParams, block_width, token_width
from .scheduler import Command

__all__ = ["Word", "WordPair", "ReadRequest", "OutWord", "Quant", "AttentionEngine"]


def Word(block: int) -> data.ArrayLayout:
    """One memory word: ``block`` int8 elements of a token row."""
    return data.ArrayLayout(signed(8), block)


def WordPair(block: int) -> data.ArrayLayout:
    """The answer to a read: the words of two consecutive tokens (``token``, ``token + 1``)."""
    return data.ArrayLayout(Word(block), 2)


def ReadRequest(seq_width: int, token_width: int, chunks: int) -> data.StructLayout:
    """Two words to read: the command's sequence id (the unit decodes sequence and head from
    it), an even token position in the sequence (the answer holds it and the next token) and
    a chunk (word) of the head, ``0 .. chunks - 1``."""
    return data.StructLayout({"seq": unsigned(seq_width), "token": unsigned(token_width),
                              "chunk": range(max(chunks, 2))})


def OutWord(seq_width: int, token_width: int, chunks: int, block: int) -> data.StructLayout:
    """A word of the context: where it belongs (as in :func:`ReadRequest`) and its data."""
    return data.StructLayout({"seq": unsigned(seq_width), "token": unsigned(token_width),
                              "chunk": range(max(chunks, 2)), "data": Word(block)})


#: Run-time requantization of the scores and of the context (``sim.golden.encoder.Requant``
#: scalars: TFLite multiplier, shift, zero point; to int8).
Quant = data.StructLayout({
    "scores_multiplier": signed(32), "scores_shift": signed(6), "scores_zero_point": signed(8),
    "context_multiplier": signed(32), "context_shift": signed(6),
    "context_zero_point": signed(8),
})


#: Tiles announced to the GEMM core whose results have not all left it (the tile queue that
#: routes its output): more than the core holds (its row FIFO and one tile's parameters).
TILE_QUEUE_DEPTH = 16


class AttentionEngine(wiring.Component):
    """Computes rows of attention: query block ``i`` of one sequence and one head against the
    key blocks the scheduler gives it, two rows in flight.

    For each command (key block ``j``, increasing), the engine fetches ``K_j`` (``block``
    tokens x ``head_dim``) into one half of a double-buffered key store while the GEMM core
    computes the previous block's ``S = Q_i K_j^T`` (``head_dim`` k-slices of ``block`` x
    ``block``), requantized to int8 by the core with the scalar scores multiplier; the int8
    scores go into the row buffer. After the row's last command, the row buffer streams to the
    softmax engine query row by query row over the valid keys only (in the sequence, in the
    pattern, at or before the query with ``causal``); the probability buffer receives each
    row's probabilities and 0 for the masked keys. Then ``O_i = P V`` runs on the same core,
    one output tile per ``block`` columns of the head, each over every key of the row
    (``a = p - 128`` with ``a_offset = 128``: a masked key contributes exactly 0), requantized
    to int8, and the context words of the query tokens inside the sequence leave on ``o``.

    Consecutive rows overlap: a row's scores (the *front* row) are computed while the previous
    row (the *back* row) goes through the softmax and P.V; the key list and the row buffer
    have a half per row. The GEMM core takes whole tiles of either row (P.V first when its
    probabilities are coming), and a queue of the tiles it was given routes its results to the
    row buffer or to ``o``. ``done`` rises when the front row's last score tile has been
    announced to the core (its Q and K in or requested) and the back row's last P.V k-slice
    has entered it: the front row then becomes the back row (its last one or two score tiles
    are still sliced) and the engine takes the next row's commands while they are sliced and
    the last context words drain.

    Reads go out as requests (``q_req``, ``k_req``, ``v_req``) and come back in request order
    on the matching ``*_resp`` streams; the engine requests a word only when it has room for
    the answer, so its ``*_resp.ready`` is high whenever a response can arrive.

    Parameters
    ----------
    params : EngineParams
        Generation-time parameters (``hw/attention/params.py``).

    Members
    -------
    cmd : In(stream.Signature(Command(seq_width, block_width, block)))
        The row's commands (``hw.attention.scheduler.Command``).
    done : Out(1)
        The engine can take the next row (the back row's k-slices have all entered the GEMM
        core, the front row's last score tile is announced to it; their last score slices and
        context words may still be going); held until ``done_ready``.
    done_ready : In(1)
        ``done`` is taken in a cycle where both are high.
    q_req, k_req, v_req : Out(stream.Signature(ReadRequest(...)))
        Reads of Q, K and V, two tokens (an even one and the next) of one chunk each.
    q_resp, k_resp, v_resp : In(stream.Signature(WordPair(block)))
        Their answers, in order. Tokens past the sequence must read as zeros.
    o : Out(stream.Signature(OutWord(...)))
        Context words of the row's tokens, chunk (column tile) by chunk, token by token.
    quant : In(Quant)
        Requantization multipliers, shifts and zero points; held while rows are computed.
    """

    def __init__(self, params: EngineParams | None = None, **kwargs):
        params = params_or_keywords(EngineParams, params, kwargs)
        self._params = params
        p = params
        bw = block_width(p.max_len, p.block)
        tw = token_width(p.max_len, p.block)
        request = stream.Signature(ReadRequest(p.seq_width, tw, p.chunks))
        word = stream.Signature(WordPair(p.block))
        super().__init__({
            "cmd": In(stream.Signature(Command(p.seq_width, bw, p.block))),
            "done": Out(1),
            "done_ready": In(1),
            "q_req": Out(request), "q_resp": In(word),
            "k_req": Out(request), "k_resp": In(word),
            "v_req": Out(request), "v_resp": In(word),
            "o": Out(stream.Signature(OutWord(p.seq_width, tw, p.chunks, p.block))),
            "quant": In(Quant),
        })

    @property
    def params(self) -> EngineParams:
        return self._params

    @property
    def multipliers(self) -> int:
        """DSP products: the GEMM core's (one per PE, four per requantizer lane); the softmax
        engine's one (``recip``, ``shiftmax``) or none (``lut2d``)."""
        p = self._params
        return p.block * p.block + 4 * p.out_lanes + (0 if p.softmax == "lut2d" else 1)

    def elaborate(self, platform):
        # Two rows are in flight: the *front* row takes its commands, fetches Q and its K
        # blocks and computes its scores; the *back* row (the previous one) streams its scores
        # through the softmax and computes P.V. Each owns one half of the key list and of the
        # row buffer; they swap at the hand-over, when the front row's last score slice has
        # entered the GEMM core and the back row's last P.V slice too (``done``). Each part
        # below adds the signals the later ones use to ``r``; a signal or memory port is
        # named in the Verilog after the variable or attribute it is first assigned to.
        m = Module()
        r = self._rows(m)
        self._key_list(m, r)
        self._fetch_q(m, r)
        self._fetch_k(m, r)
        self._tile_params(m, r)
        self._score_slices(m, r)
        self._pv_slices(m, r)
        self._core_input(m, r)
        self._core_output(m, r)
        self._stream_scores(m, r)
        self._write_probs(m, r)
        self._handover(m, r)
        return m

    def _rows(self, m) -> SimpleNamespace:
        """The sizes, the GEMM core and softmax engine, and the two rows' registers."""
        p = self._params
        B, pairs = p.block, p.max_pairs
        r = SimpleNamespace(B=B, chunks=p.chunks, pairs=pairs, lanes=p.out_lanes,
                            segments=B // p.out_lanes, log_b=B.bit_length() - 1,
                            pair_bits=max(1, (pairs - 1).bit_length()),
                            token_pairs=B // 2,
                            word_bits=max(1, (B * pairs - 1).bit_length()))
        m.submodules.gemm = r.gemm = GemmCore(rows=B, cols=B, requantize=True,
                                              out_lanes=r.lanes)
        m.submodules.softmax = r.softmax = SoftmaxEngine(
            method=p.softmax, scale=p.softmax_scale, in_bits=8, out_bits=p.prob_out_bits,
            max_len=p.row_keys)
        block_shape = r.block_shape = self.cmd.payload.query_block.shape()

        handover = Signal()
        front_half = Signal()                   # the back row's half is ~front_half

        # ---- front row state -----------------------------------------------------------------
        started = Signal()                      # the row's first command has been seen
        seq = Signal(p.seq_width)
        query_block = Signal(block_shape)
        n_cmds = Signal(range(pairs + 1))       # commands (key blocks) taken
        last_seen = Signal()                    # the row's last command has been taken
        query_valid = Signal(B)                 # query tokens inside the sequence
        last_valid = Signal(B)                  # key tokens of the row's final key block
        tiles_sliced = Signal(range(pairs + 1))     # score tiles whose slices all entered

        # ---- back row state (copied from the front at the hand-over) ----------------------
        back_busy = Signal()
        b_seq = Signal(p.seq_width)
        b_query_block = Signal(block_shape)
        b_cmds = Signal(range(pairs + 1))
        b_query_valid = Signal(B)
        b_last_valid = Signal(B)
        vars(r).update(
            handover=handover, front_half=front_half, started=started, seq=seq,
            query_block=query_block, n_cmds=n_cmds, last_seen=last_seen,
            query_valid=query_valid, last_valid=last_valid, tiles_sliced=tiles_sliced,
            back_busy=back_busy, b_seq=b_seq, b_query_block=b_query_block, b_cmds=b_cmds,
            b_query_valid=b_query_valid, b_last_valid=b_last_valid)
        return r

    def _key_list(self, m, r):
        """The rows' key blocks (a half per row): block and valid keys of each command."""
        Key = data.StructLayout({"block": r.block_shape, "valid": r.B})
        m.submodules.keys = r.keys = Memory(shape=Key, depth=2 << r.pair_bits, init=[])
        r.key_write = r.keys.write_port()

    def _key_valid(self, r, entry, lane, row):
        """Key ``lane`` of ``entry`` may be seen by query ``row`` of the back row."""
        valid = entry.valid.bit_select(lane, 1)
        if self._params.causal:
            valid = valid & ((entry.block != r.b_query_block) | (lane <= row))
        return valid

    def _last_lane(self, m, r, row):
        """The back row's final valid key: the highest one of its final key block (the
        diagonal block with ``causal``: keys up to the query's own position)."""
        B = r.B
        mask = r.b_last_valid
        if self._params.causal:
            mask = r.b_last_valid & Cat(Const(1, 1), *(Const(k, range(B)) <= row
                                                       for k in range(1, B)))
        lane = Signal(range(B), name="last_lane")
        for k in range(B):
            with m.If(mask[k]):
                m.d.comb += lane.eq(k)
        return lane

    def _back_key(self, m, r, n):
        """A combinational read of entry ``n`` of the back row's key list."""
        port = r.keys.read_port(domain="comb")
        m.d.comb += port.addr.eq(Cat(n[:r.pair_bits], ~r.front_half))
        return port.data

    def _back_key_registered(self, m, r):
        """A registered read of the back row's key list (its LUT RAM read would otherwise
        start the softmax streams' handshake paths); :meth:`_next_back_key` addresses it."""
        return r.keys.read_port()

    def _next_back_key(self, m, r, port, n):
        """Address ``port`` with entry ``n`` of the next cycle, in the half that is the back
        row's in the next cycle (the front row's at the hand-over, where ``n`` is 0). The back
        row's entries do not change while it is the back row."""
        m.d.comb += port.addr.eq(Cat(n[:r.pair_bits],
                                     Mux(r.handover, r.front_half, ~r.front_half)))

    def _fetch_q(self, m, r):
        """Q: fetched once per row into the query store.

        Store words hold one chunk of every query row: lane r, element e = Q[i B + r, c B + e],
        so one read gives a whole k-slice column."""
        B, chunks = r.B, r.chunks
        started, seq, query_block = r.started, r.seq, r.query_block
        Lanes = r.Lanes = data.ArrayLayout(signed(8), B * B)
        # A half per row (the front row's is front_half): the hand-over comes before the
        # front row's last score tiles are sliced (see _handover), and the next row's Q then
        # arrives while they still read theirs.
        r.chunk_bits = max(1, (chunks - 1).bit_length())
        m.submodules.q_store = q_store = Memory(shape=Lanes, depth=2 << r.chunk_bits, init=[])
        q_write = q_store.write_port(granularity=B)
        r.q_read = q_store.read_port(domain="comb")
        q_chunks = r.q_chunks = Signal(range(chunks + 1))   # chunks of every query row received
        with m.If(self.cmd.valid & ~started):
            m.d.sync += [started.eq(1), seq.eq(self.cmd.payload.seq),
                         query_block.eq(self.cmd.payload.query_block)]
        q_issuing = Signal()
        # The first request goes out in the cycle the row's first command is seen, from the
        # command itself (the command and the request each pass a register in the unit, and
        # every cycle here delays the row's scores)
        q_first = self.cmd.valid & ~started
        m.d.sync += q_issuing.eq(q_issuing | q_first)
        q_req_fire = self.q_req.valid & self.q_req.ready
        q_req_r, q_req_r_final = _counter(m, "q_req_row_pair", r.token_pairs, q_req_fire)
        q_req_c, q_req_c_final = _counter(m, "q_req_chunk", chunks, q_req_fire & q_req_r_final)
        m.d.comb += [
            self.q_req.valid.eq(q_issuing | q_first),
            self.q_req.payload.seq.eq(Mux(started, seq, self.cmd.payload.seq)),
            self.q_req.payload.token.eq(Cat(_even(q_req_r, r),
                                            Mux(started, query_block,
                                                self.cmd.payload.query_block))),
            self.q_req.payload.chunk.eq(q_req_c),
        ]
        with m.If(q_req_fire & q_req_c_final & q_req_r_final):
            m.d.sync += q_issuing.eq(0)
        q_resp_fire = self.q_resp.valid & self.q_resp.ready
        q_resp_r, q_resp_r_final = _counter(m, "q_resp_row_pair", r.token_pairs, q_resp_fire)
        q_resp_c, _ = _counter(m, "q_resp_chunk", chunks, q_resp_fire & q_resp_r_final)
        m.d.comb += [
            self.q_resp.ready.eq(1),
            q_write.addr.eq(Cat(q_resp_c[:r.chunk_bits], r.front_half)),
            q_write.data.eq(Cat(*[self.q_resp.payload[0], self.q_resp.payload[1]] * r.token_pairs)),
            q_write.en.eq(Mux(q_resp_fire, 0b11 << _even(q_resp_r, r), 0)),
        ]
        with m.If(q_resp_fire & q_resp_r_final):
            m.d.sync += q_chunks.eq(q_chunks + 1)

    def _fetch_k(self, m, r):
        """K: one block per command, double buffered; the commands into the key list."""
        B, chunks = r.B, r.chunks
        m.submodules.k_store = k_store = Memory(shape=r.Lanes, depth=2 * chunks, init=[])
        k_write = k_store.write_port(granularity=B)
        r.k_read = k_store.read_port(domain="comb")
        busy = r.busy = [Signal(name=f"k_busy{h}") for h in range(2)]   # being filled, or full
        r.full = [Signal(name=f"k_full{h}") for h in range(2)]   # ready for the GEMM core
        k_req_half = r.k_req_half = Signal()
        k_issuing = r.k_issuing = Signal()
        k_block = Signal.like(r.query_block)
        k_chunks = r.k_chunks = Signal(range(chunks + 1))  # chunks of the filling half received
        take = r.take = Signal()
        m.d.comb += [
            self.cmd.ready.eq(~r.last_seen & ~k_issuing & ~Mux(k_req_half, busy[1], busy[0])),
            take.eq(self.cmd.valid & self.cmd.ready),
            r.key_write.addr.eq(Cat(r.n_cmds[:r.pair_bits], r.front_half)),
            r.key_write.data.block.eq(self.cmd.payload.key_block),
            r.key_write.data.valid.eq(self.cmd.payload.valid),
            r.key_write.en.eq(take),
        ]
        with m.If(take):
            m.d.sync += [r.n_cmds.eq(r.n_cmds + 1), r.last_seen.eq(self.cmd.payload.last),
                         k_issuing.eq(1), k_block.eq(self.cmd.payload.key_block),
                         r.last_valid.eq(self.cmd.payload.valid)]
            with m.If(self.cmd.payload.key_block == self.cmd.payload.query_block):
                m.d.sync += r.query_valid.eq(self.cmd.payload.valid)
        k_req_fire = self.k_req.valid & self.k_req.ready
        k_req_t, k_req_t_final = _counter(m, "k_req_token_pair", r.token_pairs, k_req_fire)
        k_req_c, k_req_c_final = _counter(m, "k_req_chunk", chunks, k_req_fire & k_req_t_final)
        # A block's first request goes out with the command that names it (as Q's above): no
        # cycle without a request between two blocks of K
        m.d.comb += [
            self.k_req.valid.eq(k_issuing | take),
            self.k_req.payload.seq.eq(Mux(r.started, r.seq, self.cmd.payload.seq)),
            self.k_req.payload.token.eq(Cat(_even(k_req_t, r),
                                            Mux(k_issuing, k_block,
                                                self.cmd.payload.key_block))),
            self.k_req.payload.chunk.eq(k_req_c),
        ]
        with m.If(k_req_fire & k_req_c_final & k_req_t_final):
            m.d.sync += [k_issuing.eq(0), k_req_half.eq(~k_req_half)]
        k_resp_fire = self.k_resp.valid & self.k_resp.ready
        k_resp_half = r.k_resp_half = Signal()
        k_resp_t, k_resp_t_final = _counter(m, "k_resp_token_pair", r.token_pairs, k_resp_fire)
        k_resp_c, k_resp_c_final = _counter(m, "k_resp_chunk", chunks,
                                            k_resp_fire & k_resp_t_final)
        k_block_in = r.k_block_in = k_resp_fire & k_resp_c_final & k_resp_t_final
        m.d.comb += [
            self.k_resp.ready.eq(1),
            k_write.addr.eq(Mux(k_resp_half, chunks, 0) + k_resp_c),
            k_write.data.eq(Cat(*[self.k_resp.payload[0], self.k_resp.payload[1]] * r.token_pairs)),
            k_write.en.eq(Mux(k_resp_fire, 0b11 << _even(k_resp_t, r), 0)),
        ]
        with m.If(k_resp_fire & k_resp_t_final):
            m.d.sync += k_chunks.eq(k_chunks + 1)
        with m.If(k_block_in):
            m.d.sync += [k_resp_half.eq(~k_resp_half), k_chunks.eq(0)]

    def _tile_params(self, m, r):
        """The GEMM core's tiles: the front row's score tiles and the back row's P.V.

        One parameter beat per tile: the kind of a tile is chosen when its beat is given, P.V
        first (it frees the back row), and every beat also enters the tile queue that routes
        the core's output.

        The core's parameter and k-slice streams both go through a register stage (a skid
        buffer each; the k-slices through an input register before it), so that the engine's
        tile choice and operand reads do not run into the core's handshake logic or into the
        registers next to the core; the engine keeps the core's order itself: a tile's beat, then
        its k-slices (``tile_open``, ``tile_pv``). The next tile's beat may be given while the
        current one is being sliced (``next_full``, ``next_pv``: one tile ahead), so the beat
        does not wait for the last k-slice's handshake."""
        B, chunks, gemm = r.B, r.chunks, r.gemm
        quant = self.quant

        def tile_params(pv):
            """The core's parameter beat of a tile of kind ``pv`` (P.V, else scores)."""
            beat = Signal.like(gemm.params.payload, name="tile_params")
            m.d.comb += [
                beat.a_offset.eq(Mux(pv, 128, 0)),
                beat.out_zero_point.eq(
                    Mux(pv, quant.context_zero_point, quant.scores_zero_point)),
                beat.act_min.eq(-128),
                beat.act_max.eq(127),
            ]
            for c in range(B):
                m.d.comb += [
                    beat.bias[c].eq(0),
                    beat.multiplier[c].eq(
                        Mux(pv, quant.context_multiplier, quant.scores_multiplier)),
                    beat.shift[c].eq(Mux(pv, quant.context_shift, quant.scores_shift)),
                ]
            return beat

        # the register stage holds the tile's kind only; the beat is made after it (quant is
        # held during a batch), so its constant and per-column fields stay out of the skid
        # register (with them, the 4-engine default had +3,295 FF at 97b6731)
        to_params = _StreamRegister(m, "to_gemm_params", gemm.params, shape=1,
                                    expand=tile_params)
        # the k-slices' operands (LUT RAM reads of the P, V, Q and K stores, addressed by
        # counters, then the operand select) end in an input register of their own: they ran
        # into the skid buffer's registers, next to the core (build m, a7c9619: pv_n -> the
        # probabilities' and the query store's words -> to_gemm_out, 13.3 of 15.0 ns routing)
        r.to_gemm = _StreamRegister(m, "to_gemm", gemm.i, staged=True)
        tile_open = r.tile_open = Signal()      # a beat was given, its last slice not yet
        r.last_slice = Signal()                 # the open tile's last k-slice goes now
        next_full = Signal()                    # the beat of the tile after the open one
        next_pv = Signal()                      # was given; that tile's kind
        score_params = r.score_params = Signal(range(r.pairs + 1))  # score tiles announced
        pv_params = r.pv_params = Signal(range(chunks + 1))     # P.V tiles announced (back row)
        probs_done = r.probs_done = Signal()    # every row's probabilities are written
        writing = r.writing = Signal()          # softmax results going into the buffer
        w_row = r.w_row = Signal(range(B))
        TileEntry = r.TileEntry = data.StructLayout({
            "pv": 1, "half": 1, "last": 1, "seq": self._params.seq_width,
            "query_block": r.block_shape, "query_valid": B, "chunk": range(max(chunks, 2))})
        m.submodules.tiles = tiles = r.tiles = SyncFIFO(width=TileEntry.size,
                                                        depth=TILE_QUEUE_DEPTH)
        pv_want = r.back_busy & (pv_params != chunks) & (probs_done | (writing & (w_row == B - 1)))
        score_want = score_params != r.n_cmds
        params_fire = to_params.valid & to_params.ready
        tile_pv = r.tile_pv = Signal()          # the kind of the tile being sliced
        entry_in = Signal(TileEntry)
        m.d.comb += [
            to_params.valid.eq((pv_want | score_want) & tiles.w_rdy & ~next_full),
            entry_in.pv.eq(pv_want),
            entry_in.half.eq(r.front_half),
            entry_in.last.eq(r.last_seen & (score_params == r.n_cmds - 1)),
            entry_in.seq.eq(r.b_seq),
            entry_in.query_block.eq(r.b_query_block),
            entry_in.query_valid.eq(r.b_query_valid),
            entry_in.chunk.eq(pv_params),
            tiles.w_en.eq(params_fire),
            tiles.w_data.eq(entry_in),
            to_params.payload.eq(pv_want),
        ]
        # (no beat is given while next_full)
        with m.If(r.last_slice):
            with m.If(next_full):
                m.d.sync += [tile_pv.eq(next_pv), next_full.eq(0)]
            with m.Elif(params_fire):
                m.d.sync += tile_pv.eq(pv_want)
            with m.Else():
                m.d.sync += tile_open.eq(0)
        with m.Elif(params_fire):
            with m.If(tile_open):
                m.d.sync += [next_full.eq(1), next_pv.eq(pv_want)]
            with m.Else():
                m.d.sync += [tile_open.eq(1), tile_pv.eq(pv_want)]
        with m.If(params_fire):
            with m.If(pv_want):
                m.d.sync += pv_params.eq(pv_params + 1)
            with m.Else():
                m.d.sync += score_params.eq(score_params + 1)

    def _score_slices(self, m, r):
        """Score k-slices: a k-slice of chunk c may go as soon as chunk c of Q and of its K
        block is in, so the slices trail the fetch by a few words."""
        B, chunks = r.B, r.chunks
        busy, full = r.busy, r.full
        slice_half = Signal()
        i_fire = r.i_fire = r.to_gemm.valid & r.to_gemm.ready
        score_fire = i_fire & ~r.tile_pv
        slice_e, slice_e_final = _counter(m, "slice_element", B, score_fire)
        slice_c, slice_c_final = _counter(m, "slice_chunk", chunks, score_fire & slice_e_final)
        filling = Mux(slice_half, busy[1], busy[0]) & (r.k_resp_half == slice_half) \
            & (r.k_chunks > slice_c)
        # the back row's score tiles still to slice after the hand-over (its Q is all in)
        back_tiles = r.back_tiles = Signal(range(3))
        slicing_back = back_tiles != 0
        q_in = Mux(slicing_back, 1, r.q_chunks > slice_c)
        slice_ready = q_in & (Mux(slice_half, full[1], full[0]) | filling)
        tile_sliced = r.tile_sliced = score_fire & slice_e_final & slice_c_final
        # the query store's half of the slice being read, front_half ^ slicing_back, in a
        # register of its own: front_half has a large fan-out (its select was build j's worst
        # path, 97b6731, 11.2 of 13.0 ns routing); set at the hand-over (_handover) and when
        # the back row's last tile is sliced
        q_half = r.q_half = Signal()
        with m.If(tile_sliced & (back_tiles == 1)):
            m.d.sync += q_half.eq(r.front_half)
        m.d.comb += [r.q_read.addr.eq(Cat(slice_c[:r.chunk_bits], q_half)),
                     r.k_read.addr.eq(Mux(slice_half, chunks, 0) + slice_c)]
        score_a = [r.q_read.data[row * B:(row + 1) * B][slice_e] for row in range(B)]
        score_b = [r.k_read.data[t * B:(t + 1) * B][slice_e] for t in range(B)]
        with m.If(tile_sliced):
            m.d.sync += slice_half.eq(~slice_half)
            with m.If(slicing_back):
                m.d.sync += back_tiles.eq(back_tiles - 1)
            with m.Else():
                m.d.sync += r.tiles_sliced.eq(r.tiles_sliced + 1)
        for h in range(2):
            with m.If(r.take & (r.k_req_half == h)):
                m.d.sync += busy[h].eq(1)
            with m.If(tile_sliced & (slice_half == h)):
                m.d.sync += [busy[h].eq(0), full[h].eq(0)]
            with m.If(r.k_block_in & (r.k_resp_half == h)):
                m.d.sync += full[h].eq(1)
        vars(r).update(slice_ready=slice_ready, slice_last=slice_e_final & slice_c_final,
                       score_a=score_a, score_b=score_b)

    def _pv_slices(self, m, r):
        """P.V k-slices: V words requested in (chunk, key) order, two keys a request; each
        answer meets its probabilities."""
        B, chunks, pairs = r.B, r.chunks, r.pairs
        m.submodules.probs = probs = Memory(shape=data.ArrayLayout(unsigned(8), B),
                                            depth=pairs * B, init=[])
        r.p_write = probs.write_port(granularity=1)
        p_read = probs.read_port(domain="comb")
        v_depth = V_FIFO_DEPTH // 2                     # in word pairs
        m.submodules.v_fifo = v_fifo = r.v_fifo = SyncFIFO(width=2 * B * 8, depth=v_depth)
        v_issuing = r.v_issuing = Signal()
        v_pending = Signal(range(v_depth + 1))  # pairs requested, not yet given to the core
        v_req_fire = self.v_req.valid & self.v_req.ready
        v_req_t, v_req_t_final = _counter(m, "v_req_token_pair", r.token_pairs, v_req_fire)
        v_req_n = Signal(range(max(pairs, 2)))
        v_key = self._back_key(m, r, v_req_n)
        v_req_n_final = v_req_n == r.b_cmds - 1
        v_req_c, v_req_c_final = _counter(m, "v_req_chunk", chunks,
                                          v_req_fire & v_req_t_final & v_req_n_final)
        with m.If(v_req_fire & v_req_t_final):
            m.d.sync += v_req_n.eq(Mux(v_req_n_final, 0, v_req_n + 1))
        with m.If(v_req_fire & v_req_t_final & v_req_n_final & v_req_c_final):
            m.d.sync += v_issuing.eq(0)
        pv_fire = r.i_fire & r.tile_pv
        r.probs_ready = Signal()  # key pv_key's probabilities are written
        pv_t, pv_t_final = _counter(m, "pv_token", B, pv_fire)
        pair_used = r.pair_used = pv_fire & pv_t[0]    # the second key of a pair entered
        m.d.sync += v_pending.eq(v_pending + v_req_fire - pair_used)
        m.d.comb += [
            self.v_req.valid.eq(v_issuing & (v_pending != v_depth)),
            self.v_req.payload.seq.eq(r.b_seq),
            self.v_req.payload.token.eq(Cat(_even(v_req_t, r), v_key.block)),
            self.v_req.payload.chunk.eq(v_req_c),
            v_fifo.w_en.eq(self.v_resp.valid),
            v_fifo.w_data.eq(self.v_resp.payload),
            self.v_resp.ready.eq(v_fifo.w_rdy),
        ]
        pv_n = Signal(range(max(pairs, 2)))
        # The previous back row's last P.V tile is still to slice (the hand-over may come
        # before it, see _handover); pv_cmds is the key block count of the row being sliced
        # (b_cmds, or the previous row's until that tile ends)
        pv_back = r.pv_back = Signal()
        pv_cmds = r.pv_cmds = Signal.like(r.b_cmds)
        # pv_n == pv_cmds - 1, a register set from pv_n's next value (the compare ran into the
        # core's input handshake); after a tile's last key block comes the first one of the
        # next tile, of the back row of that time (b_cmds)
        pv_n_final = r.pv_n_final = Signal()
        pv_tiles = r.pv_tiles = Signal(range(chunks + 1))  # P.V tiles whose slices all entered
        r.pv_tile_end = pv_fire & pv_t_final & pv_n_final
        with m.If(pv_fire & pv_t_final):
            m.d.sync += [pv_n.eq(Mux(pv_n_final, 0, pv_n + 1)),
                         pv_n_final.eq(Mux(pv_n_final, r.b_cmds == 1, pv_n + 2 == pv_cmds))]
            with m.If(pv_n_final):
                m.d.sync += pv_cmds.eq(r.b_cmds)
                with m.If(pv_back):
                    m.d.sync += pv_back.eq(0)
                with m.Else():
                    m.d.sync += pv_tiles.eq(pv_tiles + 1)
        pv_key = r.pv_key = Cat(pv_t, pv_n)
        # the key the next k-slice takes (pv_key in the next cycle)
        r.pv_key_next = Mux(pv_fire, Cat(Mux(pv_t_final, 0, pv_t + 1)[:len(pv_t)],
                                         Mux(pv_t_final, Mux(pv_n_final, 0, pv_n + 1),
                                             pv_n)[:len(pv_n)]), pv_key)
        m.d.comb += p_read.addr.eq(pv_key)
        vars(r).update(pv_fire=pv_fire, pv_last=pv_t_final & pv_n_final, p_read=p_read)

    def _core_input(self, m, r):
        """The GEMM core's k-slices: P.V (probabilities and V words) or scores (Q and K)."""
        to_gemm, v_fifo, p_read = r.to_gemm, r.v_fifo, r.p_read
        v_word = data.View(WordPair(r.B), v_fifo.r_data)[r.pv_key[0]]

        # (r_en outside the If: it reads to_gemm.valid, which the If drives, and Icarus does
        # not re-run a Verilog process for a change it made itself)
        m.d.comb += [v_fifo.r_en.eq(r.pair_used),
                     r.last_slice.eq(r.i_fire & to_gemm.payload.last)]
        with m.If(r.tile_pv):
            m.d.comb += [to_gemm.valid.eq(r.tile_open & v_fifo.r_rdy
                                          & (r.probs_ready | r.pv_back)),
                         to_gemm.payload.last.eq(r.pv_last)]
            for row in range(r.B):
                # p - 128 as int8 is p with its top bit flipped
                m.d.comb += [to_gemm.payload.a[row].eq((p_read.data[row] ^ 0x80).as_signed()),
                             to_gemm.payload.b[row].eq(v_word[row])]
        with m.Else():
            m.d.comb += [to_gemm.valid.eq(r.tile_open & r.slice_ready),
                         to_gemm.payload.last.eq(r.slice_last)]
            for row in range(r.B):
                m.d.comb += [to_gemm.payload.a[row].eq(r.score_a[row]),
                             to_gemm.payload.b[row].eq(r.score_b[row])]

    def _core_output(self, m, r):
        """GEMM output: scores into the row buffer, context words out.

        The row buffer has a half per row (the front row writes its half while the back
        row's half streams to the softmax engine)."""
        B, gemm, lanes, segments, word_bits = r.B, r.gemm, r.lanes, r.segments, r.word_bits
        m.submodules.scores = scores = Memory(shape=Word(B), depth=2 << word_bits, init=[])
        s_write = scores.write_port(granularity=lanes)
        r.s_read = scores.read_port()
        entry = r.entry = data.View(r.TileEntry, r.tiles.r_data)
        o_fire = gemm.o.valid & gemm.o.ready
        out_word = Signal(Word(B))
        out_valid = Signal()
        out_seg, out_seg_final = _counter(m, "out_segment", segments, o_fire)
        out_row, out_row_final = _counter(m, "out_row", B, o_fire & out_seg_final)
        out_tile = Signal(range(r.pairs + 1))       # score tiles of the row written
        scores_complete = [Signal(name=f"scores_complete{h}") for h in range(2)]
        tile_out = o_fire & out_seg_final & out_row_final
        m.d.comb += r.tiles.r_en.eq(tile_out)
        with m.If(tile_out & ~entry.pv):
            m.d.sync += out_tile.eq(Mux(entry.last, 0, out_tile + 1))
            for h in range(2):
                with m.If(entry.last & (entry.half == h)):
                    m.d.sync += scores_complete[h].eq(1)
        m.d.comb += [
            # a word is assembled while the previous one leaves (or has left)
            gemm.o.ready.eq(~entry.pv | ~out_valid | self.o.ready),
            s_write.addr.eq(Cat((times_constant(out_row, r.pairs) + out_tile)[:word_bits],
                                entry.half)),
            s_write.data.eq(Cat(*[gemm.o.payload.data] * segments)),
            s_write.en.eq(Mux(o_fire & ~entry.pv, 1 << out_seg, 0)),
        ]
        out_token = Signal.like(self.o.payload.token)
        out_chunk = Signal.like(self.o.payload.chunk)
        out_seq = Signal.like(self.o.payload.seq)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(o_fire & entry.pv):
            for s in range(segments):
                with m.If(out_seg == s):
                    m.d.sync += out_word[s * lanes:(s + 1) * lanes].eq(gemm.o.payload.data)
            with m.If(out_seg_final):
                m.d.sync += [out_valid.eq(entry.query_valid.bit_select(out_row, 1)),
                             out_token.eq(Cat(out_row, entry.query_block) if r.log_b
                                          else entry.query_block),
                             out_chunk.eq(entry.chunk), out_seq.eq(entry.seq)]
        m.d.comb += [
            self.o.valid.eq(out_valid),
            self.o.payload.seq.eq(out_seq),
            self.o.payload.token.eq(out_token),
            self.o.payload.chunk.eq(out_chunk),
            self.o.payload.data.eq(out_word),
        ]
        vars(r).update(out_tile=out_tile, out_row=out_row, scores_complete=scores_complete)

    def _scores_written(self, r, row, n):
        """Word (row, n) of the back row's half was written in an earlier cycle."""
        entry, back_half = r.entry, ~r.front_half
        at_head = r.tiles.r_rdy & ~entry.pv & (entry.half == back_half)
        progress = (r.out_tile > n) | ((r.out_tile == n) & (r.out_row > row))
        return Mux(back_half, r.scores_complete[1], r.scores_complete[0]) | (at_head & progress)

    def _stream_scores(self, m, r):
        """Back row: row buffer -> softmax engine.

        The row buffer's words go through two registers before their keys are selected: the
        block RAM's read data (held while its enable is low) and the word register the lane
        select reads, so the DP16KD's clock-to-output has a path of its own (it ran through the
        lane select into the softmax's input register). A reader fetches the row's words in
        order, one a cycle at most, while the stage after it is free or is freed in that cycle;
        a word is read only once the core has written it (the back row's last score tiles may
        still be draining from the core at the hand-over)."""
        B, pairs, softmax, word_bits = r.B, r.pairs, r.softmax, r.word_bits
        streaming = r.streaming = Signal()
        back_half = ~r.front_half
        # the reader: (row, key block) of the next word to read, its address, and whether it
        # was written one cycle ago (a register: a word's "written" only turns true during a
        # row, so a value a cycle old is at worst late; it is cleared when the reader moves on,
        # and a word is block >= 2 keys, so the consumer never waits on that cycle)
        reading = Signal()
        rd_row = Signal(range(B))
        rd_n = Signal(range(max(pairs, 2)))
        rd_addr = Signal(range(B * pairs))
        rd_written = Signal()
        # the consumer: (row, key block, lane) of the key going to the softmax
        s_row = Signal(range(B))
        s_n = Signal(range(max(pairs, 2)))
        s_lane = Signal(range(B))
        s_word = Signal(Word(B))
        s_word_valid = Signal()
        read_valid = Signal()        # the block RAM's read data is a word
        s_key = self._back_key_registered(m, r)
        s_entry_valid = self._key_valid(r, s_key.data, s_lane, s_row)
        # the softmax input is registered (a skid buffer): the lane select would otherwise run
        # straight into the softmax's running maximum
        to_softmax = _StreamRegister(m, "to_softmax", softmax.i)
        s_step = streaming & s_word_valid & (~s_entry_valid | to_softmax.ready)
        s_word_end = s_step & (s_lane == B - 1)
        s_n_final = s_n == r.b_cmds - 1
        s_n_next = Mux(s_n_final, 0, s_n + 1)
        self._next_back_key(m, r, s_key, Mux(s_word_end, s_n_next, s_n))
        advance = read_valid & (~s_word_valid | s_word_end)
        issue = reading & rd_written & (~read_valid | advance)
        rd_n_final = rd_n == r.b_cmds - 1
        m.d.comb += [
            r.s_read.addr.eq(Cat(rd_addr[:word_bits], back_half)),
            r.s_read.en.eq(issue),
            to_softmax.valid.eq(streaming & s_word_valid & s_entry_valid),
            to_softmax.payload.data.eq(s_word[s_lane]),
            to_softmax.payload.last.eq(s_n_final & (s_lane == self._last_lane(m, r, s_row))),
        ]
        m.d.sync += [
            rd_written.eq(reading & ~issue & self._scores_written(r, rd_row, rd_n)),
            read_valid.eq(issue | (read_valid & ~advance)),
        ]
        with m.If(issue):
            m.d.sync += [rd_addr.eq(Mux(rd_n_final, times_constant(rd_row + 1, pairs),
                                        rd_addr + 1)),
                         rd_n.eq(Mux(rd_n_final, 0, rd_n + 1))]
            with m.If(rd_n_final):
                m.d.sync += rd_row.eq(rd_row + 1)
                with m.If(rd_row == B - 1):
                    m.d.sync += reading.eq(0)
        with m.If(advance):
            m.d.sync += [s_word.eq(r.s_read.data), s_word_valid.eq(1)]
        with m.Elif(s_word_end):
            m.d.sync += s_word_valid.eq(0)
        with m.If(s_step):
            m.d.sync += s_lane.eq(Mux(s_lane == B - 1, 0, s_lane + 1))
        with m.If(s_word_end):
            m.d.sync += s_n.eq(s_n_next)
            with m.If(s_n_final):
                m.d.sync += s_row.eq(s_row + 1)
                with m.If(s_row == B - 1):
                    m.d.sync += streaming.eq(0)
        # the hand-over starts the next row from its first word (every register above is
        # back at its first value: the previous row's words were all read and consumed)
        with m.If(r.handover):
            m.d.sync += [reading.eq(1), rd_written.eq(0), rd_addr.eq(0)]

    def _write_probs(self, m, r):
        """Back row: softmax engine -> probability buffer (0 for masked keys)."""
        B, softmax, writing, w_row, p_write = r.B, r.softmax, r.writing, r.w_row, r.p_write
        w_n = Signal(range(max(r.pairs, 2)))
        w_lane = Signal(range(B))
        w_key = self._back_key_registered(m, r)
        w_entry_valid = self._key_valid(r, w_key.data, w_lane, w_row)
        # (no write while the previous back row's last P.V tile reads its probabilities)
        w_step = writing & ~r.pv_back & (~w_entry_valid | softmax.o.valid)
        w_n_final = w_n == r.b_cmds - 1
        w_n_next = Mux(w_n_final, 0, w_n + 1)
        self._next_back_key(m, r, w_key, Mux(w_step & (w_lane == B - 1), w_n_next, w_n))
        m.d.comb += [
            softmax.o.ready.eq(writing & ~r.pv_back & w_entry_valid),
            p_write.addr.eq(Cat(w_lane, w_n) if r.log_b else w_n),
            p_write.data.eq(Cat(*[Mux(w_entry_valid, softmax.o.payload.data[:8], 0)] * B)),
            p_write.en.eq(Mux(w_step, 1 << w_row, 0)),
        ]
        with m.If(w_step):
            m.d.sync += w_lane.eq(Mux(w_lane == B - 1, 0, w_lane + 1))
            with m.If(w_lane == B - 1):
                m.d.sync += w_n.eq(w_n_next)
                with m.If(w_n_final):
                    m.d.sync += w_row.eq(w_row + 1)
                    with m.If(w_row == B - 1):
                        m.d.sync += [writing.eq(0), r.probs_done.eq(1)]
        # P.V may take key x once every row's probability of x is written: the slices of the
        # first tile trail the last row's probabilities. A register, set from the next
        # cycle's key and write position (the compare's carry chain ran from the P.V count
        # into the core's input handshake): in the cycle after the back row's final write,
        # probs_done is set; before it, the key must be below the next write position (the
        # position + 1 does not wrap there).
        w_pos = Cat(w_lane, w_n)
        final_write = w_step & (w_lane == B - 1) & w_n_final
        w_pos_next = Mux(w_step, w_pos + 1, w_pos)[:len(w_pos)]
        m.d.sync += r.probs_ready.eq(
            r.probs_done
            | (writing & (w_row == B - 1) & (final_write | (r.pv_key_next < w_pos_next))))
        with m.If(r.handover):
            m.d.sync += r.probs_ready.eq(0)

    def _handover(self, m, r):
        """The hand-over: the front row becomes the back row.

        The back row is finished with once its last P.V slice has entered the core (its
        context words then leave through the tile queue). The front row may hand over once
        all its commands are taken, its K requested, its Q in and its last score tile
        announced to the core: its tiles not yet sliced (at most two: the open one and the
        next) are then sliced as the back row's (``back_tiles``: their K is in the key store's
        halves, their Q in the back row's half of the query store, their results go to the
        back row's half of the row buffer, which its softmax stream reads as they are
        written). ``done`` then frees the engine for the scheduler's next row, whose first
        command, Q and K words arrive while those tiles are sliced: the core does not wait for
        the next row's first words (the command's way from ``done`` through the scheduler and
        the read round trip, about 15 cycles a row when the hand-over waited for the last
        slice)."""
        with m.If(r.back_busy & (r.pv_tiles == r.chunks)):
            m.d.sync += r.back_busy.eq(0)
        # done straight from the condition, which holds until the hand-over: the unit
        # registers it on its way to the scheduler's slot logic (hw/attention/unit.py), so the
        # engine hands over in the cycle it is finished
        done = Signal()
        # the back row's last P.V tile may still be to slice: its probabilities are written,
        # its V words requested (they are in or on their way to the V FIFO, ahead of the next
        # row's), it is announced with its output's place (the tile queue)
        back_ending = (r.probs_done & (r.pv_params == r.chunks) & ~r.v_issuing
                       & (r.pv_tiles + 1 >= r.chunks))
        m.d.comb += done.eq(r.last_seen & ~r.k_issuing & (r.score_params == r.n_cmds)
                            & (r.q_chunks == r.chunks) & (~r.back_busy | back_ending)
                            & ~r.pv_back & (r.back_tiles == 0))
        pv_pending = r.back_busy & (r.pv_tiles != r.chunks) & ~r.pv_tile_end
        # the score tiles left to slice: n_cmds - tiles_sliced, less the one whose last slice
        # goes now (tile_sliced, from the core's input handshake, selects between the two
        # differences, both from registers, instead of entering the subtraction)
        left = (r.n_cmds - r.tiles_sliced)[:2]          # (at most 2 at the hand-over)
        back_next = Mux(r.tile_sliced, left - 1, left)[:2]
        back_some = Mux(r.tile_sliced, left != 1, left != 0)
        m.d.comb += [self.done.eq(done), r.handover.eq(done & self.done_ready)]
        with m.If(r.handover):
            m.d.sync += [
                # the front row becomes the back row
                r.back_busy.eq(1), r.b_seq.eq(r.seq), r.b_query_block.eq(r.query_block),
                r.b_cmds.eq(r.n_cmds), r.b_query_valid.eq(r.query_valid),
                r.b_last_valid.eq(r.last_valid), r.front_half.eq(~r.front_half),
                r.streaming.eq(1), r.writing.eq(1),
                r.v_issuing.eq(1), r.probs_done.eq(0), r.pv_params.eq(0), r.pv_tiles.eq(0),
                r.pv_back.eq(pv_pending),
                r.back_tiles.eq(back_next),
                r.q_half.eq(Mux(back_some, r.front_half, ~r.front_half)),
                # the front starts over in the other half
                r.started.eq(0), r.n_cmds.eq(0), r.last_seen.eq(0), r.q_chunks.eq(0),
                r.score_params.eq(0), r.tiles_sliced.eq(0), r.query_valid.eq(0),
            ]
            with m.If(~pv_pending):
                m.d.sync += [r.pv_n_final.eq(r.n_cmds == 1), r.pv_cmds.eq(r.n_cmds)]
            for h in range(2):
                with m.If(r.front_half != h):
                    m.d.sync += r.scores_complete[h].eq(0)


class _StreamRegister:
    """A full-rate register stage in front of the stream ``sink`` (a skid buffer): the sink's
    valid and payload come from registers, and so does ``ready`` towards the source (a second
    register takes the beat offered while the sink stalls). Drive ``valid`` and ``payload``;
    a beat is taken when ``valid & ready``.

    With ``staged``, the beat first enters an input register (``{name}_in``, one more cycle
    of latency, still one beat a cycle), so that the logic that makes the payload ends there
    and not at the skid buffer's registers: ``ready`` is then ``~in_valid | ~skid_full``, from
    registers too."""

    def __init__(self, m, name, sink, *, shape=None, expand=None, staged=False):
        # ``shape`` and ``expand``: the registers hold ``shape`` and the sink's payload is
        # ``expand(register)``, so that what is constant or repeated in the payload is made
        # after them. Yosys does not prune such bits from the skid register: loaded whenever
        # it is empty, a constant bit's next value is ``skid_full & skid``, not a constant.
        shape = sink.payload.shape() if shape is None else shape
        self.valid = Signal(name=f"{name}_valid")
        self.payload = Signal(shape, name=f"{name}_payload")
        skid_full = Signal(name=f"{name}_skid_full")
        skid = Signal(shape, name=f"{name}_skid")
        valid, payload = self.valid, self.payload
        self.ready = ~skid_full
        if staged:
            # (the input register, like the skid register below, is loaded in every cycle it
            # may take a beat, whether or not one is offered: its clock enable is registers)
            valid = Signal(name=f"{name}_in_valid")
            payload = Signal(shape, name=f"{name}_in")
            self.ready = ~valid | ~skid_full
            with m.If(self.ready):
                m.d.sync += [valid.eq(self.valid), payload.eq(self.payload)]
        out_valid = Signal(name=f"{name}_out_valid")
        out = Signal(shape, name=f"{name}_out")
        m.d.comb += [sink.valid.eq(out_valid),
                     sink.payload.eq(out if expand is None else expand(out))]
        with m.If(~out_valid | sink.ready):
            m.d.sync += [out_valid.eq(skid_full | valid),
                         out.eq(Mux(skid_full, skid, payload)), skid_full.eq(0)]
        with m.Elif(valid & ~skid_full):
            m.d.sync += skid_full.eq(1)
        # the skid register takes the payload in every cycle it is empty, whether or not a beat
        # is offered: its clock enable is then a register (``skid_full``), not ``valid``, whose
        # logic (the source's counters and compares) would otherwise fan out to every bit
        with m.If(~skid_full):
            m.d.sync += skid.eq(payload)


def _even(pair, r):
    """The even token position of token pair ``pair`` in a block."""
    return Cat(Const(0, 1), pair[:r.log_b - 1])


def _counter(m, name, limit, step):
    """A wrapping counter ``0 .. limit - 1``; returns (value, at its last value)."""
    value = Signal(range(max(limit, 2)), name=name)
    final = value == limit - 1
    with m.If(step):
        m.d.sync += value.eq(Mux(final, 0, value + 1))
    return value, final
