"""``relax.ecnn.shift_conv2d``: any shift fused into the following 1x1 convolution.

The shift becomes an address offset in the convolution's loads (AddressNet): one kernel, no
shifted intermediate tensor. Optional fused epilogue: bias (BatchNorm folded in by the importer),
ReLU/ReLU6, residual add; for int8 operands the accumulation is int32 with an optional requantize
to int8 (the path the ARM dot-product schedule tensorizes).
"""
from __future__ import annotations

from tvm import relax, te, tirx

from tvm_ecnn.nn.offsets import MAPPINGS

from . import _checks, shift_index
from .active_shift2d import FLOAT_DTYPES, output_size
from ._registry import attrs_of, call, register_op

NAME = "shift_conv2d"
SHIFTS = ("none", "grouped", "sparse", "active")
ACTIVATIONS = ("none", "relu", "relu6")
INT_DTYPES = ("int8",)


def shift_conv2d(
    x,
    weight,
    shift="grouped",
    *,
    kernel_size=3,
    dilation=1,
    mapping="interleaved",
    offsets=None,
    stride=1,
    padding=0,
    bias=None,
    activation="none",
    residual=None,
    requant_scale=0.0,
    requant_zero_point=0,
    layout="NCHW",
):
    """Build the fused call.

    ``shift`` picks the shift: ``grouped`` (``kernel_size``/``dilation``/``mapping`` as in
    ``shift2d``), ``sparse`` (int ``offsets [C, 2]``), ``active`` (float ``offsets [C, 2]``,
    ``padding``), or ``none`` (a plain 1x1 convolution, the benchmark baseline). ``stride`` is the
    1x1 convolution's. With int8 operands, ``requant_scale > 0`` requantizes the int32 accumulator
    to int8: ``clip(round(acc * scale) + zero_point)``.
    """
    _checks.choice(NAME, "shift", shift, SHIFTS)
    _checks.choice(NAME, "activation", activation, ACTIVATIONS)
    _checks.choice(NAME, "mapping", mapping, MAPPINGS)
    _checks.choice(NAME, "layout", layout, shift_index.LAYOUTS)
    _checks.positive_int(NAME, "stride", stride)
    _checks.positive_int(NAME, "dilation", dilation)
    _checks.positive_int(NAME, "padding", padding, minimum=0)
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        _checks.fail(NAME, "kernel_size", f"must be a positive odd integer, got {kernel_size!r}")
    if (offsets is not None) != (shift in ("sparse", "active")):
        _checks.fail(NAME, "offsets", f"an offsets table is required for shift='sparse'/'active' and only then (shift={shift!r})")
    if padding and shift != "active":
        _checks.fail(NAME, "padding", "only the active shift takes padding")
    if requant_scale < 0:
        _checks.fail(NAME, "requant_scale", f"must be >= 0, got {requant_scale}")
    args = [x, weight] + [a for a in (offsets, bias, residual) if a is not None]
    attrs = dict(
        shift=shift, kernel_size=kernel_size, dilation=dilation, mapping=mapping, stride=stride, padding=padding,
        activation=activation, has_bias=bias is not None, has_residual=residual is not None,
        requant_scale=float(requant_scale), requant_zero_point=int(requant_zero_point), layout=layout,
    )
    return call(NAME, args, attrs)


def split_args(args, attrs):
    """``(x, weight, offsets, bias, residual)`` with ``None`` for absent operands."""
    rest = list(args[2:])
    offsets = rest.pop(0) if attrs["shift"] in ("sparse", "active") else None
    bias = rest.pop(0) if attrs["has_bias"] else None
    residual = rest.pop(0) if attrs["has_residual"] else None
    return args[0], args[1], offsets, bias, residual


def _out_dtype(x_dtype: str, attrs) -> str:
    if x_dtype in INT_DTYPES:
        return "int8" if attrs["requant_scale"] > 0 else "int32"
    return x_dtype


