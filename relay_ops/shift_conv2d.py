"""``relax.ecnn.shift_conv2d``: any shift fused into the following 1x1 convolution.

The shift becomes an address offset in the convolution's loads (AddressNet): one kernel, no
shifted intermediate tensor. Optional fused epilogue: bias (BatchNorm folded in by the importer),
ReLU/ReLU6, residual add. int8 operands (``docs/int8-arithmetic.md``): the input's zero point is
shifted in at the border, the accumulation is int32, and an optional fixed-point requantize (per
output channel) with residual add and ReLU/ReLU6 clips gives an int8 output, so a whole shift block
stays int8 (the ARM dot-product schedule tensorizes it).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import relax, te, tirx

from tvm_ecnn.nn.offsets import MAPPINGS

from . import _checks, quant, shift_index
from .active_shift2d import FLOAT_DTYPES, output_size
from ._registry import attrs_of, call, register_op

NAME = "shift_conv2d"
SHIFTS = ("none", "grouped", "sparse", "active")
ACTIVATIONS = ("none", "relu", "relu6")
INT_DTYPES = ("int8",)
# int8 attributes, defaults meaning "not quantized / not used" (also for modules printed before they existed)
QUANT_DEFAULTS = dict(x_zero_point=0, requant_scale=0.0, requant_zero_point=0, output_scale=0.0,
                      residual_scale=0.0, residual_zero_point=0)


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
    x_zero_point=0,
    output_scale=0.0,
    residual_scale=0.0,
    residual_zero_point=0,
):
    """Build the fused call.

    ``shift`` picks the shift: ``grouped`` (``kernel_size``/``dilation``/``mapping`` as in
    ``shift2d``), ``sparse`` (int ``offsets [C, 2]``), ``active`` (float ``offsets [C, 2]``,
    ``padding``), or ``none`` (a plain 1x1 convolution, the benchmark baseline). ``stride`` is the
    1x1 convolution's.

    int8 ``x`` and ``weight`` (symmetric: weight zero point 0), ``docs/int8-arithmetic.md``:
    ``x_zero_point`` is shifted in at the border and subtracted from the int32 accumulator (``bias``
    is int32 in units of ``x_scale * w_scale[o]``). Without ``requant_scale`` the output is that
    int32 accumulator (bias, relu). With ``requant_scale`` (``x_scale * w_scale[o] / out_scale``: one
    number or one per output channel) the output is int8 with ``requant_zero_point``: optional
    int8 ``residual`` (``residual_scale`` = its scale / ``out_scale``, ``residual_zero_point``), then
    ReLU (clip at the zero point) or ReLU6 (also at the quantized 6, which needs ``output_scale``).
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
    if isinstance(requant_scale, (Sequence, np.ndarray)):
        requant_scale = [quant.scale(NAME, "requant_scale", v) for v in requant_scale]
        if not requant_scale:
            _checks.fail(NAME, "requant_scale", "per-channel scales: got an empty list")
    elif requant_scale != 0:  # 0: no requantize (int32 output)
        requant_scale = quant.scale(NAME, "requant_scale", requant_scale)
    for arg, value in (("output_scale", output_scale), ("residual_scale", residual_scale)):
        if value != 0:
            quant.scale(NAME, arg, value)
    for arg, value in (("x_zero_point", x_zero_point), ("requant_zero_point", requant_zero_point),
                       ("residual_zero_point", residual_zero_point)):
        quant.zero_point(NAME, arg, value)
    args = [x, weight] + [a for a in (offsets, bias, residual) if a is not None]
    attrs = dict(
        shift=shift, kernel_size=kernel_size, dilation=dilation, mapping=mapping, stride=stride, padding=padding,
        activation=activation, has_bias=bias is not None, has_residual=residual is not None,
        requant_scale=requant_scale if isinstance(requant_scale, list) else float(requant_scale),
        requant_zero_point=int(requant_zero_point), layout=layout, x_zero_point=int(x_zero_point),
        output_scale=float(output_scale), residual_scale=float(residual_scale),
        residual_zero_point=int(residual_zero_point),
    )
    return call(NAME, args, attrs)


def full_attrs(call_node) -> dict:
    """The call's attributes with the int8 ones defaulted."""
    return {**QUANT_DEFAULTS, **attrs_of(call_node)}


def requant_scales(attrs, out_channels: int) -> list[float] | None:
    """One requantize scale per output channel, or None (int32 output)."""
    value = attrs["requant_scale"]
    if isinstance(value, list):
        return [float(v) for v in value]
    return [float(value)] * out_channels if value > 0 else None


