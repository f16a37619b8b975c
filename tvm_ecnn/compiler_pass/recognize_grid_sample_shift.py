"""Recognise the active shift written with ``F.grid_sample`` on a per-channel grid.

The usual PyTorch active shift (Jeon & Kim) folds channels into the batch,
``grid_sample(x.reshape(N*C, 1, H, W), grid, bilinear, zeros)``, and views the result back to
``[N, C, Ho, Wo]``; the grid is computed from the learned offsets, so it is a constant at import
time. kornia-style code (``translate(x.transpose(0, 1), shifts).transpose(0, 1)``) folds them the
other way: channels become the batch and the images the channels, so batch row ``c`` is channel
``c`` of every image. When every channel's grid is a translated (and possibly strided) pixel
lattice, the nodes are one ``active_shift2d`` with that channel's translation; it becomes
``ecnn_import::bilinear_shift2d``. Any other grid (rotation, scaling, per-pixel warps) stays a
``grid_sample`` (converted with the layout fix of bug E, see ``frontend/converters.py``).
"""
from __future__ import annotations

import torch
from torch import fx
from torch.export import ExportedProgram

from .canonical_ops import BILINEAR_SHIFT
from .fx_graph import ExportedGraph, is_view, packet, shape_of

aten = torch.ops.aten
BILINEAR, ZEROS = 0, 0
TOLERANCE = 1e-3  # pixels; grids are computed in float32
SWAP_BATCH_CHANNEL = [1, 0, 2, 3]


def _is_swap(node: fx.Node) -> bool:
    """``x.transpose(0, 1)`` of a 4-D tensor (a ``permute`` after decomposition)."""
    return packet(node) is aten.permute and list(node.args[1]) == SWAP_BATCH_CHANNEL


def _unfolded_source(data: fx.Node, folded: tuple) -> fx.Node | None:
    """Farthest node up a chain of views from ``data`` shaped ``[N, C, H, W]`` with ``N*C`` = folded batch.

    Views keep row-major order, so folded batch row ``b`` is image ``b // C``, channel ``b % C``.
    """
    source, node = None, data
    while True:
        shape = shape_of(node)
        if shape is not None and len(shape) == 4 and shape[0] * shape[1] == folded[0] and shape[2:] == folded[2:]:
            source = node
        if not (is_view(node) and isinstance(node.args[0], fx.Node)):
            return source
        node = node.args[0]


def _swapped_source(data: fx.Node) -> fx.Node | None:
    """``x`` when ``data`` is ``x.transpose(0, 1)`` (up a chain of shape-keeping views), else None."""
    node = data
    while not _is_swap(node):
        if not (is_view(node) and isinstance(node.args[0], fx.Node) and shape_of(node.args[0]) == shape_of(node)):
            return None
        node = node.args[0]
    return node.args[0]


def _view_sink(node: fx.Node, shape: tuple, swapped: bool = False) -> fx.Node | None:
    """First node of ``shape`` down a chain of single-user views from ``node``.

    ``swapped``: the chain must first undo a batch/channel swap, with only shape-keeping views before it.
    """
    while len(node.users) == 1:
        (user,) = node.users
        if swapped and _is_swap(user):
            swapped = False
        elif not is_view(user) or (swapped and shape_of(user) != shape_of(node)):
            return None
        node = user
        if not swapped and shape_of(node) == shape:
            return node
    return None


def _pixels(grid: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Undo grid_sample's [-1, 1] normalisation."""
    grid = grid.to(torch.float64)
    return (grid + 1) / 2 * (size - 1) if align_corners else ((grid + 1) * size - 1) / 2


def _translation(pixels: torch.Tensor, stride: int, padding: int, axis: int) -> torch.Tensor | None:
    """Per-batch-row offset ``t`` with ``pixels[b, i, j] = index * stride - padding + t`` along ``axis``."""
    lattice = torch.arange(pixels.shape[axis], dtype=torch.float64) * stride - padding
    lattice = lattice[:, None] if axis == 1 else lattice[None, :]
    offset = pixels - lattice[None]
    mean = offset.mean((1, 2))
    if float((offset - mean[:, None, None]).abs().max()) > TOLERANCE:
        return None
    return mean


def _stride_padding(size_in: tuple, size_out: tuple, px: torch.Tensor, py: torch.Tensor):
    """Stride from the grid spacing, padding from the output size (``Ho = (H + 2p - 1)//s + 1``)."""
    if size_out[1] > 1:
        step = px[0, 0, 1] - px[0, 0, 0]
    elif size_out[0] > 1:
        step = py[0, 1, 0] - py[0, 0, 0]
    else:
        step = torch.tensor(1.0)
    stride = int(round(float(step)))
    if stride < 1 or abs(float(step) - stride) > TOLERANCE:
        return None
    for padding in range(stride + 1):
        if all((i + 2 * padding - 1) // stride + 1 == o for i, o in zip(size_in, size_out)):
            return stride, padding
    return None


def grid_offsets(graph: ExportedGraph, sampler: fx.Node):
    """``(source, sink, [C, 2] offsets, stride, padding)`` of a per-channel translation grid, or None."""
    data, grid, mode, padding_mode, align_corners = sampler.args
    if mode != BILINEAR or padding_mode != ZEROS or graph.is_dynamic(grid):
        return None
    folded, out_shape = shape_of(data), shape_of(sampler)
    if folded is None or len(folded) != 4:
        return None
    source = _swapped_source(data)
    swapped = source is not None
    if not swapped:
        source = _unfolded_source(data, folded) if folded[1] == 1 else None
    if source is None:
        return None
    n, c, h, w = shape_of(source)
    sink = _view_sink(sampler, (n, c) + out_shape[2:], swapped)
    if sink is None:
        return None
    grid = graph.value(grid)
    if not bool(grid.isfinite().all()):
        return None  # NaN/inf sampling positions: grid_sample's own semantics
    px, py = _pixels(grid[..., 0], w, align_corners), _pixels(grid[..., 1], h, align_corners)
    found = _stride_padding((h, w), out_shape[2:], px, py)
    if found is None:
        return None
    stride, padding = found
    dy, dx = _translation(py, stride, padding, 1), _translation(px, stride, padding, 2)
    if dy is None or dx is None:
        return None
    offsets = torch.stack([dy, dx], 1).view(1 if swapped else n, c, 2)  # batch row b = c, or n * C + c
    if float((offsets - offsets[:1]).abs().max()) > TOLERANCE:
        return None  # the same channel moves differently in different images
    return source, sink, offsets.mean(0).to(torch.float32), stride, padding


def recognize_grid_sample_shift(ep: ExportedProgram) -> ExportedProgram:
    """Rewrite per-channel translation ``grid_sample``s in ``ep`` (in place) to ``ecnn_import::bilinear_shift2d``."""
    graph = ExportedGraph(ep)
    for node in graph.nodes():
        if node.target is not aten.grid_sampler_2d.default:
            continue
        found = grid_offsets(graph, node)
        if found is None:
            continue
        source, sink, offsets, stride, padding = found
        args = (source, offsets.flatten().tolist(), stride, padding)
        graph.replace(sink, BILINEAR_SHIFT, args, "grid-sample")
    return graph.finish()
