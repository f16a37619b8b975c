"""The Relax rewrite: an fp32 module (from ``from_torch``) plus calibrated ranges in, an int8 module out.

One walk over ``main``'s bindings, in order. Each fp32 tensor of the original graph is available as int8
(``QTensor``: value, scale and zero point: 0 here, a PT2E graph's own in ``pt2e.py``) and/or fp32, each made on demand from the other (quantize /
dequantize), so a float island costs exactly one dequantize in and one quantize out. Convolutions and dense
layers absorb their bias add and ReLU/ReLU6 into one int8 kernel with a requantize epilogue; ops with no int8
form stay fp32 and are recorded in ``float_ops``. Exact arithmetic: docs/int8-quantization.md.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from tvm import relax

from relay_ops._registry import attrs_of

from ..compiler_pass.relax_dataflow import Dataflow
from . import int8_ops, shift_ops
from .weights import activation_scale, int32_bias, per_channel_int8

R = relax.op
# ops whose consumers get int8 (everything else reads fp32)
INT8_OPS = {"relax.nn.conv2d", "relax.matmul", "relax.nn.batch_norm", "relax.add", "relax.nn.relu", "relax.clip", "relax.nn.max_pool2d",
            "relax.nn.avg_pool2d", "relax.mean", "relax.concat", "relax.reshape", "relax.permute_dims",
            "relax.flatten", shift_ops.SHIFT_CONV2D, *shift_ops.SAME_SCALE_SHIFTS}
# ops that move or select values (or interpolate between them): the same op on int8, the input's scale
SAME_SCALE_OPS = ("relax.reshape", "relax.permute_dims", "relax.flatten", "relax.nn.max_pool2d",
                  *shift_ops.SAME_SCALE_SHIFTS)


@dataclass
class QTensor:
    value: relax.Expr
    scale: np.float32
    zero_point: int = 0


def _op_name(value) -> str | None:
    return value.op.name if isinstance(value, relax.Call) and hasattr(value.op, "name") else None


def _prim(expr) -> float | None:
    """A scalar attribute operand (``R.clip``'s bounds) as a float, else None."""
    value = getattr(expr, "value", None)
    value = getattr(value, "value", value)
    return float(value) if isinstance(value, (int, float)) else None


class Int8Rewrite:
    """``Int8Rewrite(main, ranges).run()``: the int8 ``main`` (see the module doc); ``float_ops`` and ``scales``
    say what stayed fp32 and which scales were used."""

    QUANTIZED_OUTPUTS = False
    """whether a function output with a scale is made in int8 and dequantized (PT2E quantizes its outputs),
    rather than produced in fp32 by its op's epilogue"""
    FLOAT_EPILOGUE = False
    """whether conv / dense epilogues run in PyTorch's fp32 order (PT2E): dequantize the int32 accumulator, add
    the fp32 bias, activate, quantize; rather than the bias rounded into the int32 accumulator and one
    ``requantize`` (``rint(f32(acc) * m)``)"""

    def __init__(self, func: relax.Function, ranges: dict):
        self.func = func
        self.flow = Dataflow(func)
        self.ranges = ranges
        self.q: dict[relax.Var, QTensor] = {}
        self.f: dict[relax.Var, relax.Expr] = {}
        self.done: set[relax.Var] = set()
        self.float_ops: Counter = Counter()
        self.scale_override: dict[relax.Var, np.float32] = {}
        self.scales: list[tuple[str, float]] = []
        self.outputs = set(relax.analysis.free_vars(func.body.body))
        self.live = self._live()
        self._share_concat_scales()

    # ---- analysis -------------------------------------------------------------------------------------------
    def _live(self) -> set:
        """Vars the output depends on (a ``Tuple`` read only through ``[i]`` keeps only field ``i`` alive)."""
        live, todo = set(), list(self.outputs)
        while todo:
            var = todo.pop()
            if var in live or not isinstance(var, relax.Var):
                continue
            live.add(var)
            value = self.flow.value.get(var)
            if isinstance(value, relax.TupleGetItem) and isinstance(self.flow.value.get(value.tuple_value), relax.Tuple):
                todo.append(self.flow.value[value.tuple_value].fields[value.index])
            elif value is not None:
                todo.extend(relax.analysis.free_vars(value))
        return live

    def _share_concat_scales(self):
        """Concat inputs read by nothing else take the concat's scale: their producers requantize straight to it."""
        for var in self.flow.order:
            call = self.flow.call(var, "relax.concat")
            if call is None or not isinstance(call.args[0], relax.Tuple):
                continue
            for field in call.args[0].fields:
                if isinstance(field, relax.Var) and self.flow.uses[field] == 1 and field in self.ranges:
                    self.scale_override[field] = activation_scale(*self.ranges[var])

    def scale(self, var) -> np.float32:
        """``var``'s calibrated scale; each use is recorded (``scales``) for tests and reports."""
        if var in self.scale_override:
            scale = self.scale_override[var]
        elif var in self.ranges:
            scale = activation_scale(*self.ranges[var])
        else:
            raise KeyError(f"no calibrated range for {var.name}")
        self.scales.append((var.name, float(scale)))
        return scale

    def zero_point(self, var) -> int:
        """``var``'s zero point: 0 (symmetric activations; ``pt2e.Pt2eRewrite`` takes the graph's)."""
        return 0

    def weight_int8(self, expr, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``(int8 weight, per-output-channel scale)`` of the constant weight ``expr`` (its value ``weight``), or
        None to keep the layer in fp32."""
        return per_channel_int8(weight)

    def wants_float(self, var) -> bool:
        """Whether some reader of ``var`` takes fp32 (the function output, or an op with no int8 form)."""
        if var in self.outputs and not (self.QUANTIZED_OUTPUTS and var in self.ranges):
            return True
        for reader in self.flow.consumers.get(var, []):
            if reader not in self.live:
                continue
            value = self.flow.value[reader]
            if isinstance(value, (relax.Tuple, relax.TupleGetItem, relax.Var)):  # a Var: an alias (the output)
                if self.wants_float(reader):
                    return True
            elif _op_name(value) not in INT8_OPS or (_op_name(value) == "relax.add" and not all(
                    isinstance(a, relax.Var) for a in value.args)):  # an add of a constant (hard-sigmoid's + 3)
                return True
        return False

    # ---- int8 / fp32 views ----------------------------------------------------------------------------------
    def as_q(self, bb, var) -> QTensor:
        if var not in self.q:
            scale, zero_point = self.scale(var), self.zero_point(var)
            self.q[var] = QTensor(int8_ops.quantize(bb, self.f[var], scale, zero_point), scale, zero_point)
        return self.q[var]

    def as_f(self, bb, expr):
        if not isinstance(expr, relax.Var):
            return expr
        if expr not in self.f:
            if expr not in self.q:
                raise KeyError(f"{expr.name} was not computed")
            q = self.q[expr]
            self.f[expr] = int8_ops.dequantize(bb, q.value, q.scale, q.zero_point)
        return self.f[expr]

    # ---- the walk -------------------------------------------------------------------------------------------
    def run(self) -> relax.Function:
        bb = relax.BlockBuilder()
        params = list(self.func.params)
        with bb.function("main", params, attrs=dict(self.func.attrs or {})):
            with bb.dataflow():
                for param in params:
                    self.f[param] = param
                for var in self.flow.order:
                    if var in self.live and var not in self.done:
                        self.visit(bb, var, self.flow.value[var])
                body = self.func.body.body
                result = (relax.Tuple([self.as_f(bb, f) for f in body.fields]) if isinstance(body, relax.Tuple)
                          else self.as_f(bb, body))
                out = bb.emit_output(result)
            bb.emit_func_output(out)
        return bb.get()["main"]

    def visit(self, bb, var, value):
        if isinstance(value, relax.TupleGetItem) and isinstance(self.flow.value.get(value.tuple_value), relax.Tuple):
            field = self.flow.value[value.tuple_value].fields[value.index]
            for view in (self.q, self.f):
                if field in view:
                    view[var] = view[field]
            return
        if isinstance(value, relax.Tuple) and all(
                isinstance(self.flow.value.get(r), relax.TupleGetItem) for r in self.flow.consumers.get(var, [])):
            return  # only read through [i]: aliased above
        name = _op_name(value)
        handler = {"relax.nn.conv2d": self.conv2d, "relax.matmul": self.matmul, "relax.nn.batch_norm": self.batch_norm,
                   "relax.add": self.add,
                   "relax.nn.relu": self.relu, "relax.clip": self.clip,
                   "relax.nn.avg_pool2d": self.averaging, "relax.mean": self.averaging, "relax.concat": self.concat,
                   shift_ops.SHIFT_CONV2D: self.shift_conv2d}.get(name)
        if name in SAME_SCALE_OPS:
            handler = self.same_scale
        if handler is None or not handler(bb, var, value):
            self.in_float(bb, var, value)

    def in_float(self, bb, var, value):
        """fp32 fallback: the op as imported, on fp32 views of its operands."""
        def remap(expr):
            if isinstance(expr, relax.Var):
                return self.as_f(bb, expr)
            if isinstance(expr, relax.Tuple):
                return relax.Tuple([remap(f) for f in expr.fields])
            return expr

        if isinstance(value, relax.Call):
            new = relax.Call(value.op, [remap(a) for a in value.args], value.attrs, value.ty_args)
            if any(isinstance(a, relax.Var) and a in self.live for a in relax.analysis.free_vars(value)):
                self.float_ops[_op_name(value) or "call"] += 1
        elif isinstance(value, relax.TupleGetItem):
            new = relax.TupleGetItem(remap(value.tuple_value), value.index)
        else:
            new = remap(value)
        self.f[var] = bb.emit(new)

    # ---- fused producers: conv2d / matmul / shift_conv2d (+ bias) (+ relu / relu6) ----------------------------
    def epilogue(self, var):
        """``(end var, bias const or None, activation)``: the bias add and activation that follow ``var``."""
        end, bias, activation = var, None, "none"
        reader = self.flow.single_consumer(end)
        add = self.flow.call(reader, "relax.add") if reader is not None else None
        if add is not None:
            other = add.args[1] if add.args[0].same_as(end) else add.args[0]
            bias = self.flow.constant(other)
            if bias is not None and bias.size == int(var.ty.shape.values[1]):
                end, bias = reader, bias.reshape(-1)
            else:
                bias = None
        reader = self.flow.single_consumer(end)
        clip = self.flow.call(reader, "relax.clip") if reader is not None else None
        if reader is not None and self.flow.call(reader, "relax.nn.relu") is not None:
            end, activation = reader, "relu"
        elif clip is not None and (_prim(clip.args[1]), _prim(clip.args[2])) == (0.0, 6.0):
            end, activation = reader, "relu6"
        return end, bias, activation

    def finish(self, bb, end, acc, acc_scale: np.ndarray, activation: str, ndim: int, bias=None):
        """int32 accumulator (scale ``acc_scale[o]``) -> int8 at ``end``'s scale, or fp32 for float readers
        (``bias``: an fp32 bias still to add: ``FLOAT_EPILOGUE``, or an unfolded BatchNorm's shift). With ``FLOAT_EPILOGUE``
        the int8 result is PyTorch's ``quantize(act(conv(dq(x), dq(W)) + b))`` step for step in fp32 (``f32(acc) * f32(s_x s_w[o])``, ``+ b``,
        the activation, ``* f32(1 / s_out)``): it rounds where PyTorch rounds save for PyTorch's own fp32 sum."""
        if self.wants_float(end) or self.FLOAT_EPILOGUE:
            value = int8_ops.dequantize(bb, acc, int8_ops.channel_shape(acc_scale, ndim))
            if bias is not None:
                value = bb.emit(R.add(value, relax.const(int8_ops.channel_shape(bias.astype("float32"), ndim))))
            value = self._float_activation(bb, value, activation)
            if self.wants_float(end):
                self.f[end] = value
            else:
                scale, zero_point = self.scale(end), self.zero_point(end)
                self.q[end] = QTensor(int8_ops.quantize(bb, value, scale, zero_point), scale, zero_point)
            return
        out_scale, zero_point = self.scale(end), self.zero_point(end)
        low, high = (max(-128, zero_point), 127) if activation != "none" else (-128, 127)
        if activation == "relu6":
            high = int(min(127, zero_point + np.rint(np.float32(6) / out_scale)))
        multiplier = int8_ops.channel_shape((acc_scale / out_scale).astype("float32"), ndim)
        offset = None if bias is None else int8_ops.channel_shape((bias.astype("float32") / out_scale).astype("float32"),
                                                                   ndim)
        self.q[end] = QTensor(int8_ops.requantize(bb, acc, multiplier, low, high, zero_point, offset), out_scale,
                              zero_point)

    @staticmethod
    def _float_activation(bb, value, activation: str):
        if activation == "relu":
            return bb.emit(R.nn.relu(value))
        if activation == "relu6":
            return bb.emit(R.clip(value, 0, 6))
        return value

    def _fused(self, var, end):
        node = var
        while not node.same_as(end):
            node = self.flow.single_consumer(node)
            self.done.add(node)

    def conv2d(self, bb, var, value):
        weight = self.flow.constant(value.args[1])
        attrs = value.attrs
        if (weight is None or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW"
                or not self._int8_input(value.args[0])):
            return False
        quantized = self.weight_int8(value.args[1], weight)
        if quantized is None:
            return False
        wq, w_scale = quantized
        x = self.as_q(bb, value.args[0])
        end, bias, activation = self.epilogue(var)
        data, padding = x.value, [int(p) for p in attrs.padding]
        if x.zero_point and any(padding):  # pad with the zero point (the real 0), then a conv without padding
            top, left, bottom, right = padding
            data = bb.emit(R.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right], "constant", float(x.zero_point)))
            padding = [0, 0, 0, 0]
        acc = bb.emit(R.nn.conv2d(data, relax.const(wq), strides=list(attrs.strides), padding=padding,
                                  dilation=list(attrs.dilation), groups=int(attrs.groups), out_dtype="int32"))
        acc = self._add_int32_bias(bb, acc, None if self.FLOAT_EPILOGUE else bias, x, wq, w_scale, 4)
        self._fused(var, end)
        self.finish(bb, end, acc, (x.scale * w_scale).astype("float32"), activation, 4,
                    bias if self.FLOAT_EPILOGUE else None)
        return True

    def matmul(self, bb, var, value):
        """Dense: ``x [N, I] @ W^T`` with ``W [O, I]`` a constant (seen through the importer's permute_dims)."""
        transposed = self.flow.call(value.args[1], "relax.permute_dims")
        weight = self.flow.constant(transposed.args[0]) if transposed is not None else None
        if weight is None or weight.ndim != 2 or len(value.args[0].ty.shape.values) != 2:
            return False
        quantized = None if not self._int8_input(value.args[0]) else self.weight_int8(transposed.args[0], weight)
        if quantized is None:
            return False
        wq, w_scale = quantized
        x = self.as_q(bb, value.args[0])
        end, bias, activation = self.epilogue(var)
        acc = bb.emit(R.matmul(x.value, relax.const(np.ascontiguousarray(wq.T)), out_dtype="int32"))
        acc = self._add_int32_bias(bb, acc, None if self.FLOAT_EPILOGUE else bias, x, wq, w_scale, 2)
        self._fused(var, end)
        self.finish(bb, end, acc, (x.scale * w_scale).astype("float32"), activation, 2,
                    bias if self.FLOAT_EPILOGUE else None)
        return True

    def batch_norm(self, bb, var, value):
        """Inference BatchNorm that the importer could not fold (a pre-activation one: a ReLU between it and the
        next conv) is a per-channel affine map ``x * a[c] + b[c]``: one requantize of the int8 input, as a conv's
        epilogue, a following ReLU / ReLU6 in its clip. ``a = f32(gamma / sqrt(var + eps))``, ``b = f32(beta -
        mean * a)``, computed in float64."""
        item = self.flow.single_consumer(var)
        get = self.flow.value.get(item) if item is not None else None
        params = [self.flow.constant(a) for a in value.args[1:5]]
        if (not isinstance(get, relax.TupleGetItem) or get.index != 0 or int(value.attrs.axis) != 1
                or len(value.args[0].ty.shape.values) != 4 or any(p is None for p in params)
                or not self._int8_input(value.args[0])):
            return False
        gamma, beta, mean, variance = (p.astype("float64") for p in params)
        gamma = gamma if value.attrs.scale else np.ones_like(gamma)
        beta = beta if value.attrs.center else np.zeros_like(beta)
        a = gamma / np.sqrt(variance + float(value.attrs.epsilon))
        b = (beta - mean * a).astype("float32")
        x = self.as_q(bb, value.args[0])
        end, bias, activation = self.epilogue(item)
        if bias is not None:
            b = (b + bias.astype("float32")).astype("float32")
        acc = bb.emit(R.astype(x.value, "int32"))
        if x.zero_point:
            acc = bb.emit(R.subtract(acc, relax.const(np.int32(x.zero_point))))
        self._fused(var, end)
        self.finish(bb, end, acc, (x.scale * a.astype("float32")).astype("float32"), activation, 4, b)
        return True

    @staticmethod
    def _add_int32_bias(bb, acc, bias, x: QTensor, wq: np.ndarray, w_scale: np.ndarray, ndim: int):
        """``acc + bq[o]`` with the input zero point's ``-zp * sum(Wq[o])`` folded into ``bq`` (no add when both
        are absent)."""
        if bias is None and not x.zero_point:
            return acc
        total = np.zeros(wq.shape[0], "int32") if bias is None else int32_bias(bias, x.scale, w_scale)
        if x.zero_point:
            total = (total.astype("int64") + int8_ops.zero_point_correction(wq, x.zero_point)).astype("int32")
        return bb.emit(R.add(acc, relax.const(int8_ops.channel_shape(total, ndim))))

    def shift_conv2d(self, bb, var, value):
        """The op's own int8 form (any shift; bias, residual and ReLU/ReLU6 in its fixed-point epilogue). For a
        float reader: the int32 accumulator dequantized, then residual and activation in fp32."""
        attrs = attrs_of(value)
        residual = shift_ops.residual_of(value)
        if attrs["layout"] != "NCHW" or (residual is not None and not self._int8_input(residual)):
            return False
        if not self._int8_input(value.args[0]) or any(self.zero_point(v) for v in (value.args[0], var, residual)
                                                      if isinstance(v, relax.Var)):
            return False  # its int8 form is wired for zero point 0 here (the quantizer's)
        x = self.as_q(bb, value.args[0])
        if self.wants_float(var):
            acc, acc_scale = shift_ops.accumulator(bb, value, x.value, x.scale)
            out = int8_ops.dequantize(bb, acc, int8_ops.channel_shape(acc_scale, 4))
            if residual is not None:
                out = bb.emit(R.add(out, self.as_f(bb, residual)))
            self.f[var] = self._float_activation(bb, out, attrs["activation"])
            return True
        r = None if residual is None else self.as_q(bb, residual)
        out_scale = self.scale(var)
        out = shift_ops.requantized(bb, value, x.value, x.scale, out_scale, None if r is None else (r.value, r.scale))
        if out is None:
            return False
        self.q[var] = QTensor(out, out_scale)
        return True

    # ---- int8 data movement and arithmetic ------------------------------------------------------------------
    def _int8_input(self, var) -> bool:
        return isinstance(var, relax.Var) and (var in self.q or var in self.ranges or var in self.scale_override)

    def same_scale(self, bb, var, value):
        """``SAME_SCALE_OPS`` (max pool, reshape, permute, flatten, the standalone shifts): same op on int8, same
        scale. The active shift's bilinear samples are convex combinations, so they stay in the input's range."""
        if not self._int8_input(value.args[0]):
            return False
        x = self.as_q(bb, value.args[0])
        call = shift_ops.on_int8(value, x.value, x.zero_point)
        self.q[var] = QTensor(bb.emit(call), x.scale, x.zero_point)
        return True

    def averaging(self, bb, var, value):
        """Avg pool and mean keep the scale; the average is rounded once (``rint``)."""
        if not self._int8_input(value.args[0]):
            return False
        x = self.as_q(bb, value.args[0])
        if x.zero_point and any(int(p) for p in getattr(value.attrs, "padding", ())):
            return False  # padded windows would average in 0, not the zero point
        op = lambda t: relax.Call(value.op, [t] + list(value.args[1:]), value.attrs)  # noqa: E731
        self.q[var] = QTensor(int8_ops.rounded_float_op(bb, x.value, op, x.zero_point), x.scale, x.zero_point)
        return True

    def relu(self, bb, var, value):
        if value.args[0] not in self.q:
            return False
        x = self.q[value.args[0]]
        low = relax.const(np.int8(max(-128, x.zero_point)))
        self.q[var] = QTensor(bb.emit(R.maximum(x.value, low) if x.zero_point else R.nn.relu(x.value)), x.scale,
                              x.zero_point)
        return True

    def clip(self, bb, var, value):
        bounds = (_prim(value.args[1]), _prim(value.args[2]))
        if value.args[0] not in self.q or bounds[0] != 0.0 or bounds[1] is None:
            return False
        x = self.q[value.args[0]]
        high = int(min(127, x.zero_point + np.rint(np.float32(bounds[1]) / x.scale)))
        self.q[var] = QTensor(bb.emit(R.clip(x.value, max(-128, x.zero_point), high)), x.scale, x.zero_point)
        return True

    def add(self, bb, var, value):
        """Residual add of two activations, rescaled in int32 fixed point, with a following ReLU fused."""
        a, b = value.args
        if not (self._int8_input(a) and self._int8_input(b)):
            return False
        reader = self.flow.single_consumer(var)
        end, relu = var, False
        if reader is not None and self.flow.call(reader, "relax.nn.relu") is not None:
            end, relu = reader, True
            self.done.add(reader)
        qa, qb, out_scale, zero_point = self.as_q(bb, a), self.as_q(bb, b), self.scale(end), self.zero_point(end)
        value = int8_ops.rescale_sum(bb, [qa.value, qb.value], [qa.scale / out_scale, qb.scale / out_scale],
                                     max(-128, zero_point) if relu else -128, 127, [qa.zero_point, qb.zero_point],
                                     zero_point)
        self.q[end] = QTensor(value, out_scale, zero_point)
        return True

    def concat(self, bb, var, value):
        fields = value.args[0].fields if isinstance(value.args[0], relax.Tuple) else None
        if fields is None or not all(self._int8_input(f) for f in fields):
            return False
        out_scale, zero_point = self.scale(var), self.zero_point(var)
        parts = []
        for field in fields:
            q = self.as_q(bb, field)
            parts.append(q.value if (q.scale, q.zero_point) == (out_scale, zero_point) else int8_ops.rescale_sum(
                bb, [q.value], [q.scale / out_scale], zero_points=[q.zero_point], out_zero_point=zero_point))
        self.q[var] = QTensor(bb.emit(R.concat(parts, axis=int(value.attrs.axis))), out_scale, zero_point)
        return True
