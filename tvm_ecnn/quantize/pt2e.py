"""A PT2E-quantized program (torchao ``prepare_pt2e`` / ``convert_pt2e``) as the int8 ops of ``rewrite.py``.

The importer turns PT2E's q/dq ops into ``R.quantize`` / ``R.dequantize`` (``frontend/pt2e.py``). Here:

1. ``_strip``: every ``dequantize(quantize(x, s, z))`` pair becomes ``x`` with the activation parameters
   ``(s, z)`` recorded for ``x`` (uint8 ``(s, z)`` is int8 ``(s, z - 128)``: the same real values); every
   dequantized constant weight becomes its fp32 value, its int8 values and per-channel scales recorded;
2. ``Pt2eRewrite``: ``Int8Rewrite`` with those scales and zero points instead of calibrated symmetric ones.
   A tensor PT2E quantizes is int8 here, any other stays fp32 (PT2E computes it in fp32 too). An op that
   keeps its input's scale (a shift, max pool, reshape) but whose output PT2E quantizes with other
   parameters is followed by PT2E's requantize ``q(dq(x))`` (fp32, one elementwise kernel); the residual add
   is PT2E's ``q(dq(a) + dq(b))``, fp32 on the int8 operands; an average runs in fp32 between PT2E's own
   dequantize and quantize.

Arithmetic: docs/int8-quantization.md, "PT2E".
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import tvm
from tvm import relax

from ..compiler_pass.relax_dataflow import Dataflow
from . import int8_ops
from .rewrite import Int8Rewrite, QTensor

QDQ_OPS = ("relax.quantize", "relax.dequantize")


class UnsupportedPt2eError(NotImplementedError):
    """A PT2E q/dq pattern with no int8 form here; the message names the Relax var and what to do."""


def _is_const(expr) -> bool:
    return isinstance(expr, tvm.ir.expr.GenericConst)


def _value(expr) -> np.ndarray:
    if not _is_const(expr):
        raise UnsupportedPt2eError(f"PT2E scale / zero point {expr} is not a constant")
    return expr.value.numpy()


def _qparams(call: relax.Call) -> tuple[np.float32, int]:
    """``(scale, int8 zero point)`` of a per-tensor ``R.quantize`` / ``R.dequantize`` call."""
    scale, zero_point = _value(call.args[1]), _value(call.args[2])
    if scale.size != 1 or zero_point.size != 1:
        raise UnsupportedPt2eError("per-channel quantization of activations is not supported (only of weights)")
    dtype = str(zero_point.dtype)
    return np.float32(scale.reshape(())), int(zero_point.reshape(())) - (128 if dtype == "uint8" else 0)


def _substitute(expr, sub: dict):
    if isinstance(expr, relax.Var):
        return sub.get(expr, expr)
    if isinstance(expr, relax.Call):
        return relax.Call(expr.op, [_substitute(a, sub) for a in expr.args], expr.attrs, expr.ty_args)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_substitute(f, sub) for f in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(_substitute(expr.tuple_value, sub), expr.index)
    return expr


def _weight(call: relax.Call) -> tuple[np.ndarray, np.ndarray]:
    """``(int8 weight, fp32 scale per output channel)`` of a dequantized constant weight (zero point 0)."""
    wq, scale, zero_point = _value(call.args[0]), _value(call.args[1]), _value(call.args[2])
    if wq.dtype != np.int8 or np.any(zero_point != 0) or (scale.size > 1 and int(call.attrs.axis) != 0):
        raise UnsupportedPt2eError(f"weight {wq.shape}: only int8 weights with zero point 0, per "
                                   "tensor or per output channel (axis 0), are supported")
    return wq, np.broadcast_to(scale.astype("float32").reshape(-1), (wq.shape[0],)).copy()


def _strip(func: relax.Function):
    """``(fp32 main without q/dq, {var: (scale, zero point)}, {weight constant: (int8 weight, scales)})``."""
    flow = Dataflow(func)
    outputs = set(relax.analysis.free_vars(func.body.body))
    sub, qparams, weights = {}, {}, {}
    bb = relax.BlockBuilder()
    with bb.function("main", list(func.params), attrs=dict(func.attrs or {})):
        with bb.dataflow():
            for var in flow.order:
                value = flow.value[var]
                if flow.call(var, "relax.quantize") is not None:
                    readers = flow.consumers.get(var, [])
                    if var in outputs or any(flow.call(r, "relax.dequantize") is None for r in readers):
                        raise UnsupportedPt2eError(f"{var.name}: a PT2E quantize whose int8 result is read by "
                                                   "something other than a dequantize is not supported")
                    continue
                dequantize = flow.call(var, "relax.dequantize")
                if dequantize is None and isinstance(value, relax.Var):  # an alias (the importer's output)
                    sub[var] = sub.get(value, value)
                elif dequantize is None:
                    sub[var] = bb.emit(_substitute(value, sub))
                elif _is_const(dequantize.args[0]):
                    wq, scale = _weight(dequantize)
                    const = relax.const((wq.astype("float32") * scale.reshape((-1,) + (1,) * (wq.ndim - 1))))
                    sub[var], weights[const] = const, (wq, scale)
                else:
                    quantize = flow.call(dequantize.args[0], "relax.quantize")
                    if quantize is None or _qparams(quantize) != _qparams(dequantize):
                        raise UnsupportedPt2eError(f"{var.name}: a PT2E dequantize must read a quantize with the "
                                                   "same scale and zero point")
                    x = sub.get(quantize.args[0], quantize.args[0])
                    if qparams.setdefault(x, _qparams(quantize)) != _qparams(quantize):
                        # requantized (``q2(dq1(q1(x)))``, e.g. around an eval-mode dropout): a same-shape
                        # reshape is a tensor of its own, which Pt2eRewrite rescales to the second parameters
                        x = bb.emit(relax.op.reshape(x, x.ty.shape))
                        qparams[x] = _qparams(quantize)
                    sub[var] = x
            result = _substitute(func.body.body, sub)
            out = bb.emit_output(result)
            if result in qparams:  # PT2E quantizes the output: int8 up to the final dequantize
                qparams[out] = qparams[result]
        bb.emit_func_output(out)
    return bb.get()["main"], qparams, weights


class Pt2eRewrite(Int8Rewrite):
    """``Int8Rewrite`` on PT2E's scales, zero points and int8 weights (see the module doc)."""

    QUANTIZED_OUTPUTS = True
    FLOAT_EPILOGUE = True

    def __init__(self, func: relax.Function, qparams: dict, weights: dict):
        self.weights = weights
        super().__init__(func, qparams)

    def _share_concat_scales(self):
        """PT2E chose the concat inputs' parameters (shared or not): nothing to override."""

    def scale(self, var) -> np.float32:
        scale = self.ranges[var][0]
        self.scales.append((var.name, float(scale)))
        return scale

    def zero_point(self, var) -> int:
        return self.ranges[var][1]

    def weight_int8(self, expr, weight):
        return next((v for c, v in self.weights.items() if c.same_as(expr)), None)

    def wants_float(self, var) -> bool:
        return var not in self.ranges or super().wants_float(var)

    def averaging(self, bb, var, value):
        """PT2E's own average, ``q(mean(dq(x)))`` in fp32 (the fp32 fallback), even where the parameters do not
        change: an int8 average breaks exact ties (frequent: the mean of 4 or 64 integers) by ``rint`` where
        PyTorch's fp32 rounding of ``(q - z) * s`` and ``1 / s`` decides them."""
        return False

    def add(self, bb, var, value):
        """PT2E's own add: ``q(dq(a) + dq(b))`` (a following ReLU fused), one fp32 elementwise kernel on the int8
        operands, so ties round as PyTorch rounds them (a fixed-point rescale differs on near-ties)."""
        a, b = value.args
        reader = self.flow.single_consumer(var)
        end = reader if reader is not None and self.flow.call(reader, "relax.nn.relu") is not None else var
        if not (self._int8_input(a) and self._int8_input(b)) or end not in self.ranges:
            return False
        qa, qb = self.as_q(bb, a), self.as_q(bb, b)
        total = relax.op.add(int8_ops.dequantize(bb, qa.value, qa.scale, qa.zero_point),
                             int8_ops.dequantize(bb, qb.value, qb.scale, qb.zero_point))
        total = bb.emit(relax.op.nn.relu(total) if end is not var else total)
        self.done.add(end)
        self.q[end] = QTensor(int8_ops.quantize(bb, total, self.scale(end), self.zero_point(end)),
                              self.ranges[end][0], self.zero_point(end))
        return True

    def visit(self, bb, var, value):
        if isinstance(value, relax.Var) and var in self.ranges:  # the quantized output: PT2E's q -> dq, saturating
            self.q[var] = self.as_q(bb, value)
        else:
            super().visit(bb, var, value)
        q = self.q.get(var)
        if q is None or var not in self.ranges or (q.scale, q.zero_point) == self.ranges[var]:
            return
        scale, zero_point = self.ranges[var]  # PT2E's requantize, q(dq(x)), in fp32 as PyTorch rounds it
        value = int8_ops.quantize(bb, int8_ops.dequantize(bb, q.value, q.scale, q.zero_point), scale, zero_point)
        self.q[var] = QTensor(value, scale, zero_point)


def fold_pt2e(mod: tvm.IRModule, float_ops: Counter | None = None) -> tvm.IRModule:
    """``mod`` with its PT2E q/dq pairs folded into int8 ops; unchanged when it has none. ``float_ops`` (for the
    compile summary) counts the ops kept in fp32."""
    flow = Dataflow(mod["main"])
    if all(flow.call(var, *QDQ_OPS) is None for var in flow.order):
        return mod
    func, qparams, weights = _strip(mod["main"])
    rewrite = Pt2eRewrite(func, qparams, weights)
    out = mod.clone()
    out["main"] = rewrite.run()
    if float_ops is not None:
        float_ops.update(rewrite.float_ops)
    return relax.transform.DeadCodeElimination()(out)
