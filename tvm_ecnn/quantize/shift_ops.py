"""How the ``R.ecnn.*`` shift ops enter the int8 graph: the one place that knows what their int8 form accepts.

Today (``relay_ops/shift_conv2d.py``) the int8 ``shift_conv2d`` takes int8 ``x``/``weight``, an int32 bias, a
ReLU and one scalar ``requant_scale`` (zero point 0); no residual, no ReLU6, no active shift. So:

* before calibration, ``SplitInt8Epilogues`` moves a residual add and a ReLU6 out of the call into plain
  Relax ops (calibration then observes the tensor between them, and they are quantized like any add/clip);
* weights of an int8 ``shift_conv2d`` are quantized per tensor (its epilogue has one scale);
* the active shift and the standalone shift ops stay fp32 (dequantize -> op -> quantize, listed as float).

When the ops gain int8 forms, only this file changes: ``INT8_SHIFTS``, ``epilogue_supported`` and ``emit``.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

import relay_ops
from relay_ops._registry import attrs_of, op_name
from relay_ops.shift_conv2d import split_args

from ..compiler_pass.relax_dataflow import BindingRewrite, Dataflow
from .weights import int32_bias, per_tensor_int8

SHIFT_CONV2D = op_name("shift_conv2d")
INT8_SHIFTS = ("none", "grouped", "sparse")


def int8_capable(call: relax.Call) -> bool:
    """Whether ``shift_conv2d`` ``call`` (after ``SplitInt8Epilogues``) has an int8 form."""
    return attrs_of(call)["shift"] in INT8_SHIFTS


def rebuild(call: relax.Call, x, weight, **changes) -> relax.Call:
    """``call`` with new operands / attributes (``bias``, ``residual``, ``activation``, ``requant_scale``)."""
    attrs = attrs_of(call)
    _, _, offsets, bias, residual = split_args(call.args, attrs)
    kwargs = dict(kernel_size=attrs["kernel_size"], dilation=attrs["dilation"], mapping=attrs["mapping"],
                  offsets=offsets, stride=attrs["stride"], padding=attrs["padding"], bias=bias,
                  activation=attrs["activation"], residual=residual, layout=attrs["layout"])
    kwargs.update(changes)
    return relay_ops.shift_conv2d(x, weight, attrs["shift"], **kwargs)


def _split(flow: Dataflow, var: relax.Var):
    call = flow.call(var, SHIFT_CONV2D)
    if call is None or not int8_capable(call):
        return None
    attrs = attrs_of(call)
    residual = split_args(call.args, attrs)[4]
    if residual is None and attrs["activation"] != "relu6":
        return None
    keep = "relu" if attrs["activation"] == "relu" and residual is None else "none"
    value = rebuild(call, call.args[0], call.args[1], residual=None, activation=keep)
    if residual is not None:
        value = relax.op.add(value, residual)
        if attrs["activation"] == "relu":
            value = relax.op.nn.relu(value)
    if attrs["activation"] == "relu6":
        value = relax.op.clip(value, 0, 6)
    return var, value, 0, "add/clip"


@tvm.transform.module_pass(opt_level=0, name="SplitInt8Epilogues")
class SplitInt8Epilogues(BindingRewrite):
    """Residual add and ReLU6 of int8-capable ``shift_conv2d`` calls as separate ops (see module doc)."""

    pattern = "split_int8_epilogue"
    rewrite = staticmethod(_split)


def emit(bb, call: relax.Call, xq, x_scale: np.float32, out_scale: np.float32 | None):
    """The int8 ``shift_conv2d`` for ``call``: ``(int8 result at out_scale, None, None)``, or with ``out_scale=None``
    ``(int32 accumulator, its per-channel scale [O], activation still to apply)`` for a float reader."""
    attrs = attrs_of(call)
    _, weight, _, bias, _ = split_args(call.args, attrs)
    wq, w_scale = per_tensor_int8(weight.value.numpy())
    bias_q = None if bias is None else relax.const(int32_bias(bias.value.numpy(), x_scale, w_scale))
    if out_scale is None:
        acc = bb.emit(rebuild(call, xq, relax.const(wq), bias=bias_q, activation="none"))
        return acc, (np.float32(x_scale) * w_scale).astype("float32"), attrs["activation"]
    multiplier = float(np.float32(x_scale) * w_scale[0] / np.float32(out_scale))
    out = bb.emit(rebuild(call, xq, relax.const(wq), bias=bias_q, requant_scale=multiplier))
    return out, None, None
