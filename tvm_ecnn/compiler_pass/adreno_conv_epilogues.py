"""Fused ``conv2d_NCHWc`` functions whose epilogue ``dl.adreno.Conv2d`` leaves outside every kernel (texture path).

TVM 0.27's ``dl.adreno.Conv2d`` schedules the convolution and then inlines the epilogue blocks with
``Fallback.schedule_inline_blocks``; whatever it cannot inline stays a loop nest at the root of the function,
bound to no thread. On OpenCL that nest becomes *host* code: reading a texture there fails in LLVM codegen
("unknown intrinsic tirx.texture2d_load"), and writing one stores a single lane per pixel (refused by
``adreno_tir.CheckTextureStores``). Two common epilogues get there:

* **SiLU / hardswish** (``y * act(y)``, EfficientNet's MBConv): the bias add has two consumers, so it is
  reverse-inlined into the convolution, and ``schedule_inline_blocks`` then leaves its loop with ``break`` on the
  next block, so no later block is looked at. ``InlineConvEpilogues`` inlines every intermediate elementwise block
  into its consumers first; dlight then sees a single epilogue it can fuse into the convolution's store.
* **a broadcast gate** (squeeze-excitation ``x * sigmoid(conv1x1(pool(x)))``): the convolution's result is smaller
  than the output, so no inlining can put the epilogue under its threads. ``ScheduleBroadcastConvolutions`` gives
  such functions the texel schedule (``texel_schedule``), every work-item recomputing its texel's gate: a few FMAs
  for the 1x1 map of an SE gate.
"""
from __future__ import annotations

from math import prod

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir import Schedule, ScheduleError

from .schedule_unscheduled import schedule_unscheduled
from .texel_schedule import packed_output, schedule_texel_writes

_CONV = "conv2d_NCHWc"


def _blocks(func: tirx.PrimFunc) -> list:
    found = []
    tvm_ffi.structural_walk(func.body, ((s_tir.SBlock, found.append),))
    return found


def _shape(buffer) -> tuple[int, ...]:
    return tuple(int(s) for s in buffer.ty.shape)


def broadcasts_a_convolution(func: tirx.PrimFunc) -> bool:
    """A fused convolution whose result is broadcast into a larger packed output."""
    out = packed_output(func, textures_only=False)
    if out is None:
        return False
    convs = [w.source for b in _blocks(func) if b.name_hint.startswith(_CONV) for w in b.writes]
    return any(prod(_shape(c)) < prod(_shape(out)) for c in convs)


def _schedule_broadcast_convolution(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    return schedule_texel_writes(func, textures_only=False) if broadcasts_a_convolution(func) else None


@tvm.transform.module_pass(opt_level=0, name="ScheduleBroadcastConvolutions")
class ScheduleBroadcastConvolutions:
    """Before ``dl.adreno``: the texel schedule for a convolution broadcast into a larger output."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return schedule_unscheduled(mod, _schedule_broadcast_convolution)


def inline_conv_epilogue(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    """``func`` with every elementwise block between its convolution and its output inlined into its consumers
    (the padding stays: dlight caches it), or None if it is no unscheduled convolution or nothing changed."""
    if func.attrs.get("tirx.is_scheduled", False):
        return None
    blocks = _blocks(func)
    if not any(b.name_hint.startswith(_CONV) for b in blocks):
        return None
    params = [p for p in func.params if isinstance(p.ty, tirx.buffer.BufferType)]
    sch, inlined = Schedule(func), False
    for block in blocks[1:]:  # blocks[0] is the root
        name = block.name_hint
        if name.startswith(_CONV) or "pad" in name or any(w.source.same_as(p) for w in block.writes for p in params):
            continue
        try:
            sch.compute_inline(sch.get_sblock(name))
            inlined = True
        except ScheduleError:
            continue
    return sch.mod["main"] if inlined else None


@tvm.transform.module_pass(opt_level=0, name="InlineConvEpilogues")
class InlineConvEpilogues:
    """Before ``dl.adreno``: elementwise epilogue blocks of fused convolutions inlined (not marked scheduled)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = mod.clone()  # `mod[gvar] =` would otherwise rewrite the caller's module
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, tirx.PrimFunc) and (inlined := inline_conv_epilogue(func)) is not None:
                mod[gvar] = inlined
        return mod
