"""Fuse a shift and the 1x1 convolution reading it, with its epilogue, into ``shift_conv2d``.

``shift2d | sparse_shift2d | active_shift2d -> conv2d 1x1 (groups 1, no padding, any stride,
constant weight) [-> + constant bias] [-> + residual] [-> relu | relu6]`` becomes one
``relax.ecnn.shift_conv2d``: the shift turns into an address offset of the conv's loads and the
shifted tensor is never written (AddressNet). Each intermediate tensor must have exactly one
reader, otherwise fusing would recompute or lose it. Circular (roll) shifts and other layouts
stay unfused: ``shift_conv2d`` zero-pads NCHW only. Run ``FoldBatchNorm`` first so that a
BatchNorm after the conv is a bias by now.
"""
from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import relax

import relay_ops
from relay_ops._registry import attrs_of
from tvm_ecnn.nn.offsets import grouped_shift_offsets

from .relax_dataflow import BindingRewrite, Dataflow
from .shift_tables import channels_moved

GROUPED, SPARSE, ACTIVE = "relax.ecnn.shift2d", "relax.ecnn.sparse_shift2d", "relax.ecnn.active_shift2d"


def shift_arguments(shift: relax.Call) -> tuple[dict, int, int] | None:
    """``(shift_conv2d shift kwargs, shift stride, padding)`` of a fusable shift call, else None."""
    attrs = attrs_of(shift)
    if attrs["layout"] != "NCHW" or attrs.get("zero_point", 0):  # quantized shifts fuse via the int8 path only
        return None
    if shift.op.name == GROUPED:
        if attrs["padding_mode"] != "zeros":
            return None
        kwargs = dict(shift="grouped", kernel_size=attrs["kernel_size"], dilation=attrs["dilation"], mapping=attrs["mapping"])
        return kwargs, 1, 0
    if shift.op.name == SPARSE:
        return dict(shift="sparse", offsets=shift.args[1]), 1, 0
    return dict(shift="active", offsets=shift.args[1]), attrs["stride"], attrs["padding"]


def shift_channels_moved(flow: Dataflow, shift: relax.Call) -> int:
    channels = int(shift.args[0].ty.shape.values[1])
    if shift.op.name == GROUPED:
        attrs = attrs_of(shift)
        return channels_moved(grouped_shift_offsets(channels, attrs["kernel_size"], attrs["dilation"], attrs["mapping"]))
    table = flow.constant(shift.args[1])
    return channels if table is None else channels_moved(table)


def _pointwise_stride(flow: Dataflow, conv: relax.Call) -> int | None:
    """The stride of a fusable 1x1 conv, else None."""
    attrs = conv.attrs
    weight = conv.args[1]
    shape = [int(d) for d in weight.ty.shape.values]
    if flow.constant(weight) is None or shape[2:] != [1, 1] or int(attrs.groups) != 1:
        return None
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None
    if any(int(p) for p in attrs.padding) or any(int(d) != 1 for d in attrs.dilation):
        return None
    stride_h, stride_w = (int(s) for s in attrs.strides)
    return stride_h if stride_h == stride_w else None


def _other_operand(add: relax.Call, var: relax.Var):
    lhs, rhs = add.args
    if lhs.same_as(var):
        return rhs
    return lhs if rhs.same_as(var) else None


def _activation(flow: Dataflow, var) -> str | None:
    if flow.call(var, "relax.nn.relu") is not None:
        return "relu"
    clip = flow.call(var, "relax.clip")
    if clip is not None:
        low, high = (float(a.value) for a in clip.args[1:])
        if low == 0 and high == 6:
            return "relu6"
        if low == 0 and math.isinf(high):
            return "relu"
    return None


class _Chain:
    """The epilogue found after the conv: each step moves ``anchor`` to the binding it fuses."""

    def __init__(self, flow: Dataflow, conv_var: relax.Var, out_channels: int):
        self.flow, self.anchor = flow, conv_var
        self.bias = self.residual = None
        self.activation = "none"
        self.out_channels = out_channels

    def _next(self):
        return self.flow.single_consumer(self.anchor)

    def take_bias(self) -> None:
        nxt = self._next()
        add = self.flow.call(nxt, "relax.add")
        other = None if add is None else _other_operand(add, self.anchor)
        value = None if other is None else self.flow.constant(other)
        if value is None or value.size != self.out_channels or value.ndim not in (3, 4):
            return  # [O] alone would broadcast along W, not along channels
        if value.shape[-2:] != (1, 1) or str(value.dtype) != str(self.anchor.ty.dtype):
            return
        self.bias, self.anchor = relax.const(value.reshape(-1)), nxt

    def take_residual(self) -> None:
        nxt = self._next()
        add = self.flow.call(nxt, "relax.add")
        other = None if add is None else _other_operand(add, self.anchor)
        if other is None or self.flow.constant(other) is not None:
            return
        mine, theirs = self.anchor.ty, other.ty
        if not isinstance(theirs, relax.TensorType) or str(theirs.dtype) != str(mine.dtype):
            return
        if not tvm_ffi.structural_equal(theirs.shape, mine.shape):
            return
        self.residual, self.anchor = other, nxt

    def take_activation(self) -> None:
        nxt = self._next()
        activation = None if nxt is None else _activation(self.flow, nxt)
        if activation is not None:
            self.activation, self.anchor = activation, nxt


@tvm.transform.module_pass(opt_level=0, name="FuseShiftConv")
class FuseShiftConv(BindingRewrite):
    """shift -> 1x1 conv [-> bias] [-> residual] [-> relu/relu6]  =>  ``relax.ecnn.shift_conv2d``."""

    pattern = "shift-conv"

    def rewrite(self, flow: Dataflow, var: relax.Var):
        shift = flow.call(var, GROUPED, SPARSE, ACTIVE)
        found = None if shift is None else self._fuse(flow, var, shift)
        if found is None:
            return None
        anchor, value = found
        return anchor, value, shift_channels_moved(flow, shift), "shift_conv2d"

    @staticmethod
    def _fuse(flow: Dataflow, shift_var: relax.Var, shift: relax.Call):
        arguments = shift_arguments(shift)
        conv_var = flow.single_consumer(shift_var)
        conv = flow.call(conv_var, "relax.nn.conv2d")
        if arguments is None or conv is None or not conv.args[0].same_as(shift_var):
            return None
        conv_stride = _pointwise_stride(flow, conv)
        if conv_stride is None:
            return None
        kwargs, shift_stride, padding = arguments
        weight = conv.args[1]
        chain = _Chain(flow, conv_var, int(weight.ty.shape.values[0]))
        chain.take_bias()
        chain.take_residual()
        chain.take_activation()
        call = relay_ops.shift_conv2d(
            shift.args[0], weight, **kwargs, stride=shift_stride * conv_stride, padding=padding,
            bias=chain.bias, activation=chain.activation, residual=chain.residual,
        )
        return chain.anchor, call
