"""x86 int8 ``shift_conv2d`` on AVX-512 VNNI (schedules/cpu_int8.py): ``vpdpbusd`` in the emitted assembly for a
VNNI CPU (compiled, not run, so any CI host checks it), the plain int32 fallback without VNNI, and bit-exactness
of the VNNI kernels on this host when it has VNNI (test_int8_ops.py runs every int8 case on the host as well).
"""
from __future__ import annotations

import int8_reference as ref
import numpy as np
import pytest
import tvm
from relax_helpers import build_module
from test_arm_schedules import assembly, constant_shapes, kernels, shift_conv_module
from test_int8_ops import conv_int8_case
from tvm import relax

import targets
from schedules.cpu_int8 import has_vnni
from tvm_ecnn import pipeline

ZEN4 = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4"})  # AVX-512 VNNI
SKYLAKE = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512"})  # no VNNI


def int8_module(out_channels=64, channels=64, size=16, **kw):
    return shift_conv_module(dtype="int8", channels=channels, out_channels=out_channels, size=size,
                             requant_scale=0.01, activation="relu",
                             bias=relax.const(np.arange(out_channels, dtype="int32")), **kw)


def test_vnni_target_runs_the_int8_reduction_on_vpdpbusd():
    assert has_vnni(ZEN4) and not has_vnni(SKYLAKE)
    asm = assembly(pipeline.build(int8_module(), ZEN4))
    # 16x16 map: pixel vectors, 8 output channels x 1 vector of 16 pixels = 8 zmm accumulators per 4 input
    # channels, + 1 activation-sum correction
    assert asm.count("vpdpbusd") >= 9
    assert "vpmulld" not in asm  # no int32 multiply left in the kernel


def test_without_vnni_or_a_fitting_tile_no_vpdpbusd():
    assert "vpdpbusd" not in assembly(pipeline.build(int8_module(), SKYLAKE))
    assert "vpdpbusd" not in assembly(pipeline.build(int8_module(out_channels=14), ZEN4))


@pytest.mark.skipif(not has_vnni(targets.get_target("host")), reason="this host has no AVX-512 VNNI")
@pytest.mark.parametrize("kind, stride, requant, size, residual", [
    ("grouped", 1, True, (9, 12), False), ("none", 1, False, (9, 12), False),  # channel vectors (108 pixels)
    ("grouped", 1, True, (8, 12), True), ("sparse", 2, True, (16, 12), False),  # pixel vectors (96, 48 pixels)
    ("active", 1, True, (8, 12), False), ("none", 1, False, (8, 12), False),
    # active shift on channel vectors: staged once per call (narrow maps, 7x7 and 9x11 outputs, stride 2) or
    # per row (50 wide)
    ("active", 1, True, (7, 7), True), ("active", 1, True, (9, 11), False), ("active", 2, True, (13, 11), False),
    ("active", 1, True, (3, 50), False),
    ("active", 2, True, (8, 112), True), ("sparse", 2, True, (8, 112), False)])  # wide strided: pixel vectors
def test_vnni_kernel_bit_exact_on_host(kind, stride, requant, size, residual):
    """Full int8 range (the sign-bit flip and its weight- or activation-sum correction must cancel exactly),
    both micro-kernels (channel vectors: 2 output-channel tiles of 64; pixel vectors spanning rows), against
    the independent numpy reference."""
    make, x, ref = conv_int8_case(kind, 32, 128, size, stride=stride, activation="relu", x_zp=-7,
                                  per_channel=True, requant=requant, residual=residual, seed=3)
    vm = relax.VirtualMachine(pipeline.build(build_module(make, [(x.shape, "int8")]), "host"), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), ref)


@pytest.mark.skipif(not has_vnni(targets.get_target("host")), reason="this host has no AVX-512 VNNI")
@pytest.mark.parametrize("channels, size, stride", [(32, (14, 14), 1), (32, (28, 28), 1), (32, (13, 11), 2)])
def test_vnni_active_shift_offsets_beyond_the_map_bit_exact(channels, size, stride):
    """The unguarded taps (schedules/int8_shift_staging.py) clamp each channel's integer offset and read
    unselected lanes next to the plane: offsets up to 2.5 maps away (negative, fractional), whole channels
    outside the image, the first and last channels (clamped addresses) included."""
    make, x, ref = conv_int8_case("active", channels, 64, size, stride=stride, activation="relu", x_zp=-7,
                                  per_channel=True, residual=True, seed=5, reach=2.5 * max(size))
    vm = relax.VirtualMachine(pipeline.build(build_module(make, [(x.shape, "int8")]), "host"), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), ref)


