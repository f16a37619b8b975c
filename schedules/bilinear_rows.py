"""The active (bilinear) shift staged row by row as two vectorized 2-tap blends (``blend_rows``), or at stride 1
plane by plane as one flat 4-tap blend over the taps' common interior (``blend_planes``).

Per channel the offset, so the integer part and the four weights, is loop-invariant: a row of the
shifted input is a vertical blend of two input rows (zero when a row leaves the map: a Select on a
row-invariant test) into a row buffer, then a horizontal blend of two neighbouring columns of that
buffer, whose few entries left and right of the map are zeroed first. Both loops have the map's
constant width, so TVM vectorizes them whole (LLVM's own vectorizer leaves a 56-pixel interior of
unknown length mostly to its scalar remainder). The blend order differs from the reference's four
products (``(1-ax)(1-ay)x00 + ...``) only by fp32 rounding, and for a non-finite input: a row off the map is
zeroed through its weight (``0 * x``), so an inf in the map's edge row next to it gives NaN there, where the
reference's guarded load gives inf.
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx
from tvm.s_tir import SBlock, SBlockRealize, Schedule

from ._blocks import replace_by_plane_block, trivially_bound, uses, whole_along


def _flatten(expr, kind) -> list:
    return _flatten(expr.a, kind) + _flatten(expr.b, kind) if isinstance(expr, kind) else [expr]


def _taps(value):
    """``[(load, wx, wy)]`` of ``sum load_ij * wx_j * wy_i`` (corners 00, 01, 10, 11, each load
    guarded by ``if_then_else``), or None for another shape."""
    taps = []
    for term in _flatten(value, tirx.Add):
        factors = _flatten(term, tirx.Mul)
        if len(factors) != 3 or not isinstance(factors[0], tvm.ir.Call) or factors[0].op.name != "prim.if_then_else" \
                or not isinstance(factors[0].args[1], tvm.ir.TensorLoad):
            return None
        taps.append((factors[0].args[1], factors[1], factors[2]))
    return taps if len(taps) == 4 else None


def _bilinear(sch: Schedule, block_rv):
    """``(store, source, row, column, weights)`` of the bilinear block ``out[n, c, h, w]`` (NCHW, four
    guarded taps ``x[n, c, row + i, column + j]``, ``column = stride * w + k``, the weights
    ``(wx0, wx1, wy0, wy1)``), or None for another shape."""
    block = sch.get(block_rv)
    store = block.body
    taps = _taps(store.value) if isinstance(store, tirx.BufferStore) else None
    if taps is None or len(block.iter_vars) != 4 or block.init is not None:
        return None
    v_n, v_c, v_h, v_w = (iv.var for iv in block.iter_vars)
    (l00, wx0, wy0), (l01, wx1, wy0b), (l10, wx0b, wy1), (l11, wx1b, wy1b) = taps
    analyzer = tvm.sym.Analyzer()
    same = tvm_ffi.structural_equal
    if not (same(wy0, wy0b) and same(wy1, wy1b) and same(wx0, wx0b) and same(wx1, wx1b)) \
            or list(store.indices) != [v_n, v_c, v_h, v_w] or str(store.buffer.dtype) != "float32":
        return None
    source = l00.source
    for load, dh, dw in ((l01, 0, 1), (l10, 1, 0), (l11, 1, 1)):
        if not load.source.same_as(source) or len(load.indices) != 4 \
                or any(not analyzer.can_prove_equal(a - b, d)
                       for a, b, d in zip(load.indices[2:], l00.indices[2:], (dh, dw))):
            return None
    n, c, row, col = l00.indices
    linear = tvm.sym.detect_linear_equation(col, [v_w])
    if not (n.same_as(v_n) and c.same_as(v_c)) or len(linear) != 2 or not isinstance(linear[0], tirx.IntImm) \
            or int(linear[0]) < 1 or uses(linear[1], v_w) or uses(row, v_w):
        return None
    return store, source, row, linear, (wx0, wx1, wy0, wy1)


def blend_rows(sch: Schedule, block_rv) -> bool:
    """Rewrite the bilinear block ``out[n, c, h, w]`` (NCHW, any stride), its innermost loop the whole ``w``,
    into one block per output row (``[n, c, h]``, whose ``w`` the two blends cover) under the other loops.
    At stride ``s`` the vertical blend still covers the whole input row, the horizontal one reads every
    ``s``-th pair of its columns.

    Returns False (nothing changed) when the block is not of that shape."""
    block = sch.get(block_rv)
    parsed = _bilinear(sch, block_rv)
    loops = sch.get_loops(block_rv)
    if parsed is None or len(loops) < 2:
        return False
    outer, inner = sch.get(loops[-2]), sch.get(loops[-1])
    realize = inner.body
    if not (isinstance(realize, SBlockRealize) and outer.body.same_as(inner)
            and isinstance(inner.min, tirx.IntImm) and int(inner.min) == 0
            and realize.iter_values[3].same_as(inner.loop_var)
            and not any(uses(v, inner.loop_var) for v in realize.iter_values[:3])):
        return False
    store, source, row, linear, (wx0, wx1, wy0, wy1) = parsed
    v_n, v_c, v_h, v_w = (iv.var for iv in block.iter_vars)
    stride = int(linear[0])
    height, width = (int(d) for d in source.shape[2:])
    out_width = int(block.iter_vars[3].dom.extent)
    idx = v_w.ty.dtype

    def const(v):
        return tirx.const(v, idx)

    # the row buffer holds the vertical blend at [pad, pad + width); zeros are read on either side
    pad = stride * (out_width - 1) + 2  # the horizontal blend reads columns [k, k + pad)
    rows = tirx.decl_buffer((pad + width + pad,), "float32", "row", scope="local")
    k_var, r_var = tirx.Var("k", idx), tirx.Var("r", idx)
    weights = [tirx.Var(name, "float32") for name in ("wx0", "wx1", "wy0", "wy1")]
    a0, a1, b0, b1 = weights
    zero = tirx.const(0, "float32")

    def loop(name, extent, body_of, kind=tirx.ForKind.SERIAL):
        var = tirx.Var(name, idx)
        return tirx.For(var, const(0), extent, kind, body_of(var))

    # the rows' tests are row-invariant Selects over a row clamped into the map (bound first: inside the
    # Select the simplifier would drop the clamp, and the discarded lanes would read out of bounds)
    clamped_rows = [tirx.Var(name, idx) for name in ("r0", "r1")]

    def tap(dh, weight):
        r = r_var + dh
        w_eff = tirx.Select(tirx.all(r >= 0, r < height), weight, zero)
        return lambda j: w_eff * tirx.BufferLoad(source, [v_n, v_c, clamped_rows[dh], j])

    top, bottom = tap(0, b0), tap(1, b1)
    vertical = loop("j", const(width), lambda j: tirx.BufferStore(rows, top(j) + bottom(j), [pad + j]),
                    tirx.ForKind.VECTORIZED)
    k = k_var
    left = loop("j", tirx.max(-k, const(0)), lambda j: tirx.BufferStore(rows, zero, [pad + k + j]))
    right_from = tirx.max(k + pad, const(width))
    right = loop("j", right_from - width, lambda j: tirx.BufferStore(rows, zero, [pad + width + j]))
    horizontal = loop("w", const(out_width), lambda w: tirx.BufferStore(
        store.buffer, a0 * tirx.BufferLoad(rows, [pad + k + stride * w])
        + a1 * tirx.BufferLoad(rows, [pad + k + stride * w + 1]),
        [v_n, v_c, v_h, w]), tirx.ForKind.VECTORIZED)
    # |k| beyond the map reads zeros only: clamped so that the buffer's pads cover every read
    clamped = tirx.max(tirx.min(linear[1], const(width)), const(-pad))
    binds = [tirx.LetStmt(var, value)
             for var, value in zip([k_var, r_var] + weights, [clamped, row, wx0, wx1, wy0, wy1])]
    binds += [tirx.LetStmt(var, tirx.max(tirx.min(r_var + dh, const(height - 1)), const(0)))
              for dh, var in enumerate(clamped_rows)]
    body = tirx.SeqStmt(binds + [left, right, vertical, horizontal])

    span = tvm.ir.Range.from_min_extent
    writes = [tirx.BufferRegion(store.buffer, [span(v_n, 1), span(v_c, 1), span(v_h, 1), span(0, out_width)])]
    new = SBlock(block.iter_vars[:3], [whole_along(r, v_h, v_w) for r in block.reads], writes, block.name_hint, body,
                 None, list(block.alloc_buffers) + [rows], block.match_buffers, block.annotations)
    nest = tirx.For(outer.loop_var, outer.min, outer.extent, outer.kind,
                    SBlockRealize(realize.iter_values[:3], realize.predicate, new), outer.thread_binding,
                    outer.annotations)
    sch.state.replace(sch.get_sref(loops[-2]), nest, {block: new})
    return True


def blend_planes(sch: Schedule, block_rv) -> bool:
    """Rewrite the bilinear block ``out[n, c, h, w]`` at stride 1 (its four loops binding it directly) into one
    block per plane ``[n, c]``, the offsets and weights bound once per plane: where all four taps lie on the
    map (rows ``[top, bottom)``, columns ``[lo, hi)``) the flattened plane is one test-free 4-tap blend of
    contiguous runs (LLVM vectorizes it, also inside a parallel loop, where it leaves the elementwise block's
    guarded loads scalar); the rows off that band, then the columns the flat blend wrapped, are redone with
    their taps clamped into the map and weighing zero off it. The flat blend indexes both planes along their last
    axis (``[n, c, 0, p]``), which addresses the compact NCHW buffers this stage reads and writes. Rounding and
    non-finite inputs as ``blend_rows``.

    Returns False (nothing changed) when the block is not of that shape."""
    parsed = _bilinear(sch, block_rv)
    if parsed is None or not trivially_bound(sch, block_rv) or len(sch.get_loops(block_rv)) != 4:
        return False
    store, source, row, column, (wx0, wx1, wy0, wy1) = parsed
    block = sch.get(block_rv)
    v_n, v_c, v_h, v_w = (iv.var for iv in block.iter_vars)
    vertical = tvm.sym.detect_linear_equation(row, [v_h])
    height, width = (int(d) for d in source.shape[2:])
    if int(column[0]) != 1 or len(vertical) != 2 or not isinstance(vertical[0], tirx.IntImm) \
            or int(vertical[0]) != 1 or uses(vertical[1], v_h) \
            or [int(d) for d in store.buffer.shape[2:]] != [height, width]:
        return False
    idx = v_w.ty.dtype

    def const(v):
        return tirx.const(v, idx)

    def clamp(e, low, high):
        return tirx.max(tirx.min(e, const(high)), const(low))

    dy, dx = (tirx.Var(name, idx) for name in ("dy", "dx"))
    a0, a1, b0, b1 = (tirx.Var(name, "float32") for name in ("wx0", "wx1", "wy0", "wy1"))
    zero = tirx.const(0, "float32")

    def blend(row_taps, col_taps):  # sum of weight * x[row, col] over the ((weight, row), (weight, col)) pairs
        return sum(((v * u) * tirx.BufferLoad(source, [v_n, v_c, r, c]) for v, r in row_taps for u, c in col_taps),
                   zero)

    def clamped(var, offset, extent, weights):  # per row or column: its taps clamped into the map, zero weight off it
        names = [f"{var.name}{i}" for i in range(2)]
        bound = [(tirx.Var(f"{name}_w", "float32"), tirx.Var(name, idx)) for name in names]
        binds = [stmt for i, ((w_var, at_var), weight) in enumerate(zip(bound, weights)) for stmt in (
            tirx.LetStmt(w_var, tirx.Select(tirx.all(var + offset + i >= 0, var + offset + i < extent), weight, zero)),
            tirx.LetStmt(at_var, clamp(var + offset + i, 0, extent - 1)))]
        return bound, binds

    lo, hi, top, bottom = (tirx.Var(name, idx) for name in ("lo", "hi", "top", "bottom"))
    bounds = [tirx.LetStmt(lo, clamp(-dx, 0, width)), tirx.LetStmt(hi, tirx.max(clamp(width - 1 - dx, 0, width), lo)),
              tirx.LetStmt(top, clamp(-dy, 0, height)),
              tirx.LetStmt(bottom, tirx.max(clamp(height - 1 - dy, 0, height), top))]

    def loop(var, start, end, body):
        return tirx.For(var, start, end - start, tirx.ForKind.SERIAL, body)

    def rows_of(start, end):  # whole rows off the band: clamped rows, the columns tested per pixel
        h, w = tirx.Var("h", idx), tirx.Var("w", idx)
        rows, binds = clamped(h, dy, height, (b0, b1))
        cols = [(a, w + dx + j) for j, a in enumerate((a0, a1))]
        value = sum((tirx.if_then_else(tirx.all(c >= 0, c < width), blend(rows, [(a, c)]), zero)
                     for a, c in cols), zero)
        return loop(h, start, end, tirx.SeqStmt(binds + [loop(w, const(0), const(width), tirx.BufferStore(
            store.buffer, value, [v_n, v_c, h, w]))]))

    def columns_of(start, end):  # the band's columns off [lo, hi): clamped columns, the rows on the map
        h, w = tirx.Var("h", idx), tirx.Var("w", idx)
        cols, binds = clamped(w, dx, width, (a0, a1))
        rows = [(b, h + dy + i) for i, b in enumerate((b0, b1))]
        return loop(w, start, end, tirx.SeqStmt(binds + [loop(h, top, bottom, tirx.BufferStore(
            store.buffer, blend(rows, cols), [v_n, v_c, h, w]))]))

    p = tirx.Var("p", idx)
    first, last = top * width + lo, (bottom - 1) * width + hi
    taps = [(wy * wx, first + p + (dy + i) * width + dx + j)
            for i, wy in enumerate((b0, b1)) for j, wx in enumerate((a0, a1))]
    flat = tirx.For(p, const(0), tirx.Select(lo < hi, tirx.max(last - first, const(0)), const(0)), tirx.ForKind.SERIAL,
                    tirx.BufferStore(store.buffer, sum((wt * tirx.BufferLoad(source, [v_n, v_c, const(0), q])
                                                        for wt, q in taps), zero), [v_n, v_c, const(0), first + p]))
    binds = [tirx.LetStmt(var, value) for var, value in zip((dy, dx, a0, a1, b0, b1),
                                                            (vertical[1], column[1], wx0, wx1, wy0, wy1))]
    body = tirx.SeqStmt(binds + bounds + [flat, rows_of(const(0), top), rows_of(bottom, const(height)),
                                          columns_of(const(0), lo), columns_of(hi, const(width))])

    replace_by_plane_block(sch, block_rv, store.buffer, body)
    return True
