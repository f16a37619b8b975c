"""Recognise hand-written integer shifts by running them: pad+slice+cat, slice assignment, roll, indexing.

People write the grouped shift in many ways (``F.pad`` + per-group slices + ``torch.cat``;
``torch.zeros_like`` + slice assignment per group; per-group ``torch.roll`` + ``cat``; index
tensors), with groups of any size in any order. After ``torch.export`` these are all subgraphs
made only of *data-movement* ops (each output element is a copy of one input element or a fill
constant). Instead of matching op sequences, this pass:

1. takes each data-movement node ``Y`` (last node first) and walks back through data-movement ops
   to the nodes ``X`` of ``Y``'s shape that all of its data comes from (the region's only dynamic
   input; index tensors, masks and fills are constants), nearest first;
2. runs the region on probe tensors holding each element's own coordinates (and two constant
   probes that tell copied elements from fills), which says for every output element where it
   came from;
3. accepts the first region where every channel reads its own channel at one constant
   ``(dy, dx)`` with zero fill outside the image, or wraps around (``torch.roll``) with no fill.

Look-alikes fail step 1 (a scale or any arithmetic is not data movement) or step 3 (channels
reordered, rolls along the channel axis, replicate padding, channels left empty). Accepted
regions become ``ecnn_import::int_shift2d``. A circular shift whose table is not a grouped one is
left alone: ``sparse_shift2d`` only zero-pads, and TVM converts the roll correctly as it is.
"""
from __future__ import annotations

import torch
from torch import fx
from torch.export import ExportedProgram

from .canonical_ops import INT_SHIFT
from .fx_graph import ExportedGraph, is_data_movement, packet, shape_of, tensor_meta
from .shift_tables import match_grouped

aten = torch.ops.aten
MAX_REGION_NODES = 4096


def region_pattern(region: list[fx.Node]) -> str:
    """Name the idiom for the report from the ops it used."""
    ops = {packet(n) for n in region}
    if ops & {aten.slice_scatter, aten.select_scatter, aten.index_put, aten.scatter, aten.copy}:
        return "slice-assign"
    if aten.constant_pad_nd in ops:
        return "pad-slice-cat"
    if ops & {aten.roll, aten.index_select, aten.index, aten.gather}:
        return "roll-index"
    return "slice-cat"


def candidate_sources(graph: ExportedGraph, sink: fx.Node, order: dict):
    """Nodes all of ``sink``'s data flows through, of ``sink``'s shape, via data movement only.

    Expands the latest node of the frontier; each time the frontier is a single node of the
    sink's shape, yields it with the region between (in graph order), nearest first. Stops at
    the first op that is not data movement.
    """
    shape = shape_of(sink)
    region = {sink}
    frontier = set(graph.dynamic_inputs(sink))
    while frontier and len(region) < MAX_REGION_NODES:
        if len(frontier) == 1:
            (source,) = frontier
            if shape_of(source) == shape:
                yield source, sorted(region, key=order.__getitem__)
        node = max(frontier, key=order.__getitem__)
        if not is_data_movement(node):
            return
        frontier.remove(node)
        region.add(node)
        frontier.update(graph.dynamic_inputs(node))


def _coordinates(shape, dtype) -> list[torch.Tensor]:
    grids = torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij")
    return [g.to(dtype) for g in grids]


