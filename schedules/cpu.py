"""Host (x86-64 LLVM) schedules: the development target and the benchmark reference.

``shift_conv2d`` is an outer-product micro-kernel: a vector of output channels accumulates
``x * w`` for a few output pixels, so the (shifted, bounds-checked) input is one *scalar* load per
pixel and channel whatever the shift; the boundary test never sits inside a vector lane. The
kernel's ``[C, O]`` weight panel is staged per output tile so the channel vector is contiguous.
"""
from __future__ import annotations

from tvm.s_tir import Schedule

from ._blocks import divisor, extents


def tile_shift_conv2d(sch: Schedule, blocks: dict, out_tiles, pixel_tiles, scope="local"):
    """The loop nest every CPU ``shift_conv2d`` schedule shares; returns ``(rows, wo, rc, wi, oi)``.

    ``rows`` = parallel (batch, output-channel tile, output row); per row the ``[C, O]`` weight panel
    is staged; per ``wo`` (pixel tile) the accumulator tile ``[wi pixels, oi channels]`` (channels
    innermost) is reduced over ``rc``; the store/epilogue follows at ``wo``. Both staged buffers get
    ``scope`` (tensorizing callers pass "global", what TVM's intrinsics declare, and localize after).
    """
    acc, panel = blocks["shift_conv2d"], blocks["shift_conv2d_weight"]
    epilogue = blocks.get("shift_conv2d_epilogue")
    n, o, h, w, rc = sch.get_loops(acc)
    _, out_ch, _, width, _ = extents(sch, [n, o, h, w, rc])
    oo, oi = sch.split(o, [None, divisor(out_ch, out_tiles)])
    wo, wi = sch.split(w, [None, divisor(width, pixel_tiles)])
    sch.reorder(n, oo, h, wo, rc, wi, oi)
    if epilogue is None:
        store = sch.cache_write(acc, 0, scope)
    else:
        sch.set_scope(acc, 0, scope)
        store = epilogue
    sch.reverse_compute_at(store, wo)
    # the accumulator tile is [pixels, channels]: channel-vector accesses stay contiguous
    sch.transform_layout(acc, ("write", 0), lambda n_, o_, h_, w_: (n_, h_, w_, o_))
    rows = sch.fuse(n, oo, h)
    sch.parallel(rows)
    sch.compute_at(panel, rows)
    sch.set_scope(panel, 0, scope)
    return rows, wo, rc, wi, oi


def is_bilinear(sch: Schedule, blocks: dict) -> bool:
    """The fused shift is the active (bilinear) one: four taps and their weights per input value."""
    return str(sch.get(blocks["shift_conv2d_input"]).annotations.get("ecnn_shift")) == "active"


def stage_per_row(sch: Schedule, stage, rows) -> None:
    """Compute the shifted input once per output row, as ``[C, W']`` with the pixels innermost.

    Each channel's offset, taps and weights are then loop-invariant over a whole row: on the host
    the active shift costs 1.18x a 1x1 conv this way, 2.2x staged per pixel tile and 2.6x
    inlined (``scripts/bench_shift_conv.py``, 64x56x56, O=64).
    """
    sch.transform_layout(stage, ("write", 0), lambda n, h, w, c: (n, h, c, w))
    sch.compute_at(stage, rows)
    loops = sch.get_loops(stage)
    row = [sch.get(loop).same_as(sch.get(rows)) for loop in loops].index(True)
    if len(loops) == row + 3:  # (pixels, channels); compute_at drops unit loops
        sch.reorder(loops[-1], loops[-2])


def schedule_shift_conv2d(sch: Schedule, blocks: dict, target, out_tiles=(64, 32, 16, 8, 4), pixel_tiles=(4, 7, 2)) -> None:
    """Outer product: per ``rc``, a vector of ``oi`` output channels times one input scalar per pixel.

    ``out_tiles``/``pixel_tiles`` are the candidate tile sizes (largest dividing one wins); other
    CPUs pass their own to fit their register file (``schedules/arm_cpu.py``). Integer shifts are
    inlined (one scalar load per channel and pixel is cheapest); the bilinear one is staged per row.
    """
    bilinear = is_bilinear(sch, blocks)
    if not bilinear:
        sch.compute_inline(blocks["shift_conv2d_input"])
    rows, _, rc, wi, oi = tile_shift_conv2d(sch, blocks, out_tiles, pixel_tiles)
    if bilinear:
        stage_per_row(sch, blocks["shift_conv2d_input"], rows)
    sch.unroll(wi)
    sch.vectorize(oi)
    sch.decompose_reduction(blocks["shift_conv2d"], rc)


def schedule_shift(sch: Schedule, blocks: dict, target, op: str) -> None:
    """Standalone shifts are copies: parallel over (n, c), contiguous inner loop vectorized."""
    block = blocks[op]
    loops = sch.get_loops(block)
    sch.parallel(sch.fuse(loops[0], loops[1]))
    inner = loops[-1]
    lanes = divisor(extents(sch, [inner])[0], (8, 4))
    if lanes > 1:
        sch.vectorize(sch.split(inner, [None, lanes])[1])


RULES = {
    "shift_conv2d": schedule_shift_conv2d,
    "shift2d": lambda sch, blocks, target: schedule_shift(sch, blocks, target, "shift2d"),
    "sparse_shift2d": lambda sch, blocks, target: schedule_shift(sch, blocks, target, "sparse_shift2d"),
    "active_shift2d": lambda sch, blocks, target: schedule_shift(sch, blocks, target, "active_shift2d"),
}
