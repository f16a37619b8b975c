"""Adreno (OpenCL) path of the plugin: every kernel of every ecnn op and of a zoo model, buffer and texture
targets, compiled by the plugin's pipelines and run on PoCL against the host oracle (notes emulated-device B3)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import tvm
import tvm_ffi
from relax_helpers import build_module, run_module
from test_int8_ops import INT8_CASES
from tvm import relax
from tvm.s_tir import Schedule
from tvm.script import tirx as T

import relay_ops
import targets
from schedules import adreno_int8
from tvm_ecnn import models, pipeline
from tvm_ecnn.compiler_pass.ecnn_texture_layout import EcnnTextureLayout
from tvm_ecnn.compiler_pass.fold_packed_weights import FoldPackedWeights
from tvm_ecnn.deploy import float16_storage
from tvm_ecnn.frontend import from_torch
from tvm_ecnn.quantize import quantize, run_host

pytest.importorskip("pyopencl", reason="pyopencl is missing: pip install the project's opencl extra")
from tvm_ecnn.device import pocl

TARGETS = ("adreno", "adreno-texture")
ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("pocl_platform")


@pytest.fixture(scope="module")
def plugin_lowering():
    """Make ``pocl`` lower with the plugin's Relax pipeline, and build its oracle from the plugin's passes.

    ``pocl.lower_for_adreno`` lowers with TVM's ``relax.get_default_pipeline`` and its oracle re-runs TVM's
    ``relax.backend.adreno.legalize_passes`` without dlight; neither knows the ecnn passes (layout, texture scopes,
    hand schedules). The oracle gets ``pipeline.tuning_passes`` (everything up to FuseTIR, not yet scheduled)
    followed by TVM's post-fusion passes, so that its PrimFuncs have the same names and signatures.
    """
    patch = pytest.MonkeyPatch()
    tvm_legalize = relax.backend.adreno.legalize_passes

    def oracle_passes(target):
        passes = tvm_legalize(target)
        names = [p.info.name for p in passes]
        at = names.index("FuseTIR") + 1
        while names[at] == "DeadCodeElimination":
            at += 1
        return [pipeline.tuning_passes(target), _PackInt8ConvWeights, FoldPackedWeights()] + passes[at:]  # as pipeline

    patch.setattr(relax, "get_default_pipeline", pipeline.relax_pipeline)
    patch.setattr(relax.backend.adreno, "legalize_passes", oracle_passes)
    yield
    patch.undo()


@tvm.transform.module_pass(opt_level=0, name="PackInt8ConvWeights")
def _PackInt8ConvWeights(mod, _ctx):  # noqa: N802
    """The oracle's int8 convs take the weights packed as the Adreno schedule packs them (same signatures)."""
    mod = mod.clone()
    for gv, func in list(mod.functions.items()):
        sch = Schedule(func) if isinstance(func, tvm.tirx.PrimFunc) else None
        found = sch and adreno_int8.int8_conv2d(sch)
        if found:
            adreno_int8.pack_weights(sch, *found)
            mod[gv] = sch.mod["main"]
    return mod


def run_on_pocl(mod, target_name: str, inputs: dict) -> pocl.PoclRun:
    target = targets.get_target(target_name)
    return pocl.run_relax_on_pocl(mod, target, inputs, tir_pipeline=pipeline.tir_pipeline(target))


def assert_every_kernel_ran_and_matches(run: pocl.PoclRun) -> None:
    """Every kernel of every PrimFunc ``main`` calls ran on PoCL; each call matches the oracle.

    The only kernels allowed not to run are those ``main`` no longer calls: TVM legalizes ``R.reshape`` (and a
    transpose that only moves a unit axis) to a PrimFunc, then lowers the call to a VM builtin (a view), leaving
    the PrimFunc unused (``reshape``, ``fused_transpose_reshape1``, ...).
    """
    called = {c.func for c in run.checks}
    in_main = {gv.name_hint for gv in relax.analysis.all_global_vars(run.lowering.relax_mod["main"])}
    assert not (set(run.lowering.launches) - called) & in_main
    launched = {k for c in run.checks for k in c.kernels}
    assert launched == {k for f in called for k in run.lowering.launches[f]}
    bad = [c for c in run.checks if c.max_abs_err > ATOL * max(1.0, c.max_abs_ref)]  # relative for large values
    assert not bad, bad


