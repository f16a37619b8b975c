"""The TOPI ``conv2d_nchw`` / ``group_conv2d_nchw`` block as the CPU conv schedules see it: matched in a
fused function, with its padding stage, its epilogue (bias/activation/residual) and its size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
from tvm import tirx
from tvm.s_tir import Schedule

from ._blocks import extents, trivially_bound
from .cpu_common import kinds, packed_weight_read, read_index, root_blocks
from .cpu_loop_nest import schedule_block

CONV_PARALLEL_MIN_MACS = 1 << 16
"""Multiply-adds below which a conv2d stays serial (squeeze-excitation 1x1 convs on 1x1 maps):
waking the thread pool costs more than it saves."""


@dataclass
class Conv2d:
    """A TOPI ``conv2d_nchw`` / ``group_conv2d_nchw`` reduction block ``out[n,f,y,x] += d[...] * w[f,c,ry,rx]``."""

    block: object
    data: object  # the buffer Vars
    weight: object
    out_channels: int
    out_per_group: int  # output channels sharing one input scalar (1: depthwise)
    unit_stride: bool  # along the row: contiguous input under a vector of output pixels
    macs: int


def find_conv2d(sch: Schedule):
    """The conv2d block of the function (None if it has none or several)."""
    found = [c for c in (_as_conv2d(sch, b) for b in root_blocks(sch)) if c is not None]
    return found[0] if len(found) == 1 else None


def _as_conv2d(sch: Schedule, block):
    b = sch.get(block)
    if kinds(sch, block) != "SSSSRRR" or b.init is None or not isinstance(b.body, tirx.BufferStore):
        return None
    value = b.body.value
    if not (isinstance(value, tirx.Add) and isinstance(value.b, tirx.Mul)):
        return None
    loads = [x.value if isinstance(x, tirx.Cast) else x for x in (value.b.a, value.b.b)]  # int8: cast to int32
    if not all(isinstance(load, tvm.ir.TensorLoad) and len(load.indices) == 4 for load in loads):
        return None
    v = [iv.var for iv in b.iter_vars]
    weight = [load for load in loads if all(i.same_as(x) for i, x in zip(load.indices, (v[1], v[4], v[5], v[6])))]
    if len(weight) != 1:
        return None
    data = loads[1] if weight[0].same_as(loads[0]) else loads[0]
    data_buf, weight_buf = data.source, weight[0].source  # buffers are Vars carrying their shape
    out_channels, in_channels = int(b.iter_vars[1].dom.extent), int(data_buf.shape[1])
    per_group = int(weight_buf.shape[1])  # input channels per group
    groups = max(in_channels // per_group, 1)
    linear = tvm.sym.detect_linear_equation(data.indices[3], [v[3]])
    unit_stride = len(linear) == 2 and isinstance(linear[0], tirx.IntImm) and int(linear[0]) == 1
    macs = math.prod(int(iv.dom.extent) for iv in b.iter_vars)
    return Conv2d(block, data_buf, weight_buf, out_channels, max(out_channels // groups, 1), unit_stride, macs)


def pad_block(sch: Schedule, conv: Conv2d):
    """The block producing the conv's data buffer inside this function (TOPI's ``pad_temp``), or None."""
    for block in sch.get_producers(conv.block):
        if sch.get(block).body.buffer.same_as(conv.data):
            return block
    return None


def epilogue_block(sch: Schedule, conv: Conv2d):
    """After inlining, the single block consuming the conv (bias/activation/residual), if it
    covers exactly the conv's output tile by tile (same spatial extents); else None."""
    consumers = sch.get_consumers(conv.block)
    if len(consumers) != 1:
        return None
    epilogue = consumers[0]
    out = extents(sch, sch.get_loops(conv.block))[:4]
    if kinds(sch, epilogue) != "SSSS" or extents(sch, sch.get_loops(epilogue)) != out:
        return None
    if not trivially_bound(sch, epilogue) or sch.get_consumers(epilogue):
        return None
    return epilogue


def parallel_conv(sch: Schedule, conv: Conv2d, loop) -> None:
    """``loop`` parallel unless the whole conv is too small to pay for the thread pool."""
    if conv.macs >= CONV_PARALLEL_MIN_MACS:
        sch.parallel(loop)


def accumulate_locally(sch: Schedule, block, epilogue, at) -> object:
    """``block``'s accumulators in a local tile; the epilogue (or a plain store) runs once per tile at ``at``."""
    if epilogue is None:
        store = sch.cache_write(block, 0, "local")
    else:
        sch.set_scope(block, 0, "local")
        store = epilogue
    sch.reverse_compute_at(store, at)
    return store


def pack_weights(sch: Schedule, conv: Conv2d, tile: int) -> None:
    """The weights as ``[O / tile, C, kh, kw, tile]``: one contiguous run per micro-kernel step.
    A root block marked as the weight's layout-rewrite preprocess, which ``FoldPackedWeights``
    turns into a constant at compile time (here it would re-pack per call)."""
    packed = packed_weight_read(sch, conv.block, read_index(sch, conv.block, conv.weight),
                                lambda f_, c_, r_, s_: (f_ // tile, c_, r_, s_, f_ % tile))
    schedule_block(sch, packed, 0)