def _infer(call_node, _bb):
    attrs = attrs_of(call_node)
    x, weight, offsets, bias, residual = split_args(call_node.args, attrs)
    layout = attrs["layout"]
    n, c, h, w = _checks.activation_shape(NAME, "x", x, layout)
    x_dtype = x.ty.dtype
    if x_dtype not in FLOAT_DTYPES + INT_DTYPES:
        _checks.fail(NAME, "x", f"dtype must be one of {FLOAT_DTYPES + INT_DTYPES}, got {x_dtype}")
    w_shape = _checks.static_shape(NAME, "weight", _checks.tensor_type(NAME, "weight", weight))
    if len(w_shape) != 4 or w_shape[1] != c or w_shape[2:] != [1, 1]:
        _checks.fail(NAME, "weight", f"must be a 1x1 OIHW kernel [O, {c}, 1, 1], got {w_shape}")
    if weight.ty.dtype != x_dtype:
        _checks.fail(NAME, "weight", f"dtype {weight.ty.dtype} does not match x dtype {x_dtype}")
    quantized = x_dtype in INT_DTYPES
    if attrs["shift"] == "active" and quantized:
        _checks.fail(NAME, "shift", "the active (bilinear) shift has no int8 form; round it to a sparse shift")
    if offsets is not None:
        allowed = ("int32", "int64") if attrs["shift"] == "sparse" else FLOAT_DTYPES
        _checks.offsets_table(NAME, offsets, c, allowed)
    out_channels = w_shape[0]
    if layout == "NCHW4c" and out_channels % 4:
        _checks.fail(NAME, "weight", f"NCHW4c needs output channels divisible by 4, got {out_channels}")
    out_dtype = _out_dtype(x_dtype, attrs)
    if bias is not None:
        b_shape = _checks.static_shape(NAME, "bias", _checks.tensor_type(NAME, "bias", bias))
        want = "int32" if quantized else x_dtype
        if b_shape != [out_channels] or bias.ty.dtype != want:
            _checks.fail(NAME, "bias", f"must be [{out_channels}] {want}, got {b_shape} {bias.ty.dtype}")
    if quantized and (attrs["activation"] == "relu6" or residual is not None):
        _checks.fail(NAME, "activation" if residual is None else "residual", "int8 supports bias, relu and requantize only")
    stride, padding = attrs["stride"], attrs["padding"]
    logical = [n, out_channels, output_size(h, stride, padding), output_size(w, stride, padding)]
    shape = _checks.physical_shape(logical, layout)
    if residual is not None:
        r_shape = _checks.static_shape(NAME, "residual", _checks.tensor_type(NAME, "residual", residual))
        if r_shape != shape or residual.ty.dtype != out_dtype:
            _checks.fail(NAME, "residual", f"must be {shape} {out_dtype}, got {r_shape} {residual.ty.dtype}")
    return relax.TensorType(shape, out_dtype)


def _shifted_input(x, offsets, attrs, layout):
    """``f(n, c, h, w)`` reading the shifted input at the 1x1 conv's sample point."""
    num_channels = int(shift_index.channels(x, layout))
    shift = attrs["shift"]
    if shift == "active":
        return lambda n, c, h, w: shift_index.bilinear_load(x, n, c, h, w, offsets, layout)
    if shift == "none":
        return lambda n, c, h, w: shift_index.load(x, n, c, h, w, layout)

    def f(n, c, h, w):
        if shift == "sparse":
            dy, dx = shift_index.table_offsets(offsets, c)
        else:
            dy, dx = shift_index.grouped_offsets(c, num_channels, attrs["kernel_size"], attrs["dilation"], attrs["mapping"])
        return shift_index.shifted_load(x, n, c, h + dy, w + dx, layout)

    return f


