"""Host (x86-64 LLVM) schedules: the development target and the benchmark reference.

``shift_conv2d`` (fp32 NCHW, rows of 4 pixels or more) runs the micro-kernel the plain 1x1 conv
(``cpu_conv2d.py``) picks for its output shape, the *GEMM* over the flattened plane
(``cpu_conv2d_1x1.py``), *pixel vectors* or *channel vectors* (7x7, 14x14,
28x28 maps: odd pixel vectors lose to full channel vectors), on the shifted input staged as
NCHW planes: the shift's arithmetic and bounds tests leave the FMA loop, and the weight is packed
once, at compile time (``cpu_common.pack_weights_at_compile_time``). The grouped shift under full
pixel vectors (8x8, 16x16, 32x32 maps) is read in place instead: a copy of the input costs more
than the shift's address arithmetic there, which leaves the FMA loop once the reduction runs one shift cell at a time. int8 on AVX-512 VNNI: ``vpdpbusd``
(``cpu_int8.py``). Otherwise (int8, NCHW4c, narrower rows) an outer-product
micro-kernel: a vector of output channels accumulates ``x * w`` for a few output pixels, so the
(shifted, bounds-checked) input is one *scalar* load per pixel and channel whatever the shift; the
``[C, O]`` weight panel is staged per output tile so the channel vector is contiguous.
"""
from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import tirx
from tvm.s_tir import SBlock, Schedule

from . import cpu_int8
from ._blocks import divisor, extents
from .bilinear_rows import blend_planes, blend_rows
from .cpu_common import accumulator_budget, pack_weights_at_compile_time, vector_lanes
from .cpu_conv2d import (channel_tile, channel_vectors_whole, outer_product_pixels, pixel_vector_channels,
                         pixel_vector_width, pixel_vectors_win)
from .cpu_conv2d_1x1 import gemm_loop_nest, gemm_plan
from .cpu_loop_nest import schedule_block
from .split_borders import copy_shifted_planes, split_borders


