"""Give the pipeline its own Relax constant nodes, so that TVM cannot change the caller's module.

TVM 0.27's ``AnnotateCustomMemoryScope`` (Adreno texture pipeline) sets a ``vdevice`` on constants by updating
their type *in place*. Constant nodes are shared with the module the user passed in, so after one texture build
that module carries texture vdevices, and compiling it again for any other target fails in ``CallTIRRewrite``
("key is not in Map"). Fresh nodes (same tensor data, no copy) keep the update inside the pipeline.
"""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .relax_dataflow import map_relax_functions


@mutator
class _Fresh(PyExprMutator):
    def visit_generic_const_(self, node):
        return relax.const(node.value)


@tvm.transform.module_pass(opt_level=0, name="UnshareConstants")
class UnshareConstants:
    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return map_relax_functions(mod, lambda copy, func: _Fresh(copy).visit_expr(func))
