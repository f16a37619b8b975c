"""The stem: a stride-2 conv2d on an image's few input channels (MobileNetV2, SqueezeNet, FE-Net).

Channel vectors (``cpu_conv2d.py``'s outer product) reduce over only ``3 * kh * kw`` steps there and
store their ``[pixels, channels]`` tile transposed into NCHW planes. Instead the padding stage stores
the even and odd columns of each row apart, ``pad[n, c, h, w % 2, w // 2]``: every tap of a strided
row is then one contiguous vector again, and the stem takes the pixel-vector micro-kernel of stride-1
convs (contiguous NCHW output vectors, the epilogue on them).

A stem whose rows have no such vector width, or no padding stage to store that way (SqueezeNet's
unpadded 224 -> 111 stem), reads a staged im2col copy of its input instead, ``[n, c, ry, rx, y, x]``
(each tap a contiguous row again; the input has only 3 channels), its rows padded to whole vectors
(``pad_einsum``, unless they already are): the pixel-vector kernel then runs on whole vectors and its
epilogue drops the padding.

An int8 stem (3 channels: no 4-channel dot product) accumulates in fp32 on x86 (``accumulate_in_fp32``):
its few int8 x int8 terms sum exactly there, and ``vfmadd`` replaces ``vpmulld`` + ``vpaddd``.
"""
from __future__ import annotations

import math

import tvm
from tvm import tirx
from tvm.s_tir import Schedule

from .cpu_common import PARALLEL_MIN_WORK, WEIGHT_PREPACK, has_guard, loads
from .cpu_conv2d_block import Conv2d

STEM_MAX_CHANNELS = 4
"""Input channels up to which a stride-2 conv counts as a stem (RGB, RGBA)."""

IM2COL_MAX_TAPS = 9
"""Window taps up to which a stem's input is staged as im2col rows: a 3x3 stride-2 window copies 2.25x
the input; SqueezeNet 1.0's 7x7 copies 12x and measured 1.6x slower than channel vectors."""


def is_stem(sch: Schedule, conv: Conv2d) -> bool:
    """A stride-2 conv2d on at most ``STEM_MAX_CHANNELS`` input channels."""
    b = sch.get(conv.block)
    if int(conv.data.shape[1]) > STEM_MAX_CHANNELS:
        return False
    load = next(x for x in loads(b.body.value) if x.source.same_as(conv.data))
    linear = tvm.sym.detect_linear_equation(load.indices[3], [b.iter_vars[3].var])
    return len(linear) == 2 and isinstance(linear[0], tirx.IntImm) and int(linear[0]) == 2


def im2col_padded_rows(sch: Schedule, conv: Conv2d, epilogue, pad, vector: int):
    """Stage the stem's input as im2col rows and pad the conv's rows to a multiple of ``vector``; returns
    the block that stores the unpadded output (the epilogue inlined into it; rows already whole vectors: the
    epilogue, or a plain store), for the pixel-vector kernel to compute per tile. Measured 1.4x on SqueezeNet's
    stem over channel vectors (near the FMA roofline). None (nothing changed) when ``conv`` is no stem or its
    window exceeds ``IM2COL_MAX_TAPS``."""
    if not is_stem(sch, conv) or math.prod(int(d) for d in conv.weight.shape[2:]) > IM2COL_MAX_TAPS:
        return None
    data = next(i for i, r in enumerate(sch.get(conv.block).reads)
                if not r.source.same_as(conv.weight) and len(r.region) == 4)
    padded = int(sch.get(conv.block).iter_vars[3].dom.extent) % vector != 0
    stage = sch.reindex(conv.block, ("read", data))
    sch.transform_layout(stage, ("write", 0), lambda n, y, x, c, r, s: (n, c, r, s, y, x))
    sch.transform_block_layout(stage, lambda n, y, x, c, r, s: (n, c, r, s, y, x))  # rows written contiguously
    if padded:  # else pad_einsum adds nothing, and the rows stay the reindexed stage
        sch.pad_einsum(conv.block, [1, 1, 1, vector, 1, 1, 1])
        sch.compute_inline(stage)
    if pad is not None:  # into the rows (inlined into the conv before pad_einsum, its zero padding was lost)
        sch.compute_inline(pad)
    (rows,) = sch.get_producers(conv.block)
    if padded:
        (store,) = sch.get_consumers(conv.block)
        if epilogue is not None:
            sch.reverse_compute_inline(epilogue)
    else:
        store = epilogue if epilogue is not None else sch.cache_write(conv.block, 0, "global")
    loops = sch.get_loops(rows)
    if math.prod(int(d) for d in sch.get(rows).writes[0].source.shape) >= PARALLEL_MIN_WORK:
        sch.parallel(sch.fuse(*loops[:-1]))
    return store


