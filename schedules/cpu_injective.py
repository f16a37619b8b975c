"""Default LLVM-CPU schedule of a function that inlines into one elementwise block: unfolded batch norm
and activation, concatenation, bias adds, layout-preserving copies.

``cpu_loop_nest.py`` vectorizes the innermost axis alone, which on the small maps of a network's late
stages (a 14- or 7-pixel row) leaves 4-lane or scalar code. Here the trailing axes every load reads in
the output's own order (or not at all: per-channel parameters) are fused into one contiguous run first:
vectorized in whole vectors when it divides, else left to LLVM's loop vectorizer (which adds the tail),
and per-channel work (batch norm's ``sqrt(var + eps)``) stays outside it, where LLVM hoists it.
"""
from __future__ import annotations

import math

from tvm.s_tir import Schedule

from ._blocks import extents, trivially_bound, uses
from .cpu_common import PARALLEL_MIN_WORK, guarded_by, inline_all, kinds, loads, root_blocks, vector_lanes


def schedule_injective(sch: Schedule, target) -> bool:
    """The function's single elementwise block, its contiguous trailing axes fused and vectorized, the outer
    ones in parallel when the block is big enough; False (left to ``cpu_loop_nest.py``) for anything else."""
    inline_all(sch)
    blocks = root_blocks(sch)
    if len(blocks) != 1 or "R" in kinds(sch, blocks[0]) or not trivially_bound(sch, blocks[0]):
        return False
    block = blocks[0]
    b = sch.get(block)
    loops = sch.get_loops(block)
    first = _contiguous_tail(b)
    if first >= len(loops) or guarded_by(b.body.value, b.iter_vars[-1].var):
        return False  # the innermost axis itself is read out of order, or padded per column
    sizes = extents(sch, loops)
    run = sch.fuse(*loops[first:]) if len(loops) - first > 1 else loops[first]
    lanes = vector_width(sizes[first:], vector_lanes(target, str(b.body.buffer.dtype)))
    inner = math.prod(sizes[first:])
    outer = [loop for loop, size in zip(loops[:first], sizes[:first]) if size > 1]
    vector = None
    if lanes is not None and inner % lanes == 0 and inner > lanes:
        run, vector = sch.split(run, [None, lanes])
    elif lanes is not None and inner <= lanes:
        run, vector = None, run
    # else a run with a tail, or rows across vectors: LLVM's loop vectorizer
    threads = outer or ([run] if run is not None and vector is not None else [])
    if math.prod(sizes) >= PARALLEL_MIN_WORK and threads:
        sch.parallel(sch.fuse(*threads) if len(threads) > 1 else threads[0])
    if vector is not None:
        sch.vectorize(vector)
    return True


def vector_width(tail: list[int], lanes: int) -> int | None:
    """The widest of ``lanes``, ``lanes / 2``, ``lanes / 4`` (at least 4) that every row of the fused ``tail``
    axes (the product of the axes below each one) is a multiple or a divisor of; None if none is.

    A vector that starts inside one row and ends in the next has per-lane ``//`` and ``%`` indices that
    TVM cannot fold back into one contiguous ramp: its loads and stores become one per lane (int8's
    64-lane vectors on 224-wide rows: the input quantize took 99 us, 64 ``vpextrb`` stores per vector; in
    32-lane vectors 6.5 us, Zen 5)."""
    rows = [math.prod(tail[i:]) for i in range(1, len(tail))]
    return next((w for w in (lanes, lanes // 2, lanes // 4)
                 if w >= 4 and all(r % w == 0 or w % r == 0 for r in rows)), None)


def _contiguous_tail(b) -> int:
    """Index of the first of the trailing block axes that every load either reads at the same trailing
    positions, in the same order (an elementwise or concatenated operand), or not at all (a broadcast)."""
    variables = [iv.var for iv in b.iter_vars]
    first = len(variables)
    while first > 0:
        tail = variables[first - 1:]
        if not all(_reads_tail(load.indices, tail) for load in loads(b.body.value)):
            break
        first -= 1
    return first


def _reads_tail(indices, tail) -> bool:
    if not any(uses(i, v) for i in indices for v in tail):
        return True
    return len(indices) >= len(tail) and all(i.same_as(v) for i, v in zip(indices[len(indices) - len(tail):], tail))