@pytest.mark.parametrize("size, tested", [(16, False), (14, False), (7, True)])
def test_int8_active_shift_taps_untested_where_the_pixels_vectorize(size, tested):
    """16x16 (pixel vectors) and 14x14 (channel vectors, staged once per call) stage the shift with vector
    ``Select`` taps; 7x7 (49 pixels: scalar planes) keeps the tested taps, faster there."""
    _, found = kernels(int8_module(kind="active", size=size), ZEN4)
    (_, kernel), = found.items()
    assert ("if_then_else" in kernel.script()) == tested


@pytest.mark.parametrize("size, stride, packed", [
    (16, 1, [8, 16, 1, 1, 8, 4]),  # pixel vectors: 8 output channels x 4
    (14, 1, [4, 16, 1, 1, 16, 4]),  # channel vectors: 16 x 4, narrow map
    (56, 1, [4, 16, 1, 1, 16, 4]),  # channel vectors, staged per row
    (112, 2, [8, 16, 1, 1, 8, 4])])  # wide but strided: pixel vectors (per-row staging measured 1.6x slower)
def test_int8_shift_conv2d_weights_are_packed_at_compile_time(size, stride, packed):
    """Both VNNI micro-kernels read the weight packed in their order as a constant: the kernel packs nothing."""
    lowered, found = kernels(int8_module(kind="active", size=size, stride=stride), ZEN4)
    (name, kernel), = found.items()
    assert name.endswith("_prepacked") and "vpdpbusd" in kernel.script()
    assert packed in constant_shapes(lowered) and [64, 64, 1, 1] not in constant_shapes(lowered)
    assert "shift_conv2d_weight" not in kernel.script()


@pytest.mark.skipif(not has_vnni(targets.get_target("host")), reason="this host has no AVX-512 VNNI")
def test_wide_int8_shift_conv2d_without_a_channel_vector_tile_takes_pixel_vectors_bit_exact():
    """FE-Net's 144 -> 24 channel ``shift_conv2d`` on 56x56 (24 outputs: no 16-channel tile) ran the plain int32
    fallback (1.2 ms on one Zen 5 core); pixel vectors of 6 output channels (0.40 ms), bit-exact."""
    make, x, expected = conv_int8_case("sparse", 144, 24, (56, 56), activation="relu", x_zp=-7, per_channel=True,
                                       residual=True, seed=9)
    mod = build_module(make, [(x.shape, "int8")])
    lowered, found = kernels(mod, ZEN4)
    assert [4, 36, 1, 1, 6, 4] in constant_shapes(lowered) and "vpdpbusd" in next(iter(found.values())).script()
    vm = relax.VirtualMachine(pipeline.build(mod, "host"), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), expected)


def int8_conv2d_module(x_shape, w, stride=1):
    """TOPI's int8 conv2d with int32 accumulation, what the quantizer emits for plain convs."""
    return build_module(lambda v: relax.op.nn.conv2d(v, relax.const(w), strides=stride, padding=w.shape[2] // 2,
                                                     out_dtype="int32"), [(x_shape, "int8")])


def test_int8_conv2d_on_vpdpbusd():
    w = np.random.default_rng(0).integers(-128, 128, (64, 32, 3, 3)).astype("int8")
    asm = assembly(pipeline.build(int8_conv2d_module((1, 32, 16, 16), w), ZEN4))
    assert asm.count("vpdpbusd") >= 20 and "vpmulld" not in asm


@pytest.mark.skipif(not has_vnni(targets.get_target("host")), reason="this host has no AVX-512 VNNI")
@pytest.mark.parametrize("kernel, stride, size", [(3, 1, (10, 14)), (3, 2, (10, 14)), (1, 1, (10, 14)), (1, 1, (6, 8)),
                                                  (1, 1, (13, 13)), (1, 1, (5, 7))])
def test_int8_conv2d_vnni_bit_exact_on_host(kernel, stride, size):
    """Channel-vector kernel, and the 1x1 pixel-vector one: on whole 16-pixel vectors (6x8), and padded to them
    (10x14: 140 pixels, 13x13, 5x7: less than 3 vectors) with the int32 accumulators as the output."""
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (1, 16, *size)).astype("int8")
    w = rng.integers(-128, 128, (32, 16, kernel, kernel)).astype("int8")
    vm = relax.VirtualMachine(pipeline.build(int8_conv2d_module(x.shape, w, stride), "host"), tvm.cpu())
    pad = kernel // 2
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out_h, out_w = (x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1
    ref = np.zeros((1, 32, out_h, out_w), np.int64)
    for ry in range(kernel):
        for rx in range(kernel):
            patch = xp[:, :, ry:ry + stride * out_h:stride, rx:rx + stride * out_w:stride]
            ref += np.einsum("nchw,oc->nohw", patch, w[:, :, ry, rx].astype(np.int64))
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), ref.astype(np.int32))


