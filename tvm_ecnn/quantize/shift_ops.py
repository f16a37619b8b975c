"""How the ``R.ecnn.*`` shift ops enter the int8 graph: the one place that knows what their int8 form accepts.

``relay_ops/`` (docs/int8-arithmetic.md) gives every shift an int8 form: the standalone ``shift2d`` /
``sparse_shift2d`` / ``active_shift2d`` keep their input's scale (``SAME_SCALE_SHIFTS``), and ``shift_conv2d``
(any shift, the active one included) takes int8 ``x`` / per-channel int8 weights, an int32 bias and a
fixed-point requantize epilogue with per-output-channel scales, an int8 residual on its own scale and ReLU /
ReLU6. ``shift_conv2d`` is used with zero points 0 (the quantizer's activations are symmetric); the standalone
shifts also take a PT2E graph's asymmetric activations, shifting the zero point in at the border.
"""
from __future__ import annotations

import numpy as np
from tvm import relax

import relay_ops
from relay_ops._registry import attrs_of, call as make_call, op_name
from relay_ops.shift_conv2d import full_attrs, requant_plan, split_args

from .weights import int32_bias, per_channel_int8

SHIFT_CONV2D = op_name("shift_conv2d")
# data movement / interpolation: the int8 op on the int8 input, same scale (zero point 0 shifted in)
SAME_SCALE_SHIFTS = (op_name("shift2d"), op_name("sparse_shift2d"), op_name("active_shift2d"))


def on_int8(value: relax.Call, xq, zero_point: int) -> relax.Call:
    """A ``SAME_SCALE_OPS`` call (a standalone shift, pool, reshape, ...) on the int8 ``xq``; a shift gets
    ``zero_point`` (the value shifted in at the border)."""
    if zero_point and value.op.name in SAME_SCALE_SHIFTS:
        return make_call(value.op.name.removeprefix(op_name("")), [xq] + list(value.args[1:]),
                    {**attrs_of(value), "zero_point": int(zero_point)})
    return relax.Call(value.op, [xq] + list(value.args[1:]), value.attrs)


def residual_of(call: relax.Call):
    """The residual operand of a ``shift_conv2d`` call, or None."""
    return split_args(call.args, attrs_of(call))[4]


def _rebuild(call: relax.Call, x, weight, **changes) -> relax.Call:
    """``call`` with new operands / attributes (``bias``, ``residual``, ``activation``, ``requant_scale``, ...)."""
    attrs = attrs_of(call)
    _, _, offsets, bias, residual = split_args(call.args, attrs)
    kwargs = dict(kernel_size=attrs["kernel_size"], dilation=attrs["dilation"], mapping=attrs["mapping"],
                  offsets=offsets, stride=attrs["stride"], padding=attrs["padding"], bias=bias,
                  activation=attrs["activation"], residual=residual, layout=attrs["layout"])
    kwargs.update(changes)
    return relay_ops.shift_conv2d(x, weight, attrs["shift"], **kwargs)


def _weights(call: relax.Call, x_scale: np.float32):
    """``(int8 weight const, w_scale [O], int32 bias const or None)``: per output channel, like every conv."""
    _, weight, _, bias, _ = split_args(call.args, attrs_of(call))
    wq, w_scale = per_channel_int8(weight.value.numpy())
    bias_q = None if bias is None else relax.const(int32_bias(bias.value.numpy(), x_scale, w_scale))
    return relax.const(wq), w_scale, bias_q


def accumulator(bb, call: relax.Call, xq, x_scale: np.float32):
    """``(int32 accumulator, its per-channel scale [O])``: shift + 1x1 conv + bias, no residual or activation
    (for a float reader, which adds those in fp32)."""
    wq, w_scale, bias_q = _weights(call, x_scale)
    acc = bb.emit(_rebuild(call, xq, wq, bias=bias_q, residual=None, activation="none"))
    return acc, (np.float32(x_scale) * w_scale).astype("float32")


def requantized(bb, call: relax.Call, xq, x_scale: np.float32, out_scale: np.float32, residual=None):
    """The whole call in int8 at ``out_scale`` (``residual``: its int8 ``(value, scale)``), or None when a scale
    ratio is outside the op's fixed-point range (the caller keeps the call in fp32).

    ``requant_scale[o] = f32(f32(x_scale * w_scale[o]) / out_scale)``, ``residual_scale = f32(r_scale /
    out_scale)``: fp32 numbers (exact as the op's float64 attributes), turned into fixed point by the op."""
    wq, w_scale, bias_q = _weights(call, x_scale)
    out_scale = np.float32(out_scale)
    scales = [float(s) for s in (np.float32(x_scale) * w_scale).astype("float32") / out_scale]
    changes = {"bias": bias_q, "requant_scale": scales, "output_scale": float(out_scale), "residual": None}
    if residual is not None:
        changes.update(residual=residual[0], residual_scale=float(np.float32(residual[1]) / out_scale))
    try:
        value = _rebuild(call, xq, wq, **changes)
        requant_plan(full_attrs(value), len(scales))  # the op's own range checks, before emitting
    except ValueError:
        return None
    return bb.emit(value)
