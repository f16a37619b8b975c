"""Vectorizable shifted copies: split each output row into borders (with the zero-padding tests) and an interior.

TVM's ``vectorize`` scalarizes any load guarded per lane, so :func:`split_borders` gives each output row three
``w`` loops: the borders (zero-padding tests, short) and the interior without tests, ``[lo, hi)`` computed at run
time from the channel's offset (table-driven shifts too). LLVM vectorizes the interior: ``ldr q``/``stp q``
copies, ``fmla v.4s`` for the bilinear active shift. Used by the ARM standalone shifts and the CPUs' padding stages.
"""
from __future__ import annotations

import itertools

import tvm
import tvm_ffi
from tvm import tirx
from tvm.s_tir import SBlock, Schedule
from tvm.tirx import IndexMap

from ._blocks import replace_by_plane_block, replace_outer_loops, trivially_bound, uses, whole_along

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


def _at_every_lane(expr, lanes) -> list:
    """``expr`` with the ``lanes`` iterators replaced by each combination of their values."""
    at = IndexMap([iv.var for iv in lanes], [expr], None)
    return [at.map_indices([tirx.const(i, iv.var.ty.dtype) for i, iv in zip(point, lanes)])[0]
            for point in itertools.product(*(range(int(iv.dom.extent)) for iv in lanes))]


def split_borders(sch: Schedule, block_rv, inner: int = 0) -> bool:
    """Rewrite an elementwise shift block ``out[n, c, h, w] = E`` into one block per output row
    whose body is three ``w`` loops: left border, interior, right border (``lo``/``hi`` computed at
    run time from the channel's offsets, so table-driven shifts work too). Only the borders keep
    the zero-padding tests; the interior is a plain (strided) copy or, for the active shift, a
    4-tap blend, which LLVM's loop vectorizer turns into ``ldr q``/``str q`` / ``fmla v.4s``.
    TVM's own ``vectorize`` cannot: a per-lane test on a load scalarizes the whole vector.

    ``inner`` trailing iterators (constant extents) stay loops inside each ``w`` loop, the interior the
    ``w`` range inside for all their values: a stem's padding stored even/odd columns apart iterates
    ``[n, c, h, w // 2, w % 2]`` (``cpu_stem.py``), so LLVM loads both parities of a row as one interleaved
    group (wide loads and shuffles, not gathers) and stores each as a contiguous run.

    Returns False (nothing changed) when the block is not of that shape.
    """
    block = sch.get(block_rv)
    store = block.body
    if not isinstance(store, tirx.BufferStore) or len(block.iter_vars) != 4 + inner or block.init is not None:
        return False
    v_w = block.iter_vars[3].var
    lanes = block.iter_vars[4:]
    loops = sch.get_loops(block_rv)
    if not store.indices[-1].same_as(v_w) or len(loops) != 4 + inner or not trivially_bound(sch, block_rv):
        return False
    width = int(block.iter_vars[3].dom.extent)
    found = _interior(_guards(store.value), v_w, width)
    if found is None or (found[2] is not None and any(uses(found[2], iv.var) for iv in lanes)):
        return False
    lo, hi, row_ok = found
    if lanes:  # the interior of every lane
        lo = _reduce(tirx.max, _at_every_lane(lo, lanes))
        hi = tirx.max(_reduce(tirx.min, _at_every_lane(hi, lanes)), lo)
    if row_ok is not None:
        hi = tirx.Select(row_ok, hi, lo)
    ite_op = tvm.ir.Op.get(_ITE)
    bare = tvm_ffi.structural_map(store.value, (tvm.ir.Call, lambda v: v.args[1] if v.op.same_as(ite_op) else v))

    def loop(name, start, extent, value):
        var = tirx.Var(name, v_w.ty)
        fresh = [tirx.Var(f"{name}_{iv.var.name}", iv.var.ty) for iv in lanes]
        old, new = [v_w, *(iv.var for iv in lanes)], [start + var, *fresh]
        at = IndexMap(old, [value], None).map_indices(new)[0]
        idx = IndexMap(old, list(store.indices), None).map_indices(new)
        stmt = tirx.BufferStore(store.buffer, at, idx)
        for v, iv in reversed(list(zip(fresh, lanes))):
            stmt = tirx.For(v, iv.dom.min, iv.dom.extent, tirx.ForKind.SERIAL, stmt)
        return tirx.For(var, tirx.const(0, v_w.ty.dtype), extent, tirx.ForKind.SERIAL, stmt)

    zero = tirx.const(0, v_w.ty.dtype)
    body = tirx.SeqStmt([loop("w_left", zero, lo, store.value), loop("w", lo, hi - lo, bare),
                         loop("w_right", hi, tirx.const(width, v_w.ty.dtype) - hi, store.value)])

    inside = [block.iter_vars[2].var, v_w, *(iv.var for iv in lanes)]
    reads = [whole_along(r, *inside) for r in block.reads]  # any h/w-dependent dimension
    span = tvm.ir.Range.from_min_extent
    row_region = [span(i, 1) for i in store.indices[:-1]] + [span(0, width)]
    writes = [whole_along(tirx.BufferRegion(store.buffer, row_region), *inside[2:])]
    row = SBlock(block.iter_vars[:3], reads, writes, block.name_hint, body, None, block.alloc_buffers,
                 block.match_buffers, block.annotations)
    replace_outer_loops(sch, block_rv, 3, row)
    return True