def requant_plan(attrs, out_channels: int) -> np.ndarray:
    """``[O, 3]`` int64 rows ``(M, s, M_r)``: ``acc * M * 2^-s`` and ``(r - zr) * M_r * 2^-s`` in output units."""
    rows = []
    for value in requant_scales(attrs, out_channels):
        multiplier, shift = quant.fixed_point(value)
        residual = round(attrs["residual_scale"] * 2.0 ** shift)
        if residual >= quant.MAX_RESIDUAL_MULTIPLIER:
            _checks.fail(NAME, "residual_scale", f"{attrs['residual_scale']} is too large next to requant_scale "
                         f"{value} (their ratio must stay below 2^23)")
        rows.append((multiplier, shift, residual))
    return np.array(rows, dtype="int64")


def split_args(args, attrs):
    """``(x, weight, offsets, bias, residual)`` with ``None`` for absent operands."""
    rest = list(args[2:])
    offsets = rest.pop(0) if attrs["shift"] in ("sparse", "active") else None
    bias = rest.pop(0) if attrs["has_bias"] else None
    residual = rest.pop(0) if attrs["has_residual"] else None
    return args[0], args[1], offsets, bias, residual


def _out_dtype(x_dtype: str, attrs) -> str:
    if x_dtype in INT_DTYPES:
        return "int8" if requant_scales(attrs, 1) is not None else "int32"
    return x_dtype


def _check_quantization(attrs, quantized: bool, out_channels: int, has_residual: bool) -> None:
    """int8 attributes only with int8 operands, and consistent with each other."""
    if not quantized:
        for arg, default in QUANT_DEFAULTS.items():
            if attrs[arg] != default:
                _checks.fail(NAME, arg, "applies to int8 operands only")
        return
    scales = requant_scales(attrs, out_channels)
    if isinstance(attrs["requant_scale"], list) and len(scales) != out_channels:
        _checks.fail(NAME, "requant_scale", f"needs one scale per output channel ({out_channels}), got {len(scales)}")
    if scales is None:
        if attrs["activation"] == "relu6" or has_residual:
            _checks.fail(NAME, "activation" if not has_residual else "residual",
                         "int32 output (no requant_scale) supports bias and relu only")
        return
    if attrs["activation"] == "relu6" and not attrs["output_scale"] > 0:
        _checks.fail(NAME, "output_scale", "int8 relu6 needs the output scale (the quantized 6 is zp + 6 / scale)")
    if has_residual and not attrs["residual_scale"] > 0:
        _checks.fail(NAME, "residual_scale", "an int8 residual needs its scale relative to the output's")
    requant_plan(attrs, out_channels)


def _infer(call_node, _bb):
    attrs = full_attrs(call_node)
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
    if offsets is not None:
        allowed = ("int32", "int64") if attrs["shift"] == "sparse" else FLOAT_DTYPES
        _checks.offsets_table(NAME, offsets, c, allowed)
        if attrs["shift"] == "sparse":
            _checks.int32_offsets(NAME, offsets)
        else:
            _checks.finite_offsets(NAME, offsets, quant.MAX_ACTIVE_OFFSET if quantized else None)
    out_channels = w_shape[0]
    if out_channels == 0:
        _checks.fail(NAME, "weight", f"has zero output channels: shape {w_shape}")
    _check_quantization(attrs, quantized, out_channels, residual is not None)
    if layout == "NCHW4c" and out_channels % 4:
        _checks.fail(NAME, "weight", f"NCHW4c needs output channels divisible by 4, got {out_channels}")
    out_dtype = _out_dtype(x_dtype, attrs)
    if bias is not None:
        b_shape = _checks.static_shape(NAME, "bias", _checks.tensor_type(NAME, "bias", bias))
        want = "int32" if quantized else x_dtype
        if b_shape != [out_channels] or bias.ty.dtype != want:
            _checks.fail(NAME, "bias", f"must be [{out_channels}] {want}, got {b_shape} {bias.ty.dtype}")
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
    fill = attrs["x_zero_point"]
    if shift == "active":
        return lambda n, c, h, w: shift_index.bilinear_load(x, n, c, h, w, offsets, layout, fill)
    if shift == "none":
        return lambda n, c, h, w: shift_index.load(x, n, c, h, w, layout)

    def f(n, c, h, w):
        if shift == "sparse":
            dy, dx = shift_index.table_offsets(offsets, c)
        else:
            dy, dx = shift_index.grouped_offsets(c, num_channels, attrs["kernel_size"], attrs["dilation"], attrs["mapping"])
        return shift_index.shifted_load(x, n, c, h + dy, w + dx, layout, fill=fill)

    return f


