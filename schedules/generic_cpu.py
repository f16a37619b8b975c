"""Default LLVM-CPU schedules for the kernels that are *not* ecnn ops (TOPI-legalized conv2d,
pools, elementwise, layout ops, reductions, dense).

TVM 0.27's CPU backend pipeline applies no schedule at all, so every such kernel would run as a
naive serial loop nest (5-18x slower than PyTorch eager on the zoo). dlight's two CPU rules do not
fit our kernels (``GEMV`` only takes inner reductions, ``x @ W`` here reduces the outer axis;
``Reduction`` wants softmax-like block chains), hence these rules, chosen per conv shape:

* conv2d NCHW, stride-1 rows: *pixel vectors*. Per reduction step ``(rc, ry, rx)`` one contiguous
  input vector of output pixels times a few output channels' scalar weights; the accumulators and
  the fused bias/activation/residual epilogue are contiguous NCHW vectors.
* other conv2d with enough output channels per group: *channel vectors*, the outer product of
  ``cpu.py``'s ``shift_conv2d``: a vector of output channels times one input scalar per pixel of
  the tile (stride and padding are only an input address then).
* depthwise and other narrow groups: one (batch, channel) per task, pad/conv/epilogue in L1.
* everything else: inline, then per block parallel outer spatial loops and the innermost
  contiguous spatial loop vectorized (``schedule_block``).

Weights are packed once per call to ``[O / tile, C, kh, kw, tile]``; padded inputs stay a stage
whose rows copy their interior without bounds tests (``split_borders.py``). Every step is a
schedule primitive, so whatever fails leaves a correct function (``ApplyDefaultCpuSchedules``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import tirx
from tvm.s_tir import Schedule
from tvm.target.codegen import llvm_get_vector_width

from ._blocks import divisor, extents, trivially_bound, uses
from .split_borders import split_borders

PARALLEL_MIN_WORK = 1 << 18
"""Iterations below which a non-conv kernel stays serial: waking the thread pool (~10-20 us on a
busy host) costs more than it saves on cheap, cache-resident elementwise work."""
CONV_PARALLEL_MIN_MACS = 1 << 16
"""The same for conv2d, counted in multiply-adds (squeeze-excitation 1x1 convs on 1x1 maps)."""
SMALL_WINDOW = 16
"""Reductions up to this many taps (pooling windows) keep TOPI's loop order: LLVM unrolls and
vectorizes the window; moving the row below the taps measured 2-5x slower."""


# --------------------------------------------------------------------------------------------
# target facts


def vector_lanes(target, dtype: str) -> int:
    """SIMD lanes of ``dtype`` on ``target`` (AVX-512: 16 float32, AVX2: 8, NEON: 4)."""
    bits = tvm.runtime.DataType(dtype).bits
    return max(llvm_get_vector_width(target) // bits, 1)


def accumulator_budget(target) -> int:
    """Vector registers the conv micro-kernel may hold accumulators in: half the register file
    (AArch64 NEON and AVX-512 have 32, AVX2 16), the rest holds weights and input broadcasts."""
    wide = llvm_get_vector_width(target) >= 512 or "arm_cpu" in target.keys
    return 16 if wide else 8


# --------------------------------------------------------------------------------------------
# block inspection


def _root_blocks(sch: Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _kinds(sch: Schedule, block) -> str:
    """``"SSSSRRR"``-style iteration kinds of ``block`` (S spatial, R reduction, O other)."""
    kind = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(kind.get(int(iv.iter_type), "O") for iv in sch.get(block).iter_vars)


def _loads(expr) -> list:
    found = []
    tvm_ffi.structural_walk(expr, (tvm.ir.TensorLoad, found.append))
    return found


def _guarded_by(expr, var) -> bool:
    """Whether an ``if_then_else`` condition in ``expr`` depends on ``var`` (TVM's ``vectorize``
    would scalarize such a vector: the guarded load is per lane)."""
    hits = []
    tvm_ffi.structural_walk(expr, (tvm.ir.Call, lambda c: hits.append(c)
                                   if c.op.name == "prim.if_then_else" and uses(c.args[0], var) else None))
    return bool(hits)


def _inline_all(sch: Schedule, keep=()) -> None:
    """Inline every block that can be (fused elementwise chains, broadcast reshapes, pool padding),
    except the blocks named in ``keep``; repeat until nothing changes."""
    changed = True
    while changed:
        changed = False
        for block in _root_blocks(sch):
            if sch.get(block).name_hint in keep:
                continue
            for inline in (sch.compute_inline, sch.reverse_compute_inline):
                try:
                    inline(block)
                    changed = True
                    break
                except tvm.s_tir.ScheduleError:
                    continue


# --------------------------------------------------------------------------------------------
# conv2d


@dataclass
class Conv2d:
    """A TOPI ``conv2d_nchw`` / ``group_conv2d_nchw`` reduction block ``out[n,f,y,x] += d[...] * w[f,c,ry,rx]``."""

    block: object
    data: object  # the buffer Vars
    weight: object
    out_channels: int
    out_per_group: int  # output channels sharing one input scalar (1: depthwise)
    unit_stride: bool  # along the row: contiguous input under a vector of output pixels
    macs: int


def find_conv2d(sch: Schedule):
    """The conv2d block of the function (None if it has none or several)."""
    found = [c for c in (_as_conv2d(sch, b) for b in _root_blocks(sch)) if c is not None]
    return found[0] if len(found) == 1 else None


def _as_conv2d(sch: Schedule, block):
    b = sch.get(block)
    if _kinds(sch, block) != "SSSSRRR" or b.init is None or not isinstance(b.body, tirx.BufferStore):
        return None
    value = b.body.value
    if not (isinstance(value, tirx.Add) and isinstance(value.b, tirx.Mul)):
        return None
    loads = [value.b.a, value.b.b]
    if not all(isinstance(load, tvm.ir.TensorLoad) and len(load.indices) == 4 for load in loads):
        return None
    v = [iv.var for iv in b.iter_vars]
    weight = [load for load in loads if all(i.same_as(x) for i, x in zip(load.indices, (v[1], v[4], v[5], v[6])))]
    if len(weight) != 1:
        return None
    data = loads[1] if weight[0].same_as(loads[0]) else loads[0]
    data_buf, weight_buf = data.source, weight[0].source  # buffers are Vars carrying their shape
    out_channels, in_channels = int(b.iter_vars[1].dom.extent), int(data_buf.shape[1])
    per_group = int(weight_buf.shape[1])  # input channels per group
    groups = max(in_channels // per_group, 1)
    linear = tvm.sym.detect_linear_equation(data.indices[3], [v[3]])
    unit_stride = len(linear) == 2 and isinstance(linear[0], tirx.IntImm) and int(linear[0]) == 1
    macs = math.prod(int(iv.dom.extent) for iv in b.iter_vars)
    return Conv2d(block, data_buf, weight_buf, out_channels, max(out_channels // groups, 1), unit_stride, macs)


def _pad_block(sch: Schedule, conv: Conv2d):
    """The block producing the conv's data buffer inside this function (TOPI's ``pad_temp``), or None."""
    for block in sch.get_producers(conv.block):
        if sch.get(block).body.buffer.same_as(conv.data):
            return block
    return None


def _epilogue(sch: Schedule, conv: Conv2d):
    """After inlining, the single block consuming the conv (bias/activation/residual), if it
    covers exactly the conv's output tile by tile (same spatial extents); else None."""
    consumers = sch.get_consumers(conv.block)
    if len(consumers) != 1:
        return None
    epilogue = consumers[0]
    out = extents(sch, sch.get_loops(conv.block))[:4]
    if _kinds(sch, epilogue) != "SSSS" or extents(sch, sch.get_loops(epilogue)) != out:
        return None
    if not trivially_bound(sch, epilogue) or sch.get_consumers(epilogue):
        return None
    return epilogue


