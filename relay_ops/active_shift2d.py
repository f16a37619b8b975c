"""``relax.ecnn.active_shift2d``: per-channel real shifts with bilinear sampling (Jeon & Kim 2018)."""
from __future__ import annotations

from tvm import relax, te

from . import _checks, quant, shift_index
from ._registry import attrs_of, call, register_op

NAME = "active_shift2d"
FLOAT_DTYPES = ("float16", "float32", "float64")
X_DTYPES = FLOAT_DTYPES + ("int8",)


def active_shift2d(x, offsets, stride=1, padding=0, layout="NCHW", zero_point=0):
    """``offsets``: float ``[C, 2]`` of ``(dy, dx)``; ``H_out = (H + 2p - 1) // s + 1``.

    int8 ``x`` (with ``zero_point``): fixed-point bilinear weights, the output keeps x's scale and
    zero point (``docs/int8-arithmetic.md``); constant offsets must be finite, and below 2^15 for int8.
    """
    _checks.positive_int(NAME, "stride", stride)
    _checks.positive_int(NAME, "padding", padding, minimum=0)
    _checks.choice(NAME, "layout", layout, shift_index.LAYOUTS)
    quant.zero_point(NAME, "zero_point", zero_point)
    attrs = dict(stride=stride, padding=padding, layout=layout)
    if zero_point:  # only when set: float modules print (and compare) as before
        attrs["zero_point"] = zero_point
    return call(NAME, [x, offsets], attrs)


def output_size(size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - 1) // stride + 1


def _infer(call_node, _bb):
    attrs = attrs_of(call_node)
    x, offsets = call_node.args
    n, c, h, w = _checks.activation_shape(NAME, "x", x, attrs["layout"])
    if x.ty.dtype not in X_DTYPES:
        _checks.fail(NAME, "x", f"dtype must be one of {X_DTYPES}, got {x.ty.dtype}")
    _checks.offsets_table(NAME, offsets, c, FLOAT_DTYPES)
    _checks.finite_offsets(NAME, offsets, quant.MAX_ACTIVE_OFFSET if x.ty.dtype == "int8" else None)
    _checks.quantized_only(NAME, x.ty.dtype, attrs)
    size = [n, c, output_size(h, attrs["stride"], attrs["padding"]), output_size(w, attrs["stride"], attrs["padding"])]
    return relax.TensorType(_checks.physical_shape(size, attrs["layout"]), x.ty.dtype)


def compute(x, offsets, stride, padding, layout, zero_point=0):
    n_, _, h_, w_ = (int(d) for d in (x.shape[0], x.shape[1], x.shape[2], x.shape[3]))
    num_channels = int(shift_index.channels(x, layout))
    logical = [n_, num_channels, output_size(h_, stride, padding), output_size(w_, stride, padding)]

    def f(n, c, h, w):
        return shift_index.bilinear_load(x, n, c, h * stride - padding, w * stride - padding, offsets, layout, zero_point)

    if layout == "NCHW4c":
        shape = _checks.physical_shape(logical, layout)
        return te.compute(shape, lambda n, co, h, w, ci: f(n, co * 4 + ci, h, w), name=NAME, attrs={"ecnn_op": NAME})
    return te.compute(logical, f, name=NAME, attrs={"ecnn_op": NAME})


def _legalize(bb, call_node):
    x, offsets = call_node.args
    return bb.call_te(compute, x, offsets, **attrs_of(call_node), primfunc_name_hint="ecnn_" + NAME)


OP = register_op(
    NAME,
    "Active shift (Jeon & Kim 2018): bilinear sample of each channel at a learned real offset",
    [("x", "NCHW (or NCHW4c) activation"), ("offsets", "float [C, 2] table of (dy, dx)")],
    _infer,
    _legalize,
)
