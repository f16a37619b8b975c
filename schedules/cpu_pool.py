"""Default LLVM-CPU schedule of a max pool (NCHW, small window; SqueezeNet's and ResNet's 3x3 stride-2 pools).

``cpu_loop_nest.py`` keeps TOPI's order there, the window innermost: every output is a chain of
dependent max operations through memory, one pixel at a time. Here each output row accumulates in a
local row, the window taps outside and the row innermost (contiguous, which LLVM vectorizes with its
tail; stride-2 taps as interleaved loads), per channel in parallel, the padding stage per channel.
Measured on SqueezeNet, not kept: storing a stride-2 pool's padding stage with even and odd columns apart
as ``cpu_stem.py`` does (2x).

Wider rows keep TOPI's order (LLVM vectorizes the row with the window unrolled, stride-2 taps as
interleaved loads), but a padding stage the window never reaches (``ceil_mode`` on SqueezeNet's exactly
fitting 111-, 109- and 55-pixel maps) is inlined: its copy of the map cost as much as the pool (measured
0.5-0.6x the time on the 111 and 109 maps, 0.7-0.75x on 55; Zen 5, 1 and 2 threads). A local row there
read the input through gathers (LLVM lost the stride of the inlined input's indices): 1.3-2.6x slower.
"""
from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import tirx
from tvm.s_tir import Schedule

from ._blocks import extents, trivially_bound
from .cpu_common import PARALLEL_MIN_WORK, has_guard, inline_all, kinds, root_blocks, vector_lanes
from .cpu_loop_nest import SMALL_WINDOW

LOCAL_ROW_MAX = 16
"""Longest output row accumulated in a local row, however many lanes the type has: LLVM unrolled an int8 local
row of 17-27 pixels into a masked load and a horizontal max per pixel (Zen 5: 128x35 -> 17, 128x41 -> 20,
128x55 -> 27 took 7-20x the time of the inlined pool, 128x56 -> 28, whose padding the window reaches, 8x
that of ``cpu_loop_nest``), while int8 rows up to 16 (SqueezeNet's 27 -> 13) stay 1.3-17x faster there."""


def schedule_max_pool(sch: Schedule, target) -> bool:
    """A function that is one NCHW max pool (and its padding stage) whose output rows fit one vector and
    ``LOCAL_ROW_MAX`` (measured on SqueezeNet: 13-pixel rows 3.2x faster, 27 even, 55 1.15x slower), or
    wider rows never reaching its padding (``_unpadded_rows``); False for anything else."""
    pools = [b for b in root_blocks(sch) if kinds(sch, b) == "SSSSRR"]
    if len(pools) != 1 or not trivially_bound(sch, pools[0]) or sch.get_consumers(pools[0]):
        return False
    pool = pools[0]
    b = sch.get(pool)
    sizes = extents(sch, sch.get_loops(pool))
    if not isinstance(b.body.value, tirx.Max) or math.prod(sizes[4:]) > SMALL_WINDOW:
        return False
    if sizes[3] > min(vector_lanes(target, str(b.body.buffer.dtype)), LOCAL_ROW_MAX):
        return _unpadded_rows(sch, pool, sizes)
    padding = {sch.get(b).name_hint for b in root_blocks(sch)
               if has_guard(sch, b) and any("R" in kinds(sch, c) for c in sch.get_consumers(b))}
    inline_all(sch, keep=padding)
    blocks = root_blocks(sch)
    if len(blocks) - 1 != len(padding) or len(padding) > 1:
        return False
    pads = [p for p in blocks if not sch.get(p).same_as(sch.get(pool))]
    n, c, y, x, ry, rx = sch.get_loops(pool)
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


def _unpadded_rows(sch: Schedule, pool, sizes) -> bool:
    """Every block inlined into the pool, whose padding guards then provably hold (simplified away when
    lowered), per channel in parallel; False when a guard may fail (the window reaches the padding)."""
    inline_all(sch)
    if len(root_blocks(sch)) != 1 or not _guards_hold(sch.get(pool)):
        return False
    chan = sch.fuse(*sch.get_loops(pool)[:2])
    if math.prod(sizes) >= PARALLEL_MIN_WORK:
        sch.parallel(chan)
    return True


def _guards_hold(block) -> bool:
    """Whether every ``if_then_else`` condition in ``block``'s value holds over its whole iteration domain."""
    analyzer = tvm.sym.Analyzer()
    for iv in block.iter_vars:
        analyzer.bind(iv.var, iv.dom)
    conditions = []
    tvm_ffi.structural_walk(block.body.value, (tvm.ir.Call, lambda c: conditions.append(c.args[0])
                                               if c.op.name == "prim.if_then_else" else None))
    return all(analyzer.can_prove(c) for c in conditions)
