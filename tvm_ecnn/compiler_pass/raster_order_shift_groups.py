"""Fold a channel permutation into the weights so that shift groups become contiguous.

The interleaved grouped shift (the reference kernel's ``c mod k^2``) gives neighbouring channels
different offsets; the paper's contiguous mapping gives each block of ``C // k^2`` channels one
offset, in raster order. A shift between two 1x1 convolutions is invariant to channel order, so
when ``shift_conv2d`` reads the output of a ``conv2d`` (+ constant bias add, + ReLU/ReLU6) whose
weights are constants, we permute the producer's output channels and the consumer's input
channels at compile time: the result is identical, and channel-vector loads (NCHW4c texels, SIMD
lanes over channels, sdot's 4 channels) see one offset per vector.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from relay_ops._registry import attrs_of, call, op_name
from relay_ops.shift_conv2d import split_args

from .relax_dataflow import Dataflow, map_relax_functions

_SHIFT_CONV = op_name("shift_conv2d")
_ELEMENTWISE = ("relax.nn.relu", "relax.clip")


def interleaved_to_grouped(channels: int, kernel_size: int) -> np.ndarray:
    """``perm`` with ``new[j] = old[perm[j]]`` turning the interleaved mapping into the grouped one."""
    k2 = kernel_size * kernel_size
    shifted = channels // k2 * k2
    return np.concatenate([np.arange(cell, shifted, k2) for cell in range(k2)] + [np.arange(shifted, channels)])


def _op(expr) -> str:
    return expr.op.name if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) else ""


def _const(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.GenericConst) else None


def _plan(func: relax.Function) -> dict:
    """``{call: rebuilt call}`` for every chain conv2d -> [add const] -> [relu/clip] -> shift_conv2d."""
    dataflow = Dataflow(func)
    values, uses = dataflow.value, dataflow.uses
    plan = {}
    for consumer in values.values():
        if _op(consumer) != _SHIFT_CONV:
            continue
        attrs = attrs_of(consumer)
        x, weight, _, _, _ = split_args(consumer.args, attrs)
        if attrs["shift"] != "grouped" or attrs["mapping"] != "interleaved" or attrs["layout"] != "NCHW":
            continue
        chain, var = [], x
        while isinstance(var, relax.DataflowVar) and uses.get(var) == 1 and var in values:
            producer = values[var]
            chain.append(producer)
            if _op(producer) == "relax.nn.conv2d" or _op(producer) not in _ELEMENTWISE + ("relax.add",):
                break
            var = producer.args[0]
        if not chain or _op(chain[-1]) != "relax.nn.conv2d" or _const(chain[-1].args[1]) is None:
            continue
        conv = chain[-1]
        if conv.attrs["groups"] != 1 or conv.attrs["out_layout"] != "NCHW" or _const(weight) is None:
            continue
        adds = [c for c in chain if _op(c) == "relax.add"]
        if any(_const(a.args[1]) is None or _const(a.args[1]).ndim != 4 for a in adds):
            continue
        perm = interleaved_to_grouped(int(_const(weight).shape[1]), attrs["kernel_size"])
        plan[conv] = relax.Call(conv.op, [conv.args[0], relax.const(_const(conv.args[1])[perm])], conv.attrs)
        for add in adds:
            plan[add] = relax.Call(add.op, [add.args[0], relax.const(_const(add.args[1])[:, perm])], add.attrs)
        args = list(consumer.args)
        args[1] = relax.const(_const(weight)[:, perm])
        plan[consumer] = call("shift_conv2d", args, {**attrs, "mapping": "grouped"})
    return plan


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, plan):
        super().__init__(mod)
        self.plan = plan

    def visit_call_(self, node):
        new = super().visit_call_(node)
        if node not in self.plan:
            return new
        planned = self.plan[node]
        return relax.Call(planned.op, [new.args[0]] + list(planned.args[1:]), planned.attrs)


@tvm.transform.module_pass(opt_level=0, name="RasterOrderShiftGroups")
class RasterOrderShiftGroups:
    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        def rewrite(copy, func):
            plan = _plan(func)
            return _Rewriter(copy, plan).visit_expr(func) if plan else None

        return map_relax_functions(mod, rewrite)