def requantized_conv_module(x_shape, w, bias, scale, stride=1, groups=1):
    """int8 conv2d + int32 bias requantized as ``tvm_ecnn.quantize`` emits it: ``int8(clip(round(float(acc + bias)
    * scale)))`` in one fused kernel (the ``nearbyint`` epilogue of every quantized conv)."""
    def body(v):
        acc = relax.op.add(relax.op.nn.conv2d(v, relax.const(w), strides=stride, padding=w.shape[2] // 2, groups=groups,
                                              out_dtype="int32"), relax.const(bias.reshape(1, -1, 1, 1)))
        scaled = relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale.reshape(1, -1, 1, 1)))
        return relax.op.astype(relax.op.clip(relax.op.round(scaled), -128, 127), "int8")
    return build_module(body, [(x_shape, "int8")])


def requantized_conv_case(channels, out_channels, size, stride, groups, seed=4):
    """Full-range int8 input and weights, per-channel scales putting the outputs across the whole int8 range (both
    clips and many exact .5 ties: ``scale`` a power of two over a small odd integer), and the numpy reference."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, channels, *size)).astype("int8")
    w = rng.integers(-128, 128, (out_channels, channels // groups, 3, 3)).astype("int8")
    bias = rng.integers(-4000, 4000, out_channels).astype("int32")
    scale = (2.0 ** -(7 + np.arange(out_channels) % 5)).astype("float32")
    acc = ref.conv2d_acc(x, w, stride, 1, groups).astype(np.int64) + bias[None, :, None, None]
    return x, w, bias, scale, ref.requantize(acc.astype(np.int32), scale[None, :, None, None])


def test_requantize_epilogue_stays_vectorized():
    """``round`` lowers to ``tirx.nearbyint``, which stock TVM 0.27 does not mark vectorizable
    (schedules/vectorizable_ops.py): the int8 stem's epilogue was then a scalar loop that LLVM re-vectorized
    across output channels, gathering the accumulators and storing every output byte on its own."""
    x, w, bias, scale, _ = requantized_conv_case(3, 32, (64, 64), 2, 1)
    (llvm,) = [m for m in pipeline.build(requantized_conv_module(x.shape, w, bias, scale, stride=2), ZEN4).mod.imports
               if m.kind == "llvm"]
    ir = llvm.inspect_source("ll")
    assert "store <16 x i8>" in ir and "masked.gather" not in ir  # 16 output pixels of a channel per store


def test_int8_stem_accumulates_in_fp32():
    """3 input channels: no 4-channel dot product. The 27 int8 x int8 terms of a 3x3 window sum exactly in fp32
    (below 2^24), so the stem runs the fp32 FMA kernel on converted inputs, not int32 multiplies (cpu_stem.py)."""
    x, w, bias, scale, _ = requantized_conv_case(3, 32, (64, 64), 2, 1)
    asm = assembly(pipeline.build(requantized_conv_module(x.shape, w, bias, scale, stride=2), ZEN4))
    assert asm.count("vfmadd231ps") >= 16 and "vpmulld" not in asm


@pytest.mark.skipif(not has_vnni(targets.get_target("host")), reason="this host has no AVX-512 VNNI")
@pytest.mark.parametrize("channels, out_channels, size, stride, groups", [
    (3, 32, (64, 64), 2, 1), (3, 32, (21, 27), 2, 1),  # the stem: even/odd halves; odd padded rows, im2col rows
    (3, 32, (21, 31), 2, 1),  # odd padded rows of 16 pixels: im2col rows without row padding
    (16, 16, (56, 56), 1, 16), (8, 8, (28, 28), 1, 8), (8, 8, (30, 29), 1, 8),  # large-map depthwise, odd width
    (8, 8, (9, 11), 1, 8)])  # narrow depthwise: channel vectors
def test_requantized_stem_and_depthwise_bit_exact_on_host(channels, out_channels, size, stride, groups):
    x, w, bias, scale, expected = requantized_conv_case(channels, out_channels, size, stride, groups)
    vm = relax.VirtualMachine(pipeline.build(requantized_conv_module(x.shape, w, bias, scale, stride, groups), "host"),
                              tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), expected)


def requantized_1x1_case(channels, out_channels, size, seed=6, stride=1):
    """A requantized 1x1 conv (full-range input and weights, outputs across the whole int8 range) and its reference."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, channels, *size)).astype("int8")
    w = rng.integers(-128, 128, (out_channels, channels, 1, 1)).astype("int8")
    bias = rng.integers(-4000, 4000, out_channels).astype("int32")
    scale = (2.0 ** -(7 + np.arange(out_channels) % 5)).astype("float32")
    acc = ref.conv2d_acc(x, w, stride).astype(np.int64) + bias[None, :, None, None]
    return requantized_conv_module(x.shape, w, bias, scale, stride), x, ref.requantize(acc.astype(np.int32),
                                                                                         scale[None, :, None, None])


