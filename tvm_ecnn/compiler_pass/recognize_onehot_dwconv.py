"""Recognise a depthwise convolution whose kernels are one-hot: a shift deployed as a conv.

Runtimes without a shift op get one by a depthwise kxk convolution whose kernel for channel c is
1 at tap (i, j) and 0 elsewhere: ``out[h, w] = x[h + i*d - p, w + j*d - p]``. Such a conv is an
integer shift with zero fill and k*k times the work; it becomes ``ecnn_import::int_shift2d``.
A depthwise conv with any other kernel (two taps, a weight other than exactly 1, a bias) is a
real convolution and stays.
"""
from __future__ import annotations

import torch
from torch import fx
from torch.export import ExportedProgram

from .canonical_ops import INT_SHIFT
from .fx_graph import ExportedGraph, shape_of

aten = torch.ops.aten


def onehot_offsets(graph: ExportedGraph, conv: fx.Node) -> torch.Tensor | None:
    """``[C, 2]`` (dy, dx) of a same-size stride-1 depthwise conv with one-hot kernels, else None."""
    x, weight, bias, stride, padding, dilation, transposed, _, groups = conv.args
    in_shape, out_shape = shape_of(x), shape_of(conv)
    if in_shape is None or len(in_shape) != 4 or out_shape != in_shape or transposed:
        return None
    if groups != in_shape[1] or any(s != 1 for s in stride) or graph.is_dynamic(weight):
        return None
    kernel = graph.value(weight)
    if kernel.shape[:2] != (in_shape[1], 1):
        return None
    if bias is not None and (graph.is_dynamic(bias) or bool(graph.value(bias).any())):
        return None
    taps = kernel.flatten(1)
    if not bool(((taps == 0) | (taps == 1)).all()) or not bool((taps.sum(1) == 1).all()):
        return None
    tap = taps.argmax(1)
    i, j = tap // kernel.shape[3], tap % kernel.shape[3]
    return torch.stack([i * dilation[0] - padding[0], j * dilation[1] - padding[1]], 1)


def recognize_onehot_dwconv(ep: ExportedProgram) -> ExportedProgram:
    """Rewrite one-hot depthwise convolutions in ``ep`` (in place) to ``ecnn_import::int_shift2d``."""
    graph = ExportedGraph(ep)
    for node in graph.nodes():
        if node.target is not aten.convolution.default:
            continue
        table = onehot_offsets(graph, node)
        if table is not None and bool(table.any()):
            graph.replace(node, INT_SHIFT, (node.args[0], table.flatten().tolist(), "zeros"), "onehot-dwconv")
    return graph.finish()
