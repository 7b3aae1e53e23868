"""Length-aware scheduler of block-sparse attention rows onto ``engines`` attention engines.

The policy is specified, cycle by cycle, by ``sim/golden/attention.py`` (``schedule``); this
component reproduces it exactly when every engine takes a fixed number of cycles per command.
"""

from amaranth import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..common.params import params_or_keywords
from ..common.pipeline import register_copies
from .scheduler_params import SchedulerParams

__all__ = ["AttentionScheduler", "Command", "Descriptor"]

def Descriptor(seq_width: int, length_width: int) -> data.StructLayout:
    """One sequence of the batch: its id and its length in tokens (0 = no work)."""
    return data.StructLayout({"seq": unsigned(seq_width), "length": unsigned(length_width)})


def Command(seq_width: int, block_width: int, block: int) -> data.StructLayout:
    """One (query block, key block) pair for an engine; ``last`` ends the row (the engine then
    normalises its online softmax); ``valid`` bit ``t`` set when key token ``t`` exists."""
    return data.StructLayout({
        "seq": unsigned(seq_width),
        "query_block": unsigned(block_width),
        "key_block": unsigned(block_width),
        "last": unsigned(1),
        "valid": unsigned(block),
    })


def _Row(seq_width: int, block_width: int, block: int, *, first: bool) -> data.StructLayout:
    """A query-block row waiting in the dispatch window, kept narrow because the window
    multiplexers dominate the area: the engine derives its key range and masks from it.
    ``first`` (the row's first key block) is only stored when it is not always 0, i.e.
    without global blocks. ``ahead`` is the insertion's registered decision: the slot holds a
    row and that row stays ahead of the staged row."""
    fields = {
        "seq": unsigned(seq_width),
        "query_block": unsigned(block_width),
        "last_block": unsigned(block_width),    # the sequence's final (partial) key block
        "missing": unsigned(max(1, block.bit_length() - 1)),  # absent tokens of that block
        "pairs": unsigned(block_width + 1),     # key blocks of the row: the priority
    }
    if first:
        fields["first"] = unsigned(block_width)
    fields["ahead"] = unsigned(1)
    return data.StructLayout(fields)


def _select(values: list, index: Signal):
    """``values[index]``; indices past the end give the last value. A tree of ``Mux`` on the
    index bits, emitted as continuous assignments: a ``case`` process (``Array``) is not
    evaluated at time 0 by Icarus when none of its inputs changes, and a window of constant
    slots then stays X."""
    values = [Value.cast(v) for v in values]
    values += [values[-1]] * ((1 << len(index)) - len(values))
    for bit in range(len(index)):
        values = [Mux(index[bit], values[i + 1], values[i]) for i in range(0, len(values), 2)]
    return values[0]


