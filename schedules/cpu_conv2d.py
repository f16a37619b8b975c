"""Register-blocked conv2d micro-kernels on the host (and NEON), chosen per conv shape:

* stride-1 rows: *pixel vectors*. Per reduction step ``(rc, ry, rx)`` one contiguous input vector
  of output pixels times a few output channels' scalar weights; the accumulators and the fused
  bias/activation/residual epilogue are contiguous NCHW vectors.
* other convs with enough output channels per group: *channel vectors*, the outer product of
  ``cpu.py``'s ``shift_conv2d``: a vector of output channels times one input scalar per pixel of
  the tile (stride and padding are only an input address then).
* stride-2 stems on 3 input channels: pixel vectors over even/odd columns stored apart, or over im2col
  rows padded to whole vectors (``cpu_stem.py``);
* depthwise and other narrow groups: ``cpu_depthwise.py`` (int8 on narrow maps: channel vectors).

The weights are read packed ``[O / tile, C, kh, kw, tile]`` (one contiguous run per micro-kernel
step). The packing block is marked as a layout-rewrite preprocess, so ``FoldPackedWeights`` moves
it out of the kernel and folds it into the weight constant at compile time.
"""
from __future__ import annotations

import math

import tvm
from tvm.s_tir import Schedule

from . import arm_conv2d, cpu_int8
from .cpu_common import accumulator_budget, inline_all, root_blocks, vector_lanes
from .cpu_conv2d_1x1 import conv1x1_gemm
from .cpu_conv2d_block import Conv2d, accumulate_locally, epilogue_block, pack_weights, pad_block, parallel_conv
from .cpu_depthwise import channel_vectors, channel_vectors_fit, per_channel
from .cpu_stem import accumulate_in_fp32, deinterleave_columns, im2col_padded_rows
from ._blocks import divisor, extents
from .cpu_loop_nest import schedule_block, stage_padding


def pixel_tile(width: int, candidates) -> int:
    """Output pixels per micro-kernel: a candidate dividing the row, else the one wasting least
    of the last (predicated) tile."""
    exact = [p for p in candidates if width % p == 0]
    if exact:
        return exact[0]
    usable = [p for p in candidates if p <= width] or [1]
    return min(usable, key=lambda p: (math.ceil(width / p) * p - width, -p))


def channel_tile(out_per_group: int, lanes: int, pixels: int, budget: int) -> int:
    """Output channels per micro-kernel, within one group: whole vectors, as many as the
    accumulator budget allows for ``pixels`` pixels; else the widest divisor of the group that
    is at least 4 (odd lane counts are legalized by LLVM); 1 when there is none."""
    for vectors in (4, 2, 1):
        tile = vectors * lanes
        if out_per_group % tile == 0 and vectors * pixels <= budget:
            return tile
    return next((t for t in range(min(2 * lanes, out_per_group), 3, -1)
                 if out_per_group % t == 0 and math.ceil(t / lanes) * pixels <= budget), 1)


def outer_product_pixels(width: int, budget: int, taps: int = 1) -> int:
    """Output pixels per channel-vector (outer-product) micro-kernel. Under a KxK window (``taps`` > 1) a row
    of at least 4 pixels takes 4-8 of them with a predicated last tile rather than an exact 3 or 2: with 3
    input broadcasts per 3 FMAs of each weight vector the kernel is load-bound (SqueezeNet's 3x3 expand convs
    on 27-pixel rows: 7 pixels measured 1.25-1.45x faster than 3 on one Zen 5 core)."""
    if budget < 16:
        return pixel_tile(width, (4, 3, 2))
    wide = (4, 7, 6, 5, 8)
    return pixel_tile(width, wide if taps > 1 and width >= wide[0] else wide + (3, 2))