def pixel_tile(width: int, candidates) -> int:
    """Output pixels per micro-kernel: a candidate dividing the row, else the one wasting least
    of the last (predicated) tile."""
    exact = [p for p in candidates if width % p == 0]
    if exact:
        return exact[0]
    usable = [p for p in candidates if p <= width] or [1]
    return min(usable, key=lambda p: (math.ceil(width / p) * p - width, -p))


def channel_tile(conv: Conv2d, lanes: int, pixels: int, budget: int) -> int:
    """Output channels per micro-kernel, within one group: whole vectors, as many as the
    accumulator budget allows for ``pixels`` pixels; else the widest divisor of the group that
    is at least 4 (odd lane counts are legalized by LLVM); 1 when there is none."""
    for vectors in (4, 2, 1):
        tile = vectors * lanes
        if conv.out_per_group % tile == 0 and vectors * pixels <= budget:
            return tile
    return next((t for t in range(min(2 * lanes, conv.out_per_group), 3, -1)
                 if conv.out_per_group % t == 0 and math.ceil(t / lanes) * pixels <= budget), 1)


def _stage_padding(sch: Schedule, pad) -> None:
    """A zero-padding stage: inlined when it is a plain copy (1x1 convs), else kept as a buffer
    whose rows are an interior copy between two bounds-tested borders, in parallel."""
    if pad is None:
        return
    if not _has_guard(sch, pad):
        sch.compute_inline(pad)
        return
    if split_borders(sch, pad):
        n, c, h = sch.get_loops(pad)
        rows = sch.fuse(n, c, h)
        if math.prod(int(d) for d in sch.get(pad).writes[0].source.shape) >= PARALLEL_MIN_WORK:
            sch.parallel(rows)
    else:
        schedule_block(sch, pad, 0)