def test_1x1_conv_on_a_map_of_partial_pixel_vectors_takes_padded_pixel_vectors():
    """SqueezeNet's 13x13 maps (169 pixels) and 1000-class conv (no 16-channel tile): the pixel-vector kernel on the
    map padded to 176 pixels, its input staged and its epilogue stored as whole vectors (a predicated tail made TVM
    scalarize them), the map copied out per channel plane."""
    mod, _, _ = requantized_1x1_case(64, 40, (13, 13))
    lowered, found = kernels(mod, ZEN4)
    (_, kernel), = found.items()
    assert [5, 16, 1, 1, 8, 4] in constant_shapes(lowered)  # 8 output channels x 4 input channels per step
    script = kernel.script()
    assert "T.int64(176)" in script and "if_then_else" not in script
    (llvm,) = [m for m in pipeline.build(mod, ZEN4).mod.imports if m.kind == "llvm"]
    ir = llvm.inspect_source("ll")
    assert "store <64 x i8>" in ir  # 16 pixels x 4 channels staged per store
    assert "store <16 x i8>" in ir  # the epilogue: 16 output pixels of a channel per store
    # per 4 input channels: 8 output channels x 1 pixel vector + the activation-sum correction
    assert llvm.inspect_source("asm").count("vpdpbusd") >= 9


@pytest.mark.skipif(not has_vnni(targets.get_target("host")), reason="this host has no AVX-512 VNNI")
@pytest.mark.parametrize("channels, out_channels, size", [(64, 40, (13, 13)), (16, 64, (9, 11)), (32, 24, (4, 5)),
                                                          (128, 16, (27, 27)), (8, 16, (3, 3))])  # 9 pixels: not padded
def test_requantized_1x1_conv_on_padded_pixel_vectors_bit_exact_on_host(channels, out_channels, size):
    """The padded pixels read past each channel's plane (the next one's first pixels, or the last channels' clamped
    last pixel) and must never reach the output; the copy-out must drop exactly the padding."""
    mod, x, expected = requantized_1x1_case(channels, out_channels, size)
    vm = relax.VirtualMachine(pipeline.build(mod, "host"), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), expected)


@pytest.mark.parametrize("size, pixels", [((112, 112), 3136), ((14, 14), 64)])
def test_strided_1x1_conv_stages_only_the_pixels_it_reads(size, pixels):
    """AS-ResNet's stride-2 projections: pixel vectors over the input's every other pixel of every other row, staged
    ``[C / 4, P, 4]`` (7x7 outputs padded to 64 pixels), not the channel-vector kernel's NHWC copy of the whole input
    (112x112, 32 channels: that copy ran both threads over the same cache lines, 1.65 ms against 0.04)."""
    mod, _, _ = requantized_1x1_case(32, 32, size, stride=2)
    _, found = kernels(mod, ZEN4)
    (_, kernel), = found.items()
    script = kernel.script()
    assert f"(T.int64(1), T.int64(8), T.int64({pixels}), T.int64(4))" in script and "if_then_else" not in script
    assert "vpdpbusd" in script


@pytest.mark.skipif(not has_vnni(targets.get_target("host")), reason="this host has no AVX-512 VNNI")
@pytest.mark.parametrize("channels, out_channels, size, stride", [
    (32, 32, (16, 16), 2), (16, 64, (15, 31), 2),  # whole 16-pixel vectors: 8x8, 8x16 outputs
    (64, 128, (14, 14), 2), (32, 16, (13, 13), 2), (8, 16, (12, 17), 3)])  # padded: 7x7, 7x7, 4x6 outputs
