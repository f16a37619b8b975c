"""Default LLVM-CPU schedule of any plain loop nest: elementwise chains, pools, reductions, ``x @ W``
(dense), layout copies and standalone or conv padding stages.

Inline what can be, then per block: parallel outer spatial loops and the innermost contiguous
spatial loop vectorized. Padding stays a stage whose rows copy their interior without bounds
tests (``split_borders.py``).
"""
from __future__ import annotations

import math

import tvm
from tvm import tirx
from tvm.s_tir import Schedule

from ._blocks import divisor, extents, trivially_bound, uses
from .cpu_common import PARALLEL_MIN_WORK, guarded_by, has_guard, inline_all, kinds, loads, root_blocks, vector_lanes
from .split_borders import split_borders

SMALL_WINDOW = 16
"""Reductions up to this many taps (pooling windows) keep TOPI's loop order: LLVM unrolls and
vectorizes the window; moving the row below the taps measured 2-5x slower."""


def stage_padding(sch: Schedule, pad) -> None:
    """A zero-padding stage: inlined when it is a plain copy (1x1 convs), else kept as a buffer
    whose rows are an interior copy between two bounds-tested borders, in parallel."""
    if pad is None:
        return
    if not has_guard(sch, pad):
        sch.compute_inline(pad)
        return
    if split_borders(sch, pad, inner=len(sch.get(pad).iter_vars) - 4):  # a stem's parity: cpu_stem.py
        n, c, h = sch.get_loops(pad)
        rows = sch.fuse(n, c, h)
        if math.prod(int(d) for d in sch.get(pad).writes[0].source.shape) >= PARALLEL_MIN_WORK:
            sch.parallel(rows)
    else:
        schedule_block(sch, pad, 0)



