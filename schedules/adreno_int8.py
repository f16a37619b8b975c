"""Adreno (OpenCL) schedule of the int8 conv2d: TOPI's ``conv2d_nchw`` / ``group_conv2d_nchw`` with
``out_dtype="int32"`` and the requantize epilogue fused into it (``tvm_ecnn/quantize``), depthwise included. The same
on ``adreno`` and ``adreno-texture``: TVM 0.27 has no 8-bit images, so int8 tensors stay in buffers on both.

Without it dlight's generic ``gpu.Reduction`` gives one output value per work-group, a 256-thread tree reduction in
local memory and two scalar ``char`` loads per multiply-add. Here, like the fp32 ``shift_conv2d`` tile
(``adreno.py``), a work-item owns ``OT`` output channels x ``PT`` neighbouring output pixels in int32 registers and
runs the whole reduction ``(c, ky, kx)`` itself, then requantizes its tile in registers and stores it as
scalar ``char``s (TVM's vectorizer scalarizes the fp32 requantize chain anyway). The weights are repacked at compile time to ``[O / OT, C / groups, kh, kw, OT]``
(``compiler_pass/fold_packed_weights.py``), so the ``OT`` weights of one tap are one ``char4`` load; a 1x1 stride-1
conv (no padding guard) also reads its ``PT`` input pixels as one ``char4``. Per tap: 1 weight vector +
``PT`` inputs (1 vector for 1x1) for ``OT * PT`` MACs (dense; depthwise: ``OT`` inputs per ``OT`` MACs is inherent),
against 2 loads per MAC before. Indices come out 32-bit (``int``, checked by the test): OpenCL ``long`` arithmetic
is emulated on 32-bit GPU ALUs.
"""
from __future__ import annotations

import tvm
from tvm.s_tir import Schedule

from ._blocks import divisor, extents
from .adreno import bind_threads
from .cpu_common import inline_all, packed_weight_read, read_index
from .cpu_conv2d_block import accumulate_locally, epilogue_block, find_conv2d

OUT_TILES = (4, 2)  # output channels per work-item: 4 is one char4 of packed weights
PIXEL_TILES = (4, 2)  # neighbouring output pixels (along W) per work-item


def schedule_int8_conv2d(sch: Schedule, target) -> bool:
    """Schedule the function's int8 -> int32 conv2d and its epilogue; False when it has none (left to dlight)."""
    found = int8_conv2d(sch)
    if found is None:
        return False
    conv, tile = found
    inline_all(sch, keep=(sch.get(conv.block).name_hint,))
    unpadded = find_conv2d(sch)  # reading the input itself; None when the padding became a guard
    epilogue = epilogue_block(sch, conv)
    n, f, y, x, rc, ry, rx = sch.get_loops(conv.block)
    (width,) = extents(sch, [x])
    pixels = divisor(width, PIXEL_TILES)
    fo, fi = sch.split(f, [None, tile])
    xo, xi = sch.split(x, [None, pixels])
    sch.reorder(n, fo, y, xo, rc, ry, rx, fi, xi)
    thread = bind_threads(sch, [n, fo, y, xo])
    store = accumulate_locally(sch, conv.block, epilogue, thread)
    packed = sch.get(pack_weights(sch, conv, tile)).writes[0].source
    local = sch.cache_read(conv.block, read_index(sch, conv.block, packed), "local")  # a tap's tile weights: a vector
    sch.compute_at(local, rx)
    if tile > 1:
        sch.vectorize(sch.get_loops(local)[-1])
    if unpadded is not None and unpadded.unit_stride and pixels > 1:  # e.g. 1x1: PT neighbouring chars of a row
        data = sch.cache_read(conv.block, read_index(sch, conv.block, unpadded.data), "local")
        sch.compute_at(data, rx)
        sch.vectorize(sch.get_loops(data)[-1])
    sch.decompose_reduction(conv.block, rc)
    sch.unroll(fi)
    sch.unroll(xi)
    for loop in sch.get_loops(store)[2:]:  # the tile, under (blockIdx, threadIdx)
        sch.unroll(loop)
    return True


def pack_weights(sch: Schedule, conv, tile: int):
    """Weights as ``[O / tile, C / groups, kh, kw, tile]``: a root block marked for packing at compile time
    (``FoldPackedWeights``); returns it."""
    return packed_weight_read(sch, conv.block, read_index(sch, conv.block, conv.weight),
                              lambda f_, c_, r_, s_: (f_ // tile, c_, r_, s_, f_ % tile))


def int8_conv2d(sch: Schedule):
    """The function's int8 -> int32 conv2d and its output-channel tile, or None."""
    conv = find_conv2d(sch)
    if conv is None or conv.data.dtype != "int8" or sch.get(conv.block).writes[0].source.dtype != "int32":
        return None
    return conv, divisor(conv.out_channels, OUT_TILES)
