"""Batch-1 float32 ``x @ W`` (every zoo model's classifier) on the host: a weight stream.

Each weight is used once per call (1280 x 1000 floats on MobileNetV2), so the kernel is bound by how fast
the weights stream in. The loop-nest rule (``cpu_loop_nest.py``) read ``W[k, j]`` in strips of a few
columns, a 32-byte piece of every 4-KB row per task (measured 20 GB/s of the host's 42). Here the weights
are packed at compile time as ``[N / tile, K, tile]`` (``tile`` dividing N), so every task streams
one contiguous panel into ``tile`` register accumulators and finishes them with the epilogue (bias).
"""
from __future__ import annotations

from tvm import tirx
from tvm.s_tir import Schedule

from ._blocks import divisor, extents, trivially_bound
from .cpu_common import inline_all, kinds, loads, packed_weight_read, read_index, root_blocks
from .cpu_loop_nest import schedule_block

DENSE_TILES = (64, 48, 40, 32, 24, 16, 8)
"""Outputs per task, widest first; the widest dividing the outputs (a whole output of at most 64 is one tile),
so that the packing stage stays a plain copy: MetaSchedule's ``ArgInfo.from_entry_func`` (tuning's) rejects a
zero-padded one ("Check failed: (load)"). 1000 classes take 40 (2.5 zmm; 2, 4 and 8 zmm measured the same)."""

DENSE_PARALLEL_MIN_MACS = 1 << 17
"""Multiply-adds from which both threads stream weights (half a megabyte of them)."""


def schedule_dense(sch: Schedule, target) -> bool:
    """The function's batch-1 float32 ``x @ W`` and its elementwise epilogue; False when it has none."""
    inline_all(sch)
    found = [d for d in (_as_dense(sch, b) for b in root_blocks(sch)) if d is not None]
    if len(found) != 1:
        return False
    block, weight = found[0]
    sizes = extents(sch, sch.get_loops(block))
    n, k = sizes[-2:]
    tile = n if n <= DENSE_TILES[0] else divisor(n, DENSE_TILES)
    if tile == 1:
        return False
    pack = packed_weight_read(sch, block, read_index(sch, block, weight), lambda k_, j_: (j_ // tile, k_, j_ % tile))
    schedule_block(sch, pack, 0)
    consumers = sch.get_consumers(block)
    if len(consumers) > 1 or (consumers and sch.get_consumers(consumers[0])):
        return False
    *outer, j, r = sch.get_loops(block)
    jo, ji = sch.split(j, [None, tile])
    sch.reorder(*outer, jo, r, ji)
    if consumers:
        store = consumers[0]
        sch.set_scope(block, 0, "local")
    else:
        store = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(store, jo)
    sch.vectorize(sch.get_loops(store)[-1])
    sch.vectorize(ji)
    if n * k >= DENSE_PARALLEL_MIN_MACS:
        sch.parallel(sch.fuse(*outer, jo) if outer else jo)
    sch.decompose_reduction(block, r)
    return True


def _as_dense(sch: Schedule, block):
    """(block, weight buffer) of ``out[..., j] += x[..., k] * W[k, j]`` in float32 with every leading output
    axis 1 (batch 1); else None."""
    b = sch.get(block)
    nest = kinds(sch, block)
    if not nest.endswith("SR") or nest.count("R") != 1 or "O" in nest or b.init is None:
        return None
    if not isinstance(b.body, tirx.BufferStore) or str(b.body.buffer.dtype) != "float32":
        return None
    if any(int(iv.dom.extent) != 1 for iv in b.iter_vars[:-2]) or not trivially_bound(sch, block):
        return None
    value = b.body.value
    if not (isinstance(value, tirx.Add) and isinstance(value.b, tirx.Mul)):
        return None
    j, k = (iv.var for iv in b.iter_vars[-2:])
    reads = loads(value.b)
    weight = [r for r in reads if len(r.indices) == 2 and r.indices[0].same_as(k) and r.indices[1].same_as(j)]
    if len(reads) != 2 or len(weight) != 1 or str(weight[0].source.dtype) != "float32":
        return None
    if not any(p.same_as(weight[0].source) for p in sch.mod["main"].params):
        return None  # computed in the function: nothing to pack at compile time
    return block, weight[0].source