def pixel_vectors_win(vector: int, tile: int, lanes: int) -> bool:
    """Pixel vectors of ``vector`` pixels over channel vectors of ``tile`` channels: when they are
    (half) full vectors, or when channel vectors would not be full (measured on the zoo: odd
    pixel vectors lose to full channel vectors, beat odd ones). Also ``shift_conv2d``'s choice."""
    return vector > 1 and (vector in (lanes, lanes // 2) or tile % lanes != 0)


def channel_vectors_whole(width: int, row: int, tile: int, pixels: int, lanes: int) -> bool:
    """Whether channel vectors would run whole vectors on a row of ``width`` (``row``: its pixel-vector width): full
    channel vectors that beat its pixel vectors, their pixel tile dividing the row. The 1x1 GEMM's ``gemm_plan``
    leaves padded planes to them (plain conv and ``shift_conv2d`` alike)."""
    return tile % lanes == 0 and not pixel_vectors_win(row, tile, lanes) and width % pixels == 0


def schedule_conv2d(sch: Schedule, conv: Conv2d, target) -> None:
    """Register-blocked conv2d (pixel vectors on stride-1 rows, else channel vectors), or one
    channel per task for depthwise/narrow groups."""
    lanes = vector_lanes(target, str(sch.get(conv.block).body.buffer.dtype))
    pad = pad_block(sch, conv)
    inline_all(sch, keep={sch.get(conv.block).name_hint} | ({sch.get(pad).name_hint} if pad is not None else set()))
    epilogue = epilogue_block(sch, conv)
    own = {sch.get(x).name_hint for x in (conv.block, pad, epilogue) if x is not None}
    rest = [name for name in (sch.get(b).name_hint for b in root_blocks(sch)) if name not in own]
    width = extents(sch, sch.get_loops(conv.block))[3]
    budget = accumulator_budget(target)
    vector = pixel_vector_width(width, lanes) if conv.unit_stride else 1
    pixels = outer_product_pixels(width, budget, math.prod(int(d) for d in conv.weight.shape[2:]))
    tile = channel_tile(conv.out_per_group, lanes, pixels, budget)
    if cpu_int8.vnni_conv2d(sch, conv, epilogue, pad, target) or arm_conv2d.int8_conv2d(sch, conv, epilogue, pad,
                                                                                          target):
        pass  # int8 on AVX-512 VNNI / Arm sdot: stages its own input and weights
    elif conv1x1_gemm(
            sch, conv, epilogue, pad, lanes, budget, vector == lanes,
            channel_vectors_whole(width, vector, tile, pixels, lanes)):
        pass  # a 1x1 stride-1 conv as a register-tiled GEMM (cpu_conv2d_1x1.py)
    elif (conv.out_per_group >= 4 and (row := pixel_vector_width(width, lanes)) > 1
          and deinterleave_columns(sch, conv, pad)):
        stage_padding(sch, pad)  # a stride-2 stem read as stride-1 rows (cpu_stem.py)
        _pixel_vector(sch, conv, epilogue, row, pixel_vector_channels(conv.out_per_group, budget))
        accumulate_in_fp32(sch, conv, target)  # int8
    elif conv.out_per_group >= 4 and (store := im2col_padded_rows(sch, conv, epilogue, pad, lanes)) is not None:
        _pixel_vector(sch, conv, store, lanes, pixel_vector_channels(conv.out_per_group, budget))
        accumulate_in_fp32(sch, conv, target)
    elif conv.out_per_group >= 4 and pixel_vectors_win(vector, tile, lanes):
        stage_padding(sch, pad)
        channels = pixel_vector_channels(conv.out_per_group, budget)
        _pixel_vector(sch, conv, epilogue, vector, channels)
    elif tile >= 4:
        stage_padding(sch, pad)
        _outer_product(sch, conv, epilogue, tile, pixels)
    elif channel_vectors_fit(sch, conv, pad, lanes, width, target):
        channel_vectors(sch, conv, epilogue, pad, lanes, pixels)
    else:
        per_channel(sch, conv, epilogue, pad, vector, target)
    for name in rest:  # e.g. a squeeze-excitation broadcast after a 1x1 conv on a 1x1 map
        try:
            schedule_block(sch, sch.get_sblock(name), lanes)
        except tvm.s_tir.ScheduleError:
            continue


def _outer_product(sch: Schedule, conv: Conv2d, epilogue, tile: int, pixels: int) -> None:
    """Per row ``(n, channel tile, y)`` in parallel, per pixel tile: ``tile`` channels x ``pixels``
    accumulators over ``(rc, ry, rx)``, one packed weight vector and ``pixels`` input scalars per
    step. The accumulator tile is ``[pixels, channels]`` so channel vectors stay contiguous."""
    n, f, y, x, rc, ry, rx = sch.get_loops(conv.block)
    fo, fi = sch.split(f, [None, tile])
    xo, xi = sch.split(x, [None, pixels])
    sch.reorder(n, fo, y, xo, rc, ry, rx, xi, fi)
    accumulate_locally(sch, conv.block, epilogue, xo)
    sch.transform_layout(conv.block, ("write", 0), lambda n_, f_, y_, x_: (n_, y_, x_, f_))
    parallel_conv(sch, conv, sch.fuse(n, fo, y))
    pack_weights(sch, conv, tile)
    sch.unroll(xi)
    sch.vectorize(fi)
    sch.decompose_reduction(conv.block, rc)


def pixel_vector_channels(out_channels: int, budget: int) -> int:
    """Accumulator vectors (output channels) of a pixel-vector tile: the widest divisor of the
    channels within ``budget``; when that is under half the budget (68 channels: 4), the widest
    divisor up to 1.5x the budget instead (17): the kernel holds only one input vector besides."""
    channels = divisor(out_channels, tuple(range(budget, 1, -1)))
    if channels < budget // 2:
        channels = divisor(out_channels, tuple(range(budget + budget // 2, 1, -1)))
    return channels


def pixel_vector_width(width: int, lanes: int) -> int:
    """Output pixels per accumulator vector on a stride-1 row: the whole row when it fits one
    vector, else the widest divisor of the row between half a vector and a vector (no tail;
    LLVM legalizes odd lane counts); 1 when there is none."""
    if 4 <= width <= lanes:
        return width
    return next((v for v in range(lanes, max(lanes // 2, 4) - 1, -1) if width % v == 0), 1)


def _pixel_vector(sch: Schedule, conv: Conv2d, epilogue, vector: int, channels: int) -> None:
    """Stride-1 rows: ``channels`` accumulator vectors of ``vector`` output pixels each; per
    reduction step one contiguous input vector times ``channels`` scalar weights (packed
    ``[O / channels, C, kh, kw, channels]``). Output and epilogue stay contiguous vectors (NCHW)."""
    n, f, y, x, rc, ry, rx = sch.get_loops(conv.block)
    fo, fi = sch.split(f, [None, channels])
    xo, xi = sch.split(x, [None, vector])
    sch.reorder(n, fo, y, xo, rc, ry, rx, fi, xi)
    store = accumulate_locally(sch, conv.block, epilogue, xo)
    parallel_conv(sch, conv, sch.fuse(n, fo, y))
    pack_weights(sch, conv, channels)
    sch.unroll(fi)
    sch.vectorize(xi)
    sch.vectorize(sch.get_loops(store)[-1])
    sch.decompose_reduction(conv.block, rc)

