"""Walk and rewrite the bindings of a Relax function's dataflow blocks.

The fusion passes follow producer -> consumer chains (shift -> conv -> add -> relu) and may only
fuse through a tensor nobody else reads. Inside a dataflow block a Call's arguments are bound
Vars, so chains are followed through the binding table; ``uses`` counts every reference,
including the function's output.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

RewriteCallback = Callable[[str, relax.Var, int, str], None]
"""``(pattern, anchor var, channels moved, result op)``: how passes report a rewrite."""


def _var_operands(expr) -> list[relax.Var]:
    """Every var ``expr`` reads, once per occurrence (``add(x, x)`` reads ``x`` twice)."""
    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Call):
        return [v for arg in expr.args for v in _var_operands(arg)]
    if isinstance(expr, relax.Tuple):
        return [v for field in expr.fields for v in _var_operands(field)]
    if isinstance(expr, relax.TupleGetItem):
        return _var_operands(expr.tuple_value)
    return list(relax.analysis.free_vars(expr))


class Dataflow:
    """Bindings by var, and each var's consumers, for one function."""

    def __init__(self, func: relax.Function):
        self.value: dict[relax.Var, relax.Expr] = {}
        self.order: list[relax.Var] = []
        self.uses: Counter = Counter()
        self.consumers: dict[relax.Var, list[relax.Var]] = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.VarBinding):
                    self.value[binding.var] = binding.value
                    self.order.append(binding.var)
                    for used in _var_operands(binding.value):
                        self.uses[used] += 1
                        self.consumers.setdefault(used, []).append(binding.var)
        for used in _var_operands(func.body.body):
            self.uses[used] += 1

    def call(self, expr, *op_names: str) -> relax.Call | None:
        """The call bound to ``expr`` if it is a call to one of ``op_names``."""
        value = self.value.get(expr) if isinstance(expr, relax.Var) else expr
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in op_names:
            return value
        return None

    def constant(self, expr) -> np.ndarray | None:
        """numpy value of a constant operand, looking through a reshape (how the importer adds conv bias)."""
        if isinstance(expr, tvm.ir.expr.GenericConst):
            return expr.value.numpy()
        reshape = self.call(expr, "relax.reshape")
        if reshape is not None and isinstance(reshape.args[0], tvm.ir.expr.GenericConst):
            return reshape.args[0].value.numpy().reshape([int(d) for d in expr.ty.shape.values])
        return None

    def single_consumer(self, var: relax.Var) -> relax.Var | None:
        """The one binding that reads ``var``, if ``var`` has exactly one use."""
        if self.uses[var] != 1 or len(self.consumers.get(var, ())) != 1:
            return None
        return self.consumers[var][0]




@relax.expr_functor.mutator
class _ReplaceBindings(relax.PyExprMutator):
    def __init__(self, values: dict, mod: tvm.IRModule):
        super().__init__(mod)
        self.values = values

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var not in self.values:
            return super().visit_var_binding_(binding)
        value = self.builder_.normalize(self._flatten(self.values[binding.var]))
        self.builder_.emit_normalized(relax.VarBinding(binding.var, value))
        return None

    def _flatten(self, expr):
        """Bind nested call arguments first: dataflow blocks hold one call per binding."""
        if not isinstance(expr, relax.Call):
            return self.visit_expr(expr)
        args = [self.builder_.emit(self._flatten(a)) if isinstance(a, relax.Call) else self._flatten(a) for a in expr.args]
        return relax.Call(expr.op, args, expr.attrs, expr.ty_args)


def replace_bindings(mod: tvm.IRModule, name: str, values: dict) -> tvm.IRModule:
    """``mod`` with the bindings of ``values``' vars in function ``name`` re-bound, dead code dropped.

    Each new value must have its var's type; producers it no longer reads are removed.
    """
    if not values:
        return mod
    func = _ReplaceBindings(values, mod).visit_expr(mod[name])
    mod = mod.clone()
    mod[name] = func
    return relax.transform.DeadCodeElimination()(mod)


def map_relax_functions(mod: tvm.IRModule, rewrite) -> tvm.IRModule:
    """A copy of ``mod`` (never the caller's module) where ``rewrite(copy, func)``, unless None, replaces each
    Relax function."""
    out = mod.clone()
    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            new = rewrite(out, func)
            if new is not None:
                out[gvar] = new
    return out


def relax_functions(mod: tvm.IRModule) -> list[str]:
    return [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, relax.Function)]


class BindingRewrite:
    """Skeleton of a Relax rewrite pass: per function, ``rewrite(flow, var)`` returns ``None`` or
    ``(anchor var, new value, channels moved, result op)``; each anchor's binding gets the new value
    (dead producers go with DCE) and the rewrite is reported as ``pattern``. Subclasses are
    decorated with ``tvm.transform.module_pass``."""

    pattern = ""

    def __init__(self, on_rewrite: RewriteCallback | None = None):
        self.on_rewrite = on_rewrite

    def rewrite(self, flow: Dataflow, var: relax.Var):
        raise NotImplementedError

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for name in relax_functions(mod):
            flow = Dataflow(mod[name])
            values = {}
            for var in flow.order:
                found = self.rewrite(flow, var)
                if found is None:
                    continue
                anchor, value, channels_moved, result = found
                values[anchor] = value
                if self.on_rewrite is not None:
                    self.on_rewrite(self.pattern, var, channels_moved, result)
            mod = replace_bindings(mod, name, values)
        return mod