def copy_shifted_planes(sch: Schedule, block_rv) -> bool:
    """Rewrite an integer-shift block ``out[n, c, h, w] = inside ? x[n, c, h + dy, w + dx] : 0`` (stride 1)
    into one block per plane: one contiguous copy ``out[p] = x[p + dy * W + dx]`` over the flattened plane
    (zeros where ``p + dy * W + dx`` leaves it: the rows shifted out), then the ``|dx|`` columns that wrapped
    around zeroed row by row. On small maps (14x14, 7x7) ``split_borders``' three loops per row cost more
    than the copy: 384 -> 64 at 14x14 staged that way took 1.6x the plain 1x1 conv.

    Returns False (nothing changed) when the block is not of that shape."""
    block = sch.get(block_rv)
    store = block.body
    guards = _guards(store.value) if isinstance(store, tirx.BufferStore) else []
    if (len(guards) != 1 or not guards[0].same_as(store.value) or len(block.iter_vars) != 4
            or block.init is not None or not trivially_bound(sch, block_rv)):
        return False
    load = guards[0].args[1]
    v_n, v_c, v_h, v_w = (iv.var for iv in block.iter_vars)
    if not isinstance(load, tvm.ir.TensorLoad) or len(load.indices) != 4 or not (
            load.indices[0].same_as(v_n) and load.indices[1].same_as(v_c)) \
            or list(store.indices) != [v_n, v_c, v_h, v_w]:
        return False
    offsets = []
    for index, var in zip(load.indices[2:], (v_h, v_w)):
        linear = tvm.sym.detect_linear_equation(index, [var])
        if len(linear) != 2 or not isinstance(linear[0], tirx.IntImm) or int(linear[0]) != 1 or uses(linear[1], v_h) \
                or uses(linear[1], v_w):
            return False
        offsets.append(linear[1])
    height, width = (int(d) for d in load.source.shape[2:])
    if [int(d) for d in store.buffer.shape[2:]] != [height, width]:
        return False
    dtype = v_w.ty.dtype
    dy, dx = offsets
    plane = height * width

    def const(v):
        return tirx.const(v, dtype)

    def clamp(e, low, high):
        return tirx.max(tirx.min(e, high), low)

    shift = dy * width + dx
    lo = clamp(-shift, const(0), const(plane))
    hi = clamp(const(plane) - shift, lo, const(plane))
    zero = tirx.const(0, store.buffer.dtype)

    def flat(p):
        return [v_n, v_c, tirx.floordiv(p, width), tirx.floormod(p, width)]

    def loop(name, start, end, value_of):
        var = tirx.Var(name, v_w.ty)
        at = start + var
        return tirx.For(var, const(0), end - start, tirx.ForKind.SERIAL,
                        tirx.BufferStore(store.buffer, value_of(at), flat(at)))

    copy = loop("p", lo, hi, lambda p: tirx.BufferLoad(load.source, flat(p + shift)))
    row = tirx.Var("h", v_w.ty)
    left, right = clamp(-dx, const(0), const(width)), clamp(const(width) - dx, const(0), const(width))

    def zero_columns(start, end):
        col = tirx.Var("w", v_w.ty)
        return tirx.For(col, const(0), end - start, tirx.ForKind.SERIAL,
                        tirx.BufferStore(store.buffer, zero, [v_n, v_c, row, start + col]))

    columns = tirx.SeqStmt([zero_columns(const(0), left), zero_columns(right, const(width))])
    body = tirx.SeqStmt([loop("p_top", const(0), lo, lambda p: zero), copy,
                         loop("p_bottom", hi, const(plane), lambda p: zero),
                         tirx.For(row, const(0), const(height), tirx.ForKind.SERIAL, columns)])

    replace_by_plane_block(sch, block_rv, store.buffer, body)
    return True
