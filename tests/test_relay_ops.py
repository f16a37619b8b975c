"""The relax.ecnn operators on the host: numerics vs numpy and the PyTorch modules, fusion, IR I/O."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from hypothesis import given, settings, strategies as st
from tvm import relax

import relay_ops
from reference import active_shift_ref, circular_shift_ref, requantize_ref, shift_ref
from relax_helpers import build_module, from_nchw4c, run_module, run_op, to_nchw4c
from tvm_ecnn.nn import ActiveShift2d, Shift2d, SparseShift2d
from tvm_ecnn.nn.offsets import grouped_shift_offsets

SETTINGS = settings(max_examples=25, deadline=None)
shapes = st.tuples(st.integers(1, 2), st.integers(1, 12), st.integers(1, 7), st.integers(1, 7))


def _conv1x1(x, w, stride=1):
    return np.einsum("nchw,oc->nohw", x[:, :, ::stride, ::stride].astype(np.float64), w[:, :, 0, 0].astype(np.float64))


@SETTINGS
@given(shape=shapes, k=st.sampled_from([1, 3, 5]), d=st.integers(1, 2), mapping=st.sampled_from(["interleaved", "grouped"]))
def test_shift2d_matches_numpy(shape, k, d, mapping):
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    out = run_op(lambda v: relay_ops.shift2d(v, k, d, mapping), x)
    np.testing.assert_array_equal(out, shift_ref(x, grouped_shift_offsets(shape[1], k, d, mapping)))


def test_shift2d_matches_torch_module_and_circular():
    x = torch.randn(2, 20, 6, 5)
    for mapping in ("interleaved", "grouped"):
        ref = Shift2d(20, 3, 1, mapping)(x).numpy()
        np.testing.assert_array_equal(run_op(lambda v: relay_ops.shift2d(v, mapping=mapping), x.numpy()), ref)
    circ = run_op(lambda v: relay_ops.shift2d(v, padding_mode="circular"), x.numpy())
    np.testing.assert_array_equal(circ, circular_shift_ref(x.numpy(), grouped_shift_offsets(20)))


def test_shift2d_int8_is_exact():
    x = np.random.default_rng(1).integers(-128, 128, (1, 9, 4, 4)).astype("int8")
    np.testing.assert_array_equal(run_op(relay_ops.shift2d, x), shift_ref(x, grouped_shift_offsets(9)))


offset_values = st.one_of(st.floats(-9, 9, allow_nan=False, width=32), st.integers(-3, 3).map(float), st.just(0.0))


@SETTINGS
@given(shape=shapes, stride=st.integers(1, 3), padding=st.integers(0, 2), data=st.data())
def test_active_shift2d_matches_numpy_and_torch(shape, stride, padding, data):
    offsets = np.array(data.draw(st.lists(st.tuples(offset_values, offset_values), min_size=shape[1], max_size=shape[1])), "float32")
    x = np.random.default_rng(2).standard_normal(shape).astype("float32")
    out = run_op(lambda v, o: relay_ops.active_shift2d(v, o, stride, padding), x, offsets)
    np.testing.assert_allclose(out, active_shift_ref(x, offsets, stride, padding), atol=1e-5, rtol=1e-5)
    module = ActiveShift2d(shape[1], stride, padding)
    with torch.no_grad():
        module.offset.copy_(torch.from_numpy(offsets))
        np.testing.assert_allclose(out, module(torch.from_numpy(x)).numpy(), atol=1e-5, rtol=1e-5)


@SETTINGS
@given(shape=shapes, inplace=st.booleans(), data=st.data())
def test_sparse_shift2d_matches_numpy(shape, inplace, data):
    rng = np.random.default_rng(3)
    offsets = rng.integers(-9, 10, (shape[1], 2)).astype("int32") * rng.integers(0, 2, (shape[1], 1)).astype("int32")
    x = rng.standard_normal(shape).astype("float32")
    out = run_op(lambda v: relay_ops.sparse_shift2d(v, relax.const(offsets), inplace=inplace), x)
    np.testing.assert_array_equal(out, shift_ref(x, offsets))


def test_sparse_shift2d_matches_torch_module():
    module = SparseShift2d(12)
    x = torch.randn(1, 12, 5, 5)
    offsets = module.integer_offsets().numpy().astype("int32")
    out = run_op(lambda v: relay_ops.sparse_shift2d(v, relax.const(offsets)), x.numpy())
    np.testing.assert_array_equal(out, module(x).detach().numpy())


def _lowered(mod):
    return relax.transform.LegalizeOps()(mod)


def test_sparse_shift2d_inplace_moves_only_shifted_channels():
    offsets = np.zeros((16, 2), "int32")
    offsets[[3, 11]] = [[1, 0], [-2, 1]]
    mod = build_module(lambda v: relay_ops.sparse_shift2d(v, relax.const(offsets), inplace=True), [((1, 16, 6, 6), "float32")])
    lowered = _lowered(mod)
    kernels = [f for _, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(kernels) == 1
    chan = [p for p in kernels[0].params if p.name == "chan"][0]
    assert [int(d) for d in chan.shape] == [2], "the kernel must loop over the 2 moved channels only"
    assert "call_tir_inplace" in lowered.script()
    still = build_module(lambda v: relay_ops.sparse_shift2d(v, relax.const(np.zeros((16, 2), "int32")), inplace=True), [((1, 16, 6, 6), "float32")])
    assert not [f for _, f in _lowered(still).functions.items() if isinstance(f, tvm.tirx.PrimFunc)]


SHIFT_KINDS = ["none", "grouped", "sparse", "active"]


def _offsets_for(kind, channels, rng):
    if kind == "sparse":
        return rng.integers(-2, 3, (channels, 2)).astype("int32")
    if kind == "active":
        return rng.uniform(-2.5, 2.5, (channels, 2)).astype("float32")
    return None


def _shift_numpy(kind, x, offsets):
    if kind == "none":
        return x.astype(np.float64)
    if kind == "grouped":
        return shift_ref(x, grouped_shift_offsets(x.shape[1])).astype(np.float64)
    if kind == "sparse":
        return shift_ref(x, offsets).astype(np.float64)
    return active_shift_ref(x, offsets)


@SETTINGS
@given(kind=st.sampled_from(SHIFT_KINDS), shape=shapes, out_ch=st.integers(1, 9), stride=st.integers(1, 2),
       activation=st.sampled_from(["none", "relu", "relu6"]), with_bias=st.booleans())
def test_shift_conv2d_matches_numpy(kind, shape, out_ch, stride, activation, with_bias):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype("float32") * 3
    w = rng.standard_normal((out_ch, shape[1], 1, 1)).astype("float32")
    b = rng.standard_normal(out_ch).astype("float32")
    offsets = _offsets_for(kind, shape[1], rng)
    const = lambda a: None if a is None else relax.const(a)  # noqa: E731
    out = run_op(lambda v: relay_ops.shift_conv2d(v, relax.const(w), kind, offsets=const(offsets), stride=stride,
                                                  bias=const(b if with_bias else None), activation=activation), x)
    ref = _conv1x1(_shift_numpy(kind, x, offsets), w, stride) + (b[None, :, None, None] if with_bias else 0)
    ref = {"none": ref, "relu": np.maximum(ref, 0), "relu6": np.clip(ref, 0, 6)}[activation]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", SHIFT_KINDS)
def test_fused_equals_unfused(kind):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 18, 8, 8)).astype("float32")
    w = rng.standard_normal((12, 18, 1, 1)).astype("float32")
    b = rng.standard_normal(12).astype("float32")
    res = rng.standard_normal((1, 12, 4, 4)).astype("float32")
    offsets = _offsets_for(kind, 18, rng)
    off = None if offsets is None else relax.const(offsets)

    def unfused(v, r):
        shifted = {"none": lambda: v, "grouped": lambda: relay_ops.shift2d(v),
                   "sparse": lambda: relay_ops.sparse_shift2d(v, off), "active": lambda: relay_ops.active_shift2d(v, off)}[kind]()
        y = relax.op.nn.conv2d(shifted, relax.const(w), strides=2)
        y = relax.op.add(relax.op.add(y, relax.const(b.reshape(1, 12, 1, 1))), r)
        return relax.op.nn.relu(y)

    fused = run_op(lambda v, r: relay_ops.shift_conv2d(v, relax.const(w), kind, offsets=off, stride=2, bias=relax.const(b),
                                                      residual=r, activation="relu"), x, res)
    np.testing.assert_allclose(fused, run_op(unfused, x, res), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["none", "grouped", "sparse"])
@pytest.mark.parametrize("requant", [False, True])
def test_shift_conv2d_int8_is_exact(kind, requant):
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, (1, 16, 6, 6)).astype("int8")
    w = rng.integers(-128, 128, (8, 16, 1, 1)).astype("int8")
    b = rng.integers(-5000, 5000, 8).astype("int32")
    offsets = _offsets_for(kind, 16, rng)
    scale, zp = (0.0123, 3) if requant else (0.0, 0)
    out = run_op(lambda v: relay_ops.shift_conv2d(v, relax.const(w), kind, offsets=None if offsets is None else relax.const(offsets),
                                                  bias=relax.const(b), activation="relu", requant_scale=scale,
                                                  requant_zero_point=zp), x)
    shifted = x if kind == "none" else shift_ref(x, grouped_shift_offsets(16) if kind == "grouped" else offsets)
    acc = np.einsum("nchw,oc->nohw", shifted.astype(np.int64), w[:, :, 0, 0].astype(np.int64)) + b[None, :, None, None]
    if requant:
        ref = requantize_ref(acc, [scale] * 8, zp, "relu")
    else:
        ref = np.maximum(acc, 0).astype(np.int32)
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(out, ref)


def test_nchw4c_layout_matches_nchw():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 16, 5, 5)).astype("float32")
    w = rng.standard_normal((8, 16, 1, 1)).astype("float32")
    active = rng.uniform(-2, 2, (16, 2)).astype("float32")
    sparse = rng.integers(-2, 3, (16, 2)).astype("int32")
    cases = [
        lambda v, lay: relay_ops.shift2d(v, layout=lay),
        lambda v, lay: relay_ops.active_shift2d(v, relax.const(active), layout=lay),
        lambda v, lay: relay_ops.sparse_shift2d(v, relax.const(sparse), layout=lay),
        lambda v, lay: relay_ops.shift_conv2d(v, relax.const(w), "grouped", activation="relu", layout=lay),
    ]
    for make in cases:
        plain = run_op(lambda v: make(v, "NCHW"), x)
        packed = run_op(lambda v: make(v, "NCHW4c"), to_nchw4c(x))
        np.testing.assert_allclose(from_nchw4c(packed), plain, rtol=1e-6, atol=1e-6)


def _all_ops_module():
    rng = np.random.default_rng(8)
    w = relax.const(rng.standard_normal((8, 9, 1, 1)).astype("float32"))
    act = relax.const(rng.uniform(-1, 1, (9, 2)).astype("float32"))
    sparse = relax.const(rng.integers(-1, 2, (9, 2)).astype("int32"))

    def body(v):
        y = relay_ops.shift2d(v, 3, 1, "grouped", "circular")
        y = relay_ops.active_shift2d(y, act)
        y = relay_ops.sparse_shift2d(y, sparse)
        return relay_ops.shift_conv2d(y, w, "sparse", offsets=sparse, bias=relax.const(np.ones(8, "float32")), activation="relu6")

    return build_module(body, [((1, 9, 6, 6), "float32")])


def test_tvmscript_print_parse_round_trip():
    mod = _all_ops_module()
    text = mod.script(show_meta=True)
    for name in ("shift2d", "active_shift2d", "sparse_shift2d", "shift_conv2d"):
        assert f"R.ecnn.{name}(" in text
    tvm.ir.assert_structural_equal(mod, tvm.script.from_source(text))


def test_json_round_trip_and_numerics_survive():
    mod = _all_ops_module()
    loaded = tvm.ir.load_json(tvm.ir.save_json(mod))
    tvm.ir.assert_structural_equal(mod, loaded)
    x = np.random.default_rng(9).standard_normal((1, 9, 6, 6)).astype("float32")
    np.testing.assert_array_equal(run_module(loaded, x), run_module(mod, x))


def _emit(fn, input_types):
    return build_module(fn, input_types)


@pytest.mark.parametrize(
    "make, types, arg",
    [
        (lambda v: relay_ops.shift2d(v), [((3, 4, 4), "float32")], "x"),
        (lambda v: relay_ops.shift2d(v, kernel_size=4), [((1, 3, 4, 4), "float32")], "kernel_size"),
        (lambda v: relay_ops.active_shift2d(v, relax.const(np.zeros((3, 3), "float32"))), [((1, 3, 4, 4), "float32")], "offsets"),
        (lambda v: relay_ops.active_shift2d(v, relax.const(np.zeros((3, 2), "float32")), stride=0), [((1, 3, 4, 4), "float32")], "stride"),
        (lambda v: relay_ops.sparse_shift2d(v, relax.const(np.zeros((4, 2), "int32"))), [((1, 3, 4, 4), "float32")], "offsets"),
        (lambda v: relay_ops.sparse_shift2d(v, relax.const(np.zeros((3, 2), "float32"))), [((1, 3, 4, 4), "float32")], "offsets"),
        (lambda v: relay_ops.shift_conv2d(v, relax.const(np.zeros((2, 3, 1, 1), "float16"))), [((1, 3, 4, 4), "float32")], "weight"),
        (lambda v: relay_ops.shift_conv2d(v, relax.const(np.zeros((2, 4, 1, 1), "float32"))), [((1, 3, 4, 4), "float32")], "weight"),
        (lambda v: relay_ops.shift_conv2d(v, relax.const(np.zeros((2, 3, 1, 1), "float32")), "sparse"), [((1, 3, 4, 4), "float32")], "offsets"),
        (lambda v: relay_ops.shift_conv2d(v, relax.const(np.zeros((2, 3, 1, 1), "float32")), stride=0), [((1, 3, 4, 4), "float32")], "stride"),
        (lambda v: relay_ops.shift_conv2d(v, relax.const(np.zeros((2, 3, 1, 1), "float32")), bias=relax.const(np.zeros(3, "float32"))), [((1, 3, 4, 4), "float32")], "bias"),
    ],
)
def test_bad_input_names_op_and_argument(make, types, arg):
    with pytest.raises(ValueError, match=rf"relax\.ecnn\.\w+: argument '{arg}'"):
        build_module(make, types)


@SETTINGS
@given(shape=shapes, dtype=st.sampled_from(["float16", "float32", "float64", "int8", "int32"]), data=st.data())
def test_integer_shifts_are_exact_for_every_dtype(shape, dtype, data):
    rng = np.random.default_rng(10)
    x = (rng.standard_normal(shape) * 50).astype(dtype)
    offsets = np.array(data.draw(st.lists(st.tuples(st.integers(-9, 9), st.integers(-9, 9)),
                                          min_size=shape[1], max_size=shape[1])), "int32")
    np.testing.assert_array_equal(run_op(lambda v: relay_ops.sparse_shift2d(v, relax.const(offsets)), x), shift_ref(x, offsets))
    np.testing.assert_array_equal(run_op(relay_ops.shift2d, x), shift_ref(x, grouped_shift_offsets(shape[1])))


@pytest.mark.parametrize("dtype, tol", [("float16", 2e-2), ("float64", 1e-12)])
def test_active_shift2d_other_float_dtypes(dtype, tol):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 6, 7, 5)).astype(dtype)
    offsets = rng.uniform(-2, 2, (6, 2)).astype(dtype)
    # relax.const turns float64 numpy arrays into float32 unless told the dtype
    out = run_op(lambda v: relay_ops.active_shift2d(v, relax.const(offsets, dtype), 2, 1), x)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, active_shift_ref(x, offsets, 2, 1), rtol=tol, atol=tol)
