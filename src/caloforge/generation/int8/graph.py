"""The quantizable layers of an exported generator graph: their labels and their work."""

from __future__ import annotations

import ast
import contextlib
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

__all__ = ["ONNX_LAYER_OPS", "labelled", "layer_labels", "multiply_adds"]

ONNX_LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def layer_labels(model: onnx.ModelProto) -> dict[str, str]:
    """label -> ONNX node name of the quantizable layers, labels from the torch module path
    the exporter records (e.g. `generator.convs.1`), or the node name."""
    labels: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in ONNX_LAYER_OPS:
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        label = node.name
        with contextlib.suppress(ValueError, SyntaxError):
            recorded = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
            scopes = [s for s in recorded if s]
            if len(scopes) >= 2:
                label = f"{scopes[-2]}/{scopes[-1]}"
        label = re.sub(r"^(g|generator)\.", "generator.", label)
        while label in labels:
            label += "'"
        labels[label] = node.name
    return labels


def multiply_adds(model: onnx.ModelProto) -> dict[str, float]:
    """ONNX node name -> multiply-adds per shower (batch axis first) of each layer (Conv,
    ConvTranspose, Gemm, MatMul) whose shapes are known past the batch axis."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}  # one shower's
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim[1:]  # past the batch axis
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [1, *(d.dim_value for d in dims)]
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    counts: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type not in ONNX_LAYER_OPS or len(node.input) < 2:
            continue
        x, y = shapes.get(node.input[0]), shapes.get(node.output[0])
        w = weights.get(node.input[1])
        if x is None or y is None or w is None:
            continue
        if node.op_type == "Conv":  # weights (out, in / groups, *kernel)
            macs = math.prod(y) * math.prod(w[1:])
        elif node.op_type == "ConvTranspose":  # weights (in, out / groups, *kernel)
            macs = math.prod(x) * math.prod(w[1:])
        elif not any(a.name == "transA" and a.i for a in node.attribute):  # Gemm, MatMul
            macs = math.prod(y) * x[-1]  # each output a dot product over the last axis
        else:  # the batch axis is not first
            continue
        counts[node.name] = float(macs)
    return counts


def labelled(labels: Mapping[str, str], by_node: Mapping[str, float]) -> dict[str, float]:
    """`by_node` (node name -> value) by layer label."""
    return {label: by_node[node] for label, node in labels.items() if node in by_node}