def compute(x, weight, offsets, bias, residual, attrs):
    """Blocks ``shift_conv2d_input`` (shifted input), ``shift_conv2d_weight`` (kernel panel),
    ``shift_conv2d`` (accumulation) and, when needed, ``shift_conv2d_epilogue`` (bias, residual,
    activation, requantize, relayout)."""
    layout = attrs["layout"]
    stride, padding = attrs["stride"], attrs["padding"]
    batch, height, width = (int(x.shape[i]) for i in (0, 2, 3))
    num_channels = int(shift_index.channels(x, layout))
    out_channels = int(weight.shape[0])
    quantized = x.dtype in INT_DTYPES
    acc_dtype = "int32" if quantized else x.dtype
    out_dtype = _out_dtype(x.dtype, attrs)
    read = _shifted_input(x, offsets, attrs, layout)
    # [C, O] panel of the 1x1 kernel: CPU schedules stage it per output tile so that a vector of
    # output channels is one contiguous load; other schedules inline it.
    panel = te.compute((num_channels, out_channels), lambda c, o: weight[o, c, 0, 0], name=NAME + "_weight",
                       attrs={"ecnn_op": NAME + "_weight"})
    out_h, out_w = output_size(height, stride, padding), output_size(width, stride, padding)
    # The shifted input at the 1x1 conv's sample points, [N, H', W', C]: all shift arithmetic and zero
    # padding live here. CPU schedules stage it per pixel tile (out of the FMA loop); others inline it.
    shifted = te.compute((batch, out_h, out_w, num_channels),
                         lambda n, h, w, c: read(n, c, h * stride - padding, w * stride - padding),
                         name=NAME + "_input", attrs={"ecnn_op": NAME + "_input", "ecnn_shift": attrs["shift"]})
    rc = te.reduce_axis((0, num_channels), name="rc")

    def accumulate(n, o, h, w):
        return te.sum(shifted[n, h, w, rc].astype(acc_dtype) * panel[rc, o].astype(acc_dtype), axis=rc)

    logical = [batch, out_channels, out_h, out_w]
    acc = te.compute(logical, accumulate, name=NAME, attrs={"ecnn_op": NAME})
    scale, zero_point = attrs["requant_scale"], attrs["requant_zero_point"]
    needs_epilogue = bias is not None or residual is not None or attrs["activation"] != "none"
    if not needs_epilogue and layout == "NCHW" and out_dtype == acc_dtype:
        return acc

    def epilogue(n, o, h, w):
        v = acc[n, o, h, w]
        if bias is not None:
            v = v + bias[o]
        if quantized and scale > 0:
            q = tirx.nearbyint(v.astype("float32") * tirx.const(scale, "float32")).astype("int32") + zero_point
            low = zero_point if attrs["activation"] == "relu" else -128
            return tirx.max(tirx.min(q, 127), low).astype("int8")
        if residual is not None:
            v = v + shift_index.load(residual, n, o, h, w, layout)
        if attrs["activation"] in ("relu", "relu6"):
            v = tirx.max(v, tirx.const(0, acc_dtype))
        if attrs["activation"] == "relu6":
            v = tirx.min(v, tirx.const(6, acc_dtype))
        return v

    tag = {"ecnn_op": NAME + "_epilogue"}
    if layout == "NCHW4c":
        shape = _checks.physical_shape(logical, layout)
        return te.compute(shape, lambda n, oo, h, w, oi: epilogue(n, oo * 4 + oi, h, w), name=NAME + "_epilogue", attrs=tag)
    return te.compute(logical, epilogue, name=NAME + "_epilogue", attrs=tag)


def _legalize(bb, call_node):
    attrs = attrs_of(call_node)
    x, weight, offsets, bias, residual = split_args(call_node.args, attrs)
    operands = [a for a in (x, weight, offsets, bias, residual) if a is not None]

    def te_func(*tensors):
        it = iter(tensors)
        return compute(*(next(it) if a is not None else None for a in (x, weight, offsets, bias, residual)), attrs)

    return bb.call_te(te_func, *operands, primfunc_name_hint="ecnn_" + NAME)


OP = register_op(
    NAME,
    "A shift (grouped, sparse or active) fused into the following 1x1 convolution, with epilogue",
    [("x", "NCHW (or NCHW4c) activation"), ("weight", "OIHW 1x1 kernel"),
     ("extras", "offsets [C,2], bias [O], residual, in that order, when present")],
    _infer,
    _legalize,
)