def tile_shift_conv2d(sch: Schedule, blocks: dict, out_tiles, pixel_tiles, scope="local", panel_per_row=True):
    """The loop nest every CPU ``shift_conv2d`` schedule shares; returns ``(rows, wo, rc, wi, oi)``.

    ``rows`` = parallel (batch, output-channel tile, output row); per row the ``[C, O]`` weight panel
    is staged; per ``wo`` (pixel tile) the accumulator tile ``[wi pixels, oi channels]`` (channels
    innermost) is reduced over ``rc``; the store/epilogue follows at ``wo``. Both staged buffers get
    ``scope`` (tensorizing callers pass "global", what TVM's intrinsics declare, and localize after).
    Without ``panel_per_row`` the panel is packed once per call, before the rows.
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
    if panel_per_row:
        sch.compute_at(panel, rows)
    sch.set_scope(panel, 0, scope)
    return rows, wo, rc, wi, oi


def is_bilinear(sch: Schedule, blocks: dict) -> bool:
    """The fused shift is the active (bilinear) one: four taps and their weights per input value."""
    return str(sch.get(blocks["shift_conv2d_input"]).annotations.get("ecnn_shift")) == "active"


def stage_per_row(sch: Schedule, stage, rows, pixels_innermost=True) -> None:
    """Compute the shifted input once per output row, as ``[C, W']`` with the pixels innermost
    (else ``[W', C]``, what dot-product intrinsics read; either way computed channel by channel).

    Each channel's offset, taps and weights are then loop-invariant over a whole row: on the host
    the active shift costs 1.18x a 1x1 conv this way, 2.2x staged per pixel tile and 2.6x
    inlined (``scripts/bench_shift_conv.py``, 64x56x56, O=64).
    """
    if pixels_innermost:
        sch.transform_layout(stage, ("write", 0), lambda n, h, w, c: (n, h, c, w))
    sch.compute_at(stage, rows)
    loops = sch.get_loops(stage)
    row = [sch.get(loop).same_as(sch.get(rows)) for loop in loops].index(True)
    if len(loops) == row + 3:  # (pixels, channels); compute_at drops unit loops
        sch.reorder(loops[-1], loops[-2])


def borders_split_cheaply(sch: Schedule, stage) -> bool:
    """Only the sparse shift (table offsets): ``split_borders`` turns the grouped shift's closed-form
    offsets and the active shift's four bilinear taps into bounds expressions that cost TVM's
    simplifier 5-7 s per kernel (sparse: 0.4 s), so those are staged per row instead."""
    return str(sch.get(stage).annotations.get("ecnn_shift")) == "sparse"


def _stage_planes(sch: Schedule, stage, row=None) -> None:
    """The shifted input staged as NCHW planes ``[N, C, H', W']``: all shift arithmetic out of
    the FMA loop, a channel's pixels contiguous (across rows too); inlined when there is no shift.

    Per output row (``row``: ``[C, W']`` while it is in L1); else once per call, in parallel over
    the planes, the sparse shift's plane as one contiguous copy with its wrapped columns zeroed after
    (``copy_shifted_planes``; 960->160 7x7: 1.63x -> 1.23x the 1x1 conv, 384->64 14x14: 1.57x -> 1.27x),
    at stride 2 its rows split into two bounds-tested borders and a test-free interior
    (``split_borders``); LLVM vectorizes both. The active shift at stride 2 is blended row by row
    (``blend_rows``, ``BLEND_STRIDED_FROM``; 64->64 56x56: 2.35x -> 1.70x the 1x1 conv, one thread), at stride 1
    plane by plane, a flat test-free blend over the taps' common interior (``blend_planes``; one thread, 7x7
    256->256: 1.37x -> 1.28x the 1x1 conv, 28x28 64->64: 1.30x -> 1.20x, 56x56 32->32: 1.61x -> 1.45x; 14x14
    alike; on two threads it runs on both); any other stage stays elementwise and serial: LLVM
    vectorizes its guarded loads only outside the parallel loop (the active shift at 14x14 in parallel: 4x the
    serial loop's work).
    """
    if str(sch.get(stage).annotations.get("ecnn_shift")) == "none":
        sch.compute_inline(stage)
        return
    blended = not reads_unit_stride(sch, stage) and extents(sch, sch.get_loops(stage))[2] >= BLEND_STRIDED_FROM
    sch.transform_layout(stage, ("write", 0), lambda n, h, w, c: (n, c, h, w))
    sch.transform_block_layout(stage, lambda n, h, w, c: (n, c, h, w))
    if row is not None:
        sch.compute_at(stage, row)
        blend_rows(sch, stage)
    elif (borders_split_cheaply(sch, stage) and (copy_shifted_planes(sch, stage) or split_borders(sch, stage))) \
            or (blended and blend_rows(sch, stage)) or blend_planes(sch, stage):
        n, c = sch.get_loops(stage)[:2]
        sch.parallel(sch.fuse(n, c))
    else:
        schedule_block(sch, stage, 0)


BLEND_STRIDED_FROM = 14
"""Output width from which the active shift at stride 2 staged once per call is blended row by row
(``blend_rows``): rows of 7 cost more per row than LLVM's elementwise (gathering) loop."""

STAGE_ROWS_FROM = 48
"""Output width from which the pixel-vector kernel stages the shifted input per row (in L1) rather than once
per call (also narrower rows but for the sparse shift: ``borders_split_cheaply``)."""


def rows_per_vector(height: int, width: int, lanes: int) -> int:
    """Whole rows per pixel vector on maps narrower than half a vector (8x8: 2 rows of AVX-512),
    dividing the height (a tile of whole rows keeps the epilogue's region exact); 0 for none."""
    return next((k for k in range(lanes // max(width, 1), 1, -1) if height % k == 0 and 2 * width <= lanes), 0)


def staged_shift_conv2d(sch: Schedule, blocks: dict, target) -> bool:
    """fp32 NCHW: the micro-kernel the host's plain 1x1 conv of the output's shape picks, over the shifted
    input staged as NCHW planes. The GEMM over the flattened plane (``gemm_shift_conv2d``) where the plain
    conv's would take it, also on wide rows (planes staged once, one thread, 56x56: sparse 144->24 0.223 ->
    0.161 ms, active 32->32 0.104 -> 0.071; the row kernel staging per row 2.1-2.4x the 1x1 conv, the GEMM
    1.5-1.6x) and at stride 2, on staged planes (112x112 active 32->32: 0.140 -> 0.093). Else channel vectors
    (``cpu_conv2d.py``: where full ones beat odd pixel vectors, 7x7/14x14/28x28 maps, and at stride 2, where
    pixel vectors would gather; 384->64 16x16: 0.042 -> 0.038 ms, ``shift="none"`` 0.076 -> 0.028), or pixel
    vectors: wide rows staged per row (staged once per call, their planes leave L2: 56x56 maps 1.3-2.3x
    slower). Full pixel vectors on narrower rows (8x8 in pairs of rows, 16x16, 32x32) read the grouped shift
    in place (``reads_shift_directly``; at 56x56's 14-pixel vectors in place is 7x slower; at 8x8 the GEMM on
    the staged copy is 1.3x slower). False (nothing changed) when the map gives none or the kernel is not
    fp32 NCHW."""
    acc, epilogue = blocks["shift_conv2d"], blocks.get("shift_conv2d_epilogue")
    out = sch.get(epilogue if epilogue is not None else acc).writes[0].source
    if str(out.dtype) != "float32" or len(out.shape) != 4 or str(sch.get(acc).writes[0].source.dtype) != "float32":
        return False
    lanes, budget = vector_lanes(target, "float32"), accumulator_budget(target)
    _, out_ch, height, width, _ = extents(sch, sch.get_loops(acc))
    rows = rows_per_vector(height, width, lanes)
    vector = rows * width or pixel_vector_width(width, lanes)
    pixels = outer_product_pixels(width, budget)
    tile = channel_tile(out_ch, lanes, pixels, budget)
    strided = not reads_unit_stride(sch, blocks["shift_conv2d_input"])
    direct = vector == lanes and width < STAGE_ROWS_FROM
    row = pixel_vector_width(width, lanes)
    if not (direct and reads_shift_directly(sch, blocks["shift_conv2d_input"])) and gemm_shift_conv2d(
            sch, blocks, lanes, budget, row == lanes, channel_vectors_whole(width, row, tile, pixels, lanes)):
        return True
    if width < STAGE_ROWS_FROM and tile % lanes == 0 and (strided or not pixel_vectors_win(vector, tile, lanes)):
        channel_vector_shift_conv2d(sch, blocks, tile, pixels)
        return True
    if vector == 1:
        return False
    pixel_vector_shift_conv2d(sch, blocks, rows, vector, budget // math.ceil(vector / lanes), direct)
    return True


def gemm_shift_conv2d(sch: Schedule, blocks: dict, lanes: int, budget: int, rows_whole: bool,
                      channels_whole: bool) -> bool:
    """The plain 1x1 conv's GEMM (``cpu_conv2d_1x1.py``) over the shifted input staged once per call as
    whole NCHW planes (``_stage_planes``): those are contiguous ``[C, H*W]`` whatever the shift and stride
    (a copy padded to whole tiles where they are no whole tiles). False (nothing changed) where
    ``gemm_plan`` gives no tile, or where the unshifted input would be read in place at stride 2."""
    acc, stage = blocks["shift_conv2d"], blocks["shift_conv2d_input"]
    _, out_ch, height, width, in_ch = extents(sch, sch.get_loops(acc))
    tile = gemm_plan(out_ch, in_ch, height * width, lanes, budget, rows_whole, channels_whole)
    if tile is None or (str(sch.get(stage).annotations.get("ecnn_shift")) == "none"
                        and not reads_unit_stride(sch, stage)):
        return False
    _stage_planes(sch, stage)
    weight = sch.get(blocks["shift_conv2d_weight"]).writes[0].source
    gemm_loop_nest(sch, acc, blocks.get("shift_conv2d_epilogue"), weight, tile, lanes, sch.parallel)
    pack_weights_at_compile_time(sch, blocks, lambda o, c, kh, kw: (o // tile[0], c, kh, kw, o % tile[0]))
    return True


def reads_shift_directly(sch: Schedule, stage) -> bool:
    """The grouped shift at stride 1: a pixel vector's shifted input is a contiguous run of the
    input itself (the shift is an address offset per channel), so it is read in place, not staged
    (a copy of the input costs 1.5-3x the 1x1 conv on 32x32/16x16 maps with 16-32 output channels)."""
    if str(sch.get(stage).annotations.get("ecnn_shift")) != "grouped":
        return False
    block = sch.get(stage)
    guards = guarded_loads(block.body.value)
    load = guards[0].args[1] if len(guards) == 1 else None
    if load is None or len(load.indices) != 4:
        return False
    v_h, v_w = block.iter_vars[1].var, block.iter_vars[2].var
    return all(_unit_stride(index, var) for index, var in zip(load.indices[2:], (v_h, v_w)))


def reads_unit_stride(sch: Schedule, stage) -> bool:
    """The stage reads the input's pixels contiguously along a row (the 1x1 conv's stride is 1)."""
    block = sch.get(stage)
    loads = []
    tvm_ffi.structural_walk(block.body.value, (tvm.ir.TensorLoad, lambda e: loads.append(e)))
    return all(_unit_stride(load.indices[-1], block.iter_vars[2].var) for load in loads if len(load.indices) == 4)


def guarded_loads(expr) -> list:
    """The ``if_then_else(inside, load, fill)`` calls of ``expr`` (not those of the offsets)."""
    found = []
    tvm_ffi.structural_walk(expr, (tvm.ir.Call, lambda c: found.append(c) if c.op.name == "prim.if_then_else"
                                   and isinstance(c.args[1], tvm.ir.TensorLoad) else None))
    return found


def _unit_stride(index, var):
    linear = tvm.sym.detect_linear_equation(index, [var])
    return len(linear) == 2 and isinstance(linear[0], tirx.IntImm) and int(linear[0]) == 1


def _offset_bound(analyzer, offset) -> tuple[int, int]:
    """Constant bounds of a shift offset (``const_int_bound`` knows no ``if_then_else``: the
    grouped shift's unshifted trailing channels)."""
    if isinstance(offset, tvm.ir.Call) and offset.op.name == "prim.if_then_else":
        (a, b), (c, d) = (_offset_bound(analyzer, branch) for branch in offset.args[1:])
        return min(a, c), max(b, d)
    bound = analyzer.const_int_bound(offset)
    return bound.min_value, bound.max_value


def unguard_shifted_loads(sch: Schedule, update) -> int:
    """Make the in-place shifted load of the accumulation ``update`` block vectorizable.

    ``if_then_else(inside, x[n, c, h + dy, w + dx], 0)`` is tested per lane, which TVM's
    ``vectorize`` scalarizes; ``Select(inside, ...)`` loads the whole vector and zeroes the lanes
    outside the image. Those lanes read a neighbouring row or plane of ``x`` (the shift reaches at
    most ``reach`` pixels), in bounds for every channel but the first and last ``edge`` ones, which
    keep the tested load. The offsets are written as those of the first channel of their shift
    cell, so that they are invariant in a loop over the cell's channels. Returns the channels per
    cell (``_shift_cell_run``); 0 (nothing changed) when the offsets are not bounded constants.
    """
    block = sch.get(update)
    store = block.body
    guards = guarded_loads(store.value) if isinstance(store, tirx.BufferStore) else []
    if len(guards) != 1 or len(block.iter_vars) != 5:
        return 0
    guard, (v_h, v_w, v_c) = guards[0], (iv.var for iv in block.iter_vars[2:])
    load = guard.args[1]
    if not isinstance(load, tvm.ir.TensorLoad) or len(load.indices) != 4 or not load.indices[1].same_as(v_c):
        return 0
    analyzer = tvm.sym.Analyzer()
    for iv in block.iter_vars:
        analyzer.bind(iv.var, iv.dom)
    reach = 0
    for index, var in zip(load.indices[2:], (v_h, v_w)):
        if not _unit_stride(index, var):
            return 0
        low, high = _offset_bound(analyzer, tvm.sym.detect_linear_equation(index, [var])[1])
        reach = max(reach, -low, high)
    channels, height, width = (int(d) for d in load.source.shape[1:])
    edge = -(-reach * (width + 1) // (height * width))
    if 2 * edge >= channels:
        return 0
    run = _shift_cell_run(analyzer, load.indices[2:], v_c, channels)
    first = tirx.floordiv(v_c, run) * run

    def of_cell(expr):  # the offsets of the run's first channel: the same, written invariant in the run
        return expr if run == 1 else tvm_ffi.structural_map(
            expr, (tirx.Var, lambda v: first if v.same_as(v_c) else v))

    n, c, y, x = load.indices
    y, x = of_cell(y), of_cell(x)
    shifted = tirx.BufferLoad(load.source, [n, c, y, x])
    clamped = tirx.BufferLoad(load.source, [n, c, tirx.max(tirx.min(y, height - 1), 0),
                                          tirx.max(tirx.min(x, width - 1), 0)])

    def unguarded(read):
        return tirx.BufferStore(store.buffer, tvm_ffi.structural_map(store.value, (
            tvm.ir.Call,
            lambda g: tirx.Select(of_cell(g.args[0]), read, g.args[2]) if guarded_loads(g) == [g] else g)),
            store.indices)

    body = tirx.IfThenElse(tirx.all(v_c >= edge, v_c < channels - edge), unguarded(shifted), unguarded(clamped))
    new = SBlock(block.iter_vars, block.reads, block.writes, block.name_hint, body, block.init,
                 block.alloc_buffers, block.match_buffers, block.annotations)
    sch.state.replace(sch.get_sref(update), new, {block: new})
    return run


def _shift_cell_run(analyzer, indices, v_c, channels: int) -> int:
    """Channels per shift cell: the largest ``run`` such that every channel has the offsets of
    channel ``c // run * run`` (raster-order grouped shift: ``C // k^2``; interleaved: 1)."""
    def at(index, c):
        return str(analyzer.simplify(tvm_ffi.structural_map(
            index, (tirx.Var, lambda v: tirx.IntImm(v_c.ty, c) if v.same_as(v_c) else v))))

    offsets = [tuple(at(index, c) for index in indices) for c in range(channels)]
    run = next((k for k in range(1, channels) if offsets[k] != offsets[0]), channels)
    return run if all(offsets[c] == offsets[c // run * run] for c in range(channels)) else 1


def channel_vector_shift_conv2d(sch: Schedule, blocks: dict, tile: int, pixels: int) -> None:
    """Channel vectors, as the host's plain 1x1 conv (``cpu_conv2d._outer_product``): per
    (output-channel tile, row) in parallel, per ``pixels`` output pixels, ``pixels x tile``
    accumulators; per ``rc`` one ``tile`` weight vector of the weight packed
    ``[O / tile, C, 1, 1, tile]`` at compile time times one scalar of the staged planes per pixel."""
    acc, stage = blocks["shift_conv2d"], blocks["shift_conv2d_input"]
    epilogue = blocks.get("shift_conv2d_epilogue")
    if epilogue is not None:
        sch.set_scope(acc, 0, "local")
    store = sch.cache_write(acc, 0, "local") if epilogue is None else epilogue
    n, o, h, w, rc = sch.get_loops(acc)
    fo, fi = sch.split(o, [None, tile])
    xo, xi = sch.split(w, [None, pixels])
    sch.reorder(n, fo, h, xo, rc, xi, fi)
    sch.reverse_compute_at(store, xo)
    sch.transform_layout(acc, ("write", 0), lambda n_, o_, h_, w_: (n_, h_, w_, o_))
    sch.parallel(sch.fuse(n, fo, h))
    _stage_planes(sch, stage)
    pack_weights_at_compile_time(sch, blocks, lambda o, c, kh, kw: (o // tile, c, kh, kw, o % tile))
    sch.unroll(xi)
    sch.vectorize(fi)
    sch.decompose_reduction(acc, rc)


def pixel_vector_shift_conv2d(sch: Schedule, blocks: dict, rows: int, vector: int, budget: int,
                              direct: bool = False) -> None:
    """Pixel vectors, as the host's plain 1x1 convs (``cpu_conv2d.py``): the shifted input staged
    as NCHW planes (``_stage_planes``), or with ``direct`` read in place where
    ``reads_shift_directly`` (the reduction then runs per shift cell, ``unguard_shifted_loads``);
    per ``rc`` one contiguous vector of output pixels (``rows`` whole rows on small maps) times
    ``channels`` scalar weights, broadcast from the weight packed ``[O / channels, C, 1, 1, channels]``
    at compile time. The accumulators and the epilogue are NCHW vectors."""
    acc, stage = blocks["shift_conv2d"], blocks["shift_conv2d_input"]
    epilogue = blocks.get("shift_conv2d_epilogue")
    _, out_ch, _, width, _ = extents(sch, sch.get_loops(acc))
    channels = pixel_vector_channels(out_ch, budget)
    if epilogue is not None:
        sch.set_scope(acc, 0, "local")
    store = sch.cache_write(acc, 0, "local") if epilogue is None else epilogue
    if rows:  # one pixel axis, a vector spans whole rows
        for block in (store, acc):
            loops = sch.get_loops(block)
            sch.fuse(loops[2], loops[3])
        n, o, p, rc = sch.get_loops(acc)
    else:  # a vector within a row (fusing the rows would make its loads gathers)
        n, o, h, p, rc = sch.get_loops(acc)
        sch.reorder(h, o)
        n = sch.fuse(n, h)
    fo, fi = sch.split(o, [None, channels])
    po, pi = sch.split(p, [None, vector])
    sch.reorder(n, fo, po, rc, fi, pi)
    sch.reverse_compute_at(store, po)
    direct = direct and reads_shift_directly(sch, stage)
    if direct:
        sch.compute_inline(stage)
    if direct or rows or (width < STAGE_ROWS_FROM and borders_split_cheaply(sch, stage)):
        sch.parallel(sch.fuse(n, fo, po))
        if not direct:
            _stage_planes(sch, stage)
    else:
        sch.parallel(n)
        _stage_planes(sch, stage, n)
    pack_weights_at_compile_time(sch, blocks, lambda o, c, kh, kw: (o // channels, c, kh, kw, o % channels))
    sch.unroll(fi)
    sch.vectorize(pi)
    sch.vectorize(sch.get_loops(store)[-1])
    sch.decompose_reduction(acc, rc)
    run = unguard_shifted_loads(sch, acc) if direct else 0
    if run > 1:  # one shift cell per inner loop: LLVM hoists its offsets and lane mask out of it
        channels_in = extents(sch, [rc])[0]
        if channels_in % run:
            rc = sch.loop_partition(rc, [channels_in - channels_in % run, None])[0]
        sch.split(rc, [None, run])


def schedule_shift_conv2d(sch: Schedule, blocks: dict, target, out_tiles=(64, 32, 16, 8, 4), pixel_tiles=(4, 7, 2)) -> None:
    """fp32 NCHW: the plain 1x1 conv's micro-kernel (``staged_shift_conv2d``), else an outer product:
    per ``rc``, a vector of ``oi`` output channels times one input scalar per pixel.

    ``out_tiles``/``pixel_tiles`` are the candidate tile sizes (largest dividing one wins); other
    CPUs pass their own to fit their register file (``schedules/arm_cpu.py``). Integer shifts are
    inlined (one scalar load per channel and pixel is cheapest); the bilinear one is staged per row.
    """
    if staged_shift_conv2d(sch, blocks, target) or cpu_int8.vnni_shift_conv2d(sch, blocks, target):
        return
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
