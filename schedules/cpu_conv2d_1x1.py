"""The host's fp32 1x1 stride-1 unpadded conv2d as the GEMM it is: ``out[O, H*W] = W[O, C] x in[C, H*W]``.

An NCHW plane is contiguous, so the pixels are one axis ``p = y * W + x`` (``transform_block_layout``)
and the micro-kernel holds ``channels`` output channels x ``vectors`` whole pixel vectors of accumulators:
per reduction step ``vectors`` vector loads and ``channels`` weight broadcasts for ``channels * vectors``
FMAs (``cpu_conv2d.py``'s row pixel vectors do one load per FMA, and waste the lanes past a short row).
Planes that are no whole number of vectors read a copy of the input padded to whole tiles
(``pad_einsum``, as ``cpu_stem.im2col_padded_rows``); the epilogue then stores only the real pixels.
"""
from __future__ import annotations

import math

from tvm.s_tir import Schedule

from .cpu_common import has_guard
from .cpu_loop_nest import schedule_block
from .cpu_conv2d_block import Conv2d, accumulate_locally, pack_weights, parallel_conv

TILES = ((12, 2), (6, 4), (8, 3), (10, 2), (4, 4))
"""(output channels, pixel vectors) register tiles, best first (measured at 1 thread on MobileNetV2's 24 -> 144
and 96 -> 24 on 56x56: 12x2 and 6x4 86% of the FMA roofline, 8x3 and 10x2 within 10% of them)."""


PADDED_MIN_CHANNELS = 48
"""Input channels from which a plane that is no whole number of tiles takes the GEMM all the same: its epilogue
stores pixel by pixel (a vector would cross the plane's end), which the reduction over fewer channels does
not amortize (measured at 1 thread: 32 -> 128 on 27x27 0.9x the row kernel, 48 -> 192 on 13x13 1.15x)."""

PARALLEL_TASKS = 8
"""Parallel tasks (channel tiles x pixel chunks) at least: the thread pool balances whole tasks."""


def gemm_tile(out_channels: int, vectors: int, budget: int):
    """Of the ``TILES`` that divide the output channels and fit ``budget`` accumulators (+50%: the kernel
    holds only ``k`` input vectors and a broadcast besides), the first that pads the plane's ``vectors`` least:
    none when its pixel vectors divide them (no padded copy of the input), 13x13's 11 vectors to 12."""
    fits = [(c, k) for c, k in TILES if out_channels % c == 0 and c * k <= budget + budget // 2]
    return min(fits, key=lambda t: -(-vectors // t[1]) * t[1], default=None)


def conv1x1_gemm(sch: Schedule, conv: Conv2d, epilogue, pad, lanes: int, budget: int, rows_whole: bool,
                 channels_whole: bool) -> bool:
    """Schedule ``conv`` as a register-tiled GEMM; False (nothing changed) unless it is an fp32 1x1 stride-1
    unpadded dense conv with a tile dividing its output channels, and unless ``cpu_conv2d.py``'s row kernels
    run on whole vectors where this one would not: ``rows_whole`` (rows of whole pixel vectors, 112x112:
    measured 0.91-0.97x of them) or, on planes this kernel pads, ``channels_whole`` (channel vectors on rows
    their pixel tile divides, MobileNetV2's 14x14 and 7x7: 0.76-0.88x)."""
    b = sch.get(conv.block)
    _, out_ch, height, width, in_ch, ry, rx = (int(iv.dom.extent) for iv in b.iter_vars)
    data = conv.data.shape
    tile = gemm_tile(out_ch, math.ceil(height * width / lanes), budget)
    if (ry, rx) != (1, 1) or conv.out_per_group != out_ch or (int(data[2]), int(data[3])) != (height, width) \
            or (pad is not None and has_guard(sch, pad)) or tile is None or lanes < 8 \
            or str(b.body.buffer.dtype) != "float32":
        return False
    channels, vectors = tile
    pixels, tile_pixels = height * width, lanes * vectors
    padded = math.ceil(pixels / tile_pixels) * tile_pixels
    if rows_whole or (padded != pixels and (channels_whole or in_ch < PADDED_MIN_CHANNELS)):
        return False
    if pad is not None:
        sch.compute_inline(pad)
    if epilogue is None:  # a plain store, to take the pixel axis as the accumulators do
        epilogue = sch.cache_write(conv.block, 0, "global")
    sch.transform_block_layout(conv.block, lambda n, f, y, x, c, r, s: (n, f, y * width + x, c, r, s))
    sch.transform_block_layout(epilogue, lambda n, f, y, x: (n, f, y * width + x))
    sch.transform_layout(conv.block, ("write", 0), lambda n, f, y, x: (n, f, y * width + x))
    store = epilogue
    if padded != pixels:  # a copy of the input padded to whole tiles; the epilogue stores the real pixels
        data = next(i for i, r in enumerate(sch.get(conv.block).reads)
                    if not r.source.same_as(conv.weight) and len(r.region) == 4)
        stage = sch.reindex(conv.block, ("read", data))
        sch.transform_layout(stage, ("write", 0), lambda n, p, c: (n, c, p))
        sch.pad_einsum(conv.block, [1, 1, tile_pixels, 1, 1, 1])
        sch.compute_inline(stage)
        (copy,) = sch.get_producers(conv.block)
        sch.decompose_padding(copy, sch.get_loops(copy)[0])
        sch.transform_block_layout(copy, lambda n, c, p: (n, c, p // width, p % width))
        schedule_block(sch, copy, lanes)
        (store,) = sch.get_consumers(conv.block)
        sch.reverse_compute_inline(epilogue)
    n, f, p, rc, ry, rx = sch.get_loops(conv.block)
    fo, fi = sch.split(f, [None, channels])
    po, pk, pv = sch.split(p, [None, vectors, lanes])
    pc, po = sch.split(po, [math.ceil(PARALLEL_TASKS / (out_ch // channels)), None])  # when few channel tiles
    sch.reorder(n, pc, fo, po, rc, ry, rx, fi, pk, pv)
    store = accumulate_locally(sch, conv, store, po)
    parallel_conv(sch, conv, sch.fuse(n, pc, fo))
    pack_weights(sch, conv, channels)
    sch.unroll(fi)
    sch.unroll(pk)
    sch.vectorize(pv)
    sch.vectorize(sch.get_loops(store)[-1])
    sch.decompose_reduction(conv.block, rc)
    return True
