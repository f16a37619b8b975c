"""int8 staging without per-lane bounds tests: the active shift's taps (``unguard_bilinear_taps``), and the zero
tail of a map padded to whole pixel vectors (``unguard_padded_pixels``).

Each of the four bilinear taps is ``if_then_else(inside, x[n, c, y, x], zero_point)`` with ``y = h * s - p + iy + dy``
(``iy`` the integer part of the channel's offset, from the offsets table: its range is unknown). TVM's
``vectorize`` turns a per-lane ``if_then_else`` into scalar code. The rewrite makes the tap a vector
``Select(inside, x[...], zero_point)`` that loads every lane, so the load must stay inside ``x`` for every offset:

* the integer offsets are clamped per channel to ``[-(y_max + 2), H - y_min]`` (``y_min``/``y_max``: the range of
  ``h * s - p + dy``; the same for ``x``): beyond those every tap of the channel is outside the image either way,
  so the result is unchanged (bit-exact);
* the lanes outside the image then read at most one plane and a few rows before or after the channel's plane,
  inside ``x`` but for the first and last ``edge`` channels of the tensor, which read clamped addresses instead.

With the pixels innermost (channel planes: ``cpu_int8._stage_shifted_planes``) the loads are contiguous along a
row, and the four weights per channel are loop-invariant.
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx
from tvm.s_tir import SBlock, Schedule

from . import cpu


def _integer_offset_axis(expr) -> int | None:
    """0 (``dy``) or 1 (``dx``) when ``expr`` is a channel's integer offset ``floor(table[c, axis] * 2^7 + 1/2) // 2^7``
    (``quant.offset_fixed_point``), else None."""
    if not isinstance(expr, tirx.FloorDiv):
        return None
    loads = []
    tvm_ffi.structural_walk(expr.a, (tvm.ir.TensorLoad, lambda e: loads.append(e)))
    if len(loads) != 1 or len(loads[0].indices) != 2 or not isinstance(loads[0].indices[1], tirx.IntImm):
        return None
    return int(loads[0].indices[1])


def _replace_offsets(expr, replacement):
    """``expr`` with each integer offset ``e`` of axis ``a`` replaced by ``replacement(e, a)``."""
    def replace(e):
        axis = _integer_offset_axis(e)
        return e if axis is None else replacement(e, axis)
    return tvm_ffi.structural_map(expr, (tirx.FloorDiv, replace))


def unguard_bilinear_taps(sch: Schedule, stage) -> bool:
    """Rewrite the int8 active-shift ``stage`` (block ``[n, h, w, c]`` of an NCHW input) so its four taps
    vectorize (module docstring); False (nothing changed) when it is not that or the tensor is too small
    for unguarded channels."""
    block = sch.get(stage)
    store = block.body
    if str(block.annotations.get("ecnn_shift")) != "active" or not isinstance(store, tirx.BufferStore):
        return False
    taps = cpu.guarded_loads(store.value)
    if len(taps) != 4 or any(len(t.args[1].indices) != 4 for t in taps) or str(taps[0].args[1].source.dtype) != "int8":
        return False
    source = taps[0].args[1].source
    channels, height, width = (int(d) for d in source.shape[1:])
    analyzer = tvm.sym.Analyzer()
    for iv in block.iter_vars:
        analyzer.bind(iv.var, iv.dom)
    # range of the tap coordinates without the channel's offset, per axis over the four taps
    spans = [[], []]
    for tap in taps:
        for axis, index in enumerate(tap.args[1].indices[2:]):
            bound = analyzer.const_int_bound(_replace_offsets(index, lambda e, a: tirx.IntImm(e.ty, 0)))
            spans[axis].append((bound.min_value, bound.max_value))
    limits = []
    for axis, size in enumerate((height, width)):
        low, high = min(s[0] for s in spans[axis]), max(s[1] for s in spans[axis])
        limits.append((-(high + 2), size - low, low, high))
    # flat distance the unselected lanes reach before / after the channel's plane
    (y_lo, y_hi, y_min, y_max), (x_lo, x_hi, x_min, x_max) = limits
    plane = height * width
    before = -((y_min + y_lo) * width + (x_min + x_lo))
    after = (y_max + y_hi) * width + (x_max + x_hi) - (plane - 1)
    edge = -(-max(before, after, 0) // plane)
    if 2 * edge >= channels:
        return False

    def clamp(e, axis):
        lo, hi = limits[axis][:2]
        return tirx.max(tirx.min(e, tirx.IntImm(e.ty, hi)), tirx.IntImm(e.ty, lo))

    v_c = block.iter_vars[3].var

    def rewritten(clamped_address):
        def tap(g):
            if cpu.guarded_loads(g) != [g]:
                return g
            load = g.args[1]
            n, c, y, x = (_replace_offsets(i, clamp) for i in load.indices)
            if clamped_address:
                y = tirx.max(tirx.min(y, tirx.IntImm(y.ty, height - 1)), tirx.IntImm(y.ty, 0))
                x = tirx.max(tirx.min(x, tirx.IntImm(x.ty, width - 1)), tirx.IntImm(x.ty, 0))
            return tirx.Select(_replace_offsets(g.args[0], clamp), tirx.BufferLoad(load.source, [n, c, y, x]),
                               g.args[2])
        return tirx.BufferStore(store.buffer, tvm_ffi.structural_map(store.value, (tvm.ir.Call, tap)), store.indices)

    body = tirx.IfThenElse(tirx.all(v_c >= edge, v_c < channels - edge), rewritten(False), rewritten(True))
    new = SBlock(block.iter_vars, block.reads, block.writes, block.name_hint, body, block.init,
                 block.alloc_buffers, block.match_buffers, block.annotations)
    sch.state.replace(sch.get_sref(stage), new, {block: new})
    return True


def unguard_padded_pixels(sch: Schedule, stage, pixels: int) -> bool:
    """A stage ``[n, c, p] = if_then_else(p < pixels, x[n, c, y(p), x(p)], 0)`` (``pad_einsum``'s input of a map of
    ``pixels >= 16`` pixels padded to whole 16-pixel vectors; ``y, x`` the pixel's input row and column, strided or
    not) reading ``x`` unguarded: the padded pixels only feed accumulators that are never stored; a channel's read
    into the next plane, inside ``x``, but for the tensor's last group of 4 channels, which read their last pixel
    instead. (A per-lane test made TVM scalarize the stage.) False (nothing changed) when the stage is not that or
    its padded pixels reach past the next plane."""
    block = sch.get(stage)
    store = block.body
    taps = cpu.guarded_loads(store.value) if isinstance(store, tirx.BufferStore) else []
    if len(taps) != 1 or not taps[0].same_as(store.value) or len(block.iter_vars) != 3:
        return False
    load = taps[0].args[1]
    channels, height, width = (int(d) for d in load.source.shape[1:])
    v_c, v_p = block.iter_vars[1].var, block.iter_vars[2].var
    analyzer = tvm.sym.Analyzer()
    analyzer.bind(v_p, block.iter_vars[2].dom)
    reach = analyzer.const_int_bound(load.indices[2] * width + load.indices[3]).max_value
    if reach >= 2 * height * width:
        return False
    last = tirx.min(v_p, tirx.IntImm(v_p.ty, pixels - 1))
    clamped = tirx.BufferLoad(load.source, [tvm_ffi.structural_map(
        i, (tirx.Var, lambda v: last if v.same_as(v_p) else v)) for i in load.indices])
    # per group of 4 channels (what a 4-byte dot product reads): one loop-invariant test that LLVM unswitches, so
    # the 4 channel vectors still interleave into one store
    body = tirx.IfThenElse(v_c // 4 < (channels - 1) // 4, tirx.BufferStore(store.buffer, load, store.indices),
                           tirx.BufferStore(store.buffer, clamped, store.indices))
    new = SBlock(block.iter_vars, block.reads, block.writes, block.name_hint, body, block.init,
                 block.alloc_buffers, block.match_buffers, block.annotations)
    sch.state.replace(sch.get_sref(stage), new, {block: new})
    return True
