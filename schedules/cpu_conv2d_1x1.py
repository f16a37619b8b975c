"""The host's fp32 1x1 stride-1 unpadded conv2d as the GEMM it is: ``out[O, H*W] = W[O, C] x in[C, H*W]``.

An NCHW plane is contiguous, so the pixels are one axis ``p = y * W + x`` (``transform_block_layout``)
and the micro-kernel holds ``channels`` output channels x ``vectors`` whole pixel vectors of accumulators:
per reduction step ``vectors`` vector loads and ``channels`` weight broadcasts for ``channels * vectors``
FMAs (``cpu_conv2d.py``'s row pixel vectors do one load per FMA, and waste the lanes past a short row).
Planes that are no whole number of vectors read a copy of the input padded to whole tiles
(``pad_einsum``, as ``cpu_stem.im2col_padded_rows``); the epilogue then stores only the real pixels.
``shift_conv2d`` runs the same loop nest (``gemm_loop_nest``) over its shifted input staged as planes.
"""
from __future__ import annotations

import math

from tvm.s_tir import Schedule
from tvm.tirx import IndexMap

from .cpu_common import has_guard
from .cpu_loop_nest import schedule_block
from .cpu_conv2d_block import Conv2d, accumulate_locally, pack_weights, parallel_conv

TILES = ((12, 2), (6, 4), (8, 3), (10, 2), (4, 4))
"""(output channels, pixel vectors) register tiles, best first (measured at 1 thread on MobileNetV2's 24 -> 144
and 96 -> 24 on 56x56: 12x2 and 6x4 86% of the FMA roofline, 8x3 and 10x2 within 10% of them)."""


SEVEN = (3, 7)
"""A tile of 7 pixel vectors, for planes of 7 x 7 vectors (28x28) that every ``TILES`` entry pads; taken only where
the input under it fits ``SEVEN_MAX_CHUNK`` (per-kernel profile of MobileNetV2 at 1 thread: its 32 -> 192 on 28x28
67-70 us a call, 93 us with the channel-vector kernel it took). 4x7 spills its accumulators; 2x7 (where 3 does not
divide the channels) measured 1.3-1.4x faster alone but 1.05-1.3x slower in the models (AS-ResNet's 64 -> 64 and
64 -> 128, MobileNetV2's 192 -> 32)."""

SEVEN_MAX_CHUNK = 32 * 1024
"""Bytes of input (channels x 7 pixel vectors) the ``SEVEN`` tile may stream per reduction: within L1, as every
channel tile reads it again (MobileNetV2's 192 -> 32 on 28x28, 86 KiB: 1.2x slower in the model)."""


PADDED_MIN_CHANNELS = 48
"""Input channels from which a plane that is no whole number of tiles takes the GEMM all the same: its epilogue
stores pixel by pixel (a vector would cross the plane's end), which the reduction over fewer channels does
not amortize (measured at 1 thread: 32 -> 128 on 27x27 0.9x the row kernel, 48 -> 192 on 13x13 1.15x)."""

PARALLEL_TASKS = 8
"""Parallel tasks (channel tiles x pixel chunks) at least: the thread pool balances whole tasks."""