def compute(x, weight, offsets, bias, residual, attrs, requant_table=None):
    """Blocks ``shift_conv2d_input`` (shifted input), ``shift_conv2d_weight`` (kernel panel),
    ``shift_conv2d`` (accumulation) and, when needed, ``shift_conv2d_epilogue`` (bias, residual,
    activation, requantize, relayout). ``requant_table``: the ``[O, 3]`` :func:`requant_plan` when the
    requantize differs per output channel (else its one row is folded in as immediates)."""
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
    requant = quantized and out_dtype == "int8"
    needs_epilogue = bias is not None or residual is not None or attrs["activation"] != "none" or requant
    if not needs_epilogue and layout == "NCHW":
        return acc
    plan = requant_plan(attrs, out_channels) if requant else None

    def requantized(v, n, o, h, w):
        def term(i):
            if requant_table is not None:
                return requant_table[o, i]
            return tirx.const(int(plan[0, i]), "int64")

        residual_term = tirx.const(0, "int64")
        if residual is not None:
            r = shift_index.load(residual, n, o, h, w, layout).astype("int64")
            residual_term = (r - tirx.const(attrs["residual_zero_point"], "int64")) * term(2)
        zp = attrs["requant_zero_point"]
        low = max(quant.INT8_MIN, zp) if attrs["activation"] != "none" else quant.INT8_MIN
        high = quant.relu6_bound(NAME, attrs["output_scale"], zp) if attrs["activation"] == "relu6" else quant.INT8_MAX
        return quant.requantize(v, term(0), term(1), residual_term, zp, low, high)

    def epilogue(n, o, h, w):
        v = acc[n, o, h, w]
        if bias is not None:
            v = v + bias[o]
        if requant:
            return requantized(v, n, o, h, w)
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


def _zero_point_bias(bb, weight, bias, x_zero_point: int):
    """``bias - zx * sum_c w[o, c]``: the accumulator sums raw int8 inputs, ``x - zx`` is what it means."""
    out_channels = int(weight.ty.shape.values[0])
    w = _checks.constant_value(weight)
    b = None if bias is None else _checks.constant_value(bias)
    if w is not None and (bias is None or b is not None):
        folded = (np.zeros(out_channels, "int64") if b is None else b.astype("int64")) \
            - x_zero_point * w.astype("int64").sum(axis=(1, 2, 3))
        return relax.const(folded.astype("int32"))
    wsum = relax.op.sum(relax.op.astype(weight, "int32"), axis=[1, 2, 3])
    correction = bb.normalize(relax.op.multiply(wsum, relax.const(np.int32(-x_zero_point))))
    return correction if bias is None else bb.normalize(relax.op.add(bias, correction))


def _legalize(bb, call_node):
    attrs = full_attrs(call_node)
    x, weight, offsets, bias, residual = split_args(call_node.args, attrs)
    if attrs["x_zero_point"]:
        bias = _zero_point_bias(bb, weight, bias, attrs["x_zero_point"])
    table = None
    scales = requant_scales(attrs, int(weight.ty.shape.values[0])) if x.ty.dtype in INT_DTYPES else None
    if scales is not None and len(set(scales)) > 1:
        table = relax.const(requant_plan(attrs, len(scales)), "int64")  # relax.const narrows int64 to int32
    operands = [a for a in (x, weight, offsets, bias, residual, table) if a is not None]

    def te_func(*tensors):
        it = iter(tensors)
        x_, w_, o_, b_, r_, t_ = (next(it) if a is not None else None for a in (x, weight, offsets, bias, residual, table))
        return compute(x_, w_, o_, b_, r_, attrs, requant_table=t_)

    return bb.call_te(te_func, *operands, primfunc_name_hint="ecnn_" + NAME)


OP = register_op(
    NAME,
    "A shift (grouped, sparse or active) fused into the following 1x1 convolution, with epilogue",
    [("x", "NCHW (or NCHW4c) activation"), ("weight", "OIHW 1x1 kernel"),
     ("extras", "offsets [C,2], bias [O], residual, in that order, when present")],
    _infer,
    _legalize,
)
