"""Fold inference BatchNorm into the convolution before it.

``conv2d(x, W) [+ b] -> batch_norm(gamma, beta, mean, var)[0]`` with constant W, b and
statistics is ``conv2d(x, W * s) + (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``.
Afterwards every conv ends in a plain bias add, which ``FuseShiftConv`` folds into
``shift_conv2d``. Folding is computed in float64 and stored in the weight's dtype. TVM's own
``FoldBatchnormToConv2D`` misses convs that already have a bias (how the importer emits
``nn.Conv2d(bias=True)``) and does not check that the conv output has no other reader.
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


def folded_conv(conv: relax.Call, bias, weight, gamma, beta, mean, var, eps) -> relax.Expr:
    """``conv2d(x, W') + b'`` for the conv, its bias and the BatchNorm parameters."""
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    new_weight = (weight.astype(np.float64) * scale[:, None, None, None]).astype(weight.dtype)
    shift = beta.astype(np.float64) - mean.astype(np.float64) * scale
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
        item = flow.value[var]
        if not isinstance(item, relax.TupleGetItem) or item.index != 0:
            return None
        norm = flow.call(item.tuple_value, "relax.nn.batch_norm")
        if norm is None or flow.uses[item.tuple_value] != 1 or norm.attrs.axis != 1 or norm.attrs.training:
            return None
        params = [flow.constant(a) for a in norm.args[1:]]
        found = _conv_and_bias(flow, norm.args[0])
        if found is None or any(p is None for p in params):
            return None
        conv, bias = found
        gamma, beta, mean, variance = params
        if not norm.attrs.scale:
            gamma = np.ones_like(gamma)
        if not norm.attrs.center:
            beta = np.zeros_like(beta)
        weight = flow.constant(conv.args[1])
        folded = folded_conv(conv, bias, weight, gamma, beta, mean, variance, float(norm.attrs.epsilon))
        return var, folded, 0, "conv2d+bias"