def ecnn_launches(run: pocl.PoclRun) -> dict[str, list[str]]:
    return {f: ks for f, ks in run.lowering.launches.items() if f.startswith("ecnn_")}


# --- every op, both targets ------------------------------------------------------------------------------------


def op_chain(dtype="float32"):
    """conv3x3 -> every ecnn op (all shift kinds, strides 1/2, epilogues, odd sizes) -> conv1x1.

    The convolutions make the texture path pack activations (NCHW4c); the last ``shift_conv2d`` has 6 output
    channels, which NCHW4c cannot hold, so it must stay NCHW there.
    """
    rng = np.random.default_rng(0)

    def const(*shape):  # unit-variance outputs: errors stay relative to O(1) values
        return relax.const((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(dtype))

    def offsets(channels, integer):
        table = rng.integers(-2, 3, (channels, 2)) if integer else rng.uniform(-1.5, 1.5, (channels, 2))
        return relax.const(table.astype("int32" if integer else dtype))

    def body(x):
        y = relax.op.nn.relu(relax.op.nn.conv2d(x, const(12, 8, 3, 3), padding=1))  # 12 x 7 x 10
        y = relay_ops.shift_conv2d(y, const(12, 12, 1, 1), bias=const(12), activation="relu", residual=y)
        y = relay_ops.shift2d(y, kernel_size=3, dilation=2)
        y = relay_ops.sparse_shift2d(y, offsets(12, True))
        y = relay_ops.active_shift2d(y, offsets(12, False))
        y = relay_ops.shift_conv2d(y, const(8, 12, 1, 1), "sparse", offsets=offsets(12, True), stride=2,
                                   activation="relu6")  # 8 x 4 x 5
        y = relay_ops.shift_conv2d(y, const(16, 8, 1, 1), "active", offsets=offsets(8, False), padding=1, stride=2,
                                   bias=const(16))  # 16 x 3 x 4
        y = relay_ops.shift_conv2d(y, const(16, 16, 1, 1), "none")
        y = relay_ops.shift2d(y, padding_mode="circular")
        y = relay_ops.shift_conv2d(y, const(6, 16, 1, 1), mapping="grouped", bias=const(6))
        return relax.op.nn.conv2d(y, const(4, 6, 1, 1))

    return build_module(body, [((1, 8, 7, 10), dtype)])


@pytest.mark.parametrize("target", TARGETS)
def test_every_ecnn_op_runs_on_pocl(plugin_lowering, target):
    x = np.random.default_rng(1).standard_normal((1, 8, 7, 10)).astype("float32")
    run = run_on_pocl(op_chain(), target, {"x0": x})
    assert_every_kernel_ran_and_matches(run)
    ecnn = ecnn_launches(run)
    assert len([c for c in run.checks if c.func.startswith("ecnn_")]) == 9
    assert all(len(kernels) == 1 for kernels in ecnn.values()), ecnn  # shift + 1x1 + epilogue: one kernel
    if target == "adreno-texture":
        packed = [f for f in ecnn if len(run.lowering.relax_mod[f].params[0].ty.shape) == 5]
        assert len(packed) == len(ecnn) - 1  # all but the 6-channel one stay NCHW4c
        # no ecnn op is wrapped: x packed for the first conv, one unpack before the 6-channel op
        assert len([c for c in run.checks if c.func.startswith("te_layout_transform")]) == 2
        # they read their activations from images (outputs are images too unless an NCHW consumer reads them)
        assert all(any(p.is_texture for p in k.params) for k in run.lowering.kernels
                   if k.name.removesuffix("_kernel") in packed)
        # tvm.compile with the plugin's pipelines ships exactly the OpenCL that ran (notes bug C: TVM's own does not)
        assert pocl.opencl_source(pipeline.build(op_chain(), target)) == run.lowering.source


def test_fp16_storage_with_float_accumulation(plugin_lowering):
    """PoCL has no cl_khr_fp16 (notes F8): check the half kernels' source, run their fp32 twin."""
    target = targets.get_target("adreno")
    source = pocl.lower_for_adreno(op_chain("float16"), target, pipeline.tir_pipeline(target)).source
    kernels = re.findall(r"__kernel void (ecnn_shift_conv2d\w*)\(([^)]*)\) \{(.*?)\n\}", source, re.DOTALL)
    assert len(kernels) == 5
    for name, params, body in kernels:
        assert "__global half*" in params and "__global float*" not in params, name
        assert re.search(r"\bfloat shift_conv2d_local_ptr\[", body), name  # the accumulator
        assert "convert_float(" in body, name  # half operands widened before the multiply-add
    x = np.random.default_rng(1).standard_normal((1, 8, 7, 10)).astype("float32")
    assert_every_kernel_ran_and_matches(run_on_pocl(op_chain("float32"), "adreno", {"x0": x}))


@T.prim_func(s_tir=True)
def _scalar_texels(a: T.Buffer((1, 2, 4, 4, 4), "float32"),
                   b: T.Buffer((1, 2, 4, 4, 4), "float32", scope="global.texture")):
    T.func_attr({"global_symbol": "scalar_texels", "tirx.noalias": True})
    for i in T.thread_binding(128, thread="threadIdx.x"):
        with T.sblock("b"):
            v = T.axis.spatial(128, i)
            b[0, v // 64, v // 16 % 4, v // 4 % 4, v % 4] = a[0, v // 64, v // 16 % 4, v // 4 % 4, v % 4]


def test_texture_stores_of_single_lanes_are_refused():
    """One work-item per channel cannot write an RGBA texel: the build fails instead of broadcasting (notes F7)."""
    target = targets.get_target("adreno-texture")
    with pytest.raises(ValueError, match="writes 32 of a texel's 128 bits"):
        tvm.compile(tvm.IRModule({"scalar_texels": _scalar_texels}), target=target,
                    tir_pipeline=pipeline.tir_pipeline(target))


# --- texture path: the graph ops stock TVM 0.27 mis-lowers there ----------------------------------------------


def texture_gap_ops(dtype="float32"):
    """The ops that failed on ``adreno-texture``: depthwise and grouped conv2d (topi's NCHWc conv divides by zero, or
    reads the wrong lanes when a group is not whole texels), ``avg_pool2d`` and ``concatenate`` (dlight's generic
    GPU rules write single texture lanes: refused by the F7 guard). In ``float16`` every conv also hit FuseTIR's
    "Inconsistent buffers" (topi's conv writes float32)."""
    rng = np.random.default_rng(0)

    def const(*shape):
        return relax.const((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(dtype))

    def body(x):  # 8 x 12 x 12
        y = relax.op.nn.relu(relax.op.nn.conv2d(x, const(16, 8, 3, 3), padding=1))
        d = relax.op.nn.conv2d(y, const(16, 1, 3, 3), strides=2, padding=1, groups=16)  # depthwise, 16 x 6 x 6
        d = relax.op.clip(relax.op.add(d, const(1, 16, 1, 1)), 0.0, 6.0)
        whole = relax.op.nn.conv2d(d, const(16, 4, 1, 1), groups=4)  # 4 channels (one texel) per group
        # 2 input channels per group: stock topi reads lanes 0-1 of chunk 0 for every group (silently wrong)
        split = relax.op.nn.conv2d(d, const(32, 2, 3, 3), padding=1, groups=8)
        pooled = relax.op.nn.avg_pool2d(y, pool_size=2, strides=2)  # 16 x 6 x 6
        cat = relax.op.concat([whole, split, pooled], axis=1)  # 64 channels
        return relax.op.nn.conv2d(cat, const(8, 64, 1, 1))

    return build_module(body, [((1, 8, 12, 12), dtype)])


def _writes_image(kernel: pocl.KernelInfo) -> bool:
    signature = kernel.source.split(f"__kernel void {kernel.name}(", 1)[1].split(")", 1)[0]
    return "__write_only image2d_array_t" in signature


def test_texture_grouped_conv_pool_concat_run_on_pocl(plugin_lowering):
    x = np.random.default_rng(1).standard_normal((1, 8, 12, 12)).astype("float32")
    run = run_on_pocl(texture_gap_ops(), "adreno-texture", {"x0": x})
    assert_every_kernel_ran_and_matches(run)
    np.testing.assert_allclose(run.outputs, run_module(texture_gap_ops(), x), atol=ATOL, rtol=ATOL)
    writers = {k.name for k in run.lowering.kernels if _writes_image(k)}
    # ScheduleTexelWrites: the pool and the concat store whole texels into images
    assert any(k.startswith("avg_pool2d") for k in writers), writers
    assert any(k.startswith("concatenate") for k in writers), writers
    convs = [f for f in run.lowering.launches if "conv2d_NCHWc" in f]
    assert len(convs) == 5  # every conv2d stays packed (NCHW4c), the grouped ones included


@pytest.mark.parametrize("module", [op_chain, texture_gap_ops])
def test_fp16_storage_on_texture_runs_on_pocl(plugin_lowering, module):
    """fp16 on ``adreno-texture`` (notes: FuseTIR "Inconsistent buffers" in stock TVM 0.27): half images and
    buffers, run on PoCL with half arithmetic emulated in float (no cl_khr_fp16, notes F8), against the fp32
    host reference at fp16 tolerance."""
    mod32 = module("float32")
    shape = tuple(int(s) for s in mod32["main"].params[0].ty.shape.values)
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    run = pocl.run_relax_on_pocl(module("float16"), targets.get_target("adreno-texture"), {"x0": x.astype("float16")},
                                 tir_pipeline=pipeline.tir_pipeline(targets.get_target("adreno-texture")),
                                 half_as_float=True)
    assert "write_imageh" in run.lowering.source and "read_imageh" in run.lowering.source
    assert re.search(r"\bfloat conv2d_NCHWc_OIHWo\w*_local_ptr\[", run.lowering.source)  # summed in float
    bad = [c for c in run.checks if c.rel_err > 1e-2]
    assert not bad, bad
    expected = run_module(mod32, x)
    assert np.abs(np.asarray(run.outputs, "float64") - expected).max() <= 1e-2 * np.abs(expected).max()


# --- texture layout pass ---------------------------------------------------------------------------------------


def _after_convert_layout(mod):
    convert = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NCHW4c", "OIHW4o", "NCHW4c"]})
    return relax.transform.Normalize()(convert(mod))


def _calls(mod) -> list[tuple[str, str]]:
    """``(op name, layout attr)`` of every call in main, in order."""
    found = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call):
                found.append((value.op.name, str(value.attrs["layout"]) if "ecnn" in value.op.name else ""))
    return found


def test_texture_layout_pass_keeps_ecnn_chains_packed():
    rng = np.random.default_rng(0)

    def body(x):
        y = relax.op.nn.conv2d(x, relax.const(rng.standard_normal((8, 4, 1, 1)).astype("float32")))
        z = relay_ops.shift2d(y)
        z = relay_ops.shift_conv2d(z, relax.const(rng.standard_normal((8, 8, 1, 1)).astype("float32")), residual=y)
        z = relay_ops.shift_conv2d(z, relax.const(rng.standard_normal((6, 8, 1, 1)).astype("float32")))
        return relax.op.nn.relu(z)

    mod = _after_convert_layout(build_module(body, [((1, 4, 6, 6), "float32")]))
    # ConvertLayout packs x and the conv weight, and unpacks the conv output for shift2d and for the residual
    assert _calls(mod).count(("relax.layout_transform", "")) == 4
    calls = _calls(EcnnTextureLayout()(mod))
    ops = [c for c in calls if c[0] != "relax.layout_transform"]
    assert ops == [("relax.nn.conv2d", ""), ("relax.ecnn.shift2d", "NCHW4c"), ("relax.ecnn.shift_conv2d", "NCHW4c"),
                   ("relax.ecnn.shift_conv2d", "NCHW"), ("relax.nn.relu", "")]
    # the two packs stay; one unpack remains, before the 6-channel op, which NCHW4c cannot hold
    assert calls.count(("relax.layout_transform", "")) == 3
    assert calls.index(("relax.ecnn.shift_conv2d", "NCHW")) == calls.index(("relax.ecnn.shift_conv2d", "NCHW4c")) + 2


# --- zoo model -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shiftresnet20():
    torch.manual_seed(0)
    model = models.get("shiftresnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    return from_torch(model, (x,)), x.numpy(), model(x).detach().numpy()


@pytest.mark.parametrize("target", TARGETS)
def test_shiftresnet20_one_kernel_per_shift_block(plugin_lowering, shiftresnet20, target):
    mod, x, expected = shiftresnet20
    run = run_on_pocl(mod, target, {"x": x})
    assert_every_kernel_ran_and_matches(run)
    np.testing.assert_allclose(run.outputs, expected, atol=ATOL, rtol=ATOL)
    launched = [k for c in run.checks for k in c.kernels]
    assert len([k for k in launched if "shift_conv2d" in k]) == 9  # one kernel per shift + 1x1 block
    assert len(launched) == {"adreno": 23, "adreno-texture": 25}[target]  # + stem, expansions, shortcuts, head
    transforms = [c.func for c in run.checks if c.func.startswith("te_layout_transform")]
    if target == "adreno-texture":
        # packed once after the 3-channel stem, unpacked once before the mean: no ecnn op is wrapped
        assert len(transforms) == 2
        assert all(len(run.lowering.relax_mod[f].params[0].ty.shape) == 5 for f in ecnn_launches(run))
    else:
        assert not transforms


# Zoo models that stock TVM 0.27 cannot compile on adreno-texture (32x32 keeps each run to ~15-25 s): FE-Net's IBPool
# avg_pool2d (single-lane image writes, refused by the F7 guard), MobileNetV2's depthwise convs (topi's NCHWc conv
# divides by zero), SqueezeNet's fire-module concat (single-lane image writes), AS-ResNet (buffer <-> image copies,
# R.to_vdevice, in main).
TEXTURE_ZOO = {"fenet1_0": "avg_pool2d", "mobilenet_v2": "conv2d_NCHWc", "squeezenet1_1": "concatenate",
               "asresnet_w32": "ecnn_"}


@pytest.mark.parametrize("name", sorted(TEXTURE_ZOO))
def test_zoo_model_on_texture_runs_on_pocl(plugin_lowering, name):
    torch.manual_seed(0)
    model = models.get(name).eval()
    x = torch.randn(1, 3, 32, 32)
    expected = model(x).detach().numpy()
    run = run_on_pocl(from_torch(model, (x,)), "adreno-texture", {"x": x.numpy()})
    assert_every_kernel_ran_and_matches(run)
    scale = float(np.abs(expected).max())
    assert float(np.abs(run.outputs - expected).max()) <= ATOL * scale, (name, scale)
    assert any(TEXTURE_ZOO[name] in f for f in run.lowering.launches)
    assert any(_writes_image(k) for k in run.lowering.kernels)


def test_fp16_zoo_model_on_texture_runs_on_pocl(plugin_lowering):
    """``compile --dtype fp16``'s module (``deploy.float16_storage`` of the fp32 import: TVM's importer cannot import a
    ``.half()`` model with batch norm) on ``adreno-texture``: half images, every kernel on PoCL, PyTorch fp32 output."""
    torch.manual_seed(0)
    model = models.get("shiftresnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    expected = model(x).detach().numpy()
    mod = float16_storage(from_torch(model, (x,)))
    run = pocl.run_relax_on_pocl(mod, targets.get_target("adreno-texture"), {"x": x.numpy()},
                                 tir_pipeline=pipeline.tir_pipeline(targets.get_target("adreno-texture")),
                                 half_as_float=True)
    assert "write_imageh" in run.lowering.source
    assert len([k for c in run.checks for k in c.kernels if "shift_conv2d" in k]) == 9
    bad = [c for c in run.checks if c.rel_err > 1e-2]
    assert not bad, bad
    assert np.abs(np.asarray(run.outputs, "float64") - expected).max() <= 1e-2 * np.abs(expected).max()


def test_building_for_texture_leaves_the_callers_module_unchanged():
    """TVM's AnnotateCustomMemoryScope types constants in place, and our passes assign into their module: the
    pipeline must work on its own copy, or a second build of the same module (any target) fails or differs."""
    mod, fresh = op_chain(), op_chain()
    pipeline.build(mod, "adreno-texture")
    assert tvm_ffi.structural_equal(mod, fresh), tvm_ffi.get_first_structural_mismatch(mod, fresh)
    x = np.random.default_rng(1).standard_normal((1, 8, 7, 10)).astype("float32")
    host = relax.VirtualMachine(pipeline.build(mod, "host"), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(host, run_module(fresh, x), rtol=1e-4, atol=1e-4)


# --- int8 (test_int8_ops.INT8_CASES): the buffer path, bit-exact against the numpy reference ----------------------


@pytest.mark.parametrize("name", list(INT8_CASES))
def test_int8_kernels_on_pocl_are_bit_exact(plugin_lowering, name):
    make, x, ref = INT8_CASES[name]
    run = run_on_pocl(build_module(make, [(x.shape, "int8")]), "adreno", {"x0": x})
    assert all(c.max_abs_err == 0 for c in run.checks), run.checks
    assert run.outputs.dtype == ref.dtype
    np.testing.assert_array_equal(run.outputs, ref)


# Zoo models in int8 on both Adreno paths (docs/int8-quantization.md): int8 tensors stay in buffers on
# adreno-texture too, and every kernel on PoCL equals the host LLVM build of the same module, bit for bit.
INT8_ZOO = ("shiftresnet20", "squeezenet1_1")


@pytest.fixture(scope="module", params=INT8_ZOO)
def int8_zoo(request):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    mod = quantize(from_torch(models.get(request.param).eval(), (x,)), x.numpy()).mod
    return mod, x.numpy(), run_host(mod, x.numpy())


@pytest.mark.parametrize("target", TARGETS)
def test_int8_zoo_model_on_pocl_equals_the_host_build(plugin_lowering, int8_zoo, target):
    mod, x, host = int8_zoo
    run = run_on_pocl(mod, target, {"x": x})
    assert_every_kernel_ran_and_matches(run)
    exact = [c for c in run.checks if c.max_abs_err != 0]
    assert not exact, exact
    np.testing.assert_array_equal(run.outputs, host)
    int8_params = [p for k in run.lowering.kernels for p in k.params if p.dtype == "int8"]
    assert int8_params and not any(p.is_texture for p in int8_params)


def int8_conv(channels, out_channels, kernel, stride=1, groups=1, size=(9, 8)):
    """int8 conv2d -> int32 + bias -> requantize with ReLU, as ``tvm_ecnn.quantize`` emits it (one fused kernel)."""
    rng = np.random.default_rng(kernel * 10 + stride + groups)
    weight = rng.integers(-127, 128, (out_channels, channels // groups, kernel, kernel)).astype("int8")
    bias = rng.integers(-2000, 2000, (1, out_channels, 1, 1)).astype("int32")
    multiplier = rng.uniform(2e-4, 2e-3, (1, out_channels, 1, 1)).astype("float32")

    def body(x):
        acc = relax.op.nn.conv2d(x, relax.const(weight), strides=stride, padding=kernel // 2, groups=groups,
                                 out_dtype="int32")
        acc = relax.op.add(acc, relax.const(bias))
        scaled = relax.op.round(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(multiplier)))
        return relax.op.astype(relax.op.clip(scaled, 0, 127), "int8")

    x = rng.integers(-128, 128, (1, channels) + size).astype("int8")
    return build_module(body, [(x.shape, "int8")]), x


INT8_CONVS = {"1x1": (16, 8, 1), "3x3": (8, 16, 3), "3x3_stride2": (8, 12, 3, 2), "depthwise": (16, 16, 3, 1, 16),
              "depthwise_stride2": (12, 12, 3, 2, 12)}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(INT8_CONVS))
def test_int8_conv2d_schedule_on_pocl_equals_the_host_build(plugin_lowering, name, target):
    """``schedules/adreno_int8.py`` on both Adreno targets (int8 stays in buffers on textures too): a register tile
    per work-item (no local-memory reduction), packed weights read as ``char4``, int32 indices; bit-exact against
    the host LLVM build."""
    mod, x = int8_conv(*INT8_CONVS[name])
    run = run_on_pocl(mod, target, {"x0": x})
    host = relax.VirtualMachine(pipeline.build(mod, "host"), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(run.outputs, host)
    assert len(np.unique(host)) > 20  # the requantize is neither saturated nor all zeros
    (kernel,) = [k for k in run.lowering.kernels if "conv2d" in k.name]
    assert "__local" not in kernel.source and "barrier" not in kernel.source
    assert re.search(r"vload4\(0, param_\w+_ptr", kernel.source)  # the packed weights of a tap: one char4
    assert ("vload4(0, x0_ptr" in kernel.source) == (name == "1x1")  # and 4 input pixels (unguarded rows only)
    assert "long" not in kernel.source
