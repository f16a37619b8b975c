"""Arm CPU (AArch64 NEON) schedules: the Snapdragon Kryo big cores.

``shift_conv2d`` is a register-blocked outer product (the host's loop nest, ``cpu.tile_shift_conv2d``,
with tiles for NEON's 32 x 128-bit registers): per input channel, 16 output channels (4 vectors
of 4 lanes) x 4 output pixels = 16 accumulators that stay in registers for the whole reduction,
4 weight vectors from the per-row weight panel, 4 input values (7 pixels x 8 channels on 7-wide
maps: ``micro_tile``). Hot loop, fp32: 16 ``fmla v.4s, v.4s, v.s[i]`` + 2 ``ldp q`` + the inputs
(28 instructions; 71 without the staging below, 56 spilled accumulators with the host's tiles).

The shift lives in one place, the compute's staging block ``shift_conv2d_input``: per pixel tile it
holds the shifted, strided, zero-padded NCHW input ``xs[c, pixel]`` in a small local buffer, so the
index arithmetic and bounds tests of the shift run once per (channel, pixel) of the tile instead of
inside the FMA loop (the bilinear active shift, whose per-channel taps and weights cost more, is
staged per output row: ``cpu.stage_per_row``). Only traced schedule primitives are used, so MetaSchedule can replay and tune
this schedule.

int8 (int32 accumulation, bias/relu/requantize epilogue): the same tile, 4 input channels per step
with ``sdot`` via ``tensorize(.., "dot_4x4_i8i8s32_sdot")`` (hot loop: 16 ``sdot``, 4 weight ``ldr q``,
4 ``ld1r`` input broadcasts), or ``dot_4x4_i8i8s32_neon`` (``smull``/``saddlp``/``addp``) when
the target has no dotprod. The intrinsic wants 4 contiguous int8 channels of a pixel (the stage,
laid out ``[pixels, C]``) and a contiguous 4x4 (o, c) weight block (the panel, packed to
``[O/4, C/4, 4, 4]`` with ``transform_layout``). Channels or output channels not divisible by 4
cannot feed it: those use the fp-style outer product (``smull``/``saddw`` into int32 vectors).

Standalone shifts are copies, but TVM's ``vectorize`` scalarizes any load guarded per lane, so
:func:`split_borders` gives each output row three ``w`` loops: the borders (zero-padding tests,
short) and the interior without tests, ``[lo, hi)`` computed at run time from the channel's offset
(table-driven shifts too). LLVM vectorizes the interior: ``ldr q``/``stp q`` copies, ``fmla v.4s``
for the bilinear active shift. NCHW4c and circular padding keep the host's copy schedule.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

import tvm
import tvm_ffi
from tvm import tirx
from tvm.s_tir import Schedule, SBlock, SBlockRealize, TensorIntrin
from tvm.tirx import IndexMap

from . import cpu
from ._blocks import divisor, extents

OUT_TILES = (16, 8, 4, 2, 1)  # output channels per micro-kernel: 4 / 2 / 1 NEON vectors (or a scalar tail)
PIXEL_TILES = (4, 7, 6, 5, 3, 2, 1)  # output pixels per micro-kernel; 4 first (the 16 x 4 tile), 7 for 7x7 maps
ACCUMULATORS = 16  # of NEON's 32 q registers: 16 accumulators + up to 4 weight vectors + the inputs
SDOT, NEON_DOT = "dot_4x4_i8i8s32_sdot", "dot_4x4_i8i8s32_neon"


def micro_tile(out_channels: int, width: int) -> tuple[int, int]:
    """``(output channels, pixels)`` of the register tile: pixels dividing the output width (no
    tail), then the widest channel tile whose accumulators (one vector per 4 channels per pixel) fit."""
    pixels = divisor(width, PIXEL_TILES)
    out = next(o for o in OUT_TILES if out_channels % o == 0 and max(o // 4, 1) * pixels <= ACCUMULATORS)
    return out, pixels


def has_dotprod(target) -> bool:
    """ARMv8.2 dot product (``sdot``): TVM derives ``feature.has_dotprod`` from mcpu/mattr."""
    return bool(target.attrs.get("feature.has_dotprod", False))


def dot_intrinsic(target) -> str:
    """The 4x4 int8 dot-product intrinsic name for ``target``, registered on first use.

    ``import tvm.s_tir.tensor_intrin.arm_cpu`` would first run the package ``__init__``, which
    builds every CUDA/ROCm intrinsic (~40 s, shared notes bug B). We execute only the ``arm_cpu``
    submodule (~1 s) under a temporary, unexecuted package object; a later real import of the
    package still runs its ``__init__`` and reuses the loaded submodule.
    """
    name = SDOT if has_dotprod(target) else NEON_DOT
    if TensorIntrin.get(name, allow_missing=True) is None:
        package = "tvm.s_tir.tensor_intrin"
        if package in sys.modules:
            importlib.import_module(package + ".arm_cpu")
        else:
            sys.modules[package] = importlib.util.module_from_spec(importlib.util.find_spec(package))
            try:
                importlib.import_module(package + ".arm_cpu")
            finally:
                del sys.modules[package]
    return name


# --------------------------------------------------------------------------------------------
# standalone shifts: interior without bounds tests


_ITE = "prim.if_then_else"


def _guards(expr) -> list:
    """The ``if_then_else`` calls of ``expr`` (the zero-padding tests of the shifted loads)."""
    found = []
    tvm_ffi.structural_walk(expr, (tvm.ir.Call, lambda v: found.append(v) if v.op.name == _ITE else None))
    return found


def _atoms(cond) -> list:
    return _atoms(cond.a) + _atoms(cond.b) if isinstance(cond, tirx.And) else [cond]


def _nonnegative(atom):
    """``g`` with ``atom`` <=> ``g >= 0`` (integers), or None for other condition shapes."""
    if isinstance(atom, (tirx.LE, tirx.GE, tirx.LT, tirx.GT)):
        a, b = (atom.a, atom.b) if isinstance(atom, (tirx.LE, tirx.LT)) else (atom.b, atom.a)
        return b - a - (1 if isinstance(atom, (tirx.LT, tirx.GT)) else 0)
    return None


def _interior(guards, w, width):
    """``(lo, hi, row_ok)``: every guard's ``w``-dependent tests hold for ``lo <= w < hi``.

    Each test must be affine in ``w`` (``s*w + k >= 0``, ``k`` any ``w``-free expression, e.g. a
    table load); the tests without ``w`` (the row) are returned as ``row_ok``. None if a guard
    has another shape (e.g. circular padding: no guard at all is fine, ``floormod`` is not).
    """
    lo, hi, row = [tirx.const(0, w.ty.dtype)], [tirx.const(width, w.ty.dtype)], []
    for guard in guards:
        for atom in _atoms(guard.args[0]):
            g = _nonnegative(atom)
            if g is None:
                return None
            linear = tvm.sym.detect_linear_equation(g, [w])
            if not linear:
                return None
            s, k = int(linear[0]), linear[1]
            if s == 0:
                row.append(atom)
            elif s > 0:  # w >= ceil(-k / s)
                lo.append(tirx.floordiv(-k + (s - 1), s))
            else:  # w <= floor(k / -s)
                hi.append(tirx.floordiv(k, -s) + 1)
    lo_e = tvm.sym.Analyzer().simplify(tirx.min(_reduce(tirx.max, lo), width))  # |offset| may exceed the row
    hi_e = tirx.max(tirx.min(_reduce(tirx.min, hi), width), lo_e)
    row_ok = _reduce(tirx.all, row) if row else None
    return lo_e, hi_e, row_ok


def _reduce(f, items):
    out = items[0]
    for item in items[1:]:
        out = f(out, item)
    return out


def split_borders(sch: Schedule, block_rv) -> bool:
    """Rewrite an elementwise shift block ``out[n, c, h, w] = E`` into one block per output row
    whose body is three ``w`` loops: left border, interior, right border (``lo``/``hi`` computed at
    run time from the channel's offsets, so table-driven shifts work too). Only the borders keep
    the zero-padding tests; the interior is a plain (strided) copy or, for the active shift, a
    4-tap blend, which LLVM's loop vectorizer turns into ``ldr q``/``str q`` / ``fmla v.4s``.
    TVM's own ``vectorize`` cannot: a per-lane test on a load scalarizes the whole vector.

    Returns False (nothing changed) when the block is not of that shape.
    """
    block = sch.get(block_rv)
    store = block.body
    if not isinstance(store, tirx.BufferStore) or len(block.iter_vars) != 4 or block.init is not None:
        return False
    v_w = block.iter_vars[3].var
    loops = sch.get_loops(block_rv)
    if not store.indices[-1].same_as(v_w) or len(loops) != 4 or not _trivial_binding(sch, loops):
        return False
    width = int(block.iter_vars[3].dom.extent)
    found = _interior(_guards(store.value), v_w, width)
    if found is None:
        return False
    lo, hi, row_ok = found
    if row_ok is not None:
        hi = tirx.Select(row_ok, hi, lo)
    ite_op = tvm.ir.Op.get(_ITE)
    bare = tvm_ffi.structural_map(store.value, (tvm.ir.Call, lambda v: v.args[1] if v.op.same_as(ite_op) else v))

    def loop(name, start, extent, value):
        var = tirx.Var(name, v_w.ty)
        at = IndexMap([v_w], [value], None).map_indices([start + var])[0]
        idx = IndexMap([v_w], list(store.indices), None).map_indices([start + var])
        return tirx.For(var, tirx.const(0, v_w.ty.dtype), extent, tirx.ForKind.SERIAL,
                        tirx.BufferStore(store.buffer, at, idx))

    zero = tirx.const(0, v_w.ty.dtype)
    body = tirx.SeqStmt([loop("w_left", zero, lo, store.value), loop("w", lo, hi - lo, bare),
                         loop("w_right", hi, tirx.const(width, v_w.ty.dtype) - hi, store.value)])

    def whole(region):  # any h/w-dependent dimension: the full extent
        used = lambda e: any(_uses(e, v) for v in (block.iter_vars[2].var, v_w))  # noqa: E731
        ranges = [tvm.ir.Range.from_min_extent(0, dim) if used(r.min) else r
                  for r, dim in zip(region.region, region.source.shape)]
        return tirx.BufferRegion(region.source, ranges)

    reads = [whole(r) for r in block.reads]
    writes = [tirx.BufferRegion(store.buffer, [tvm.ir.Range.from_min_extent(i, 1) for i in store.indices[:-1]]
                                + [tvm.ir.Range.from_min_extent(0, width)])]
    row = SBlock(block.iter_vars[:3], reads, writes, block.name_hint, body, None, block.alloc_buffers,
                 block.match_buffers, block.annotations)
    nest = SBlockRealize([sch.get(l).loop_var for l in loops[:3]], True, row)
    for l in reversed(loops[:3]):
        f = sch.get(l)
        nest = tirx.For(f.loop_var, f.min, f.extent, f.kind, nest)
    sch.state.replace(sch.get_sref(loops[0]), nest, {block: row})
    return True


def _trivial_binding(sch: Schedule, loops) -> bool:
    """The block under ``loops`` is bound to exactly their loop variables (an unscheduled nest)."""
    stmt = sch.get(loops[0])
    while isinstance(stmt, tirx.For):
        stmt = stmt.body
    loop_vars = [sch.get(loop).loop_var for loop in loops]
    return isinstance(stmt, SBlockRealize) and all(a.same_as(b) for a, b in zip(stmt.iter_values, loop_vars))


def _uses(expr, var) -> bool:
    hit = []
    tvm_ffi.structural_walk(expr, (tvm.ir.Var, lambda v: hit.append(v) if v.same_as(var) else None))
    return bool(hit)


# --------------------------------------------------------------------------------------------
# rules


def _is_int8(sch: Schedule, acc) -> bool:
    """int8 operands accumulate in int32 (relay_ops.shift_conv2d); float ones in their own type."""
    return str(sch.get(acc).body.buffer.dtype) == "int32"


def schedule_shift_conv2d(sch: Schedule, blocks: dict, target) -> None:
    acc = blocks["shift_conv2d"]
    _, out_ch, _, width, channels = extents(sch, sch.get_loops(acc))
    tiles = micro_tile(out_ch, width)
    staged = blocks["shift_conv2d_input"]
    if _is_int8(sch, acc) and channels % 4 == 0 and out_ch % 4 == 0:
        schedule_shift_conv2d_dot(sch, blocks, target, staged, tiles)
    else:
        schedule_shift_conv2d_fma(sch, blocks, target, staged, tiles)


def schedule_shift_conv2d_fma(sch: Schedule, blocks: dict, target, staged, tiles) -> None:
    """Outer product over the staged input: per channel, ``tiles[0]`` output channels (vectors of
    4) x ``tiles[1]`` pixels read as one contiguous run of the ``[C, pixels]`` stage."""
    if cpu.is_bilinear(sch, blocks):  # per-channel taps and weights: amortize them over a whole row
        rows, wo, rc, wi, oi = cpu.tile_shift_conv2d(sch, blocks, (tiles[0],), (tiles[1],))
        cpu.stage_per_row(sch, staged, rows)
    else:
        sch.transform_layout(staged, ("write", 0), lambda n, h, w, c: (n, h, c, w))
        _, wo, rc, wi, oi = cpu.tile_shift_conv2d(sch, blocks, (tiles[0],), (tiles[1],))
        sch.compute_at(staged, wo)
        sch.set_scope(staged, 0, "local")
    sch.unroll(wi)
    sch.vectorize(oi)
    sch.decompose_reduction(blocks["shift_conv2d"], rc)


def schedule_shift_conv2d_dot(sch: Schedule, blocks: dict, target, staged, tiles) -> None:
    """int8 x int8 -> int32: the same tile, 4 input channels per step via a 4x4 dot product."""
    intrin = dot_intrinsic(target)
    acc, panel = blocks["shift_conv2d"], blocks["shift_conv2d_weight"]
    # TVM's dot-product intrinsics declare "global" operands and tensorize compares scopes:
    # tensorize on global buffers, then make all three thread-local (registers / stack).
    _, wo, rc, wi, oi = cpu.tile_shift_conv2d(sch, blocks, (tiles[0],), (tiles[1],), scope="global")
    sch.transform_layout(panel, ("write", 0), lambda c, o: (o // 4, c // 4, o % 4, c % 4))
    ob, o4 = sch.split(oi, [None, 4])
    rco, rc4 = sch.split(rc, [None, 4])
    sch.reorder(rco, wi, ob, o4, rc4)
    sch.compute_at(staged, wo)
    init = sch.decompose_reduction(acc, rco)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(o4, intrin)
    sch.unroll(wi)
    sch.unroll(ob)
    for block in (init, panel, staged):
        sch.set_scope(block, 0, "local")


def schedule_shift(sch: Schedule, blocks: dict, target, op: str) -> None:
    """Parallel over (n, c, h) rows; each row a vectorizable interior between scalar borders."""
    block = blocks[op]
    if not split_borders(sch, block):  # NCHW4c, circular padding: the host's vectorized copy
        cpu.schedule_shift(sch, blocks, target, op)
        return
    n, c, h = sch.get_loops(block)
    sch.parallel(sch.fuse(n, c, h))


def _shift_rule(op):
    return lambda sch, blocks, target: schedule_shift(sch, blocks, target, op)


RULES = {
    "shift_conv2d": schedule_shift_conv2d,
    "shift2d": _shift_rule("shift2d"),
    "sparse_shift2d": _shift_rule("sparse_shift2d"),
    "active_shift2d": _shift_rule("active_shift2d"),
}
