"""Fold inference BatchNorm into the convolution before it, or else into one multiply-add.

``conv2d(x, W) [+ b] -> batch_norm(gamma, beta, mean, var)[0]`` with constant W, b and
statistics is ``conv2d(x, W * s) + (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``.
Afterwards every conv ends in a plain bias add, which ``FuseShiftConv`` folds into
``shift_conv2d``. Folding is computed in float64 and stored in the weight's dtype. TVM's own
``FoldBatchnormToConv2D`` misses convs that already have a bias (how the importer emits
``nn.Conv2d(bias=True)``) and does not check that the conv output has no other reader.

A BatchNorm with no conv to fold into (pre-activation: the residual sum feeds it and the skip)
becomes ``x * s + (beta - mean * s)`` (``BatchNormScaleShift``, run by the compile pipeline, after
int8 quantization has seen the BatchNorm): TVM legalizes it to a subtract, a divide by a per-channel
square root, a multiply and an add per element. With one multiply-add, AS-ResNet w32's BN+ReLU
kernels take 0.56-0.82x the time at 56x56 and below (the 112x112 ones are bound by memory either
way): 55 instead of 66 us per inference at 224.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .relax_dataflow import BindingRewrite, Dataflow


def _conv_and_bias(flow: Dataflow, data):
    """``(conv call, bias [O] or None)`` when ``data`` is a single-use conv2d [+ constant bias]."""
    add = flow.call(data, "relax.add")
    bias = None
    if add is not None:
        conv_var, bias_expr = add.args
        bias = flow.constant(bias_expr)
        if bias is None or flow.uses[data] != 1:
            return None
        data = conv_var
    conv = flow.call(data, "relax.nn.conv2d")
    if conv is None or flow.uses[data] != 1 or flow.constant(conv.args[1]) is None:
        return None
    attrs = conv.attrs
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None
    out_channels = int(conv.args[1].ty.shape.values[0])
    if bias is not None:
        if bias.size != out_channels or bias.shape not in ((out_channels,), (1, out_channels, 1, 1), (out_channels, 1, 1)):
            return None
        bias = bias.reshape(out_channels)
    return conv, bias


def _inference_norm(flow: Dataflow, var: relax.Var):
    """``(batch_norm call, gamma, beta, mean, var)`` when ``var`` is output 0 of the only reader of an inference
    BatchNorm with constant parameters (``scale``/``center`` off give ones/zeros), else None."""
    item = flow.value[var]
    if not isinstance(item, relax.TupleGetItem) or item.index != 0:
        return None
    norm = flow.call(item.tuple_value, "relax.nn.batch_norm")
    if norm is None or flow.uses[item.tuple_value] != 1 or norm.attrs.training:
        return None
    params = [flow.constant(a) for a in norm.args[1:]]
    if any(p is None for p in params):
        return None
    gamma, beta, mean, variance = params
    return (norm, gamma if norm.attrs.scale else np.ones_like(gamma), beta if norm.attrs.center else np.zeros_like(beta),
            mean, variance)


def _scale_shift(gamma, beta, mean, var, eps) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``(s, t)`` with ``batch_norm(x) = x * s + t``."""
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return scale, beta.astype(np.float64) - mean.astype(np.float64) * scale


def folded_conv(conv: relax.Call, bias, weight, gamma, beta, mean, var, eps) -> relax.Expr:
    """``conv2d(x, W') + b'`` for the conv, its bias and the BatchNorm parameters."""
    scale, shift = _scale_shift(gamma, beta, mean, var, eps)
    new_weight = (weight.astype(np.float64) * scale[:, None, None, None]).astype(weight.dtype)
    if bias is not None:
        shift = shift + bias.astype(np.float64) * scale
    new_bias = shift.astype(weight.dtype).reshape(1, -1, 1, 1)
    new_conv = relax.Call(conv.op, [conv.args[0], relax.const(new_weight)], conv.attrs)
    return relax.op.add(new_conv, relax.const(new_bias))


@tvm.transform.module_pass(opt_level=0, name="FoldBatchNorm")
class FoldBatchNorm(BindingRewrite):
    """conv2d [+ bias] -> inference batch_norm  =>  conv2d + bias (constants only)."""

    pattern = "fold-batch-norm"

    def rewrite(self, flow: Dataflow, var: relax.Var):
        found = _inference_norm(flow, var)
        if found is None or found[0].attrs.axis != 1:
            return None
        norm, gamma, beta, mean, variance = found
        found = _conv_and_bias(flow, norm.args[0])
        if found is None:
            return None
        conv, bias = found
        weight = flow.constant(conv.args[1])
        folded = folded_conv(conv, bias, weight, gamma, beta, mean, variance, float(norm.attrs.epsilon))
        return var, folded, 0, "conv2d+bias"


@tvm.transform.module_pass(opt_level=0, name="BatchNormScaleShift")
class BatchNormScaleShift(BindingRewrite):
    """inference batch_norm (constants only)  =>  ``x * s + t``, ``s`` and ``t`` along its axis in x's dtype."""

    pattern = "batch-norm-scale-shift"

    def rewrite(self, flow: Dataflow, var: relax.Var):
        found = _inference_norm(flow, var)
        if found is None:
            return None
        norm, gamma, beta, mean, variance = found
        data = norm.args[0]
        rank, dtype = data.ty.ndim, str(data.ty.dtype)
        if rank < 1 or not dtype.startswith("float"):
            return None
        shape = [1] * rank
        shape[int(norm.attrs.axis) % rank] = -1
        scale, shift = (relax.const(a.astype(dtype).reshape(shape))
                        for a in _scale_shift(gamma, beta, mean, variance, float(norm.attrs.epsilon)))
        return var, relax.op.add(relax.op.multiply(data, scale), shift), 0, "multiply+add"
