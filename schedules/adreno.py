"""Adreno (OpenCL) schedules: explicit thread bindings for every ecnn block.

An unbound PrimFunc compiled for OpenCL silently becomes host code, and dlight's
``gpu.Reduction`` asserts on the table-indexed shift reads, so every ecnn function gets a schedule
here: one work-item per output element, the 1x1 reduction kept in a register, the weight panel
read in place (inlined) and the epilogue fused into the same kernel.
"""
from __future__ import annotations

from tvm.s_tir import Schedule

from ._blocks import divisor, extents

THREADS = (64, 32, 16, 8, 4, 2)


def _bind_flat(sch: Schedule, block) -> object:
    """Fuse the block's loops, bind them to (blockIdx.x, threadIdx.x); returns the thread loop."""
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops)
    threads = divisor(extents(sch, [fused])[0], THREADS)
    bx, tx = sch.split(fused, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    return tx


def schedule_shift_conv2d(sch: Schedule, blocks: dict, target) -> None:
    acc = blocks["shift_conv2d"]
    sch.compute_inline(blocks["shift_conv2d_weight"])
    if "shift_conv2d_epilogue" in blocks:
        sch.set_scope(acc, 0, "local")
        store = blocks["shift_conv2d_epilogue"]
    else:
        store = sch.cache_write(acc, 0, "local")
    thread = _bind_flat(sch, store)
    sch.compute_at(acc, thread)
    sch.decompose_reduction(acc, sch.get_loops(acc)[-1])


def schedule_shift(sch: Schedule, blocks: dict, target, op: str) -> None:
    _bind_flat(sch, blocks[op])


RULES = {
    "shift_conv2d": schedule_shift_conv2d,
    "shift2d": lambda sch, blocks, target: schedule_shift(sch, blocks, target, "shift2d"),
    "sparse_shift2d": lambda sch, blocks, target: schedule_shift(sch, blocks, target, "sparse_shift2d"),
    "active_shift2d": lambda sch, blocks, target: schedule_shift(sch, blocks, target, "active_shift2d"),
}
