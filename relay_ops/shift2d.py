"""``relax.ecnn.shift2d``: the grouped, parameter-free shift of Wu et al. (2018)."""
from __future__ import annotations

from tvm import relax, te

from tvm_ecnn.nn.offsets import MAPPINGS

from . import _checks, quant, shift_index
from ._registry import attrs_of, call, register_op

NAME = "shift2d"
PADDING_MODES = ("zeros", "circular")


def shift2d(x, kernel_size=3, dilation=1, mapping="interleaved", padding_mode="zeros", layout="NCHW", zero_point=0):
    """Grouped shift; ``padding_mode="circular"`` is what ``torch.roll``-based code computes.

    int8 ``x`` with ``zero_point``: exact, the output keeps x's scale and zero point, and the border
    shifts in ``zero_point`` (the real 0).
    """
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        _checks.fail(NAME, "kernel_size", f"must be a positive odd integer, got {kernel_size!r}")
    _checks.positive_int(NAME, "dilation", dilation)
    _checks.choice(NAME, "mapping", mapping, MAPPINGS)
    _checks.choice(NAME, "padding_mode", padding_mode, PADDING_MODES)
    _checks.choice(NAME, "layout", layout, shift_index.LAYOUTS)
    quant.zero_point(NAME, "zero_point", zero_point)
    attrs = dict(kernel_size=kernel_size, dilation=dilation, mapping=mapping, padding_mode=padding_mode, layout=layout)
    if zero_point:  # only when set: float modules print (and compare) as before
        attrs["zero_point"] = zero_point
    return call(NAME, [x], attrs)


def _infer(call_node, _bb):
    attrs = attrs_of(call_node)
    _checks.activation_shape(NAME, "x", call_node.args[0], attrs["layout"])
    ty = call_node.args[0].ty
    _checks.quantized_only(NAME, ty.dtype, attrs)
    return relax.TensorType(ty.shape, ty.dtype)


def compute(x, kernel_size, dilation, mapping, padding_mode, layout, zero_point=0):
    """TE compute; the block carries ``ecnn_op`` so schedules find it after FuseTIR."""
    num_channels = int(shift_index.channels(x, layout))

    def f(n, c, h, w):
        dy, dx = shift_index.grouped_offsets(c, num_channels, kernel_size, dilation, mapping)
        return shift_index.shifted_load(x, n, c, h + dy, w + dx, layout, padding_mode, fill=zero_point)

    if layout == "NCHW4c":
        return te.compute(x.shape, lambda n, co, h, w, ci: f(n, co * 4 + ci, h, w), name=NAME, attrs={"ecnn_op": NAME})
    return te.compute(x.shape, f, name=NAME, attrs={"ecnn_op": NAME})


def _legalize(bb, call_node):
    return bb.call_te(compute, call_node.args[0], **attrs_of(call_node), primfunc_name_hint="ecnn_" + NAME)


OP = register_op(
    NAME,
    "Grouped shift (Wu et al. 2018): out[n,c,h,w] = x[n,c,h+dy_c,w+dx_c], zero or circular padding",
    [("x", "NCHW (or NCHW4c) activation")],
    _infer,
    _legalize,
)
