"""Registry of Lutra's blocks.

Each module in this package describes one block with a module-level ``BLOCK = BlockSpec(...)``;
modules are discovered here, so adding a block never edits a shared list.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Param", "BlockSpec", "blocks", "get_block", "params_from"]


@dataclass(frozen=True)
class Param:
    """One generation-time parameter: its TOML key / CLI flag, type, default and bounds."""

    name: str
    kind: type                      # int, float, bool or str
    default: object
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def params_from(cls, *, exclude=()) -> tuple[Param, ...]:
    """The ``Param`` of every field of a block's parameter dataclass (``hw/<block>/params.py``)
    but those named in ``exclude``: name, type, default, help text and bounds, declared once
    there."""
    from hw.common.params import field_kind
    return tuple(Param(f.name, field_kind(f), f.default, f.metadata["help"],
                       lo=f.metadata["lo"], hi=f.metadata["hi"], choices=f.metadata["choices"])
                 for f in dataclasses.fields(cls) if f.name not in exclude)


@dataclass(frozen=True)
class BlockSpec:
    """How ``gen`` elaborates one block, documents it and tests it.

    ``build(params)`` receives the validated parameter dict and returns the Amaranth component;
    it may raise ``TypeError``/``ValueError`` naming a parameter for cross-parameter constraints.
    ``figures(component)`` returns latency/throughput/resource figures for the manifest.
    ``ports`` gives the meaning of each interface member, for the manifest.
    ``tb_module`` is the cocotb test module run by ``lutra sim``; ``sim_configs`` the parameter
    sets its regression covers by default (each merged over the defaults).
    ``bench(argv) -> int`` prints the block's figures (``lutra bench NAME``), if any.
    ``resources(params) -> dict`` estimates what a configuration needs on an FPGA, for
    ``lutra build``'s fit check: ``multipliers`` (a list of ``(a_bits, b_bits, count)``),
    ``ram_bits`` and ``lcs`` (LUT4-sized logic cells), if the block gives one.
    ``param_class`` is the block's parameter dataclass (``hw/<block>/params.py``): the
    configuration is validated by constructing it (``parameters(params)``), never by building a
    component; ``make_params(params)`` builds it when the parameter dict holds more than its
    fields (the encoder's model choice).
    ``selftest(params, seed) -> dict`` gives ``{"inputs": {stream: [payload, ...]},
    "outputs": {stream: [payload, ...]}}`` computed by the golden model, for the board
    self-test bitstream, if the block gives one; a block with a read port (``req``/``rdata``)
    adds ``"memory": [word, ...]``, served to it from a ROM (``fpga.selftest.RomBacked``).
    """

    name: str
    summary: str
    params: tuple[Param, ...]
    build: Callable
    param_class: type
    figures: Callable
    ports: dict
    tb_module: str
    sim_configs: tuple[dict, ...] = ({},)
    bench: Callable | None = None
    resources: Callable | None = None
    selftest: Callable | None = None
    #: The simulator ``lutra demo`` runs this block's regression under; ``None``: the quickest
    #: to build (Icarus when present). Whole designs (the attention unit, the encoder) name
    #: Verilator, whose compiled model runs them in seconds where Icarus takes many minutes.
    demo_simulator: str | None = None
    #: ``extra_outputs(params, directory) -> dict``: files the block writes beside its Verilog
    #: (the encoder's weight image), returning what the manifest says of them.
    extra_outputs: Callable | None = None
    make_params: Callable | None = None
    extra: dict = field(default_factory=dict)

    def parameters(self, params: dict):
        """The block's parameter dataclass for the parameter dict ``params`` (validated on
        construction: ``TypeError``/``ValueError`` name the parameter)."""
        if self.make_params is not None:
            return self.make_params(dict(params))
        return self.param_class(**params)

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


def blocks() -> dict[str, BlockSpec]:
    """Every block, by name, in discovery order."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "BLOCK", None)
        if isinstance(spec, BlockSpec):
            found[spec.name] = spec
    return found


def get_block(name: str) -> BlockSpec:
    """The block called ``name``; ``KeyError`` with the known names otherwise."""
    known = blocks()
    if name not in known:
        raise KeyError(f"unknown block {name!r} (known: {', '.join(known)})")
    return known[name]
