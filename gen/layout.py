"""Machine-readable descriptions of port shapes (for manifests and testbenches)."""

from __future__ import annotations

from amaranth import Shape
from amaranth.lib import data

__all__ = ["describe_shape", "flatten_shape"]


def describe_shape(shape) -> dict:
    """JSON description of an Amaranth shape: ``{"width", "signed"}`` for plain integers,
    ``{"struct": {name: {"offset", "shape"}}}`` or ``{"array": {"length", "stride", "shape"}}``
    for ``lib.data`` layouts, each with its total ``width``."""
    if isinstance(shape, data.ArrayLayout):
        elem = describe_shape(shape.elem_shape)
        return {"width": shape.size,
                "array": {"length": shape.length, "stride": elem["width"], "shape": elem}}
    if isinstance(shape, data.StructLayout):
        return {"width": shape.size,
                "struct": {name: {"offset": field.offset, "shape": describe_shape(field.shape)}
                           for name, field in shape}}
    shape = Shape.cast(shape)
    return {"width": shape.width, "signed": shape.signed}


def flatten_shape(desc: dict, prefix: str = "", offset: int = 0) -> list[dict]:
    """Leaf fields of a described shape: name, bit offset, width and signedness."""
    if "struct" in desc:
        leaves = []
        for name, member in desc["struct"].items():
            leaves += flatten_shape(member["shape"], f"{prefix}.{name}" if prefix else name,
                                    offset + member["offset"])
        return leaves
    if "array" in desc:
        arr = desc["array"]
        leaves = []
        for i in range(arr["length"]):
            leaves += flatten_shape(arr["shape"], f"{prefix}[{i}]", offset + i * arr["stride"])
        return leaves
    return [{"name": prefix, "offset": offset, "width": desc["width"], "signed": desc["signed"]}]
