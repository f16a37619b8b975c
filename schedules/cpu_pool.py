"""Default LLVM-CPU schedule of a max pool (NCHW, small window; SqueezeNet's and ResNet's 3x3 stride-2 pools).

``cpu_loop_nest.py`` keeps TOPI's order there, the window innermost: every output is a chain of
dependent max operations through memory, one pixel at a time. Here each output row accumulates in a
local row, the window taps outside and the row innermost (contiguous, which LLVM vectorizes with its
tail; stride-2 taps as interleaved loads), per channel in parallel, the padding stage per channel.
Measured on SqueezeNet, not kept: inlining a padding stage the window never reaches (2-4x slower),
storing a stride-2 pool's padding stage with even and odd columns apart as ``cpu_stem.py`` does (2x).
"""
from __future__ import annotations

import math

from tvm import tirx
from tvm.s_tir import Schedule

from ._blocks import extents, trivially_bound
from .cpu_common import PARALLEL_MIN_WORK, has_guard, inline_all, kinds, root_blocks, vector_lanes
from .cpu_loop_nest import SMALL_WINDOW


def schedule_max_pool(sch: Schedule, target) -> bool:
    """A function that is one NCHW max pool (and its padding stage) whose output rows fit one vector; False
    for anything else (measured on SqueezeNet: 13-pixel rows 3.2x faster, 27 even, 55 1.15x slower)."""
    padding = {sch.get(b).name_hint for b in root_blocks(sch)
               if has_guard(sch, b) and any("R" in kinds(sch, c) for c in sch.get_consumers(b))}
    inline_all(sch, keep=padding)
    blocks = root_blocks(sch)
    pools = [b for b in blocks if kinds(sch, b) == "SSSSRR"]
    if len(pools) != 1 or len(blocks) - 1 != len(padding) or len(padding) > 1:
        return False
    pool = pools[0]
    b = sch.get(pool)
    if not trivially_bound(sch, pool) or not isinstance(b.body.value, tirx.Max) or sch.get_consumers(pool):
        return False
    loops = sch.get_loops(pool)
    sizes = extents(sch, loops)
    if math.prod(sizes[4:]) > SMALL_WINDOW or sizes[3] > vector_lanes(target, str(b.body.buffer.dtype)):
        return False
    pads = [p for p in blocks if not p.same_as(pool)]
    n, c, y, x, ry, rx = loops
    chan = sch.fuse(n, c)
    row = sch.cache_write(pool, 0, "local")
    sch.reverse_compute_at(row, y)
    sch.reorder(ry, rx, x)
    for pad in pads:
        sch.compute_at(pad, chan)
    if math.prod(sizes) >= PARALLEL_MIN_WORK:
        sch.parallel(chan)
    sch.decompose_reduction(pool, ry)
    return True


