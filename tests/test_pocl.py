"""OpenCL kernels TVM emits for Adreno, built and run on PoCL, checked against the host LLVM oracle."""

from __future__ import annotations

import copy
import importlib.metadata

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax
from tvm.script import tirx as T

pytest.importorskip("pyopencl", reason="pyopencl is missing: pip install the project's opencl extra")
from tvm_ecnn.compiler_pass.unique_param_names import unique_param_names
from tvm_ecnn.device import pocl

HOST = {"kind": "llvm", "mtriple": "aarch64-linux-android"}
BUFFER = tvm.target.Target({"kind": "opencl", "device": "adreno"}, host=HOST)
TEXTURE = tvm.target.Target("qcom/adreno-opencl-texture", host=HOST)
ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("pocl_platform")


def small_cnn(channels: int = 3, dtype: str = "float32") -> tvm.IRModule:
    """conv3x3(+bias) -> relu -> maxpool2x2 -> conv1x1 -> relu -> global mean, on 1 x channels x 16 x 16."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, channels, 3, 3), dtype="float32").astype(dtype)
    b1 = rng.standard_normal((1, 8, 1, 1), dtype="float32").astype(dtype)
    w2 = rng.standard_normal((16, 8, 1, 1), dtype="float32").astype(dtype)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, channels, 16, 16), dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.add(relax.op.nn.conv2d(x, relax.const(w1), padding=1), relax.const(b1)))
            y = bb.emit(relax.op.nn.max_pool2d(relax.op.nn.relu(y), pool_size=(2, 2), strides=(2, 2)))
            y = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(y, relax.const(w2))))
            y = bb.emit_output(relax.op.mean(y, axis=[2, 3]))
        bb.emit_func_output(y)
    return bb.get()


@T.prim_func(s_tir=True)
def _copy_kernel(a: T.Buffer((4,), "float32"), b: T.Buffer((4,), "float32")):
    T.func_attr({"global_symbol": "copy", "tirx.noalias": True})
    for i in range(4):
        with T.sblock("b"):
            v = T.axis.spatial(4, i)
            b[v] = a[v]


def host_reference(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.compile(copy.deepcopy(mod), target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.fixture(scope="module")
def buffer_run():
    mod = small_cnn()
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16), dtype="float32")
    return mod, x, pocl.run_relax_on_pocl(mod, BUFFER, {"x": x})


def test_buffer_path_every_kernel_matches_host_oracle(buffer_run):
    mod, x, run = buffer_run
    launched = [k for c in run.checks for k in c.kernels]
    assert sorted(launched) == sorted(k.name for k in run.lowering.kernels)  # every kernel built and ran
    assert all(not p.is_texture for k in run.lowering.kernels for p in k.params)
    for check in run.checks:
        assert check.max_abs_err <= ATOL, check
    np.testing.assert_allclose(run.outputs, host_reference(mod, x), atol=ATOL, rtol=ATOL)


def test_lowering_matches_what_tvm_compile_ships(buffer_run):
    mod, _, run = buffer_run
    shipped = pocl.opencl_source(tvm.compile(copy.deepcopy(mod), target=BUFFER))
    assert shipped == run.lowering.source
    pocl.build_on_pocl(shipped)


def test_kernel_info_describes_launch_and_buffers(buffer_run):
    _, _, run = buffer_run
    for kernel in run.lowering.kernels:
        assert all(g % n == 0 for g, n in zip(kernel.global_size, kernel.local_size, strict=True)), kernel
        assert f"__kernel void {kernel.name}(" in kernel.source
    mean = next(k for k in run.lowering.kernels if k.name.startswith("mean"))
    assert [p.shape for p in mean.params if p.buffer.startswith("T_divide")] == [(1, 16)]
    # from the bare device module: same kernels and NDRanges, flattened shapes
    bare = {k.name: k for k in pocl.opencl_kernels(run.lowering.device_mod)}
    assert {k.name: (k.global_size, k.local_size) for k in run.lowering.kernels} == \
        {k.name: (k.global_size, k.local_size) for k in bare.values()}
    assert [p.shape for p in bare[mean.name].params if p.buffer.startswith("T_divide")] == [(16,)]


def test_run_kernel_on_pocl_standalone(buffer_run):
    """One kernel driven directly: global mean over H, W."""
    _, _, run = buffer_run
    mean = next(k for k in run.lowering.kernels if k.name.startswith("mean"))
    (src,) = [p for p in mean.params if p.shape == (1, 16, 8, 8)]
    (dst,) = [p for p in mean.params if p is not src]
    data = np.random.default_rng(2).standard_normal(src.shape, dtype="float32")
    out = pocl.run_kernel_on_pocl(mean, {src.buffer: data})
    np.testing.assert_allclose(out[dst.buffer], data.mean(axis=(2, 3)), atol=1e-5)
    np.testing.assert_array_equal(out[src.buffer], data)


def test_fp16_kernels_run_with_half_emulated_in_float():
    """PoCL has no cl_khr_fp16 (notes F8): ``half_as_float`` builds the half kernels with float arithmetic on
    float16-valued data and rounds every stored value to float16, so fp16 numerics are checked anyway."""
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16), dtype="float32")
    run = pocl.run_relax_on_pocl(small_cnn(dtype="float16"), BUFFER, {"x": x.astype("float16")}, half_as_float=True)
    assert "__global half*" in run.lowering.source and "half" not in pocl.emulate_half(run.lowering.source)
    assert run.outputs.dtype == np.float16
    assert all(c.rel_err <= 1e-2 for c in run.checks), run.checks
    expected = host_reference(small_cnn(), x)
    assert np.abs(run.outputs.astype("float32") - expected).max() <= 1e-2 * np.abs(expected).max()


def test_duplicate_parameter_names_are_made_unique():
    """FuseTIR can name two parameters alike (a residual add reading ``lv44`` twice); kernels are matched to
    buffers by name, so the lowering renames them (``lv44``, ``lv44_1``) without changing anything else."""
    func = _copy_kernel
    first, second = func.params
    twin = tvm.ir.Var(first.name, second.ty)  # b, named "a"
    clash = tvm_ffi.structural_map(func, ((tvm.ir.Var, lambda v: twin if v.same_as(second) else v),))
    assert [p.name for p in clash.params] == ["a", "a"]
    renamed = unique_param_names(clash)
    assert [p.name for p in renamed.params] == ["a", "a_1"]
    data = np.arange(4, dtype="float32")
    out = tvm.runtime.tensor(np.zeros(4, "float32"))
    tvm.compile(renamed, target=tvm.target.Target({"kind": "llvm"}))(tvm.runtime.tensor(data), out)
    np.testing.assert_array_equal(out.numpy(), data)


def test_bad_source_raises_with_build_log():
    with pytest.raises(pocl.PoclBuildError, match="no_such_symbol") as err:
        pocl.build_on_pocl("__kernel void broken(__global float* a) { a[0] = no_such_symbol; }")
    assert "no_such_symbol" in err.value.log


# --- texture path (image2d_array_t); TVM 0.27 needs ffi 0.1.14 here (notes F1: 0.1.15 segfaults) -------------

texture_ffi = pytest.mark.skipif(importlib.metadata.version("apache-tvm-ffi").startswith("0.1.15"),
                                 reason="apache-tvm-ffi 0.1.15 segfaults compiling texture targets (notes F1)")


@pytest.fixture(scope="module")
def fixed_texture_pipeline() -> str:
    """The plugin's Adreno TIR pipeline (TextureFlatten, InjectTextureAlloc, whole-texel stores), which TVM's own
    ``tvm.compile`` never reaches (notes F6, F7; ``tvm_ecnn/compiler_pass/adreno_tir.py``)."""
    from tvm_ecnn import pipeline

    return pipeline.tir_pipeline(TEXTURE)


@texture_ffi
@pytest.mark.xfail(strict=True, raises=pocl.PoclBuildError,
                   reason="TVM 0.27 default TIR pipeline does pointer arithmetic on image2d_array_t (notes F6)")
def test_texture_default_pipeline_builds():
    pocl.build_on_pocl(pocl.lower_for_adreno(small_cnn(4), TEXTURE).source)


@texture_ffi
def test_texture_image_arguments_follow_tvm_flattening(fixed_texture_pipeline):
    """Max pool from one NCHW4c image into another: pixel coordinates on upload and readback follow TVM, and every
    RGBA lane holds its own channel (notes F7: TVM 0.27 alone stores lane 3 into all four)."""
    lowering = pocl.lower_for_adreno(small_cnn(4), TEXTURE, fixed_texture_pipeline)
    pool = next(k for k in lowering.kernels if k.name.startswith("max_pool2d"))
    src, dst = sorted(pool.params, key=lambda p: -p.shape[2])  # 16x16 in, 8x8 out
    assert src.is_texture and dst.is_texture
    data = np.random.default_rng(3).standard_normal(src.shape, dtype="float32")  # (1, C/4, H, W, 4)
    n, c, h, w, lanes = data.shape
    expected = data.reshape(n, c, h // 2, 2, w // 2, 2, lanes).max(axis=(3, 5))
    out = pocl.run_kernel_on_pocl(pool, {src.buffer: data})[dst.buffer]
    np.testing.assert_allclose(out, expected, atol=1e-6)


@texture_ffi
def test_texture_path_matches_host_oracle(fixed_texture_pipeline):
    """F7 regression: every kernel that writes an image (te_layout_transform, conv2d, max_pool2d) stores whole
    texels."""
    x = np.random.default_rng(1).standard_normal((1, 4, 16, 16), dtype="float32")
    run = pocl.run_relax_on_pocl(small_cnn(4), TEXTURE, {"x": x}, fixed_texture_pipeline)
    writers = {k.name for k in run.lowering.kernels if _writes_image(k)}
    assert {"te_layout_transform_kernel", "max_pool2d_opencl_kernel"} <= writers
    bad = [c for c in run.checks if c.max_abs_err > ATOL]
    assert not bad, bad
    np.testing.assert_allclose(run.outputs, host_reference(small_cnn(4), x), atol=ATOL, rtol=ATOL)


def _writes_image(kernel: pocl.KernelInfo) -> bool:
    signature = kernel.source.split(f"__kernel void {kernel.name}(", 1)[1].split(")", 1)[0]
    return "__write_only image2d_array_t" in signature


# --------------------------------------------------------------------------- a host CPU newer than PoCL's LLVM
def test_generic_cpu_pointer_is_replaced_in_a_device_struct():
    """The mechanism of the Zen 5 workaround (``pocl.replace_generic_cpu``) on a struct laid out like PoCL's:
    only the pointer that reads "generic" changes, and only once."""
    import ctypes

    generic, other = ctypes.create_string_buffer(b"generic"), ctypes.create_string_buffer(b"generic-ish")
    fields = (ctypes.c_uint64 * 8)(7, ctypes.addressof(other), 0, ctypes.addressof(generic), 0, 0, 0, 0)
    assert pocl.replace_generic_cpu(ctypes.addressof(fields), b"skylake-avx512", scan_bytes=64)
    assert ctypes.string_at(fields[3]) == b"skylake-avx512"
    assert ctypes.string_at(fields[1]) == b"generic-ish" and fields[0] == 7
    assert not pocl.replace_generic_cpu(ctypes.addressof(fields), b"haswell", scan_bytes=64)


def test_image_limits_are_raised_to_adreno_in_a_device_struct():
    import ctypes

    fields = (ctypes.c_uint64 * 6)(8192, 0, 8192, 8192, 2048, 2048)
    assert pocl.widen_images_to_adreno(ctypes.addressof(fields), 8192, 8192, scan_bytes=48)
    assert list(fields) == [8192, 0, pocl.ADRENO_IMAGE2D_MAX, pocl.ADRENO_IMAGE2D_MAX, 2048, 2048]
    assert not pocl.widen_images_to_adreno(ctypes.addressof(fields), 8192, 8192, scan_bytes=48)


@pytest.mark.parametrize("flags, cpu", [({"avx512f", "avx2"}, b"skylake-avx512"), ({"avx2", "fma"}, b"haswell"),
                                        ({"sse2"}, b"x86-64")])
def test_llvm_cpu_follows_the_kernel_library_variant(flags, cpu):
    assert pocl.llvm_cpu_for_host(flags) == cpu


def test_pocl_builds_for_this_host_cpu():
    """Whatever CPU this is (pip PoCL's LLVM 14 names none after Zen 4): a program builds and runs."""
    import pyopencl as cl

    queue = pocl.pocl_queue()
    program = pocl.build_on_pocl("__kernel void twice(__global float *a) { int i = get_global_id(0); a[i] *= 2.0f; }")
    data = np.arange(8, dtype="float32")
    buffer = cl.Buffer(queue.context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=data)
    program.twice(queue, (8,), None, buffer)
    out = np.empty_like(data)
    cl.enqueue_copy(queue, out, buffer)
    np.testing.assert_array_equal(out, 2 * np.arange(8, dtype="float32"))
    # and takes the images an Adreno takes (TVM lays ShiftResNet-20's 32x32 maps out 12288 texels wide)
    assert queue.context.devices[0].image2d_max_width >= pocl.ADRENO_IMAGE2D_MAX
    cl.create_image(queue.context, cl.mem_flags.READ_WRITE, cl.ImageFormat(cl.channel_order.RGBA, cl.channel_type.FLOAT),
                    shape=(12288, 1, 1), is_array=True)
