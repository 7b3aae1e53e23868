"""The encoder accelerator's weight image: one binary file that its read port reads.

:func:`build_image` lays a ``QuantizedEncoder`` out for an array configuration
(``hw.encoder.params.EncoderParams``); :class:`ExternalMemory` is what the testbenches put
behind the read port (random latency and gaps). The layout (``docs/blocks/encoder.md``):

* The image is a sequence of little-endian **port words** of ``port_width`` bits; addresses
  count words. Every record row starts on a word boundary and is padded to whole words.
* Word 0: the **program**, one 512-bit descriptor per pass (``DESCRIPTOR_FIELDS``, packed
  from bit 0), ending with an ``end`` descriptor. The sequencer runs it once per batch: the
  embedding LayerNorm, then per layer Q, K, V, attention, output projection, ADD, LayerNorm,
  FFN1, GELU, FFN2, ADD, LayerNorm, then pooling.
* Per GEMM (``paddr``): per column tile of ``cols`` output channels, three rows: ``cols``
  int32 biases, ``cols`` int32 multipliers, ``cols`` int8 shifts. (``addr``): per column tile,
  ``K`` rows of ``cols`` int8 weights, ``W[k, n0:n0 + cols]``, in the order the GEMM reads them.
* Per LayerNorm (``paddr``): ``hidden`` 128-bit channel records: multiplier (int32), bias
  (int32), shift (int8), negate (uint8).
* Last, for the host's embedding lookup (the accelerator never reads them): the word,
  position and token-type tables, int8, one row of ``hidden`` bytes each, padded to words.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from hw.encoder.params import (DESCRIPTOR_BITS, DESCRIPTOR_FIELDS, EMBEDDING_LN_TAG,
                               LN_RECORD_BITS, MEMORIES, OPS, EncoderParams, stage_tag)

__all__ = ["Image", "build_image", "pack_descriptor", "unpack_descriptor", "ExternalMemory",
           "embedding_sums"]

_MEMORY = {name: n for n, name in enumerate(MEMORIES)}


def pack_descriptor(**values) -> int:
    """The 512-bit descriptor of ``values`` (missing fields 0), as an integer."""
    unknown = set(values) - {name for name, _, _ in DESCRIPTOR_FIELDS}
    if unknown:
        raise KeyError(f"no such descriptor field(s): {sorted(unknown)}")
    bits, offset = 0, 0
    for name, width, signed in DESCRIPTOR_FIELDS:
        value = int(values.get(name, 0))
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        if not lo <= value <= hi:
            raise ValueError(f"descriptor field {name}: {value} does not fit {width} bits")
        bits |= (value & ((1 << width) - 1)) << offset
        offset += width
    return bits


def unpack_descriptor(bits: int) -> dict:
    out, offset = {}, 0
    for name, width, signed in DESCRIPTOR_FIELDS:
        value = (bits >> offset) & ((1 << width) - 1)
        if signed and value >> (width - 1):
            value -= 1 << width
        out[name] = value
        offset += width
    return out


class _Writer:
    """Appends word-aligned rows to the image."""

    def __init__(self, port_width: int):
        self.port_width = port_width
        self.words: list[int] = []

    def row(self, bits: int, width: int) -> None:
        n = -(-width // self.port_width)
        mask = (1 << self.port_width) - 1
        for w in range(n):
            self.words.append((bits >> (w * self.port_width)) & mask)

    @property
    def addr(self) -> int:
        return len(self.words)


def _pack(values, width: int) -> int:
    bits = 0
    for n, v in enumerate(values):
        bits |= (int(v) & ((1 << width) - 1)) << (n * width)
    return bits


def _scalar(x) -> int:
    return int(np.asarray(x).reshape(()))


@dataclass
class Image:
    """A weight image: its words, the same as bytes, and the layout (for the manifest)."""

    params: EncoderParams
    words: list[int]
    layout: dict

    def to_bytes(self) -> bytes:
        size = self.params.port_width // 8
        return b"".join(w.to_bytes(size, "little") for w in self.words)

    @classmethod
    def from_bytes(cls, data: bytes, params: EncoderParams, layout: dict | None = None) -> Image:
        size = params.port_width // 8
        words = [int.from_bytes(data[i:i + size], "little") for i in range(0, len(data), size)]
        return cls(params, words, layout or {})

    def descriptors(self) -> list[dict]:
        """The program, decoded."""
        out, n = [], self.params.descriptor_words
        for d in range(0, len(self.words), n):
            bits = sum(w << (i * self.params.port_width)
                       for i, w in enumerate(self.words[d:d + n]))
            desc = unpack_descriptor(bits)
            out.append(desc)
            if desc["op"] == OPS["end"]:
                return out
        raise ValueError("the image's program has no end descriptor")


def build_image(model, params: EncoderParams) -> Image:
    """Lay ``model`` (a ``QuantizedEncoder``) out for the array of ``params``."""
    p = params
    hidden, ffn = model.hidden, model.ffn
    if (hidden, ffn, model.num_layers) != (p.hidden, p.ffn, p.layers):
        raise ValueError("params do not describe this model (use EncoderParams.for_model)")
    program: list[dict] = []
    records = _Writer(p.port_width)
    layout: dict = {"port_width": p.port_width, "descriptor_words": p.descriptor_words,
                    "records": []}

    def note(name, addr):
        layout["records"].append({"name": name, "addr": addr, "words": records.addr - addr})

    def gemm(name, lin, src, dst, tag):
        weight = np.asarray(lin.weight, np.int64)
        k, n = weight.shape
        if int(lin.a_offset) != 0:
            raise ValueError(f"{name}: the encoder's GEMMs take a_offset 0")
        mult = np.broadcast_to(lin.out.multiplier, (n,))
        shift = np.broadcast_to(lin.out.shift, (n,))
        paddr = records.addr
        for n0 in range(0, n, p.cols):
            cols = slice(n0, n0 + p.cols)
            records.row(_pack(lin.bias[cols], 32), 32 * p.cols)
            records.row(_pack(mult[cols], 32), 32 * p.cols)
            records.row(_pack(shift[cols], 8), 32 * p.cols)
        note(f"{name}.params", paddr)
        addr = records.addr
        for n0 in range(0, n, p.cols):
            for kk in range(k):
                records.row(_pack(weight[kk, n0:n0 + p.cols], 8), 8 * p.cols)
        note(f"{name}.weight", addr)
        top = 1 << (lin.out.bits - 1)
        program.append(dict(op=OPS["gemm"], src=_MEMORY[src], dst=_MEMORY[dst], tag=tag,
                            k=k, n=n, addr=addr, paddr=paddr, zp0=lin.out.zero_point,
                            act_min=-top, act_max=top - 1))

    def layernorm(name, ln, src, dst, tag):
        paddr = records.addr
        for c in range(hidden):
            bits = (_pack([ln.multiplier[c], ln.bias[c]], 32)
                    | (int(ln.shift[c]) & 0xFF) << 64 | int(bool(ln.negate[c])) << 72)
            records.row(bits, LN_RECORD_BITS)
        note(f"{name}.params", paddr)
        program.append(dict(op=OPS["layernorm"], src=_MEMORY[src], dst=_MEMORY[dst], tag=tag,
                            k=hidden, n=hidden, paddr=paddr, zp0=ln.zero_point))

    def add(a, src, src2, dst, tag):
        if np.any(np.asarray(a.offsets) != 0) or len(a.multipliers) != 2 \
                or a.left_shift != 15 or a.bits != 16:
            raise ValueError("the encoder's residual ADDs take two int16 inputs with offset 0")
        top = 1 << (a.bits - 1)
        program.append(dict(op=OPS["add"], src=_MEMORY[src], src2=_MEMORY[src2],
                            dst=_MEMORY[dst], tag=tag, k=hidden, n=hidden,
                            mul0=a.multipliers[0], sh0=a.shifts[0], mul1=a.multipliers[1],
                            sh1=a.shifts[1], mul2=a.out_multiplier, sh2=a.out_shift,
                            zp0=a.out_offset, act_min=-top, act_max=top - 1))

    layernorm("embeddings.ln", model.embeddings.ln, "c", "a", EMBEDDING_LN_TAG)
    for n, layer in enumerate(model.layers):
        def tag(stage, n=n):
            return stage_tag(n, stage)
        pre = f"layer{n}"
        gemm(f"{pre}.q", layer.q, "a", "q", tag("q"))
        gemm(f"{pre}.k", layer.k, "a", "k", tag("k"))
        gemm(f"{pre}.v", layer.v, "a", "v", tag("v"))
        program.append(dict(op=OPS["attention"], src=_MEMORY["q"], dst=_MEMORY["q"],
                            tag=tag("context"), k=hidden, n=hidden,
                            mul0=_scalar(layer.scores.multiplier), sh0=_scalar(layer.scores.shift),
                            zp0=layer.scores.zero_point,
                            mul1=_scalar(layer.context.multiplier),
                            sh1=_scalar(layer.context.shift), zp1=layer.context.zero_point))
        gemm(f"{pre}.o", layer.o, "q", "b", tag("attn_out"))
        add(layer.add1, "a", "b", "c", tag("resid1"))
        layernorm(f"{pre}.ln1", layer.ln1, "c", "a", tag("ln1"))
        gemm(f"{pre}.ffn1", layer.ffn1, "a", "e", tag("ffn1"))
        g = layer.gelu.out
        top = 1 << (g.bits - 1)
        program.append(dict(op=OPS["gelu"], src=_MEMORY["e"], dst=_MEMORY["e"], tag=tag("gelu"),
                            k=ffn, n=ffn, mul0=_scalar(g.multiplier), sh0=_scalar(g.shift),
                            zp0=g.zero_point, act_min=-top, act_max=top - 1))
        gemm(f"{pre}.ffn2", layer.ffn2, "e", "b", tag("ffn2"))
        add(layer.add2, "a", "b", "c", tag("resid2"))
        layernorm(f"{pre}.ln2", layer.ln2, "c", "a", tag("ln2"))
    program.append(dict(op=OPS["pool"], src=_MEMORY["a"], k=hidden, n=hidden))
    program.append(dict(op=OPS["end"]))

    # Embedding tables for the host, then the program in front of everything.
    emb = model.embeddings
    for name in ("word", "position", "token_type"):
        addr = records.addr
        for row in np.asarray(getattr(emb, name), np.int64):
            records.row(_pack(row, 8), 8 * hidden)
        note(f"embeddings.{name}", addr)
    base = len(program) * p.descriptor_words
    words = _Writer(p.port_width)
    for desc in program:
        for key in ("addr", "paddr"):
            if key in desc:
                desc[key] += base
        words.row(pack_descriptor(**desc), DESCRIPTOR_BITS)
    for record in layout["records"]:
        record["addr"] += base
    layout["program"] = {"addr": 0, "descriptors": len(program)}
    layout["words"] = base + records.addr
    layout["bytes"] = layout["words"] * p.port_width // 8
    return Image(p, words.words + records.words, layout)


def embedding_sums(model, ids) -> np.ndarray:
    """The host's part: the int16 embedding sums of ``ids`` (table rows + the 3-input ADD),
    what the accelerator's ``x`` stream takes."""
    from sim.golden.encoder import embed_int
    return embed_int(model, np.asarray(ids, np.int64))[0]


class ExternalMemory:
    """The weight image behind the read port: requests ``(addr, length)`` are answered in
    order, each after a random latency, with random gaps between words (``seed``)."""

    def __init__(self, image: Image, *, latency: tuple[int, int] = (1, 8),
                 gap_prob: float = 0.0, seed: int = 0):
        self.image = image
        self.latency = latency
        self.gap_prob = gap_prob
        self._rng = random.Random(seed)
        self.requests = 0
        self.words_read = 0

    def read(self, addr: int, length: int) -> list[int]:
        if length < 1 or addr < 0 or addr + length > len(self.image.words):
            raise IndexError(f"read of {length} words at {addr} outside the image "
                             f"({len(self.image.words)} words)")
        self.requests += 1
        self.words_read += length
        return self.image.words[addr:addr + length]

    def delay(self) -> int:
        """Idle cycles before a request's first word."""
        return self._rng.randint(*self.latency)

    def gap(self) -> int:
        """Idle cycles before a word."""
        return self._rng.randint(1, 3) if self._rng.random() < self.gap_prob else 0
