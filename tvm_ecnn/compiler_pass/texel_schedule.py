"""Schedule texture-writing PrimFuncs that dlight's Adreno rules decline, so they store whole RGBA texels.

After ``dl.adreno.{Conv2d,LayoutTransform,Pool2D}``, TVM 0.27's texture pipeline hands what is left to
``dl.gpu.{Reduction,GeneralReduction,Fallback}``. Those know nothing of images: ``Fallback`` binds one work-item
per *element* (``concatenate`` in SqueezeNet's fire modules) and ``Reduction`` one work-group per element with a
cross-thread sum (``avg_pool2d`` in FE-Net); either way each work-item writes one lane of an ``NCHW4c`` texel,
which ``write_imagef`` cannot do (notes F7; ``adreno_tir.CheckTextureStores`` refuses such kernels).

``ScheduleTexelWrites`` runs between the two dlight stages and gives every still unscheduled function whose
output is a 5-D texture with 4 lanes the texel schedule of our hand schedules (``schedules.adreno``): one
work-item per pixel ``(n, c/4, h, w)``, every producer (reductions, pads, epilogues) computed for the 4 lanes
into registers under it, and one vectorized ``float4`` store. A function it cannot schedule this way is left to
dlight (and so, if dlight writes single lanes, to the guard).
"""
from __future__ import annotations

import tvm
from tvm import tirx
from tvm.s_tir import Schedule, ScheduleError

from schedules.adreno import bind_threads

from .schedule_unscheduled import schedule_unscheduled

_LANES = 4
_UNROLL = 16  # longer loops (a deep reduction) stay loops


def packed_output(func: tirx.PrimFunc, textures_only: bool = True):
    """The last of the function's ``(n, c/4, h, w, 4)`` parameters, its output (textures only, unless
    ``textures_only`` is False)."""
    params = [p for p in func.params if isinstance(p.ty, tirx.buffer.BufferType)
              and (not textures_only or "texture" in str(p.ty.storage_scope))]
    written = [b for b in params if len(b.ty.shape) == 5 and int(b.ty.shape[4]) == _LANES]
    return written[-1] if written else None


def schedule_texel_writes(func: tirx.PrimFunc, textures_only: bool = True) -> tirx.PrimFunc | None:
    """``func`` scheduled to write whole texels, or None when its structure does not allow it."""
    out = packed_output(func, textures_only)
    if out is None:
        return None
    sch = Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    writer = [b for b in blocks if any(w.source.same_as(out) for w in sch.get(b).writes)]
    if len(writer) != 1 or not sch.get(writer[0]).writes[0].source.same_as(out):
        return None
    try:
        store = sch.cache_write(writer[0], 0, "local")  # the texture write becomes a pure per-texel copy
        loops = sch.get_loops(store)
        if len(loops) != 5 or int(sch.get(loops[4]).extent) != _LANES:
            return None
        thread = bind_threads(sch, loops[:4])
        for block in reversed(sch.get_child_blocks(sch.get_sblock("root"))):
            if sch.get(block).name_hint == sch.get(store).name_hint:
                continue
            sch.compute_at(block, thread, preserve_unit_loops=True)
            sch.set_scope(block, 0, "local")
            for loop in sch.get_loops(block)[2:]:  # the texel's lanes and small windows: registers
                if int(sch.get(loop).extent) <= _UNROLL:
                    sch.unroll(loop)
        sch.vectorize(sch.get_loops(store)[-1])
    except ScheduleError:
        return None
    return sch.mod["main"]


@tvm.transform.module_pass(opt_level=0, name="ScheduleTexelWrites")
class ScheduleTexelWrites:
    """Texture pipeline, after ``dl.adreno`` and before ``dl.gpu``: texel schedules for unscheduled image writers."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return schedule_unscheduled(mod, schedule_texel_writes)
