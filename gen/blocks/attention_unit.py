"""The attention unit (scheduler + attention engines + Q/K/V/O memories) as a Lutra block; its
parameters come from ``UnitParams``."""


from hw.attention.params import UnitParams
from hw.attention.unit import READ_LATENCY, AttentionUnit

from ..resources import netlist_resources
from . import BlockSpec, params_from

def _build(p: dict) -> AttentionUnit:
    return AttentionUnit(UnitParams(**p))


def _figures(unit: AttentionUnit) -> dict:
    p = unit.params
    return {
        "engines": p.engines,
        "macs_per_engine": p.macs,
        "hidden": p.hidden,
        "words_per_token": p.words_per_token,
        "memory_words": p.memory_words,
        "bank_words": p.bank_words,
        "memory_bits": p.memory_bits,
        "max_pairs_per_row": p.max_pairs,
        "row_buffer_bits_per_engine": p.score_buffer_bits,
        "prob_buffer_bits_per_engine": p.prob_buffer_bits,
        "read_latency_cycles": READ_LATENCY,
        "row_cycles": f"per (sequence, head, query block) row of pairs key blocks: 2 * pairs * "
                      f"{p.head_dim} on the GEMM core (scores and P.V, one k-slice a clock); "
                      f"two rows in flight per engine, so the softmax ({p.block} * keys "
                      f"clocks) and the fetch and drain latencies overlap the next row's "
                      f"scores (1.08x the MAC bound measured on one engine, block 4, "
                      f"head_dim 32)",
        "bandwidth": f"per engine: one word of K a clock while it computes scores, one word of V "
                     f"a clock during P.V, {p.block * p.chunks} words of Q per row, two words "
                     f"(consecutive tokens, from the memories' even and odd banks) a read; each "
                     f"read port answers one read a clock to engines e = port mod read_ports "
                     f"(round robin, wait <= engines / read_ports - 1 cycles)",
        "load_cycles": "one word a clock on each of q, k, v (words_per_token per token)",
        "output_cycles": "one word a clock once the batch is computed",
        "golden": "sim.golden.encoder.attention_int with token_mask(length, block=, window=, "
                  "n_global=, causal=)",
    }


def _resources(p: dict) -> dict:
    """Fit check from the elaborated netlist (``gen.resources.netlist_resources``): every
    product (GEMM PEs, requantizer parts, the softmax's), every memory (Q, K, V, O; each
    engine's row, probability, query/key stores and softmax buffers and tables). LUT factor
    1.0: not fitted to synthesis (the figures in ``docs/blocks/attention_unit.md`` are)."""
    return netlist_resources(_build(p), lut_factor=1.0)


def _bench(argv: list[str]) -> int:
    from sim.bench_attention_unit import main
    return main(argv)


BLOCK = BlockSpec(
    name="attention_unit",
    summary="Block-sparse multi-head attention of variable-length batches: scheduler, "
            "engines (GEMM core + softmax), Q/K/V/O block RAM",
    params=params_from(UnitParams),
    build=_build,
    param_class=UnitParams,
    figures=_figures,
    ports={
        "desc": "one beat per sequence of the batch: length (1..max_len tokens); last on the "
                "batch's final sequence",
        "q": "Q token rows, hidden / block words of block int8 each, sequence after sequence",
        "k": "K token rows, as q",
        "v": "V token rows, as q",
        "o": "the attention output (heads concatenated) in the same order; last on the "
             "batch's final word",
        "quant": "scores_multiplier/shift/zero_point and context_multiplier/shift/zero_point "
                 "(TFLite requantizations to int8); held during a batch",
    },
    tb_module="sim.tb.attention_unit_tb",
    sim_configs=({"block": 4, "head_dim": 8, "heads": 2, "max_len": 16, "max_tokens": 48,
                  "max_seqs": 4, "engines": 2, "lookahead": 4},),
    bench=_bench,
    resources=_resources,
    demo_simulator="verilator",
)