def probe_offsets(graph: ExportedGraph, region, source) -> tuple[torch.Tensor, str] | None:
    """``([C, 2] int64 (dy, dx), padding_mode)`` if the region is a per-channel shift, else None."""
    meta = tensor_meta(source)
    if meta.dim() != 4 or not meta.dtype.is_floating_point:
        return None
    if max(meta.shape) > 2 / torch.finfo(meta.dtype).eps:
        return None  # coordinates must be exact in the probe dtype

    def run(probe):
        out = graph.run_region(region, source, probe)
        return out if isinstance(out, torch.Tensor) and out.shape == meta.shape else None

    shape, dtype = tuple(meta.shape), meta.dtype
    ones = torch.ones(shape, dtype=dtype)
    fill_probes = [run(ones), run(2 * ones)]
    coordinate_probes = [run(c) for c in _coordinates(shape, dtype)]
    if any(p is None for p in fill_probes + coordinate_probes):
        return None
    copied = (fill_probes[0] == 1) & (fill_probes[1] == 2)
    filled = (fill_probes[0] == 0) & (fill_probes[1] == 0)
    if not bool((copied | filled).all()):
        return None  # some element is neither a copy nor a zero: not pure data movement
    n, c, h, w = _coordinates(shape, torch.int64)
    src_n, src_c, src_h, src_w = (p.to(torch.int64) for p in coordinate_probes)
    if not bool(((src_n == n) & (src_c == c))[copied].all()):
        return None  # reads another batch element or another channel
    if not bool(copied.flatten(2).any(2).all()):
        return None  # a channel with no data left in it is not a shift
    dy, dx = src_h - h, src_w - w
    zero_padded = _zero_padded_offsets(dy, dx, copied, shape)
    if zero_padded is not None:
        return zero_padded, "zeros"
    if bool(copied.all()):
        circular = _circular_offsets(dy, dx, shape)
        if circular is not None:
            return circular, "circular"
    return None


def _per_channel_constant(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor | None:
    """The per-channel value of ``values`` over ``where`` if it is the same everywhere, else None."""
    big = torch.iinfo(torch.int64).max
    low = torch.where(where, values, big).amin((0, 2, 3))
    high = torch.where(where, values, -big).amax((0, 2, 3))
    return low if bool((low == high).all()) else None


def _zero_padded_offsets(dy, dx, copied, shape):
    oy, ox = _per_channel_constant(dy, copied), _per_channel_constant(dx, copied)
    if oy is None or ox is None:
        return None
    _, _, height, width = shape
    rows = torch.arange(height)[None, :] + oy[:, None]  # [C, H]
    cols = torch.arange(width)[None, :] + ox[:, None]
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    if not bool((copied == inside[None]).all()):
        return None  # a copy where zero fill was due, or the reverse
    return torch.stack([oy, ox], 1)


def _circular_offsets(dy, dx, shape):
    _, _, height, width = shape
    oy = _per_channel_constant(dy % height, torch.ones_like(dy, dtype=torch.bool))
    ox = _per_channel_constant(dx % width, torch.ones_like(dx, dtype=torch.bool))
    if oy is None or ox is None:
        return None
    # Smallest representative, so that small grouped tables compare as such.
    oy = torch.where(oy > height // 2, oy - height, oy)
    ox = torch.where(ox > width // 2, ox - width, ox)
    return torch.stack([oy, ox], 1)


def find_shift(graph: ExportedGraph, sink: fx.Node, order: dict):
    """``(source, region, [C, 2] table, padding_mode)`` of the nearest shift ending at ``sink``, or None.

    Regions that move nothing (copies) and circular shifts we cannot express are passed over.
    """
    for source, region in candidate_sources(graph, sink, order):
        result = probe_offsets(graph, region, source)
        if result is None:
            continue
        table, padding_mode = result
        if not bool(table.any()):
            continue
        if padding_mode == "circular" and match_grouped(table.numpy(), shape_of(sink)[2:]) is None:
            continue
        return source, region, table, padding_mode
    return None


def recognize_data_movement_shifts(ep: ExportedProgram) -> ExportedProgram:
    """Rewrite every hand-written integer shift in ``ep`` (in place) to ``ecnn_import::int_shift2d``."""
    graph = ExportedGraph(ep)
    nodes = graph.nodes()
    order = {node: i for i, node in enumerate(nodes)}
    covered: set[fx.Node] = set()
    for sink in reversed(nodes):
        shape = shape_of(sink)
        if sink in covered or not is_data_movement(sink) or shape is None or len(shape) != 4:
            continue
        found = find_shift(graph, sink, order) if graph.is_dynamic(sink) else None
        if found is not None:
            source, region, table, padding_mode = found
            graph.replace(sink, INT_SHIFT, (source, table.flatten().tolist(), padding_mode), region_pattern(region))
            covered.update(region)
    return graph.finish()
