"""int8 ecnn operators (docs/int8-arithmetic.md): bit-exact against the independent numpy reference
(tests/reference.py), the active shift within its stated bound of the float one, the numeric guards, and the
scheduled kernels on the host (this file), the emulated ARM device and PoCL (test_arm_schedules.py,
test_adreno.py reuse ``INT8_CASES``)."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import given, settings, strategies as st
from tvm import relax

import relay_ops
from relay_ops._registry import attrs_of
from reference import (active_shift_int8_ref, active_shift_ref, conv1x1_int_ref, requantize_ref, shift_ref)
from relax_helpers import build_module, multi_function_module, run_op
from tvm_ecnn import pipeline
from tvm_ecnn.nn.offsets import grouped_shift_offsets

SETTINGS = settings(max_examples=20, deadline=None)
shapes = st.tuples(st.integers(1, 2), st.integers(1, 10), st.integers(1, 7), st.integers(1, 7))
zero_points = st.sampled_from([0, -128, 127, 5, -37])
# real offsets: anywhere (also far outside the image), on the 1/128 grid, and exactly halfway between grid points
offset_values = st.one_of(st.floats(-12, 12, allow_nan=False, width=32), st.integers(-1600, 1600).map(lambda v: v / 128),
                          st.integers(-1600, 1600).map(lambda v: (v + 0.5) / 128), st.integers(-3, 3).map(float))


def int8(rng, shape, low=-128, high=127):
    return rng.integers(low, high + 1, shape).astype("int8")


def offsets_of(data, channels):
    return np.array(data.draw(st.lists(st.tuples(offset_values, offset_values), min_size=channels, max_size=channels)),
                    "float32").reshape(channels, 2)


# ------------------------------------------------------------------------------------------------------------------
# standalone shifts


@SETTINGS
@given(shape=shapes, zp=zero_points, k=st.sampled_from([1, 3, 5]), mapping=st.sampled_from(["interleaved", "grouped"]),
       inplace=st.booleans(), data=st.data())
def test_data_movement_shifts_are_exact_and_shift_in_the_zero_point(shape, zp, k, mapping, inplace, data):
    rng = np.random.default_rng(0)
    x = int8(rng, shape)
    out = run_op(lambda v: relay_ops.shift2d(v, k, 1, mapping, zero_point=zp), x)
    np.testing.assert_array_equal(out, shift_ref(x, grouped_shift_offsets(shape[1], k, 1, mapping), fill=zp))
    table = np.array(data.draw(st.lists(st.tuples(st.integers(-9, 9), st.integers(-9, 9)), min_size=shape[1],
                                        max_size=shape[1])), "int32").reshape(shape[1], 2)
    out = run_op(lambda v: relay_ops.sparse_shift2d(v, relax.const(table), inplace=inplace, zero_point=zp), x)
    np.testing.assert_array_equal(out, shift_ref(x, table, fill=zp))


def test_border_is_the_zero_point_not_zero():
    x = np.full((1, 9, 3, 3), 40, "int8")
    out = run_op(lambda v: relay_ops.shift2d(v, zero_point=-20), x)
    assert out.dtype == np.int8 and set(np.unique(out)) == {-20, 40}
    np.testing.assert_array_equal(out[0, 1], [[-20] * 3, [40] * 3, [40] * 3])  # (dy, dx) = (-1, 0): row 0 is new
    np.testing.assert_array_equal(out[0, 4], x[0, 4])  # the centre channel does not move


@SETTINGS
@given(shape=shapes, zp=zero_points, stride=st.integers(1, 3), padding=st.integers(0, 2), data=st.data())
def test_active_shift2d_int8_bit_exact(shape, zp, stride, padding, data):
    offsets = offsets_of(data, shape[1])
    x = int8(np.random.default_rng(1), shape)
    out = run_op(lambda v, o: relay_ops.active_shift2d(v, o, stride, padding, zero_point=zp), x, offsets)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, active_shift_int8_ref(x, offsets, stride, padding, zp))


def _gradient_bound(x_centered):
    """``(G_y, G_x)`` per channel: the largest difference of vertical / horizontal neighbours, zero outside."""
    padded = np.pad(x_centered.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    g_y = np.abs(np.diff(padded, axis=2)).max(axis=(0, 2, 3))
    g_x = np.abs(np.diff(padded, axis=3)).max(axis=(0, 2, 3))
    return g_y, g_x


@SETTINGS
@given(shape=shapes, zp=zero_points, spread=st.sampled_from([3, 40, 255]), stride=st.integers(1, 2),
       padding=st.integers(0, 1), data=st.data())
def test_active_shift2d_int8_within_bound_of_float(shape, zp, spread, stride, padding, data):
    """|q_out - zp - A(q - zp)| <= 1/2 + 2^-(k+1) (G_y + G_x) quantization steps (docs/int8-arithmetic.md)."""
    offsets = offsets_of(data, shape[1])
    rng = np.random.default_rng(2)
    low = max(-128, zp - spread // 2)
    x = int8(rng, shape, low, min(127, low + spread))
    out = run_op(lambda v: relay_ops.active_shift2d(v, relax.const(offsets), stride, padding, zero_point=zp), x)
    error = np.abs(out.astype(np.float64) - zp - active_shift_ref(x.astype(np.int64) - zp, offsets, stride, padding))
    g_y, g_x = _gradient_bound(x.astype(np.int64) - zp)
    bound = 0.5 + (g_y + g_x) / 256
    assert (error <= bound[None, :, None, None] + 1e-9).all(), (error.max(), bound)
    on_grid = (np.round(offsets.astype(np.float64) * 128) == offsets.astype(np.float64) * 128).all(axis=1)
    assert (error[:, on_grid] <= 0.5 + 1e-9).all()  # no offset rounding: only the final rounding


# ------------------------------------------------------------------------------------------------------------------
# shift_conv2d


def conv_int8_case(kind, channels, out_channels, size, *, stride=1, bias=True, activation="none", x_zp=0,
                   per_channel=False, residual=False, out_zp=0, requant=True, seed=0, reach=2.5):
    """``(make, x, reference)``; ``make`` takes the input var (the residual is a constant); active offsets
    uniform in ``[-reach, reach]``."""
    rng = np.random.default_rng(seed)
    shape = (1, channels) + ((size, size) if isinstance(size, int) else tuple(size))
    x, w = int8(rng, shape), int8(rng, (out_channels, channels, 1, 1))
    b = rng.integers(-20000, 20000, out_channels).astype("int32") if bias else None
    offsets = {"sparse": lambda: rng.integers(-3, 4, (channels, 2)).astype("int32"),
               "active": lambda: rng.uniform(-reach, reach, (channels, 2)).astype("float32")}.get(kind, lambda: None)()
    typical = 1.0 / (np.sqrt(channels) * 2000)  # keeps most outputs inside int8
    scales = list(rng.uniform(0.3, 3, out_channels) * typical) if per_channel else float(typical)
    out_h = (shape[2] - 1) // stride + 1
    out_w = (shape[3] - 1) // stride + 1
    r = int8(rng, (1, out_channels, out_h, out_w)) if residual else None
    quant = dict(requant_scale=scales if requant else 0.0, requant_zero_point=out_zp if requant else 0, x_zero_point=x_zp)
    if activation == "relu6":
        quant["output_scale"] = 6 / 90  # the quantized 6 is out_zp + 90
    if residual:
        quant.update(residual_scale=0.7, residual_zero_point=-3)

    def make(v):
        return relay_ops.shift_conv2d(v, relax.const(w), kind, stride=stride, activation=activation,
                                      offsets=None if offsets is None else relax.const(offsets),
                                      bias=None if b is None else relax.const(b),
                                      residual=None if r is None else relax.const(r), **quant)

    if kind == "active":
        shifted = active_shift_int8_ref(x, offsets, zero_point=x_zp)
    else:
        table = {"none": lambda: np.zeros((channels, 2), "int64"), "sparse": lambda: offsets,
                 "grouped": lambda: grouped_shift_offsets(channels)}[kind]()
        shifted = shift_ref(x, table, fill=x_zp)
    acc = conv1x1_int_ref(shifted, w, x_zp, b, stride)
    if not requant:
        return make, x, (np.maximum(acc, 0) if activation == "relu" else acc).astype(np.int32)
    per = scales if per_channel else [scales] * out_channels
    ref = requantize_ref(acc, per, out_zp, activation, quant.get("output_scale"), r, quant.get("residual_scale"),
                         quant.get("residual_zero_point", 0))
    return make, x, ref


KINDS = ["none", "grouped", "sparse", "active"]


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(KINDS), channels=st.integers(1, 12), out_channels=st.integers(1, 9),
       size=st.tuples(st.integers(1, 6), st.integers(1, 6)), stride=st.integers(1, 2),
       activation=st.sampled_from(["none", "relu", "relu6"]), x_zp=zero_points, out_zp=zero_points,
       per_channel=st.booleans(), residual=st.booleans(), bias=st.booleans(), seed=st.integers(0, 99))
def test_shift_conv2d_int8_bit_exact(kind, channels, out_channels, size, stride, activation, x_zp, out_zp, per_channel,
                                     residual, bias, seed):
    make, x, ref = conv_int8_case(kind, channels, out_channels, size, stride=stride, bias=bias, activation=activation,
                                  x_zp=x_zp, per_channel=per_channel, residual=residual, out_zp=out_zp, seed=seed)
    out = run_op(make, x)
    assert out.dtype == ref.dtype == np.int8
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("x_zp", [0, 9])
def test_shift_conv2d_int8_without_requant_is_the_int32_accumulator(x_zp):
    make, x, ref = conv_int8_case("active", 8, 5, 6, activation="relu", x_zp=x_zp, requant=False)
    out = run_op(make, x)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("kind", KINDS)
def test_int8_fused_equals_standalone_shift_then_conv(kind):
    rng = np.random.default_rng(3)
    x, w = int8(rng, (1, 12, 7, 6)), int8(rng, (8, 12, 1, 1))
    offsets = {"sparse": rng.integers(-2, 3, (12, 2)).astype("int32"),
               "active": rng.uniform(-2, 2, (12, 2)).astype("float32")}.get(kind)
    off = None if offsets is None else relax.const(offsets)
    quant = dict(requant_scale=list(rng.uniform(1e-4, 1e-3, 8)), requant_zero_point=-7, x_zero_point=11)
    shift = {"none": lambda v: v, "grouped": lambda v: relay_ops.shift2d(v, zero_point=11),
             "sparse": lambda v: relay_ops.sparse_shift2d(v, off, zero_point=11),
             "active": lambda v: relay_ops.active_shift2d(v, off, zero_point=11)}[kind]
    fused = run_op(lambda v: relay_ops.shift_conv2d(v, relax.const(w), kind, offsets=off, stride=2, **quant), x)
    unfused = run_op(lambda v: relay_ops.shift_conv2d(shift(v), relax.const(w), "none", stride=2, **quant), x)
    np.testing.assert_array_equal(fused, unfused)


def test_runtime_weight_folds_the_input_zero_point():
    """A weight given at run time: ``x_zero_point * sum(w)`` is computed by the module, not at build time."""
    make, x, ref = conv_int8_case("grouped", 9, 4, 5, x_zp=-60, per_channel=True, bias=False)
    call = make(relax.Var("v", relax.TensorType(x.shape, "int8")))
    weight, attrs = call.args[1].value.numpy(), attrs_of(call)
    out = run_op(lambda v, wt: relay_ops.shift_conv2d(v, wt, "grouped", requant_scale=attrs["requant_scale"],
                                                      requant_zero_point=attrs["requant_zero_point"], x_zero_point=-60),
                 x, weight)
    np.testing.assert_array_equal(out, ref)


# ------------------------------------------------------------------------------------------------------------------
# numeric guards (issue 12): one ValueError naming op and argument


X = [((1, 4, 5, 5), "int8")]
W8 = relax.const(np.ones((3, 4, 1, 1), "int8"))


def _active(table):
    return lambda v: relay_ops.active_shift2d(v, relax.const(np.array(table, "float32")))


BAD = {
    "requant_scale nan": (lambda v: relay_ops.shift_conv2d(v, W8, requant_scale=float("nan")), X, "requant_scale"),
    "requant_scale inf": (lambda v: relay_ops.shift_conv2d(v, W8, requant_scale=float("inf")), X, "requant_scale"),
    "requant_scale negative": (lambda v: relay_ops.shift_conv2d(v, W8, requant_scale=-0.1), X, "requant_scale"),
    "requant_scale per channel nan": (lambda v: relay_ops.shift_conv2d(v, W8, requant_scale=[0.1, float("nan"), 0.1]),
                                      X, "requant_scale"),
    "requant_scale wrong count": (lambda v: relay_ops.shift_conv2d(v, W8, requant_scale=[0.1, 0.2]), X, "requant_scale"),
    "requant_scale tiny": (lambda v: relay_ops.shift_conv2d(v, W8, requant_scale=1e-12), X, "requant_scale"),
    "requant_zero_point 128": (lambda v: relay_ops.shift_conv2d(v, W8, requant_scale=0.1, requant_zero_point=128),
                               X, "requant_zero_point"),
    "x_zero_point -129": (lambda v: relay_ops.shift_conv2d(v, W8, x_zero_point=-129), X, "x_zero_point"),
    "zero_point float": (lambda v: relay_ops.shift2d(v, zero_point=1.5), X, "zero_point"),
    "sparse zero_point 300": (lambda v: relay_ops.sparse_shift2d(v, relax.const(np.zeros((4, 2), "int32")),
                                                                 zero_point=300), X, "zero_point"),
    "zero_point on float": (lambda v: relay_ops.shift2d(v, zero_point=3), [((1, 4, 5, 5), "float32")], "zero_point"),
    "requant on float": (lambda v: relay_ops.shift_conv2d(v, relax.const(np.ones((3, 4, 1, 1), "float32")),
                                                          requant_scale=0.5), [((1, 4, 5, 5), "float32")],
                         "requant_scale"),
    "relu6 without output_scale": (lambda v: relay_ops.shift_conv2d(v, W8, requant_scale=0.1, activation="relu6"),
                                   X, "output_scale"),
    "relu6 int32 output": (lambda v: relay_ops.shift_conv2d(v, W8, activation="relu6"), X, "activation"),
    "residual without scale": (lambda v: relay_ops.shift_conv2d(v, W8, requant_scale=0.1,
                                                                residual=relax.const(np.zeros((1, 3, 5, 5), "int8"))),
                               X, "residual_scale"),
    "residual scale nan": (lambda v: relay_ops.shift_conv2d(v, W8, requant_scale=0.1, residual_scale=float("nan")),
                           X, "residual_scale"),
    "active offsets nan": (_active([[0.5, float("nan")]] * 4), X, "offsets"),
    "active offsets inf float": (_active([[float("inf"), 0]] * 4), [((1, 4, 5, 5), "float32")], "offsets"),
    "active int8 offsets 2^15": (_active([[2.0 ** 15, 0]] * 4), X, "offsets"),
    "fused active offsets nan": (lambda v: relay_ops.shift_conv2d(v, W8, "active", offsets=relax.const(
        np.full((4, 2), np.nan, "float32"))), X, "offsets"),
    "sparse int64 offsets 2^32": (lambda v: relay_ops.sparse_shift2d(v, relax.const(np.full((4, 2), 2**32, "int64"), "int64")),
                                  X, "offsets"),
    "fused sparse int64 offsets 2^31": (lambda v: relay_ops.shift_conv2d(v, W8, "sparse", offsets=relax.const(
        np.full((4, 2), -(2**31) - 1, "int64"), "int64")), X, "offsets"),
    "zero channels": (lambda v: relay_ops.shift2d(v), [((1, 0, 5, 5), "float32")], "x"),
    "zero channels active": (lambda v: relay_ops.active_shift2d(v, relax.const(np.zeros((0, 2), "float32"))),
                             [((1, 0, 5, 5), "int8")], "x"),
    "zero output channels": (lambda v: relay_ops.shift_conv2d(v, relax.const(np.zeros((0, 4, 1, 1), "int8"))), X,
                             "weight"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_quantization_arguments_name_op_and_argument(case):
    make, types, arg = BAD[case]
    with pytest.raises(ValueError, match=rf"relax\.ecnn\.\w+: argument '{arg}'"):
        build_module(make, types)


# ------------------------------------------------------------------------------------------------------------------
# scheduled kernels


def _shift_case(op, zp, size=(9, 11)):
    rng = np.random.default_rng(4)
    x = int8(rng, (2, 20) + size)
    if op == "active":
        offsets = rng.uniform(-4, 4, (20, 2)).astype("float32")
        return (lambda v: relay_ops.active_shift2d(v, relax.const(offsets), zero_point=zp), x,
                active_shift_int8_ref(x, offsets, zero_point=zp))
    if op == "active_stride2_pad1":
        offsets = rng.uniform(-2, 2, (20, 2)).astype("float32")
        return (lambda v: relay_ops.active_shift2d(v, relax.const(offsets), 2, 1, zero_point=zp), x,
                active_shift_int8_ref(x, offsets, 2, 1, zero_point=zp))
    if op == "sparse":
        table = rng.integers(-12, 13, (20, 2)).astype("int32")
        return lambda v: relay_ops.sparse_shift2d(v, relax.const(table), zero_point=zp), x, shift_ref(x, table, fill=zp)
    return lambda v: relay_ops.shift2d(v, zero_point=zp), x, shift_ref(x, grouped_shift_offsets(20), fill=zp)


# int8 kernels every target runs (the sdot path needs channels and output channels divisible by 4)
INT8_CASES = {
    "grouped_zp_perchannel_relu": conv_int8_case("grouped", 32, 16, (6, 8), activation="relu", x_zp=-9,
                                                 per_channel=True, out_zp=4),
    "sparse_stride2_residual_relu6": conv_int8_case("sparse", 16, 8, 9, stride=2, activation="relu6", x_zp=17,
                                                    per_channel=True, residual=True, out_zp=-100),
    "active_zp_residual": conv_int8_case("active", 24, 12, 7, x_zp=-3, residual=True, out_zp=10),
    "active_c18_perchannel_relu": conv_int8_case("active", 18, 8, 6, activation="relu", per_channel=True, x_zp=5),
    "none_acc_int32": conv_int8_case("none", 64, 32, 5, x_zp=2, requant=False),
    "grouped_c18_fallback_relu6": conv_int8_case("grouped", 18, 8, 6, activation="relu6", out_zp=-128),
    "shift2d_zp": _shift_case("grouped", -50),
    "sparse_shift2d_zp": _shift_case("sparse", 33),
    "active_shift2d_zp": _shift_case("active", -7),
    "active_shift2d_stride2_pad1": _shift_case("active_stride2_pad1", 120),
}


def test_int8_kernels_scheduled_for_the_host_are_bit_exact():
    vm = relax.VirtualMachine(pipeline.build(multi_function_module(INT8_CASES), "host"), tvm.cpu())
    for name, (_, x, ref) in INT8_CASES.items():
        out = vm[name](tvm.runtime.tensor(x)).numpy()
        assert out.dtype == ref.dtype, name
        np.testing.assert_array_equal(out, ref, err_msg=name)


def test_int8_attributes_survive_tvmscript_and_json():
    cases = {k: INT8_CASES[k] for k in ("sparse_stride2_residual_relu6", "active_shift2d_zp", "sparse_shift2d_zp")}
    mod = multi_function_module(cases)
    tvm.ir.assert_structural_equal(mod, tvm.script.from_source(mod.script(show_meta=True)))
    loaded = tvm.ir.load_json(tvm.ir.save_json(mod))
    vm = relax.VirtualMachine(pipeline.build(loaded, "host"), tvm.cpu())
    for name, (_, x, ref) in cases.items():
        np.testing.assert_array_equal(vm[name](tvm.runtime.tensor(x)).numpy(), ref, err_msg=name)


@settings(max_examples=10, deadline=None)
@given(kind=st.sampled_from(KINDS), channels=st.sampled_from([3, 8, 20, 64]), out_channels=st.sampled_from([1, 6, 16, 64]),
       size=st.tuples(st.integers(1, 9), st.integers(1, 9)), stride=st.integers(1, 2),
       activation=st.sampled_from(["none", "relu", "relu6"]), x_zp=zero_points, per_channel=st.booleans(),
       residual=st.booleans())
def test_scheduled_shift_conv2d_int8_any_shape(kind, channels, out_channels, size, stride, activation, x_zp,
                                               per_channel, residual):
    make, x, ref = conv_int8_case(kind, channels, out_channels, size, stride=stride, activation=activation, x_zp=x_zp,
                                  per_channel=per_channel, residual=residual, out_zp=-x_zp // 2)
    vm = relax.VirtualMachine(pipeline.build(build_module(make, [(x.shape, "int8")]), "host"), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), ref)
