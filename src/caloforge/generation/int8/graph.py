"""The quantizable layers of an exported generator graph: their labels and their work."""

from __future__ import annotations

import ast
import contextlib
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

__all__ = ["ONNX_LAYER_OPS", "labelled", "layer_labels", "multiply_adds", "nodes_of"]

ONNX_LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def layer_labels(model: onnx.ModelProto) -> dict[str, tuple[str, ...]]:
    """label -> the ONNX node names of each quantizable layer, in graph order; labels from
    the torch module path the exporter records (e.g. `generator.convs.1/conv3d`), or the
    node name.

    The nodes that read one weight tensor are one layer: a module the graph calls many times
    (flow-match's networks, once per solver evaluation: 38 calls in the shipped model) is
    quantized, or kept fp32, as a whole. Taken call by call it made hundreds of "layers" of
    the same weights, and the guard's search, two quantizations per layer, ran for hours."""
    initializers = {i.name for i in model.graph.initializer}
    by_weight: dict[str, str] = {}
    labels: dict[str, tuple[str, ...]] = {}
    for node in model.graph.node:
        if node.op_type not in ONNX_LAYER_OPS:
            continue
        weight = node.input[1] if len(node.input) > 1 else ""
        if weight in by_weight:
            label = by_weight[weight]
            labels[label] = (*labels[label], node.name)
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        label = node.name
        with contextlib.suppress(ValueError, SyntaxError):
            recorded = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
            scopes = [s for s in recorded if s]
            if len(scopes) >= 2:  # the op's name without the exporter's call count
                label = f"{scopes[-2]}/{re.sub(r'_[0-9]+$', '', scopes[-1])}"
        label = re.sub(r"^(g|generator)\.", "generator.", label)
        while label in labels:
            label += "'"
        labels[label] = (node.name,)
        if weight in initializers:
            by_weight[weight] = label
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


def labelled(
    labels: Mapping[str, tuple[str, ...]], by_node: Mapping[str, float]
) -> dict[str, float]:
    """`by_node` (node name -> value) by layer label, summed over the layer's nodes (labels
    with a node `by_node` lacks are left out)."""
    return {
        label: sum(by_node[node] for node in nodes)
        for label, nodes in labels.items()
        if all(node in by_node for node in nodes)
    }


def nodes_of(labels: Mapping[str, tuple[str, ...]], chosen: Iterable[str]) -> list[str]:
    """The node names of the layers labelled `chosen`."""
    return [node for label in chosen for node in labels[label]]
