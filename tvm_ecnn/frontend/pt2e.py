"""Converters for the q/dq ops of a PT2E-quantized program (torchao's ``convert_pt2e``).

``quantized_decomposed::quantize_per_tensor`` / ``dequantize_per_tensor`` / ``dequantize_per_channel``
become ``R.quantize`` / ``R.dequantize`` with constant scales and zero points (a correct fp32 program as
it is); ``tvm_ecnn.quantize.pt2e.fold_pt2e`` then folds each ``q -> dq`` pair and each dequantized
weight into the int8 ops of ``tvm_ecnn.quantize`` (docs/int8-quantization.md, "PT2E").

Supported: per-tensor int8 / uint8 activations over their full range (``[-128, 127]`` / ``[0, 255]``,
any zero point), scales given as numbers (``.default``) or constant tensors (``.tensor``), and
per-channel or per-tensor int8 weights with zero point 0. Anything else is refused before conversion,
naming the node.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import fx
from torch.utils import _pytree as pytree
from tvm import relax

from tvm_ecnn.compiler_pass.fx_graph import ExportedGraph

NAMESPACE = "quantized_decomposed"
FULL_RANGE = {torch.int8: (-128, 127), torch.uint8: (0, 255)}
WEIGHT_DTYPES = (torch.int8,)


def is_pt2e(model) -> bool:
    """Whether ``model`` (a ``torch.export`` program, or ``convert_pt2e``'s module) holds PT2E q/dq ops: it is int8
    already, and ``from_torch`` returns its int8 module."""
    graph = getattr(model, "graph", None)
    return isinstance(graph, fx.Graph) and any(getattr(n.target, "namespace", None) == NAMESPACE
                                               for n in graph.nodes if n.op == "call_function")


def output_steps(model) -> list[float | None]:
    """Per output of a PT2E ``model``, its quantization step (the scale of the final per-tensor dequantize; None
    where it is not one): the unit of the agreement criterion, within one step of PyTorch on every element."""
    output = next(n for n in model.graph.nodes if n.op == "output")
    steps = []
    for value in pytree.tree_leaves(output.args[0]):
        target = getattr(value, "target", None)
        dequantized = (getattr(target, "namespace", None) == NAMESPACE
                       and target.__name__ == "dequantize_per_tensor.default")
        steps.append(float(value.args[1]) if dequantized else None)
    return steps


def _scalar(value) -> float:
    return float(torch.as_tensor(value).reshape(()).item()) if not isinstance(value, (int, float)) else float(value)


class Pt2eConverters:
    """Converters for one exported graph (scales and zero points are evaluated as constants)."""

    OWNED = {"quantize_per_tensor.default": "_quantize", "quantize_per_tensor.tensor": "_quantize",
             "dequantize_per_tensor.default": "_dequantize", "dequantize_per_tensor.tensor": "_dequantize",
             "dequantize_per_channel.default": "_dequantize_per_channel"}

    def __init__(self, graph: ExportedGraph):
        self.graph = graph

    def convert_map(self) -> dict:
        return {key: getattr(self, method) for key, method in self.OWNED.items()}

    def unsupported(self, node: fx.Node) -> str | None:
        name = node.target.__name__
        if getattr(node.target, "namespace", None) != NAMESPACE:
            return None
        if name not in self.OWNED:
            return (f"PT2E op {NAMESPACE}::{name} is not supported (per-tensor int8/uint8 activations and "
                    "per-channel int8 weights are)")
        _, scale, zero_point, *rest = node.args
        if self.graph.is_dynamic(scale) or self.graph.is_dynamic(zero_point):
            return "scales and zero points must be constants (dynamic quantization is not supported)"
        if name.startswith("dequantize_per_channel"):
            dtype = rest[3]  # (axis, quant_min, quant_max, dtype): any weight range, the int8 values are used
            zeros = torch.as_tensor(self.graph.value(zero_point))
            if dtype not in WEIGHT_DTYPES or self.graph.is_dynamic(node.args[0]) or bool((zeros != 0).any()):
                return "only constant int8 weights with zero point 0 are supported per channel"
            return None
        low, high, dtype = rest[:3]
        if FULL_RANGE.get(dtype) != (low, high):
            return (f"activations must use the full range of int8 [-128, 127] or uint8 [0, 255], got {dtype} "
                    f"[{low}, {high}]")
        return None

    # ------------------------------------------------------------------ converters
    def _qparams(self, node: fx.Node):
        scale = np.float32(_scalar(self.graph.value(node.args[1])))
        zero_point = int(_scalar(self.graph.value(node.args[2])))
        return relax.const(scale, "float32"), zero_point

    def _quantize(self, node: fx.Node, importer) -> relax.Var:
        scale, zero_point = self._qparams(node)
        dtype = str(node.args[5]).removeprefix("torch.")
        call = relax.op.quantize(importer.env[node.args[0]], scale, relax.const(zero_point, dtype), -1, dtype)
        return importer.block_builder.emit(call)

    def _dequantize(self, node: fx.Node, importer) -> relax.Var:
        scale, zero_point = self._qparams(node)
        q = importer.env[node.args[0]]
        call = relax.op.dequantize(q, scale, relax.const(zero_point, str(q.ty.dtype)), -1, "float32")
        return importer.block_builder.emit(call)

    def _dequantize_per_channel(self, node: fx.Node, importer) -> relax.Var:
        weight, scales, zero_points, axis = node.args[:4]
        values = torch.as_tensor(self.graph.value(weight))
        scale = relax.const(np.asarray(torch.as_tensor(self.graph.value(scales)), dtype="float32"))
        zeros = relax.const(np.zeros(scale.value.numpy().shape, dtype="int8"))
        call = relax.op.dequantize(relax.const(values.numpy()), scale, zeros, int(axis) % values.ndim, "float32")
        return importer.block_builder.emit(call)
