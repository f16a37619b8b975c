"""Copy a texture to a buffer before a reshape that leaves texture memory (texture path; stock TVM bug).

A reshape legalizes to a copy kernel, which ``RewriteDataflowReshape`` turns back into a view (``R.reshape``). When
``AnnotateCustomMemoryScope`` has put its input in a texture and its output in a buffer (a model's own 5-D tensor
whose last axis happens to be 4: TSM's ``(n, t, c, h, w)`` frames at 4x4 pixels), TVM 0.27's rewrite refers to a
buffer copy of the input that it never defines, and VM codegen fails with "Var lv... is not defined". A view
between two memory kinds is not possible anyway: ``CopyTextureBeforeReshape`` rewrites such a call to an explicit
copy to the output's memory (``R.to_vdevice``) followed by a view of that buffer.
"""
from __future__ import annotations

import tvm
from tvm import relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from .relax_dataflow import map_relax_functions

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def _scope(expr) -> str:
    vdevice = getattr(expr.ty, "vdevice", None)
    return str(vdevice.memory_scope) if vdevice is not None else "global"


@mutator
class _Rewriter(PyExprMutator):
    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if isinstance(value, relax.Call) and value.op.same_as(_CALL_TIR) and self._is_reshape(value.args[0]):
            (source,) = value.args[1].fields
            out = binding.var.ty
            if _scope(source) != _scope(binding.var) and out.vdevice is not None:
                copy = self.builder_.emit(relax.op.to_vdevice(self.visit_expr(source), out.vdevice))
                view = self.builder_.normalize(relax.op.reshape(copy, out.shape))
                self.builder_.emit_normalized(relax.VarBinding(binding.var, view))
                return None
        return super().visit_var_binding_(binding)

    def _is_reshape(self, gvar) -> bool:
        func = self.builder_.get()[gvar] if isinstance(gvar, tvm.ir.GlobalVar) else None
        return isinstance(func, tirx.PrimFunc) and relax.analysis.has_reshape_pattern(func)


@tvm.transform.module_pass(opt_level=0, name="CopyTextureBeforeReshape")
class CopyTextureBeforeReshape:
    """Texture pipeline, right before ``RewriteDataflowReshape``."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return map_relax_functions(mod, lambda copy, func: _Rewriter(copy).visit_expr(func))
