"""Helpers shared by the per-target schedules.

Schedules find the ecnn blocks by their ``ecnn_op`` block annotation: function attributes do not
survive FuseTIR but block annotations do.
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx
from tvm.s_tir import SBlock, SBlockRealize, Schedule

# The block a fused function is scheduled around, most specific first.
ANCHORS = ("shift_conv2d", "active_shift2d", "sparse_shift2d", "shift2d")


def ecnn_blocks(sch: Schedule) -> dict:
    """``{ecnn op: block RV}`` for the top-level annotated blocks of the schedule's function.

    Hand-written TIR (TOPI's scans and sorts: ``cumsum``, ``sort``, ``index_put``) has no root
    block and no ecnn block."""
    found = {}
    try:
        root = sch.get_sblock("root")
    except tvm.s_tir.ScheduleError:
        return found
    for block in sch.get_child_blocks(root):
        op = sch.get(block).annotations.get("ecnn_op")
        if op is not None:
            found[str(op)] = block
    return found


def anchor(blocks: dict) -> str | None:
    return next((op for op in ANCHORS if op in blocks), None)


def inline_neighbours(sch: Schedule, keep: set[str]) -> None:
    """Inline every top-level block not named in ``keep`` (fused relu, bias adds, other shifts)."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if str(sch.get(block).annotations.get("ecnn_op")) in keep:
            continue
        for inline in (sch.compute_inline, sch.reverse_compute_inline):
            try:
                inline(block)
                break
            except tvm.s_tir.ScheduleError:
                continue


def divisor(extent: int, candidates=(16, 8, 4, 2)) -> int:
    """The largest candidate tile that divides ``extent`` (1 if none): no tail predicates."""
    return next((c for c in candidates if extent % c == 0), 1)


def extents(sch: Schedule, loops) -> list[int]:
    return [int(sch.get(loop).extent) for loop in loops]


def trivially_bound(sch: Schedule, block) -> bool:
    """One loop per block iterator, each iterator bound to exactly its loop (an unscheduled nest)."""
    loops = sch.get_loops(block)
    stmt = sch.get(loops[0]) if loops else None
    while isinstance(stmt, tirx.For):
        stmt = stmt.body
    if not isinstance(stmt, tvm.s_tir.SBlockRealize) or len(loops) != len(sch.get(block).iter_vars):
        return False
    return all(v.same_as(sch.get(loop).loop_var) for v, loop in zip(stmt.iter_values, loops))


def uses(expr, var) -> bool:
    hit = []
    tvm_ffi.structural_walk(expr, (tvm.ir.Var, lambda v: hit.append(v) if v.same_as(var) else None))
    return bool(hit)


def whole_along(region, *variables):
    """``region`` with every dimension whose start depends on one of ``variables`` widened to its whole
    extent: the reads of a block rewritten to cover what loops over those variables used to."""
    ranges = [tvm.ir.Range.from_min_extent(0, dim) if any(uses(r.min, v) for v in variables) else r
              for r, dim in zip(region.region, region.source.shape)]
    return tirx.BufferRegion(region.source, ranges)


def replace_outer_loops(sch: Schedule, block_rv, depth: int, new) -> None:
    """Replace the ``depth`` outermost loops of ``block_rv`` and everything under them by the same loops around
    the block ``new`` (a rewrite of the block that covers the inner loops itself)."""
    loops = sch.get_loops(block_rv)
    nest = SBlockRealize([sch.get(loop).loop_var for loop in loops[:depth]], True, new)
    for loop in reversed(loops[:depth]):
        f = sch.get(loop)
        nest = tirx.For(f.loop_var, f.min, f.extent, f.kind, nest)
    sch.state.replace(sch.get_sref(loops[0]), nest, {sch.get(block_rv): new})


def replace_by_plane_block(sch: Schedule, block_rv, buffer, body) -> None:
    """Replace the NCHW block ``block_rv`` (iterators ``n, c, h, w``) and its two inner loops by one block per plane
    ``[n, c]`` running ``body``, which writes the whole ``[n, c]`` plane of ``buffer`` and may read the whole planes
    the block read."""
    block = sch.get(block_rv)
    v_n, v_c, v_h, v_w = (iv.var for iv in block.iter_vars)
    span = tvm.ir.Range.from_min_extent
    writes = [tirx.BufferRegion(buffer, [span(v_n, 1), span(v_c, 1), *(span(0, int(d)) for d in buffer.shape[2:])])]
    new = SBlock(block.iter_vars[:2], [whole_along(r, v_h, v_w) for r in block.reads], writes, block.name_hint, body,
                 None, block.alloc_buffers, block.match_buffers, block.annotations)
    replace_outer_loops(sch, block_rv, 2, new)