def deinterleave_columns(sch: Schedule, conv: Conv2d, pad) -> bool:
    """Store the stem's padded input even/odd columns apart (in its padding stage, both parities per step
    of its rows: ``split_borders(inner=1)``); False (nothing changed) when ``conv`` is no stem with a padding
    stage, or its padded rows are odd (no whole even/odd halves: ``im2col_padded_rows`` takes it; an odd
    input measured 4.8 -> 0.6 ms there over the generic loop nest). (SqueezeNet's unpadded stem takes
    ``im2col_padded_rows``: a copy stage just for this, and its 111-pixel rows as predicated or
    37-lane vectors, measured 4x slower.)"""
    if pad is None or not has_guard(sch, pad) or not is_stem(sch, conv) or int(conv.data.shape[3]) % 2:
        return False
    sch.transform_block_layout(pad, lambda n, c, h, w: (n, c, h, w // 2, w % 2))
    sch.transform_layout(pad, ("write", 0), lambda n, c, h, w: (n, c, h, w % 2, w // 2))
    return True


FP32_EXACT = 1 << 24
"""Integers up to which every fp32 sum is exact (a 24-bit significand)."""


def exact_in_fp32(sch: Schedule, conv: Conv2d, target) -> bool:
    """An int8 / uint8 x int8 / uint8 -> int32 conv on x86 whose every partial sum is an integer below
    ``FP32_EXACT`` (so exact in fp32). NEON keeps its int32 ``mla``."""
    block = sch.get(conv.block)
    store = block.body
    operands = [x for x in loads(store.value) if not x.source.same_as(store.buffer)]
    types = [tvm.runtime.DataType(x.ty.dtype) for x in operands]
    if "arm_cpu" in target.keys or str(store.buffer.dtype) != "int32" or len(operands) != 2 \
            or any(t.type_code not in (0, 1) or t.bits > 8 for t in types):  # int8 / uint8
        return False
    largest = math.prod(2 ** t.bits - 1 if t.type_code == 1 else 2 ** (t.bits - 1) for t in types)
    terms = math.prod(int(iv.dom.extent) for iv in block.iter_vars if iv.iter_type == tirx.IterVar.CommReduce)
    return terms * largest < FP32_EXACT


def accumulate_in_fp32(sch: Schedule, conv: Conv2d, target) -> bool:
    """An int8 x int8 -> int32 stem on the pixel-vector kernel (scheduled: reduction decomposed, weights
    packed) accumulating in fp32 instead: per step one FMA on the input converted to fp32, the packed weights
    converted at compile time, the epilogue reading the accumulators back as int32. Bit-exact: every partial
    sum is an integer below ``FP32_EXACT`` (27 taps of 128 x 128: 442368). x86 only (NEON keeps its int32
    ``mla``); False (nothing changed) otherwise or when the bound does not hold. Measured (MobileNetV2's
    int8 stem, 1 thread) 232 -> 128 us."""
    if not exact_in_fp32(sch, conv, target):
        return False
    (packed,) = [b for b in sch.get_producers(conv.block) if WEIGHT_PREPACK in sch.get(b).annotations]
    for stage in (conv.block, packed):
        sch.unsafe_set_dtype(stage, 0, "float32")  # its loads are cast back: the update is rebuilt below
    block = sch.get(conv.block)
    store = block.body
    found = loads(store.value)
    acc, weight = [next(x for x in found if x.source.same_as(buffer))
                   for buffer in (store.buffer, sch.get(packed).writes[0].source)]
    (data,) = [x for x in found if not x.source.same_as(acc.source) and not x.source.same_as(weight.source)]
    replace_update(sch, conv, acc + tirx.Cast("float32", data) * weight)
    return True


def replace_update(sch: Schedule, conv: Conv2d, value) -> None:
    """``conv``'s update block storing ``value`` (an fp32 accumulation rebuilt after ``unsafe_set_dtype``)."""
    block = sch.get(conv.block)
    store = block.body
    new = tvm.s_tir.SBlock(block.iter_vars, block.reads, block.writes, block.name_hint,
                           tirx.BufferStore(store.buffer, value, store.indices),
                           block.init, block.alloc_buffers, block.match_buffers, block.annotations)
    sch.state.replace(sch.get_sref(conv.block), new, {block: new})
