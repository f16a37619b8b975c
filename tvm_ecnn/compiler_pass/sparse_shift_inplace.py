"""Run sparse shifts in place when nothing else reads their input.

A trained sparse shift layer moves few channels (Chen et al.); in place, channels with offset
(0, 0) cost no data movement at all. Safe only when the input is an intermediate of the same
dataflow block with this call as its single use (never a function parameter), and only for CPU
targets: the in-place kernel is a serial loop nest with no thread bindings.
"""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from relay_ops._registry import attrs_of, op_name
from relay_ops.sparse_shift2d import constant_offsets, sparse_shift2d

from .relax_dataflow import Dataflow, map_relax_functions

_OP = tvm.ir.Op.get(op_name("sparse_shift2d"))


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, dataflow: Dataflow):
        super().__init__(mod)
        self.dataflow = dataflow

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(_OP)):
            return call
        x, offsets = call.args
        attrs = attrs_of(call)
        if (attrs["inplace"] or attrs["layout"] != "NCHW" or constant_offsets(offsets) is None
                or not isinstance(x, relax.DataflowVar) or self.dataflow.uses[x] != 1):
            return call
        return sparse_shift2d(x, offsets, layout="NCHW", inplace=True, zero_point=attrs.get("zero_point", 0))


@tvm.transform.module_pass(opt_level=0, name="SparseShiftInplace")
class SparseShiftInplace:
    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return map_relax_functions(mod, lambda copy, func: _Rewriter(copy, Dataflow(func)).visit_expr(func))
