"""Adreno (OpenCL) schedules: explicit thread bindings for every ecnn block, buffer and texture paths.

An unbound PrimFunc compiled for OpenCL silently becomes host code, and dlight's ``gpu.Reduction`` asserts on the
table-indexed shift reads, so every ecnn function gets a schedule here.

``shift_conv2d`` is a register-tiled outer product: a work-item owns ``OT`` output channels x ``PT`` neighbouring
output pixels, and per input channel reads ``OT`` weights once (a local copy) and ``PT`` shifted inputs, for
``OT * PT`` FMAs. The shift is only address arithmetic in those loads. Tiles are divisors of the shape (down to 1),
so any shape is correct without tail predicates.

Stores: ``NCHW`` output rows are written ``PT`` pixels at a time (``vstoreN``); ``NCHW4c`` output (the texture
path, where the epilogue packs the channels) is computed into a register texel first and written as one ``float4``
per pixel (``write_imagef`` when TVM put the tensor in a texture). Texture outputs *must* store whole texels: the
lane loop is vectorized over a register copy, never over a computation (``compiler_pass/adreno_tir.py`` checks).
Texture inputs need no schedule support: ``TextureFlatten`` turns their loads into ``read_imagef``.

The shift's zero padding stays a bounds check, not the sampler border: TVM's codegen fixes the sampler
(``CLK_ADDRESS_CLAMP``, zero border, not selectable), but the image layouts it picks for activations
(``texture-weight``: C/4 x H x W along one image axis; ``texture-nhwc``: H x W along one axis) put a pixel's
out-of-row neighbours *inside* the image, so only reads past the whole image would come back as zeros.

fp16 storage (activations and weights ``float16``, e.g. ``compile --dtype fp16``): the register accumulator is
widened to ``float32`` and products are formed in ``float32``; the epilogue rounds once, to the ``half`` store.
"""
from __future__ import annotations

import tvm_ffi
from tvm import tirx
from tvm.s_tir import Schedule

from ._blocks import divisor, extents

THREADS = (64, 32, 16, 8, 4, 2)
OUT_TILES = (4, 2)  # output channels per work-item
PIXEL_TILES = (4, 2)  # neighbouring output pixels (along W) per work-item


def bind_threads(sch: Schedule, loops: list) -> object:
    """Fuse ``loops``, bind them to (blockIdx.x, threadIdx.x); returns the thread loop (also used by
    ``compiler_pass/texel_schedule.py``)."""
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    threads = divisor(extents(sch, [fused])[0], THREADS)
    bx, tx = sch.split(fused, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    return tx


def _write_texels(sch: Schedule, block, thread) -> None:
    """Make ``block`` (NCHW4c, under ``thread``) write register texels, each stored by a copy vectorized over the
    4 lanes: one ``float4``/``write_imagef`` per pixel, whatever the block computes per lane."""
    write = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(write, thread)
    sch.vectorize(sch.get_loops(write)[-1])
    for loop in sch.get_loops(block)[2:]:
        sch.unroll(loop)


def _accumulate_in_float32(sch: Schedule, update) -> None:
    """Widen a half accumulator (the reduction's update block ``update``).

    ``unsafe_set_dtype`` alone gives ``f32(f16(acc) + x * w)``, still a half-precision sum; the update is
    rewritten to ``acc + f32(x) * f32(w)``.
    """
    sch.unsafe_set_dtype(update, 0, "float32")

    def widen(expr):
        if isinstance(expr, tirx.Mul):
            return tirx.Mul(widen(expr.a), widen(expr.b))
        return tirx.Cast("float32", expr)

    def fold(cast):
        inner = cast.value
        if (str(cast.ty.dtype) == "float32" and isinstance(inner, tirx.Add) and isinstance(inner.a, tirx.Cast)
                and str(inner.a.value.ty.dtype) == "float32"):
            return tirx.Add(inner.a.value, widen(inner.b))
        return cast

    block = sch.get(update)
    widened = tvm_ffi.structural_map(block, ((tirx.Cast, fold),), order="pre")
    sch.state.replace(sch.get_sref(update), widened, {block: widened})


def schedule_shift_conv2d(sch: Schedule, blocks: dict, target) -> None:
    acc = blocks["shift_conv2d"]
    sch.compute_inline(blocks["shift_conv2d_input"])
    sch.compute_inline(blocks["shift_conv2d_weight"])
    if "shift_conv2d_epilogue" in blocks:
        sch.set_scope(acc, 0, "local")
        store = blocks["shift_conv2d_epilogue"]
    else:
        store = sch.cache_write(acc, 0, "local")
    n, o, h, w, rc = sch.get_loops(acc)
    out_channels, width = extents(sch, [o, w])
    pixels = divisor(width, PIXEL_TILES)
    oo, oi = sch.split(o, [None, divisor(out_channels, OUT_TILES)])  # NCHW4c: 4, one texel per pixel
    wo, wi = sch.split(w, [None, pixels])
    sch.reorder(n, oo, h, wo, rc, oi, wi)
    thread = bind_threads(sch, [n, oo, h, wo])
    sch.reverse_compute_at(store, thread)
    sch.decompose_reduction(acc, rc)
    if sch.get(acc).writes[0].source.ty.dtype == "float16":
        _accumulate_in_float32(sch, acc)
    # per input channel: the work-item's OT weights once, into registers
    weight = sch.mod["main"].params[1]
    reads = [r.source for r in sch.get(acc).reads]
    sch.compute_at(sch.cache_read(acc, next(i for i, b in enumerate(reads) if b.same_as(weight)), "local"), rc)
    sch.unroll(oi)
    sch.unroll(wi)
    if len(sch.get(store).iter_vars) == 5:  # NCHW4c
        _write_texels(sch, store, thread)
        return
    loops = sch.get_loops(store)[2:]  # the tile's (channels, pixels), unit loops dropped
    if pixels > 1:  # PT neighbouring pixels of a row: one vstoreN
        sch.vectorize(loops.pop())
    for loop in loops:
        sch.unroll(loop)


def schedule_shift(sch: Schedule, blocks: dict, target, op: str) -> None:
    """Standalone shifts are copies: one output element per work-item; NCHW4c: one texel per work-item."""
    block = blocks[op]
    loops = sch.get_loops(block)
    thread = bind_threads(sch, loops[:4])
    if len(loops) == 5:
        _write_texels(sch, block, thread)


RULES = {
    "shift_conv2d": schedule_shift_conv2d,
    "shift2d": lambda sch, blocks, target: schedule_shift(sch, blocks, target, "shift2d"),
    "sparse_shift2d": lambda sch, blocks, target: schedule_shift(sch, blocks, target, "sparse_shift2d"),
    "active_shift2d": lambda sch, blocks, target: schedule_shift(sch, blocks, target, "active_shift2d"),
}