def schedule_block(sch: Schedule, block, lanes: int) -> None:
    """Parallel outer spatial loops; the innermost spatial loop with extent > 1 vectorized (split
    into whole vectors when it divides, else left to LLVM's loop vectorizer). A reduction keeps
    that loop innermost, below the reduction loops, when its inputs are contiguous along it (pools,
    ``x @ W``: a row of accumulators); otherwise (row sums) it reduces innermost."""
    nest = kinds(sch, block)
    spatial = len(nest) - len(nest.lstrip("S"))
    if not trivially_bound(sch, block) or spatial == 0 or nest[spatial:] != "R" * (len(nest) - spatial):
        return  # not an unscheduled S..S R..R nest
    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    inner = max((i for i in range(spatial) if sizes[i] > 1), default=None)
    if inner is None:
        return
    b = sch.get(block)
    var, value = b.iter_vars[inner].var, b.body.value
    reductions, units = loops[spatial:], loops[inner + 1:spatial]
    reads = loads(value)
    contiguous = not reads or any(load.indices and uses(load.indices[-1], var) for load in reads)
    parallel = math.prod(sizes) >= PARALLEL_MIN_WORK
    if reductions and not contiguous:  # reduce along the contiguous axis, one output at a time
        if parallel:
            sch.parallel(sch.fuse(*loops[:spatial]))
        return
    if reductions and math.prod(sizes[spatial:]) <= SMALL_WINDOW:  # pools: LLVM does the window
        if parallel and inner > 0:
            sch.parallel(sch.fuse(*loops[:inner]) if inner > 1 else loops[0])
        return
    width = divisor(sizes[inner], tuple(v for v in (2 * lanes, lanes, lanes // 2, lanes // 4) if v >= 4))
    vo, vi = loops[inner], None
    if width > 1 and not guarded_by(value, var):
        vo, vi = sch.split(loops[inner], [None, width])
    outer = loops[:inner] + ([vo] if vi is not None else [])
    if reductions or units:
        sch.reorder(*outer, *units, *reductions, vi if vi is not None else vo)
    if parallel and outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    if vi is not None:  # before decompose_reduction: the update alone is no reduction block to vectorize
        sch.vectorize(vi)
    if reductions:
        sch.decompose_reduction(block, reductions[0])  # its init loops stay vectorized


def schedule_spatial(sch: Schedule, target) -> None:
    """Inline what can be, then schedule every remaining block on its own (``schedule_block``); a
    block whose schedule fails stays as it is (each primitive either applies whole or not at all)."""
    padding = {sch.get(b).name_hint for b in root_blocks(sch) if has_guard(sch, b) and _feeds_reduction(sch, b)}
    inline_all(sch, keep=padding)  # a pool's padding stays a stage: no bounds test per window tap
    done = set()
    for block in root_blocks(sch):  # pools first: they take their padding stage along
        try:
            done |= _pool_per_channel(sch, block)
        except tvm.s_tir.ScheduleError:
            continue
    for block in root_blocks(sch):
        if sch.get(block).name_hint in done:
            continue
        try:
            _schedule_any_block(sch, block, target)
        except tvm.s_tir.ScheduleError:
            continue


def _pool_per_channel(sch: Schedule, block) -> set:
    """An NCHW pool (small window over the last two axes): per (n, channel) in parallel, its
    padding stage and its finishing division (average pools) computed with it, so neither makes
    a pass of its own over the feature map (measured 1.5-2x on SqueezeNet's and FE-Net's pools).
    LLVM vectorizes the rows; global pools are ``_global_pool``'s. Returns the names of the blocks it
    scheduled (none for other blocks)."""
    if kinds(sch, block) != "SSSSRR" or not trivially_bound(sch, block):
        return set()
    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    if math.prod(sizes[4:]) > SMALL_WINDOW:
        return _global_pool(sch, block, loops, sizes)
    producers = [p for p in sch.get_producers(block) if kinds(sch, p) == "SSSS" and not sch.get_producers(p)]
    finish = _finish(sch, block, sizes)
    if finish is False:
        return set()
    chan = sch.fuse(*loops[:2])
    if finish is not None:
        sch.reverse_compute_at(finish, loops[2])
        sch.set_scope(block, 0, "local")
    for pad in producers:
        sch.compute_at(pad, chan)
    if math.prod(sizes) >= PARALLEL_MIN_WORK:
        sch.parallel(chan)
    return {sch.get(b).name_hint for b in [block, *producers] + ([finish] if finish is not None else [])}


GLOBAL_POOL_MAX_ROW = 64
"""Widest row a global pool sums as one accumulator vector (4 AVX-512 registers)."""


def _global_pool(sch: Schedule, block, loops, sizes) -> set:
    """A global NCHW pool (``mean`` over a 7x7 ... 13x13 map): per (n, channel), its rows summed into
    one row-wide accumulator vector, then across it once, then finished (the division). The loop-nest
    rule summed each channel as one chain of dependent scalar adds (LLVM does not reassociate float
    sums): measured 3-8x slower on SqueezeNet's, MobileNetV2's and AS-ResNet's pools. One thread: on
    both, the thread pool cost 3-12x the time saved (SqueezeNet's 1000x13x13 takes 7 us in L2)."""
    finish = _finish(sch, block, sizes)
    if sizes[2:4] != [1, 1] or sizes[5] > GLOBAL_POOL_MAX_ROW or finish is False or sch.get_producers(block):
        return set()
    rf = sch.rfactor(loops[5], 4)
    n, c, *_, row, column = sch.get_loops(rf)
    chan = sch.fuse(n, c)
    sch.reverse_compute_at(block, chan)
    sch.set_scope(rf, 0, "local")
    if finish is not None:
        sch.reverse_compute_at(finish, chan)
        sch.set_scope(block, 0, "local")
    sch.vectorize(column)
    sch.decompose_reduction(rf, row)
    return {sch.get(b).name_hint for b in [block, rf] + ([finish] if finish is not None else [])}


def _finish(sch: Schedule, block, sizes):
    """The pool's single elementwise consumer over its output (an average's division), None if it has
    no consumer, False if its consumers are anything else."""
    consumers = sch.get_consumers(block)
    finish = consumers[0] if len(consumers) == 1 and kinds(sch, consumers[0]) == "SSSS" else None
    if finish is not None and (extents(sch, sch.get_loops(finish)) != sizes[:4] or sch.get_consumers(finish)):
        finish = None
    return False if consumers and finish is None else finish


def _feeds_reduction(sch: Schedule, block) -> bool:
    return any("R" in kinds(sch, c) for c in sch.get_consumers(block))


def _schedule_any_block(sch: Schedule, block, target) -> None:
    b = sch.get(block)
    if not isinstance(b.body, tirx.BufferStore) or not b.iter_vars:
        return
    if split_borders_applicable(sch, block) and split_borders(sch, block):  # a standalone pad
        loops = sch.get_loops(block)
        if math.prod(extents(sch, loops)) * int(b.iter_vars[3].dom.extent) >= PARALLEL_MIN_WORK:
            sch.parallel(sch.fuse(*loops))
        return
    schedule_block(sch, block, vector_lanes(target, str(b.body.buffer.dtype)))


def split_borders_applicable(sch: Schedule, block) -> bool:
    """A 4-D spatial block guarded per column (a standalone pad): borders split, interior copied."""
    b = sch.get(block)
    return (kinds(sch, block) == "SSSS" and b.init is None
            and guarded_by(b.body.value, b.iter_vars[3].var))