def test_requantized_strided_1x1_conv_bit_exact_on_host(channels, out_channels, size, stride):
    """The staging subsamples rows and columns; the padded pixels of a strided map reach further past each channel's
    plane (rows of ``stride`` input rows) and must still stay inside the input and never reach the output."""
    mod, x, expected = requantized_1x1_case(channels, out_channels, size, stride=stride)
    vm = relax.VirtualMachine(pipeline.build(mod, "host"), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), expected)


def requantized_dense_case(depth, features, seed=7):
    """``tvm_ecnn.quantize``'s int8 dense (``x [1, K] @ w [K, J]``, int32 bias, requantize) on full-range operands,
    the outputs across the whole int8 range, and the numpy reference."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, depth)).astype("int8")
    w = rng.integers(-128, 128, (depth, features)).astype("int8")
    bias = rng.integers(-40000, 40000, features).astype("int32")
    scale = (2.0 ** -(9 + np.arange(features) % 5)).astype("float32")

    def body(v):
        acc = relax.op.add(relax.op.matmul(v, relax.const(w), out_dtype="int32"), relax.const(bias))
        scaled = relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale))
        return relax.op.astype(relax.op.clip(relax.op.round(scaled), -128, 127), "int8")
    acc = (x.astype(np.int64) @ w.astype(np.int64) + bias).astype(np.int32)
    return build_module(body, [(x.shape, "int8")]), x, ref.requantize(acc, scale[None])


def test_int8_dense_on_vpdpbusd_ymm_with_the_weight_packed_at_compile_time():
    """The 1000-class dense (not whole zmm: 8-feature ymm vectors), 5 vectors per task and 4 input bytes per step."""
    mod, _, _ = requantized_dense_case(64, 1000)
    lowered, _ = kernels(mod, ZEN4)
    assert [25, 16, 40, 4] in constant_shapes(lowered) and [64, 1000] not in constant_shapes(lowered)
    asm = assembly(pipeline.build(mod, ZEN4))
    assert asm.count("vpdpbusd") >= 6 and "vpmulld" not in asm  # 5 feature vectors + the weight-sum correction
    assert "vpdpbusd" not in assembly(pipeline.build(mod, SKYLAKE))


@pytest.mark.skipif(not has_vnni(targets.get_target("host")), reason="this host has no AVX-512 VNNI")
@pytest.mark.parametrize("depth, features", [(1280, 1000), (20, 24), (64, 8)])
def test_int8_dense_vnni_bit_exact_on_host(depth, features):
    mod, x, expected = requantized_dense_case(depth, features)
    vm = relax.VirtualMachine(pipeline.build(mod, "host"), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), expected)


def residual_1x1_case(size, channels=96, out_channels=32, seed=8):
    """A 1x1 conv whose requantize epilogue adds an int8 residual map (MobileNetV2's projections), the scale a power
    of two (exact in float32 whether or not LLVM fuses the multiply-add), and its reference."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, channels, *size)).astype("int8")
    r = rng.integers(-128, 128, (1, out_channels, *size)).astype("int8")
    w = rng.integers(-128, 128, (out_channels, channels, 1, 1)).astype("int8")

    def body(v):
        acc = relax.op.nn.conv2d(v, relax.const(w), out_dtype="int32")
        total = relax.op.add(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(np.float32(2.0 ** -9))),
                             relax.op.astype(relax.const(r), "float32"))
        return relax.op.astype(relax.op.clip(relax.op.round(total), -128, 127), "int8")
    total = ref.conv2d_acc(x, w).astype(np.float32) * np.float32(2.0 ** -9) + r.astype(np.float32)
    return build_module(body, [(x.shape, "int8")]), x, np.clip(np.rint(total), -128, 127).astype("int8")


@pytest.mark.parametrize("size", [(14, 14), (7, 7)])
def test_1x1_conv_with_a_residual_on_partial_pixel_vectors_keeps_channel_vectors(size):
    """The padded pixel-vector kernel has no padded copy of a residual map: channel vectors, not a failed schedule
    (which left the conv to the generic loop nest)."""
    mod, _, _ = residual_1x1_case(size)
    (_, kernel), = kernels(mod, ZEN4)[1].items()
    assert "vpdpbusd" in kernel.script() and "T.parallel" in kernel.script()


@pytest.mark.skipif(not has_vnni(targets.get_target("host")), reason="this host has no AVX-512 VNNI")
@pytest.mark.parametrize("size", [(14, 14), (4, 4)])
def test_1x1_conv_with_a_residual_bit_exact_on_host(size):
    mod, x, expected = residual_1x1_case(size)
    vm = relax.VirtualMachine(pipeline.build(mod, "host"), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), expected)