class AttentionScheduler(wiring.Component):
    """Dispatches the query-block rows of a stream of variable-length sequences onto engines.

    Each sequence descriptor expands into ``ceil(length / block)`` rows (query blocks, in
    order), one row per clock, into a window of ``lookahead`` rows kept sorted by priority
    (most key blocks first when ``longest_first``, else arrival order). In every cycle each
    free engine takes the next row of the window (lowest engine index first; several engines
    per cycle), with no barrier between sequences. An engine then receives its row's commands,
    one per handshake, key blocks increasing, and frees itself with ``done``.

    Pipelined so that no combinational path spans the window. A new row is registered
    (staged) before it is inserted, so it is dispatched two cycles after it is generated at
    the earliest. Its size (the priority) is registered one cycle earlier still, by the
    generator, and compared with every slot in the cycle the row is generated; each slot
    keeps that comparison as a bit which moves with it, so the insertion only reads
    registered bits. The generator's room check uses registered counts only. The rows taken
    in a cycle stay in the window's first slots for one more cycle (``holes``): the shift of
    the whole window is selected by a register, and this cycle's dispatches (which depend on
    the engines' ``done``) only reach the first ``min(engines, lookahead) + 1`` slots.

    Block pattern (``sim.golden.attention.block_mask``): query block ``i`` sees key block ``j``
    when ``|i - j| <= window`` or ``j < n_global`` or ``i < n_global``; with ``causal`` also
    ``j <= i``.

    Parameters
    ----------
    params : SchedulerParams
        All the parameters below at once (or give them as keywords).
    engines : int
        Attention engines, 1..16.
    block : int
        Tokens per block, a power of two 1..64.
    window, n_global : int
        Band half-width and global blocks of the pattern, 0..255 each.
    causal : bool
        Keep only key blocks ``j <= i``.
    max_len : int
        Longest sequence, 1..65535; sizes the length field (any length it can hold works).
    seq_width : int
        Bits of the sequence id, 1..16.
    lookahead : int
        Rows held in the dispatch window, 1..64.
    longest_first : bool
        Order the window by row length (``True``) or keep descriptor order.

    Members
    -------
    desc : In(stream.Signature(Descriptor(seq_width, bits(max_len))))
        Sequence descriptors; a length of 0 is consumed without work.
    cmd_<e> : Out(stream.Signature(Command(seq_width, block_width, block)))
        Commands for engine ``e`` (``e`` in ``range(engines)``).
    done_<e> : In(1)
        Engine ``e`` finished its row (all its commands computed); held until ``done_ready_<e>``.
    done_ready_<e> : Out(1)
        ``done_<e>`` is taken in a cycle where both are high; high while the engine has been
        given all commands of its row. (A valid/ready pair without payload: Amaranth would emit
        a zero-width stream payload as a malformed ``[-1:0]`` Verilog port.)
    """

    def __init__(self, params: SchedulerParams | None = None, **kwargs):
        params = params_or_keywords(SchedulerParams, params, kwargs)
        self._params = params
        members = {"desc": In(stream.Signature(Descriptor(params.seq_width,
                                                          params.length_width)))}
        for e in range(params.engines):
            members[f"cmd_{e}"] = Out(stream.Signature(self.command_layout))
            members[f"done_{e}"] = In(1)
            members[f"done_ready_{e}"] = Out(1)
        super().__init__(members)

    @property
    def parameters(self) -> SchedulerParams:
        """The validated parameters with every derived figure."""
        return self._params

    engines = property(lambda self: self._params.engines)
    block = property(lambda self: self._params.block)
    window = property(lambda self: self._params.window)
    n_global = property(lambda self: self._params.n_global)
    causal = property(lambda self: self._params.causal)
    max_len = property(lambda self: self._params.max_len)
    seq_width = property(lambda self: self._params.seq_width)
    lookahead = property(lambda self: self._params.lookahead)
    longest_first = property(lambda self: self._params.longest_first)

    @property
    def command_layout(self) -> data.StructLayout:
        return Command(self._params.seq_width, self._params.block_width, self._params.block)

    @property
    def cmd(self) -> list:
        """The engines' command streams, by engine index."""
        return [getattr(self, f"cmd_{e}") for e in range(self._params.engines)]

    @property
    def done(self) -> list:
        return [getattr(self, f"done_{e}") for e in range(self._params.engines)]

    @property
    def done_ready(self) -> list:
        return [getattr(self, f"done_ready_{e}") for e in range(self._params.engines)]

    # Constant comparisons (``x < 0``, ``x >= 0``) are resolved here rather than emitted:
    # Verilator rejects them as always-true/false (UNSIGNED).
    def _minus_window(self, block):
        """``max(block - window, 0)``: first block of the band around ``block``."""
        w = self._params.window
        return block if w == 0 else Mux(block >= w, block - w, 0)

    def _below_globals(self, block):
        """``block < n_global``."""
        return block < self._params.n_global if self._params.n_global else Const(0, 1)

    def elaborate(self, platform):
        m = Module()
        row_layout = _Row(self._params.seq_width, self._params.block_width, self._params.block,
                          first=self._params.n_global == 0)
        window = self._window(m, row_layout, platform)
        engines = self._engine_slots(m, row_layout)
        taken, n_taken = self._dispatch(m, row_layout, window, engines)
        generator = self._generator(m, row_layout)
        self._window_update(m, row_layout, window, taken, n_taken, generator, platform)
        return m

    def _window(self, m: Module, row_layout, platform) -> dict:
        """The window's slots and its registered counts; ``moved[n]``: slot ``n`` once the
        previous cycle's dispatches (the holes) are gone."""
        D = self._params.lookahead
        K = self._params.dispatch_width         # most rows dispatched in one cycle
        # ---- the window: slots[0..holes + waiting), of which the first `holes` were
        # dispatched in the previous cycle and leave now; `waiting` rows can be dispatched,
        # a count kept as a thermometer so that no adder or comparator follows the dispatch.
        slots = [Signal(row_layout, name=f"slot_{n}") for n in range(D)]
        holes_is = Signal(K + 1, init=1)        # one-hot holes
        waiting_gt = Signal(D)                  # waiting_gt[n]: waiting > n
        # moved[n]: slot n once the holes are gone (a shift selected by a register). The
        # select drives every bit of the window, so each slot has its own copy of the
        # register (`holes_<n>`, loaded with `holes_next`), one that synthesis cannot merge
        # with the others (copies per group of slots were merged: 300-600 loads a bit).
        holes_next = Signal(range(K + 1))       # the dispatches of this cycle: n_taken
        moved = []
        holes_copies = register_copies(m, "holes", holes_next, platform, D, reset=True)
        for n in range(D):
            holes = holes_copies[n]
            candidate = Signal(row_layout, name=f"moved_{n}")
            m.d.comb += candidate.eq(
                _select([slots[min(n + t, D - 1)] for t in range(K + 1)], holes))
            moved.append(candidate)

        return {"slots": slots, "holes_is": holes_is, "waiting_gt": waiting_gt,
                "holes_next": holes_next, "moved": moved}

    def _engine_slots(self, m: Module, row_layout) -> dict:
        """Per engine, the row it works on, its next key block and its commands left; drives
        the command streams and ``done_ready``."""
        P, B = self._params.engines, self._params.block
        bw = self._params.block_width
        full_mask = (1 << B) - 1
        # ---- engine slots: the row each engine is working on -------------------------------
        active = [Signal(name=f"active_{e}") for e in range(P)]      # row given, done not seen
        issuing = [Signal(name=f"issuing_{e}") for e in range(P)]    # commands left to issue
        rows = [Signal(row_layout, name=f"row_{e}") for e in range(P)]
        key = [Signal(bw, name=f"key_{e}") for e in range(P)]
        left = [Signal(bw + 1, name=f"left_{e}") for e in range(P)]  # commands left in the row
        free = [Signal(name=f"free_{e}") for e in range(P)]
        for e in range(P):
            cmd, row = self.cmd[e], rows[e]
            finished = self.done[e] & self.done_ready[e]
            m.d.comb += [
                self.done_ready[e].eq(active[e] & ~issuing[e]),
                free[e].eq(~active[e] | finished),
                cmd.valid.eq(issuing[e]),
                cmd.payload.seq.eq(row.seq),
                cmd.payload.query_block.eq(row.query_block),
                cmd.payload.key_block.eq(key[e]),
                cmd.payload.last.eq(left[e] == 1),
                cmd.payload.valid.eq(Mux(key[e] == row.last_block,
                                         Const(full_mask, B) >> row.missing, full_mask)),
            ]
            # Next key block: consecutive through the global blocks (and everywhere in a
            # global row), then a jump to the start of the band around the query block.
            step = key[e] + 1
            band_start = self._minus_window(row.query_block)
            in_globals = self._below_globals(row.query_block) | self._below_globals(step)
            with m.If(cmd.valid & cmd.ready):
                m.d.sync += left[e].eq(left[e] - 1)
                with m.If(cmd.payload.last):
                    m.d.sync += issuing[e].eq(0)
                with m.Else():
                    m.d.sync += key[e].eq(Mux(in_globals | (step >= band_start), step,
                                              band_start))
            with m.If(finished):
                m.d.sync += active[e].eq(0)

        return {"active": active, "issuing": issuing, "rows": rows, "key": key, "left": left,
                "free": free}

    def _dispatch(self, m: Module, row_layout, window: dict, engines: dict):
        """The ``n``-th free engine takes the ``n``-th waiting row. Returns ``taken`` (a prefix
        of ones: the ``(n + 1)``-th waiting row leaves in this cycle) and its count."""
        P, K = self._params.engines, self._params.dispatch_width
        store_first = self._params.n_global == 0
        moved, waiting_gt = window["moved"], window["waiting_gt"]
        free, rows, left, key = engines["free"], engines["rows"], engines["left"], engines["key"]
        active, issuing = engines["active"], engines["issuing"]
        # ---- dispatch: the n-th free engine takes the n-th waiting row ---------------------
        rank = []                                # free engines below e
        running = Const(0, range(P + 1))
        for e in range(P):
            r = Signal(range(P + 1), name=f"rank_{e}")
            m.d.comb += r.eq(running)
            rank.append(r)
            running = running + free[e]
        n_free = Signal(range(P + 1))
        m.d.comb += n_free.eq(running)
        for e in range(P):
            offered = Signal(row_layout, name=f"offered_{e}")
            m.d.comb += offered.eq(_select(moved[:K], rank[e]))
            with m.If(free[e] & _select([*waiting_gt[:K], Const(0, 1)], rank[e])):
                m.d.sync += [rows[e].eq(offered), left[e].eq(offered.pairs),
                             key[e].eq(offered.first if store_first else 0)]
                m.d.sync += [active[e].eq(1), issuing[e].eq(1)]
        # taken[n]: the (n + 1)-th waiting row leaves in this cycle; a prefix of ones.
        taken = [Signal(name=f"taken_{n}") for n in range(K)]
        for n in range(K):
            m.d.comb += taken[n].eq((n_free > n) & waiting_gt[n])
        n_taken = Signal(range(K + 1))
        m.d.comb += n_taken.eq(sum(taken))

        return taken, n_taken

    def _generator(self, m: Module, row_layout) -> dict:
        """The current descriptor's query blocks, one row per clock, each registered (staged)
        before it enters the window, with its size registered a cycle ahead."""
        B = self._params.block
        bw = self._params.block_width
        store_first = self._params.n_global == 0
        # ---- row generator: the current descriptor's query blocks, in order --------------
        cur_valid = Signal()
        cur_seq = Signal(self._params.seq_width)
        cur_last_block = Signal(bw)
        cur_missing = Signal(max(1, B.bit_length() - 1))
        qb = Signal(bw)
        at_last = Signal()                       # qb is the sequence's final block
        gen_pairs = Signal(bw + 1)               # key blocks of row qb, registered
        staged = Signal(row_layout)              # the row generated in the previous cycle
        generate = Signal()
        room = Signal(init=1)                   # waiting + staged_valid < lookahead
        m.d.comb += [
            # Registered state only: the rows dispatched in this cycle are still counted.
            generate.eq(cur_valid & room),
            self.desc.ready.eq(~cur_valid | (generate & at_last)),
        ]
        # The size of the row generated next is registered a cycle ahead (gen_pairs), from
        # counters kept for the row after the current one, so that no adder chain follows
        # another. A row q of a sequence with final block L has
        #   global (q < n_global): q + 1 with causal, else L + 1;
        #   otherwise: min(q + 1, window + n_global + 1) [the band's part left of q, itself
        #   and the global blocks] + (0 with causal, else min(window, L - q)).
        w, g, causal = self._params.window, self._params.n_global, self._params.causal
        cap = w + g + 1
        length = self.desc.payload.length
        log_b = B.bit_length() - 1
        missing = Signal(max(1, log_b))         # absent tokens of the final block, 0..B-1
        desc_blocks = Signal(bw + 1)            # blocks of the offered sequence
        m.d.comb += [
            missing.eq((B - 1) - ((length - 1) & (B - 1))),
            desc_blocks.eq((length + (B - 1)) >> log_b),
        ]
        blocks = Signal(bw + 1)                  # L + 1 of the current sequence
        next_base = Signal(range(cap + 2))       # min(q + 2, cap): the next row's first term
        next_dist = Signal(bw + 1)               # L - (q + 1), the next row's distance to L
        # Size of query block 0 of the offered sequence.
        if causal:
            pairs_first = Const(1)
        elif g or w * B >= (1 << self._params.length_width) - 1:
            pairs_first = desc_blocks
        else:
            pairs_first = Mux(length > w * B, w + 1, desc_blocks)
        # Size of query block q + 1 of the current sequence.
        if g < 2:
            next_global = Const(0, 1)
        elif g - 1 >= 1 << bw:
            next_global = Const(1, 1)
        else:
            next_global = qb < g - 1
        if causal:
            pairs_next = next_base
        else:
            right = Mux(next_dist >= w, w, next_dist) if w else 0   # min(window, L - q - 1)
            pairs_next = Mux(next_global, blocks, next_base + right)
        with m.If(self.desc.valid & self.desc.ready):
            m.d.sync += [
                cur_valid.eq(length != 0),
                cur_seq.eq(self.desc.payload.seq),
                cur_last_block.eq((length - 1) >> log_b),
                cur_missing.eq(missing),
                qb.eq(0),
                at_last.eq(length <= B if B < (1 << self._params.length_width) - 1 else 1),
                gen_pairs.eq(pairs_first),
                blocks.eq(desc_blocks),
                next_base.eq(min(2, cap)),
                next_dist.eq(desc_blocks - 2),
            ]
        with m.Elif(generate):
            m.d.sync += [
                qb.eq(qb + 1),
                at_last.eq(next_dist == 0),
                gen_pairs.eq(pairs_next),
                next_base.eq(Mux(next_base == cap, cap, next_base + 1)),
                next_dist.eq(next_dist - 1),
            ]
            with m.If(at_last):
                m.d.sync += cur_valid.eq(0)

        with m.If(generate):
            m.d.sync += [
                staged.seq.eq(cur_seq),
                staged.query_block.eq(qb),
                staged.last_block.eq(cur_last_block),
                staged.missing.eq(cur_missing),
                staged.pairs.eq(gen_pairs),
            ]
            if store_first:
                m.d.sync += staged.first.eq(self._minus_window(qb))

        return {"staged": staged, "generate": generate, "room": room, "gen_pairs": gen_pairs}

    def _window_update(self, m: Module, row_layout, window: dict, taken, n_taken,
                       generator: dict, platform) -> None:
        """Drops the holes, inserts the staged row by priority and updates the counts."""
        D, K = self._params.lookahead, self._params.dispatch_width
        slots, moved, waiting_gt = window["slots"], window["moved"], window["waiting_gt"]
        holes_is = window["holes_is"]
        staged = generator["staged"]
        generate, room, gen_pairs = generator["generate"], generator["room"], generator["gen_pairs"]
        # staged_valid (the staged row is valid: generated in the previous cycle) reaches every
        # bit of every slot: each slot has its own copy, one that synthesis cannot merge.
        slot_staged = register_copies(m, "staged_valid", generate, platform, D, reset=True)
        # ---- window update: drop the holes, insert the staged row by priority -------------
        # Each row carries `ahead`: it has at least as many key blocks as the staged row, so
        # it stays ahead of it (ties in generation order). The bit is computed against the
        # generator's row in the cycle that row is generated, and moves with its row. The
        # waiting rows are sorted, so after the shift, "the staged row goes behind slot n"
        # is a prefix of ones: slot n waits and is ahead, or it holds a row taken in this
        # cycle (it stays, as a hole).
        behind = []                              # behind[n]: the staged row goes after slot n
        for n in range(D):
            bit = Signal(name=f"behind_{n}")
            m.d.comb += bit.eq(moved[n].ahead | taken[n] if n < K else moved[n].ahead)
            behind.append(bit)
        # Where each slot's row comes from: the staged row, the previous moved slot, or its
        # own moved slot.
        from_staged = [slot_staged[n] & (behind[n - 1] if n else 1) & ~behind[n]
                       for n in range(D)]
        from_prev = [slot_staged[n] & ~behind[n - 1] if n else Const(0, 1) for n in range(D)]
        # Slot n holds a row after this cycle when n < waiting + staged_valid.
        occupied = [Mux(slot_staged[n], waiting_gt[n - 1] if n else 1, waiting_gt[n])
                    for n in range(D)]
        for n in range(D):
            update = Signal(row_layout, name=f"update_{n}")
            m.d.comb += update.eq(Mux(from_staged[n], staged,
                                      Mux(from_prev[n], moved[n - 1] if n else 0, moved[n])))
            m.d.sync += slots[n].eq(update)
            # A slot without a row keeps no size: its `ge` below would otherwise compare a
            # stale row, and the staged row, inserted at the end of the window, would take
            # that stale row's `ahead` bit.
            with m.If(~occupied[n]):
                m.d.sync += slots[n].pairs.eq(0)
        # The new ahead bits, against the generator's row: ge[j] compares slot j before the
        # shift. Taken rows (the longest) count as ahead, so over the window the bits are a
        # thermometer, and the staged row's insertion, wherever it lands, only moves that
        # thermometer by one slot when the staged row is itself ahead: bit n is then the bit
        # of slot n - 1. So the routes below depend on registers only, not on the dispatch.
        if self._params.longest_first:
            ge = Signal(D)                       # ge[j]: slot j against the generator's row
            for j in range(D):
                m.d.comb += ge[j].eq(slots[j].pairs >= gen_pairs)
            staged_ge = Signal()                 # the staged row is ahead of the generator's
            m.d.comb += staged_ge.eq(staged.pairs >= gen_pairs)
        else:
            ge, staged_ge = Const((1 << D) - 1, D), Const(1, 1)
        for n in range(D):
            shifted = slot_staged[n] & staged_ge     # the staged row goes in, ahead
            terms = [shifted & taken[n - 1] if 1 <= n <= K else Const(0, 1),
                     ~shifted & taken[n] if n < K else Const(0, 1),
                     shifted if n == 0 else Const(0, 1)]
            for j in range(max(n - 1, 0), min(n + K + 1, D)):
                route = Const(0, 1)
                if 0 <= j - n <= K:
                    route = route | (~shifted & holes_is[j - n])
                if n and 0 <= j - n + 1 <= K:
                    route = route | (shifted & holes_is[j - n + 1])
                terms.append(route & ge[j])
            m.d.sync += slots[n].ahead.eq(occupied[n] & Cat(*terms).any())
        # The thermometer after this cycle: waiting - n_taken + staged_valid > n.
        taken_is = [~taken[0]] + [taken[t - 1] & (~taken[t] if t < K else 1)
                                  for t in range(1, K + 1)]   # one-hot n_taken

        def after_takes(n):
            """waiting - n_taken > n."""
            bits = [taken_is[t] & waiting_gt[n + t] for t in range(K + 1) if n + t < D]
            return Cat(*bits).any() if bits else Const(0, 1)

        waiting_gt_next = Signal(D)
        for n in range(D):
            m.d.comb += waiting_gt_next[n].eq(
                Mux(slot_staged[n], after_takes(n - 1) if n else 1, after_takes(n)))
        # Room for the next row: waiting + staged_valid < lookahead after this cycle.
        full_with_new = waiting_gt_next[D - 2] if D >= 2 else Const(1, 1)
        m.d.comb += window["holes_next"].eq(n_taken)
        m.d.sync += [
            holes_is.eq(Cat(*taken_is)),
            waiting_gt.eq(waiting_gt_next),
            room.eq(Mux(generate, ~full_with_new, ~waiting_gt_next[D - 1])),
        ]