def gemm_tile(out_channels: int, vectors: int, budget: int, seven: bool = False):
    """Of the ``TILES`` that divide the output channels and fit ``budget`` accumulators (+50%: the kernel
    holds only ``k`` input vectors and a broadcast besides), the first that pads the plane's ``vectors`` least:
    none when its pixel vectors divide them (no padded copy of the input), 13x13's 11 vectors to 12; with ``seven``
    also ``SEVEN`` where it divides them."""
    tiles = TILES + ((SEVEN,) if seven and vectors % SEVEN[1] == 0 else ())
    fits = [(c, k) for c, k in tiles if out_channels % c == 0 and c * k <= budget + budget // 2]
    return min(fits, key=lambda t: -(-vectors // t[1]) * t[1], default=None)


def gemm_plan(out_ch: int, in_ch: int, pixels: int, lanes: int, budget: int, rows_whole: bool,
              channels_whole: bool):
    """The ``(channels, vectors)`` tile of the GEMM over a plane of ``pixels``, or None where ``cpu_conv2d.py``'s
    row kernels run on whole vectors and this one would not: ``rows_whole`` (rows of whole pixel vectors,
    112x112: measured 0.91-0.97x of them) or, on planes this kernel pads, ``channels_whole`` (channel vectors on
    rows their pixel tile divides, MobileNetV2's 14x14 and 7x7: 0.76-0.88x). Also ``shift_conv2d``'s choice."""
    seven = pixels % lanes == 0 and in_ch * SEVEN[1] * lanes * 4 <= SEVEN_MAX_CHUNK
    tile = gemm_tile(out_ch, math.ceil(pixels / lanes), budget, seven)
    if tile is None or lanes < 8 or rows_whole:
        return None
    padded = pixels % (lanes * tile[1]) != 0
    return None if padded and (channels_whole or in_ch < PADDED_MIN_CHANNELS) else tile


def conv1x1_gemm(sch: Schedule, conv: Conv2d, epilogue, pad, lanes: int, budget: int, rows_whole: bool,
                 channels_whole: bool) -> bool:
    """Schedule ``conv`` as a register-tiled GEMM; False (nothing changed) unless it is an fp32 1x1 stride-1
    unpadded dense conv that ``gemm_plan`` gives a tile."""
    b = sch.get(conv.block)
    _, out_ch, height, width, in_ch, ry, rx = (int(iv.dom.extent) for iv in b.iter_vars)
    data = conv.data.shape
    if (ry, rx) != (1, 1) or conv.out_per_group != out_ch or (int(data[2]), int(data[3])) != (height, width) \
            or (pad is not None and has_guard(sch, pad)) or str(b.body.buffer.dtype) != "float32":
        return False
    tile = gemm_plan(out_ch, in_ch, height * width, lanes, budget, rows_whole, channels_whole)
    if tile is None:
        return False
    if pad is not None:
        sch.compute_inline(pad)
    gemm_loop_nest(sch, conv.block, epilogue, conv.weight, tile, lanes, lambda loop: parallel_conv(sch, conv, loop))
    pack_weights(sch, conv, tile[0])
    return True


def gemm_loop_nest(sch: Schedule, block, epilogue, weight, tile, lanes: int, parallel) -> None:
    """The GEMM's loop nest on a 1x1 reduction ``block`` over NCHW planes (iterators ``n, o, y, x``, then its
    reduction axes; its 4-d read other than ``weight``: the planes, contiguous), also ``shift_conv2d``'s over
    its staged planes (``cpu.gemm_shift_conv2d``): the pixels flattened, read from a copy padded to whole tiles
    where they are not, ``tile`` accumulators stored through ``epilogue`` (or a plain store) per tile.
    ``parallel`` takes the task loop (batch, pixel chunks, channel tiles); the weight is the caller's to pack
    ``[O / channels, C, ..., channels]``."""
    channels, vectors = tile
    _, out_ch, height, width = (int(iv.dom.extent) for iv in sch.get(block).iter_vars[:4])
    reduced = len(sch.get(block).iter_vars) - 4
    pixels, tile_pixels = height * width, lanes * vectors
    padded = math.ceil(pixels / tile_pixels) * tile_pixels
    if epilogue is None:  # a plain store, to take the pixel axis as the accumulators do
        epilogue = sch.cache_write(block, 0, "global")
    sch.transform_block_layout(block, IndexMap.from_func(lambda n, f, y, x, *r: (n, f, y * width + x, *r),
                                                         ndim=4 + reduced))
    sch.transform_block_layout(epilogue, lambda n, f, y, x: (n, f, y * width + x))
    sch.transform_layout(block, ("write", 0), lambda n, f, y, x: (n, f, y * width + x))
    store = epilogue
    if padded != pixels:  # a copy of the input padded to whole tiles; the epilogue stores the real pixels
        read = next(i for i, r in enumerate(sch.get(block).reads)
                    if not r.source.same_as(weight) and len(r.region) == 4)
        stage = sch.reindex(block, ("read", read))
        sch.transform_layout(stage, ("write", 0), lambda n, p, c: (n, c, p))
        sch.pad_einsum(block, [1, 1, tile_pixels] + [1] * reduced)
        sch.compute_inline(stage)
        (copy,) = [b for b in sch.get_producers(block) if not sch.get(b).writes[0].source.same_as(weight)]
        sch.decompose_padding(copy, sch.get_loops(copy)[0])
        sch.transform_block_layout(copy, lambda n, c, p: (n, c, p // width, p % width))
        schedule_block(sch, copy, lanes)
        (store,) = sch.get_consumers(block)
        sch.reverse_compute_inline(epilogue)
    n, f, p, *reduction = sch.get_loops(block)
    fo, fi = sch.split(f, [None, channels])
    po, pk, pv = sch.split(p, [None, vectors, lanes])
    pc, po = sch.split(po, [math.ceil(PARALLEL_TASKS / (out_ch // channels)), None])  # when few channel tiles
    sch.reorder(n, pc, fo, po, *reduction, fi, pk, pv)
    store = accumulate_locally(sch, block, store, po)
    parallel(sch.fuse(n, pc, fo))
    sch.unroll(fi)
    sch.unroll(pk)
    sch.vectorize(pv)
    sch.vectorize(sch.get_loops(store)[-1])
    sch.decompose_reduction(block, reduction[0])