def _has_guard(sch: Schedule, block) -> bool:
    hits = []
    tvm_ffi.structural_walk(sch.get(block).body, (tvm.ir.Call, lambda c: hits.append(c)
                                                  if c.op.name == "prim.if_then_else" else None))
    return bool(hits)


def schedule_conv2d(sch: Schedule, conv: Conv2d, target) -> None:
    """Register-blocked conv2d (pixel vectors on stride-1 rows, else channel vectors), or one
    channel per task for depthwise/narrow groups."""
    lanes = vector_lanes(target, str(sch.get(conv.block).body.buffer.dtype))
    pad = _pad_block(sch, conv)
    _inline_all(sch, keep={sch.get(conv.block).name_hint} | ({sch.get(pad).name_hint} if pad is not None else set()))
    epilogue = _epilogue(sch, conv)
    own = {sch.get(x).name_hint for x in (conv.block, pad, epilogue) if x is not None}
    rest = [name for name in (sch.get(b).name_hint for b in _root_blocks(sch)) if name not in own]
    width = extents(sch, sch.get_loops(conv.block))[3]
    budget = accumulator_budget(target)
    vector = pixel_vector_width(width, lanes) if conv.unit_stride else 1
    pixels = pixel_tile(width, (4, 7, 6, 5, 8, 3, 2) if budget >= 16 else (4, 3, 2))
    tile = channel_tile(conv, lanes, pixels, budget)
    # pixel vectors when they are (half) full vectors, or when channel vectors would not be full
    # (measured on the zoo: odd pixel vectors lose to full channel vectors, beat odd ones)
    use_pv = conv.out_per_group >= 4 and vector > 1 and (vector in (lanes, lanes // 2) or tile % lanes != 0)
    if use_pv:
        _stage_padding(sch, pad)
        channels = divisor(conv.out_per_group, tuple(range(budget, 1, -1)))
        _pixel_vector(sch, conv, epilogue, vector, channels)
    elif tile >= 4:
        _stage_padding(sch, pad)
        _outer_product(sch, conv, epilogue, tile, pixels)
    else:
        _per_channel(sch, conv, epilogue, pad)
    for name in rest:  # e.g. a squeeze-excitation broadcast after a 1x1 conv on a 1x1 map
        try:
            schedule_block(sch, sch.get_sblock(name), lanes)
        except tvm.s_tir.ScheduleError:
            continue


def _parallel_conv(sch: Schedule, conv: Conv2d, loop) -> None:
    """``loop`` parallel unless the whole conv is too small to pay for the thread pool."""
    if conv.macs >= CONV_PARALLEL_MIN_MACS:
        sch.parallel(loop)


def _accumulate_locally(sch: Schedule, conv: Conv2d, epilogue, at) -> object:
    """Accumulators in a local tile; the epilogue (or a plain store) runs once per tile at ``at``."""
    if epilogue is None:
        store = sch.cache_write(conv.block, 0, "local")
    else:
        sch.set_scope(conv.block, 0, "local")
        store = epilogue
    sch.reverse_compute_at(store, at)
    return store


def _outer_product(sch: Schedule, conv: Conv2d, epilogue, tile: int, pixels: int) -> None:
    """Per row ``(n, channel tile, y)`` in parallel, per pixel tile: ``tile`` channels x ``pixels``
    accumulators over ``(rc, ry, rx)``, one packed weight vector and ``pixels`` input scalars per
    step. The accumulator tile is ``[pixels, channels]`` so channel vectors stay contiguous."""
    n, f, y, x, rc, ry, rx = sch.get_loops(conv.block)
    fo, fi = sch.split(f, [None, tile])
    xo, xi = sch.split(x, [None, pixels])
    sch.reorder(n, fo, y, xo, rc, ry, rx, xi, fi)
    _accumulate_locally(sch, conv, epilogue, xo)
    sch.transform_layout(conv.block, ("write", 0), lambda n_, f_, y_, x_: (n_, y_, x_, f_))
    _parallel_conv(sch, conv, sch.fuse(n, fo, y))
    _pack_weights(sch, conv, tile)
    sch.unroll(xi)
    sch.vectorize(fi)
    sch.decompose_reduction(conv.block, rc)


def _pack_weights(sch: Schedule, conv: Conv2d, tile: int) -> None:
    """Once per call, the weights as ``[O / tile, C, kh, kw, tile]``: one contiguous run per micro-kernel step."""
    packed = sch.cache_read(conv.block, _read_index(sch, conv.block, conv.weight), "global")
    sch.transform_layout(packed, ("write", 0), lambda f_, c_, r_, s_: (f_ // tile, c_, r_, s_, f_ % tile))
    schedule_block(sch, packed, 0)


def pixel_vector_width(width: int, lanes: int) -> int:
    """Output pixels per accumulator vector on a stride-1 row: the whole row when it fits one
    vector, else the widest divisor of the row between half a vector and a vector (no tail;
    LLVM legalizes odd lane counts); 1 when there is none."""
    if 4 <= width <= lanes:
        return width
    return next((v for v in range(lanes, max(lanes // 2, 4) - 1, -1) if width % v == 0), 1)


def _pixel_vector(sch: Schedule, conv: Conv2d, epilogue, vector: int, channels: int) -> None:
    """Stride-1 rows: ``channels`` accumulator vectors of ``vector`` output pixels each; per
    reduction step one contiguous input vector times ``channels`` scalar weights (packed
    ``[O / channels, C, kh, kw, channels]``). Output and epilogue stay contiguous vectors (NCHW)."""
    n, f, y, x, rc, ry, rx = sch.get_loops(conv.block)
    fo, fi = sch.split(f, [None, channels])
    xo, xi = sch.split(x, [None, vector])
    sch.reorder(n, fo, y, xo, rc, ry, rx, fi, xi)
    store = _accumulate_locally(sch, conv, epilogue, xo)
    _parallel_conv(sch, conv, sch.fuse(n, fo, y))
    _pack_weights(sch, conv, channels)
    sch.unroll(fi)
    sch.vectorize(xi)
    sch.vectorize(sch.get_loops(store)[-1])
    sch.decompose_reduction(conv.block, rc)


def _per_channel(sch: Schedule, conv: Conv2d, epilogue, pad) -> None:
    """Depthwise (and groups too narrow for a channel vector): per (n, channel) in parallel, pad,
    convolve and finish one channel while it is in L1. The per-channel nest is left to LLVM's loop
    vectorizer: TVM's ``vectorize`` of the (odd-width, often strided) rows measured 2-4x slower."""
    n, f, *_ = sch.get_loops(conv.block)
    chan = sch.fuse(n, f)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, chan)
    if pad is not None and not _has_guard(sch, pad):
        sch.compute_inline(pad)
    elif pad is not None and conv.out_per_group == 1:  # the channel's own padded input only
        sch.compute_at(pad, chan)
    else:
        _stage_padding(sch, pad)
    _parallel_conv(sch, conv, chan)


def _read_index(sch: Schedule, block, buffer) -> int:
    return next(i for i, r in enumerate(sch.get(block).reads) if r.source.same_as(buffer))


# --------------------------------------------------------------------------------------------
# everything else


def schedule_block(sch: Schedule, block, lanes: int) -> None:
    """Parallel outer spatial loops; the innermost spatial loop with extent > 1 vectorized (split
    into whole vectors when it divides, else left to LLVM's loop vectorizer). A reduction keeps
    that loop innermost, below the reduction loops, when its inputs are contiguous along it (pools,
    ``x @ W``: a row of accumulators); otherwise (row sums) it reduces innermost."""
    kinds = _kinds(sch, block)
    spatial = len(kinds) - len(kinds.lstrip("S"))
    if not trivially_bound(sch, block) or spatial == 0 or kinds[spatial:] != "R" * (len(kinds) - spatial):
        return  # not an unscheduled S..S R..R nest
    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    inner = max((i for i in range(spatial) if sizes[i] > 1), default=None)
    if inner is None:
        return
    b = sch.get(block)
    var, value = b.iter_vars[inner].var, b.body.value
    reductions, units = loops[spatial:], loops[inner + 1:spatial]
    loads = _loads(value)
    contiguous = not loads or any(load.indices and uses(load.indices[-1], var) for load in loads)
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
    if width > 1 and not _guarded_by(value, var):
        vo, vi = sch.split(loops[inner], [None, width])
    outer = loops[:inner] + ([vo] if vi is not None else [])
    if reductions or units:
        sch.reorder(*outer, *units, *reductions, vi if vi is not None else vo)
    if parallel and outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    if reductions:
        init = sch.decompose_reduction(block, reductions[0])
        if vi is not None:
            sch.vectorize(sch.get_loops(init)[-1])
    if vi is not None:
        sch.vectorize(vi)


def schedule_spatial(sch: Schedule, target) -> None:
    """Inline what can be, then schedule every remaining block on its own (``schedule_block``); a
    block whose schedule fails stays as it is (each primitive either applies whole or not at all)."""
    padding = {sch.get(b).name_hint for b in _root_blocks(sch) if _has_guard(sch, b) and _feeds_reduction(sch, b)}
    _inline_all(sch, keep=padding)  # a pool's padding stays a stage: no bounds test per window tap
    for block in _root_blocks(sch):
        try:
            _schedule_any_block(sch, block, target)
        except tvm.s_tir.ScheduleError:
            continue


def _feeds_reduction(sch: Schedule, block) -> bool:
    return any("R" in _kinds(sch, c) for c in sch.get_consumers(block))


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
    return (_kinds(sch, block) == "SSSS" and b.init is None
            and _guarded_by(b.body.value, b.iter_vars[3].var))


def schedule_conv2d_function(sch: Schedule, target) -> bool:
    """The function's conv2d (and whatever is fused with it); False when it has no conv2d."""
    conv = find_conv2d(sch)
    if conv is None:
        return False
    schedule_conv2d(sch, conv, target)
    return True


def schedule_any_function(sch: Schedule, target) -> bool:
    schedule_spatial(sch, target)
    return True


RULES = (schedule_conv2d_function, schedule_any_function)
"""Tried in order on a fresh schedule each; the first that applies without error wins."""
