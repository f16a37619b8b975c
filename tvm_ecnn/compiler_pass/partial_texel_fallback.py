"""Move a kernel that would store partial texels from its output texture to a buffer (texture path).

``adreno_tir.CheckTextureStores`` refuses, at TIR build time, any kernel whose image stores are narrower than a
texel (they would broadcast one lane to all four). An OpenCL image is write-only inside a kernel, so such a store
cannot be repaired in TIR; the output has to be a buffer, and its memory is chosen by Relax. ``BufferForPartialTexels``
runs after the last schedule (right before ``RewriteDataflowReshape``): it lowers (a copy of) each kernel that writes a
texture as far as the guard, and for one the guard refuses it specializes the PrimFunc's output to a ``global``
buffer and copies the result to the texture its consumers expect (``R.to_vdevice``). The rest of the model keeps its
textures; the kernel is reported under ``texture_fallback.FALLBACK_ATTR`` like the ops kept off before layout.
"""
from __future__ import annotations

from collections import Counter

import tvm
from tvm import relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from .adreno_tir import stores_partial_texels
from .relax_dataflow import map_relax_functions
from .texture_fallback import FALLBACK_ATTR, texture_fallback

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
REASON = "partial texel stores"


def _writes_texture(call: relax.Call) -> bool:
    vdevice = getattr(call.ty, "vdevice", None)
    return vdevice is not None and "texture" in str(vdevice.memory_scope)


def _with_buffer_output(func: tirx.PrimFunc) -> tirx.PrimFunc:
    out = func.params[-1]
    return func.specialize({out: tirx.decl_buffer(out.shape, out.dtype, out.name, scope="global")})


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, refused: set[str], buffer: relax.VDevice):
        super().__init__(mod)
        self.refused, self.buffer, self.moved = refused, buffer, Counter()

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        if not (isinstance(call, relax.Call) and call.op.same_as(_CALL_TIR)
                and call.args[0].name_hint in self.refused):
            return super().visit_var_binding_(binding)
        texture = binding.var.ty.vdevice
        out = relax.TensorType(binding.var.ty.shape, binding.var.ty.dtype, self.buffer)
        args = [self.visit_expr(a) for a in call.args[1].fields]
        result = self.builder_.emit(relax.call_tir(call.args[0], args, out))
        copy = self.builder_.normalize(relax.op.to_vdevice(result, texture))
        self.builder_.emit_normalized(relax.VarBinding(binding.var, copy))
        self.moved[call.args[0].name_hint] += 1
        return None


@tvm.transform.module_pass(opt_level=0, name="BufferForPartialTexels")
class BufferForPartialTexels:
    """Texture pipeline, after every schedule: what the guard would refuse writes a buffer instead."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        writers = {call.args[0] for func in mod.functions.values() if isinstance(func, relax.Function)
                   for call in _calls(func) if _writes_texture(call)}
        refused = {g.name_hint for g in writers if stores_partial_texels(mod[g])}
        if not refused:
            return mod
        buffer = next((v for v in mod.global_infos.get("vdevice", []) if str(v.memory_scope) == "global"), None)
        if buffer is None:
            return mod  # no buffer memory declared: leave the refusal to the guard
        mod = mod.clone()
        for name in refused:
            mod[name] = _with_buffer_output(mod[name])
        rewriter = _Rewriter(mod, refused, buffer)
        out = map_relax_functions(mod, lambda _copy, func: rewriter.visit_expr(func))
        kept = Counter(texture_fallback(mod)) + Counter({f"{k} ({REASON})": v for k, v in rewriter.moved.items()})
        return out.with_attr(FALLBACK_ATTR, dict(kept))


def _calls(func: relax.Function) -> list[relax.Call]:
    """The ``call_tir`` calls with a single tensor output bound in ``func``."""
    calls = []
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if (isinstance(value, relax.Call) and value.op.same_as(_CALL_TIR)
                    and isinstance(value.ty, relax.TensorType)):
                calls.append(value)
    return calls
