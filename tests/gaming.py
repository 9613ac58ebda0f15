"""Copies of an ONNX classifier that try to look harder to fool without being so (protocol v3's tests).

Each copy appends a few nodes after the model's output, so it keeps the source's weights and card:
- `temperature`: logits / t (t = 4 squashes confidence, t = 1/4 sharpens it), every prediction kept;
- `clipped`: logits clipped to [-c, c], which ties the top logits of most images;
- `constant`: always the same answer (class 1); `uniform`: every class equally likely;
- `unconvertible`: adds the zeros of a ScatterND node, which onnx2torch cannot convert, so the model
  has no PyTorch form and escapes the gradient attacks; `nan`: NaN for every image;
- `rounded`: rounds its input to 8 bits first, which changes no 8-bit image (every fooling image and
  real digit is one) but makes the gradient zero everywhere, so gradient ascent cannot move.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)
    )


def _tail(kind: str, raw: str, out: str, classes: int, value: float | None) -> list[onnx.NodeProto]:
    """The nodes from the source's output `raw` to the copy's output `out`."""
    if kind == "temperature":
        return [_const("t", value), helper.make_node("Div", [raw, "t"], [out])]
    if kind == "clipped":
        return [
            _const("lo", -value),
            _const("hi", value),
            helper.make_node("Clip", [raw, "lo", "hi"], [out]),
        ]
    if kind in ("constant", "uniform", "nan"):
        scale = np.nan if kind == "nan" else 0.0
        offset = np.zeros(classes, dtype=np.float32)
        if kind == "constant":
            offset[1] = 10.0
        return [
            _const("scale", scale),
            _const("offset", offset),
            helper.make_node("Mul", [raw, "scale"], ["scaled"]),
            helper.make_node("Add", ["scaled", "offset"], [out]),
        ]
    if kind == "unconvertible":
        return [
            _const("zeros", np.zeros(classes)),
            helper.make_node(
                "Constant",
                [],
                ["where"],
                value=numpy_helper.from_array(np.array([[0]], dtype=np.int64), "where"),
            ),
            _const("update", [0.0]),
            helper.make_node("ScatterND", ["zeros", "where", "update"], ["scattered"]),
            helper.make_node("Add", [raw, "scattered"], [out]),
        ]
    raise ValueError(f"unknown kind {kind!r}")


def _rounded_input(graph: onnx.GraphProto) -> None:
    """Round(x * 255) / 255 in front of the source's first node."""
    x = graph.input[0].name
    for node in graph.node:
        node.input[:] = ["x_rounded" if i == x else i for i in node.input]
    head = [
        _const("k255", 255.0),
        helper.make_node("Mul", [x, "k255"], ["x255"]),
        helper.make_node("Round", ["x255"], ["x_whole"]),
        helper.make_node("Div", ["x_whole", "k255"], ["x_rounded"]),
    ]
    for i, node in enumerate(head):
        graph.node.insert(i, node)


def gamed_copy(source: Path, out: Path, kind: str, value: float | None = None) -> Path:
    """`source` with `kind`'s nodes after its output (before its input for `rounded`), saved to `out`
    (its card kept)."""
    model = onnx.load(str(source))
    graph = model.graph
    if kind == "rounded":
        _rounded_input(graph)
        onnx.checker.check_model(model)
        onnx.save(model, str(out))
        return out
    output = graph.output[0]
    classes = output.type.tensor_type.shape.dim[1].dim_value
    raw = f"{output.name}_source"
    for node in graph.node:
        node.output[:] = [raw if o == output.name else o for o in node.output]
    graph.node.extend(_tail(kind, raw, output.name, classes, value))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out
