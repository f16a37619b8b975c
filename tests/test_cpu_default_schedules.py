"""Default CPU schedules of the non-ecnn kernels (ApplyDefaultCpuSchedules, schedules/generic_cpu.py):
numerics of scheduled conv2d variants and pools against PyTorch, that the kernels really are
parallel/vectorized, and that tuned records, hand schedules and failures are respected."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from relax_helpers import build_module
from tvm import relax

import targets
from schedules import cpu_common, generic_cpu
from tvm_ecnn.compiler_pass import apply_default_cpu_schedules
from tvm_ecnn.compiler_pass.apply_default_cpu_schedules import ApplyDefaultCpuSchedules
from tvm_ecnn.pipeline import build, relax_pipeline
from tvm_ecnn.quantize import int8_ops

RNG = np.random.default_rng(0)


def _rand(*shape):
    return RNG.standard_normal(shape).astype("float32")


def _run(mod, *arrays, target="host"):
    vm = relax.VirtualMachine(build(mod, target), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def _kernels(mod, target="host") -> dict:
    lowered = relax_pipeline(target)(mod)
    return {gv.name_hint: f for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def _conv_module(x_shape, w, b, stride, padding, groups, residual=False):
    nn = relax.op.nn

    def body(x, *rest):
        y = nn.conv2d(x, relax.const(w), strides=stride, padding=padding, groups=groups)
        y = relax.op.add(y, relax.const(b.reshape(1, -1, 1, 1)))
        if residual:
            y = relax.op.add(y, rest[0])
        return nn.relu(y)

    out = (x_shape[2] + 2 * padding - w.shape[2]) // stride + 1
    inputs = [(x_shape, "float32")] + ([((1, w.shape[0], out, out), "float32")] if residual else [])
    return build_module(body, inputs)


def _conv_ref(x, w, b, stride, padding, groups, residual=None):
    y = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride, padding, groups=groups)
    if residual is not None:
        y = y + torch.from_numpy(residual)
    return torch.relu(y).numpy()


# (in channels, out channels, size, kernel, stride, padding, groups): every conv2d schedule path
CONVS = {
    "3x3 s1 padded, pixel vectors": (16, 32, 16, 3, 1, 1, 1),
    "3x3 s2 padded, channel vectors": (8, 32, 15, 3, 2, 1, 1),
    "3x3 s1 odd width and channels": (6, 20, 13, 3, 1, 1, 1),
    "7x7 s2 stem, 3 input channels": (3, 16, 23, 7, 2, 3, 1),
    "3x3 s2 stem, rows of 13": (3, 16, 25, 3, 2, 1, 1),
    "3x3 s2 stem unpadded, rows of 17": (3, 64, 35, 3, 2, 0, 1),
    "3x3 s2 stem padded, rows of 23": (3, 24, 45, 3, 2, 1, 1),
    "3x3 s2 stem padded, odd rows of 16 on im2col rows": (3, 16, 31, 3, 2, 1, 1),
    "5x5 s2 stem unpadded, over the im2col taps": (4, 8, 31, 5, 2, 0, 1),
    "depthwise 3x3 s1": (24, 24, 14, 3, 1, 1, 24),
    "depthwise 3x3 s2": (24, 24, 15, 3, 2, 1, 24),
    "grouped 3x3, 4 groups": (16, 32, 12, 3, 1, 1, 4),
    "1x1 on a 1x1 map (serial)": (8, 32, 1, 1, 1, 0, 1),
}


@pytest.mark.parametrize("case", list(CONVS))
def test_scheduled_conv2d_matches_torch(case):
    c, o, size, k, stride, padding, groups = CONVS[case]
    x, w, b = _rand(1, c, size, size), _rand(o, c // groups, k, k), _rand(o)
    mod = _conv_module(x.shape, w, b, stride, padding, groups)
    np.testing.assert_allclose(_run(mod, x), _conv_ref(x, w, b, stride, padding, groups), rtol=1e-4, atol=1e-4)


def test_1x1_conv_with_bias_relu_residual_is_one_scheduled_kernel():
    x, w, b = _rand(1, 32, 16, 16), _rand(64, 32, 1, 1), _rand(64)
    res = _rand(1, 64, 16, 16)
    mod = _conv_module(x.shape, w, b, 1, 0, 1, residual=True)
    np.testing.assert_allclose(_run(mod, x, res), _conv_ref(x, w, b, 1, 0, 1, res), rtol=1e-4, atol=1e-4)
    fused = [f for name, f in _kernels(mod).items() if "conv2d" in name]
    assert len(fused) == 1 and fused[0].attrs["tirx.is_scheduled"]
    script = fused[0].script()
    assert "T.parallel" in script and "T.vectorized" in script


@pytest.mark.parametrize("case", ["3x3 s2 padded, channel vectors", "3x3 s1 padded, pixel vectors"])
def test_conv2d_kernels_are_parallel_and_vectorized(case):
    c, o, size, k, stride, padding, groups = CONVS[case]
    mod = _conv_module((1, c, size, size), _rand(o, c, k, k), _rand(o), stride, padding, groups)
    for name, func in _kernels(mod).items():
        assert func.attrs["tirx.is_scheduled"], name
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    assert "T.parallel" in conv and "T.vectorized" in conv


@pytest.mark.parametrize("size", [13, 27, 55])
def test_3x3_conv_on_odd_rows_with_bias_relu_residual_matches_torch(size):
    """SqueezeNet's expand-conv widths: channel vectors over tiles of 7 pixels (13, 27: a predicated last tile) or 5."""
    x, w, b, res = _rand(1, 8, size, size), _rand(32, 8, 3, 3), _rand(32), _rand(1, 32, size, size)
    mod = _conv_module(x.shape, w, b, 1, 1, 1, residual=True)
    np.testing.assert_allclose(_run(mod, x, res), _conv_ref(x, w, b, 1, 1, 1, res), rtol=1e-4, atol=1e-4)


def test_3x3_conv_on_rows_of_27_takes_7_pixels_per_tile():
    """27 = 3 x 9: an exact tile of 3 pixels would leave the micro-kernel load-bound; 4 x 7 with a masked tail."""
    mod = _conv_module((1, 8, 27, 27), _rand(32, 8, 3, 3), _rand(32), 1, 1, 1)
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    assert "T.unroll(T.int64(7))" in conv and "T.where(xx_0 * T.int64(7) + xx_1 < T.int64(27))" in conv


def test_depthwise_is_parallel_per_channel():
    mod = _conv_module((1, 32, 28, 28), _rand(32, 1, 3, 3), _rand(32), 1, 1, 32)
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    assert "T.parallel(T.int64(32))" in conv  # one task per channel: pad, conv and epilogue in L1
    assert "T.vectorized(T.int64(14))" in conv  # rows of 28 as two pixel vectors


@pytest.mark.parametrize("size, vector", [(56, 8), (40, 8), (28, 14), (112, 16)])
def test_depthwise_rows_take_power_of_two_vectors_where_they_divide(size, vector):
    """``cpu_depthwise._whole_vectors``: a 56-pixel row as seven 8-lane vectors, not four of 14 (each tap three
    loads and two inserts); a 28-pixel row has no such divisor and keeps 14."""
    x, w, b = _rand(1, 6, size, size), _rand(6, 1, 3, 3), _rand(6)
    mod = _conv_module(x.shape, w, b, 1, 1, 6)
    np.testing.assert_allclose(_run(mod, x), _conv_ref(x, w, b, 1, 1, 6), rtol=1e-4, atol=1e-4)
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    assert set(re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", conv)) == {str(vector)}  # taps and epilogue


@pytest.mark.parametrize("channels, size", [(37, 28), (20, 30), (24, 14)])
def test_strided_depthwise_on_narrow_maps_reads_even_and_odd_columns_apart(channels, size):
    """Float32 stride-2 depthwise with output rows of 4-16 pixels (``_deinterleave_fits``) on channels that are no
    whole channel vectors: each channel's padded input stored ``[h, w % 2, w // 2]``, a whole output row one
    accumulator vector; wider rows keep LLVM's."""
    x, w, b = _rand(1, channels, size, size), _rand(channels, 1, 3, 3), _rand(channels)
    mod = _conv_module(x.shape, w, b, 2, 1, channels)
    np.testing.assert_allclose(_run(mod, x), _conv_ref(x, w, b, 2, 1, channels), rtol=1e-4, atol=1e-4)
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    out, padded = (size - 1) // 2 + 1, size + 2
    assert f"T.int64({padded}), T.int64(2), T.int64({padded // 2})" in conv
    assert f"T.vectorized(T.int64({out}))" in conv


@pytest.mark.parametrize("channels, size, stride", [(32, 7, 1), (16, 14, 1), (48, 28, 2), (16, 13, 2), (32, 5, 1)])
def test_float32_depthwise_on_narrow_maps_takes_channel_vectors(channels, size, stride):
    """``cpu_depthwise.channel_vectors`` in float32 (MobileNetV2's 14x14 and 7x7 maps): 16 channels per task, their
    padded input staged NHWC, bias and ReLU on channel vectors, the tile copied out as NCHW planes; odd maps."""
    x, w, b = _rand(1, channels, size, size), _rand(channels, 1, 3, 3), _rand(channels)
    mod = _conv_module(x.shape, w, b, stride, 1, channels)
    np.testing.assert_allclose(_run(mod, x), _conv_ref(x, w, b, stride, 1, channels), rtol=1e-4, atol=1e-4)
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    assert re.search(rf"nn_ff_0_fused in (T.parallel|range)\(T.int64\({channels // 16}\)\)", conv)
    assert f"(T.int64(1), T.int64({size + 2}), T.int64({size + 2}), T.int64({channels}))" in conv  # NHWC pad


@pytest.mark.parametrize("channels, size", [(8, 64), (40, 29)])
def test_strided_depthwise_keeps_strided_rows_on_wide_maps_and_odd_padded_rows(channels, size):
    x, w, b = _rand(1, channels, size, size), _rand(channels, 1, 3, 3), _rand(channels)
    mod = _conv_module(x.shape, w, b, 2, 1, channels)
    np.testing.assert_allclose(_run(mod, x), _conv_ref(x, w, b, 2, 1, channels), rtol=1e-4, atol=1e-4)
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    assert f"T.int64({size + 2}), T.int64({size + 2})" in conv and "T.vectorized" not in conv
    assert f"T.parallel(T.int64({channels}))" in conv  # still the depthwise schedule, not the loop-nest fallback


def test_stem_reads_even_and_odd_columns_apart_as_pixel_vectors():
    mod = _conv_module((1, 3, 32, 32), _rand(16, 3, 3, 3), _rand(16), 2, 1, 1)
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    assert "T.int64(34), T.int64(2), T.int64(17)" in conv  # pad[n, c, h, w % 2, w // 2]
    assert "T.vectorized(T.int64(16))" in conv  # a row of 16 output pixels per accumulator


@pytest.mark.parametrize("size", [64, 225])
def test_stem_bias_relu6_matches_torch(size):
    """MobileNetV2's stem: even rows on even/odd column halves (both parities staged per step of a row, its
    borders apart), odd ones (225 -> 113: no even/odd halves) on im2col rows, both with the bias + ReLU6 epilogue."""
    x, w, b = _rand(1, 3, size, size), _rand(32, 3, 3, 3), _rand(32)
    mod = build_module(lambda v: relax.op.clip(relax.op.add(relax.op.nn.conv2d(v, relax.const(w), strides=2, padding=1),
                                                            relax.const(b.reshape(1, -1, 1, 1))), 0, 6),
                       [(x.shape, "float32")])
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), 2, 1).clamp(0, 6).numpy()
    np.testing.assert_allclose(_run(mod, x), expected, rtol=1e-4, atol=1e-4)
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    half = (size + 2) // 2
    staged = f"T.writes(pad_temp[v0, v1, v2, 0:T.int64(2), 0:{half}])" if size % 2 == 0 else "pad_temp_reindex_pad"
    assert staged in conv and "T.parallel" in conv


def test_unpadded_stem_reads_im2col_rows_padded_to_whole_vectors():
    """SqueezeNet's stem shape in small: 35 -> 17 columns, no padding stage to deinterleave."""
    mod = _conv_module((1, 3, 35, 35), _rand(64, 3, 3, 3), _rand(64), 2, 0, 1)
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    assert "T.int64(3), T.int64(3), T.int64(3), T.int64(17), T.int64(32)" in conv  # [n, c, ry, rx, y, x padded]
    assert "T.vectorized(T.int64(16))" in conv


@pytest.mark.parametrize("epilogue", [True, False])
def test_unpadded_stem_with_rows_of_whole_vectors_reads_im2col_rows(epilogue):
    """33 -> 16 columns: no row padding to add (it once fell back to the unscheduled loop nest, 5x slower); with the
    bias + ReLU epilogue per tile, or a plain store of the accumulators."""
    x, w, b = _rand(1, 3, 33, 33), _rand(32, 3, 3, 3), _rand(32)
    if epilogue:
        mod, expected = _conv_module(x.shape, w, b, 2, 0, 1), _conv_ref(x, w, b, 2, 0, 1)
    else:
        mod = build_module(lambda v: relax.op.nn.conv2d(v, relax.const(w), strides=2), [(x.shape, "float32")])
        expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=2).numpy()
    np.testing.assert_allclose(_run(mod, x), expected, rtol=1e-4, atol=1e-4)
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    assert "T.int64(3), T.int64(3), T.int64(3), T.int64(16), T.int64(16)" in conv  # [n, c, ry, rx, y, x]
    assert "T.vectorized(T.int64(16))" in conv


POOLS = {
    "max 3x3 s2": (lambda v: relax.op.nn.max_pool2d(v, 3, 2, ceil_mode=True),
                   lambda t: F.max_pool2d(t, 3, 2, ceil_mode=True)),
    "max 2x2 padded": (lambda v: relax.op.nn.max_pool2d(v, 2, 2, padding=1), lambda t: F.max_pool2d(t, 2, 2, 1)),
    "avg 2x2": (lambda v: relax.op.nn.avg_pool2d(v, 2, 2), lambda t: F.avg_pool2d(t, 2, 2)),
    "global avg": (lambda v: relax.op.nn.adaptive_avg_pool2d(v, 1), lambda t: F.adaptive_avg_pool2d(t, 1)),
    "mean + relu": (lambda v: relax.op.nn.relu(relax.op.mean(v, axis=[2, 3], keepdims=True)),
                    lambda t: torch.relu(t.mean((2, 3), keepdim=True))),
}


@pytest.mark.parametrize("case", list(POOLS))
def test_scheduled_pools_match_torch(case):
    make, ref = POOLS[case]
    x = _rand(1, 64, 65, 67)
    mod = build_module(make, [(x.shape, "float32")])
    np.testing.assert_allclose(_run(mod, x), ref(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)
    assert all(f.attrs["tirx.is_scheduled"] for f in _kernels(mod).values())


@pytest.mark.parametrize("channels, size", [(1000, 13), (37, 7)])
def test_global_mean_sums_rows_as_vectors(channels, size):
    """SqueezeNet's and MobileNetV2's global pools: per channel a row-wide accumulator vector, summed across
    once and divided in the same loop (``_global_pool``), not a chain of scalar adds per channel."""
    x = _rand(1, channels, size, size)
    mod = build_module(lambda v: relax.op.nn.relu(relax.op.mean(v, axis=[2, 3], keepdims=True)), [(x.shape, "float32")])
    np.testing.assert_allclose(_run(mod, x), np.maximum(x.mean((2, 3), keepdims=True), 0), rtol=1e-5, atol=1e-6)
    (pool,) = [f.script() for f in _kernels(mod).values()]
    assert f"T.vectorized(T.int64({size}))" in pool and pool.count('scope="local"') == 2


def test_pool_takes_its_padding_and_division_along_per_channel():
    mod = build_module(lambda v: relax.op.nn.avg_pool2d(v, 3, 2, padding=1), [((1, 64, 64, 64), "float32")])
    (pool,) = [f.script() for name, f in _kernels(mod).items() if "pool" in name]
    assert pool.count("T.parallel") == 1 and "T.parallel(T.int64(64))" in pool  # one pass, a task per channel
    assert 'scope="local"' in pool  # the window sums never leave the task


def test_large_elementwise_and_pool_kernels_are_parallel_and_vectorized():
    def body(v):
        return relax.op.nn.max_pool2d(relax.op.nn.relu(relax.op.add(v, v)), 3, 2)

    mod = build_module(body, [((1, 64, 128, 128), "float32")])
    scripts = {name: f.script() for name, f in _kernels(mod).items()}
    elementwise = [s for name, s in scripts.items() if "relu" in name]
    assert elementwise and all("T.parallel" in s and "T.vectorized" in s for s in elementwise)
    pool = [s for name, s in scripts.items() if "pool" in name and "relu" not in name]
    assert pool and all("T.parallel" in s for s in pool)


def test_dense_is_vectorized_along_outputs():
    x, w = _rand(1, 256), _rand(256, 1000)
    mod = build_module(lambda v: relax.op.matmul(v, relax.const(w)), [(x.shape, "float32")])
    np.testing.assert_allclose(_run(mod, x), x @ w, rtol=1e-4, atol=1e-3)
    (dense,) = [f.script() for name, f in _kernels(mod).items() if "matmul" in name]
    lines = dense.splitlines()
    update = next(i for i, line in enumerate(lines) if 'T.sblock("matmul_update")' in line)
    assert "T.vectorized" in lines[update - 1], "the accumulation itself is vectorized, not only its init"


@pytest.mark.parametrize("k, n, epilogue, tile", [(1283, 1000, "bias + relu", 40), (257, 128, "bias", 64),
                                                   (96, 10, "none", 10)])
def test_dense_streams_weights_packed_at_compile_time(k, n, epilogue, tile):
    """Batch-1 ``x @ W`` (cpu_dense.py): the weight a compile-time constant ``[N / tile, K, tile]`` (``tile``
    dividing N), one contiguous panel per parallel task, the epilogue on its accumulators."""
    x, w, b = _rand(1, k), _rand(k, n), _rand(n)
    ops = {"none": lambda y: y, "bias": lambda y: relax.op.add(y, relax.const(b)),
           "bias + relu": lambda y: relax.op.nn.relu(relax.op.add(y, relax.const(b)))}
    refs = {"none": x @ w, "bias": x @ w + b, "bias + relu": np.maximum(x @ w + b, 0)}
    mod = build_module(lambda v: ops[epilogue](relax.op.matmul(v, relax.const(w))), [(x.shape, "float32")])
    np.testing.assert_allclose(_run(mod, x), refs[epilogue], rtol=1e-4, atol=1e-3)
    (name, dense), = [(name, f) for name, f in _kernels(mod).items() if "matmul" in name]
    assert name.endswith("_prepacked")
    assert [int(s) for s in dense.params[1].shape] == [n // tile, k, tile]
    assert f"T.vectorized(T.int64({tile}))" in dense.script()
    assert ("T.parallel" in dense.script()) == (n * k >= 1 << 17)


def test_batched_matmul_keeps_the_loop_nest_rule():
    x, w = _rand(3, 40), _rand(40, 24)
    mod = build_module(lambda v: relax.op.matmul(v, relax.const(w)), [(x.shape, "float32")])
    np.testing.assert_allclose(_run(mod, x), x @ w, rtol=1e-4, atol=1e-4)
    assert not any(name.endswith("_prepacked") for name in _kernels(mod))


def test_dense_without_a_whole_tile_keeps_the_loop_nest_rule():
    """1001 outputs: no tile divides them, and a zero-padded packing stage is what MetaSchedule's ArgInfo (tuning)
    rejects, so the loop-nest rule takes it."""
    x, w = _rand(1, 64), _rand(64, 1001)
    mod = build_module(lambda v: relax.op.matmul(v, relax.const(w)), [(x.shape, "float32")])
    np.testing.assert_allclose(_run(mod, x), x @ w, rtol=1e-4, atol=1e-3)
    assert not any(name.endswith("_prepacked") for name in _kernels(mod))


def test_scheduled_functions_are_left_alone():
    """Tuned records (MetaScheduleApplyDatabase) and hand schedules mark what they schedule."""
    mod = _conv_module((1, 8, 8, 8), _rand(16, 8, 3, 3), _rand(16), 1, 1, 1)
    fused = relax.transform.FuseTIR()(relax.transform.FuseOps()(relax.transform.AnnotateTIROpPattern()(
        relax.transform.LegalizeOps()(mod))))
    marked = {gv: f.with_attr("tirx.is_scheduled", True) if isinstance(f, tvm.tirx.PrimFunc) else f
              for gv, f in fused.functions.items()}
    fused = tvm.IRModule(marked)
    target = targets.get_target("host")
    with target:
        after = ApplyDefaultCpuSchedules(target)(fused)
    for gv, f in fused.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc):
            tvm.ir.assert_structural_equal(after[gv], f)


def test_failing_schedule_leaves_the_function_unscheduled(monkeypatch):
    def broken(sch, target):
        sch.vectorize(sch.get_loops(cpu_common.root_blocks(sch)[0])[0])  # an illegal step half-way
        raise tvm.s_tir.ScheduleError("boom")

    monkeypatch.setattr(generic_cpu, "RULES", (broken,))
    x, w, b = _rand(1, 8, 9, 9), _rand(16, 8, 3, 3), _rand(16)
    mod = _conv_module(x.shape, w, b, 1, 1, 1)
    assert apply_default_cpu_schedules.default_schedule(_kernels(mod).popitem()[1], targets.get_target("host")) is None
    np.testing.assert_allclose(_run(mod, x), _conv_ref(x, w, b, 1, 1, 1), rtol=1e-4, atol=1e-4)
    assert not any(f.attrs.get("tirx.is_scheduled", False) for f in _kernels(mod).values())


@pytest.mark.parametrize("target", ["arm", "aarch64-linux"])
def test_arm_targets_get_default_schedules_and_compile(target):
    """NEON: 4-lane vectors, a 32-register budget; cross-compiled only (the emulated device runs them)."""
    mod = _conv_module((1, 16, 16, 16), _rand(32, 16, 3, 3), _rand(32), 1, 1, 1)
    kernels = _kernels(mod, target)
    assert all(f.attrs["tirx.is_scheduled"] for f in kernels.values())
    assert any("T.vectorized" in f.script() for f in kernels.values())
    build(mod, target)


def _int8_depthwise_module(x_shape, w, stride, bias=None, multiplier=None, low=-128, high=127):
    """What the quantizer emits for a depthwise conv: int32 accumulation, then (with ``multiplier``) the
    requantize ``clip(rint(f32(acc + b) * m[o]), low, high)`` to int8."""
    R = relax.op

    def body(x):
        acc = R.nn.conv2d(x, relax.const(w), strides=stride, padding=1, groups=w.shape[0], out_dtype="int32")
        if multiplier is None:
            return acc
        scaled = R.multiply(R.astype(R.add(acc, relax.const(bias.reshape(1, -1, 1, 1))), "float32"),
                            relax.const(multiplier.reshape(1, -1, 1, 1)))
        return R.astype(R.clip(R.round(scaled), low, high), "int8")

    return build_module(body, [(x_shape, "int8")])


@pytest.mark.parametrize("channels, size, stride, requant", [
    (32, (7, 7), 1, True), (48, (4, 4), 1, True), (32, (15, 15), 2, True), (16, (9, 12), 1, True),
    (32, (7, 7), 1, False)])
def test_int8_depthwise_channel_vectors_bit_exact(channels, size, stride, requant):
    """int8 depthwise on narrow maps (channel vectors: NHWC tiles staged and copied out in the kernel), full
    int8 range, per-channel multipliers and a ReLU6-like clip, against the independent numpy reference."""
    from int8_reference import conv2d_acc, requantize

    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (1, channels, *size)).astype("int8")
    w = rng.integers(-128, 128, (channels, 1, 3, 3)).astype("int8")
    bias = rng.integers(-5000, 5000, channels).astype("int32")
    multiplier = rng.uniform(1e-4, 2e-3, channels).astype("float32")
    acc = conv2d_acc(x, w, stride, 1, channels)
    if requant:
        mod = _int8_depthwise_module(x.shape, w, stride, bias, multiplier, 0, 100)
        ref = requantize(acc + bias.reshape(1, -1, 1, 1), multiplier.reshape(1, -1, 1, 1), 0, 100)
    else:
        mod, ref = _int8_depthwise_module(x.shape, w, stride), acc
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    out_h, out_w = (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1
    assert re.search(rf"nn_ff_0_fused in (T.parallel|range)\(T.int64\({channels // 16}\)\)", conv)  # 16 channels/task
    assert f"(T.int64(1), T.int64({size[0] + 2}), T.int64({size[1] + 2}), T.int64({channels}))" in conv  # NHWC pad
    assert f"(T.int64(1), T.int64({out_h}), T.int64({out_w}), T.int64({channels})), \"int8\"" in conv or not requant
    np.testing.assert_array_equal(_run(mod, x), ref)


@pytest.mark.parametrize("requant", [True, False])
def test_int8_depthwise_rows_of_power_of_two_vectors_stage_fp32_bit_exact(requant):
    """``cpu_depthwise.stage_in_fp32``: a 56-pixel stride-1 row (14-lane int32 vectors before) as 8-lane fp32
    vectors over the input converted in the padding stage, the epilogue once per row; extreme products
    (-128 x -128 on every tap) included, against the independent numpy reference."""
    from int8_reference import conv2d_acc, requantize

    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, (1, 8, 56, 56)).astype("int8")
    x[0, :2] = -128
    x[0, 2, ::2] = 127
    w = rng.integers(-128, 128, (8, 1, 3, 3)).astype("int8")
    w[0], w[1], w[2] = -128, 127, -128
    bias = rng.integers(-5000, 5000, 8).astype("int32")
    multiplier = rng.uniform(1e-4, 2e-3, 8).astype("float32")
    acc = conv2d_acc(x, w, 1, 1, 8)
    assert acc.min() == -128 * 127 * 9 and acc.max() == 128 * 128 * 9  # the extreme sums of full windows
    if requant:
        mod = _int8_depthwise_module(x.shape, w, 1, bias, multiplier, 0, 100)
        ref = requantize(acc + bias.reshape(1, -1, 1, 1), multiplier.reshape(1, -1, 1, 1), 0, 100)
    else:
        mod, ref = _int8_depthwise_module(x.shape, w, 1), acc
    (conv,) = [f.script() for name, f in _kernels(mod).items() if "conv2d" in name]
    assert "T.parallel(T.int64(8))" in conv and "T.vectorized(T.int64(8))" in conv  # per channel, 8-lane taps
    assert "(T.int64(1), T.int64(8), T.int64(58), T.int64(58)))" in conv  # the padded input in fp32
    assert "T.vectorized(T.int64(56))" in conv  # the epilogue (or the int32 store) once per row
    np.testing.assert_array_equal(_run(mod, x), ref)


def test_int8_depthwise_on_wide_maps_stays_per_channel():
    w = np.ones((32, 1, 3, 3), "int8")
    (conv,) = [f.script() for name, f in _kernels(_int8_depthwise_module((1, 32, 28, 28), w, 1)).items()
               if "conv2d" in name]
    assert "T.parallel(T.int64(32))" in conv and "T.vectorized(T.int64(14))" in conv


@pytest.mark.parametrize("shape", [(1, 40, 27, 29), (1, 256, 27, 27)])
def test_max_pools_on_short_rows_accumulate_rows_locally(shape):
    """``cpu_pool.py``: output rows of one vector or less (stride 2, ceil_mode and padding)."""
    x = _rand(*shape)
    for make, ref in (POOLS["max 3x3 s2"], POOLS["max 2x2 padded"]):
        mod = build_module(make, [(x.shape, "float32")])
        np.testing.assert_allclose(_run(mod, x), ref(torch.from_numpy(x)).numpy(), rtol=0, atol=0)
        (pool,) = [f.script() for name, f in _kernels(mod).items() if "pool" in name]
        assert 'scope="local"' in pool


@pytest.mark.parametrize("shape, local", [((1, 8, 55, 55), False), ((1, 6, 54, 54), False), ((1, 8, 27, 27), True)])
def test_int8_max_pools_accumulate_rows_locally_only_on_float32_vector_rows(shape, local):
    """``cpu_pool.py``: int8 output rows of 27 fit one 64-lane vector but take the wide-row rules (a local row
    there measured 2-8x slower); rows of 13 keep it. Bit for bit."""
    x = RNG.integers(-128, 128, shape).astype("int8")
    make, ref = POOLS["max 3x3 s2"]
    mod = build_module(make, [(x.shape, "int8")])
    expected = ref(torch.from_numpy(x.astype("float32"))).numpy().astype("int8")
    np.testing.assert_array_equal(_run(mod, x), expected)
    (pool,) = [f.script() for name, f in _kernels(mod).items() if "pool" in name]
    assert ('scope="local"' in pool) == local


@pytest.mark.parametrize("shape, padded", [((1, 8, 111, 111), False), ((2, 5, 55, 37), False),
                                           ((1, 8, 66, 67), True), ((1, 6, 57, 66), True)])
def test_wide_max_pools_inline_a_padding_stage_their_window_never_reaches(shape, padded):
    """``cpu_pool._unpadded_rows``: ``ceil_mode`` pads SqueezeNet's exactly fitting 111-, 109- and 55-pixel
    maps although no window reaches past them: the padding copy goes; a window that does reach it (an even
    height or width) keeps a padding stage."""
    x = _rand(*shape)
    make, ref = POOLS["max 3x3 s2"]
    mod = build_module(make, [(x.shape, "float32")])
    np.testing.assert_allclose(_run(mod, x), ref(torch.from_numpy(x)).numpy(), rtol=0, atol=0)
    (pool,) = [f.script() for name, f in _kernels(mod).items() if "pool" in name]
    assert ("pad_temp" in pool) == padded


@pytest.mark.parametrize("shape, path", [((1, 8, 27, 27), "local"), ((1, 8, 35, 37), "inlined"),
                                         ((1, 8, 55, 55), "inlined"), ((1, 4, 56, 45), "padded")])
def test_int8_max_pools_bit_exact(shape, path):
    """int8 ``ceil_mode`` 3x3 s2 pools at the ends of the range (windows of only -128, the padding value, and
    127s): rows up to ``cpu_pool.LOCAL_ROW_MAX`` accumulate locally, longer ones inline an unreached padding
    stage, a padding the window reaches keeps its stage; against a numpy reference."""
    x = np.random.default_rng(1).integers(-128, 128, shape).astype("int8")
    x[:, :, :5, :7] = -128
    x[:, :, -3:, -4:] = 127
    mod = build_module(lambda v: relax.op.nn.max_pool2d(v, 3, 2, ceil_mode=True), [(x.shape, "int8")])
    out_h, out_w = (-(-(d - 3) // 2) + 1 for d in shape[2:])
    padded = np.pad(x, ((0, 0), (0, 0), (0, 2 * out_h + 1 - shape[2]), (0, 2 * out_w + 1 - shape[3])),
                    constant_values=-128)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    np.testing.assert_array_equal(_run(mod, x), windows.max(axis=(4, 5)))
    (pool,) = [f.script() for name, f in _kernels(mod).items() if "pool" in name]
    assert ('scope="local"' in pool, "pad_temp" in pool) == {"local": (True, True), "inlined": (False, False),
                                                             "padded": (False, True)}[path]


def _batch_norm_relu(v, channels):
    c = lambda a: relax.const(a.reshape(1, channels, 1, 1))  # noqa: E731
    mean, var, gamma, beta = (RNG.uniform(lo, hi, channels).astype("float32") for lo, hi in
                              ((-1, 1), (0.5, 2), (0.5, 2), (-1, 1)))
    op = relax.op
    y = op.divide(op.subtract(v, c(mean)), op.sqrt(op.add(c(var), relax.const(np.float32(1e-5)))))
    return op.nn.relu(op.add(op.multiply(y, c(gamma)), c(beta))), (mean, var, gamma, beta)


@pytest.mark.parametrize("shape", [(1, 128, 14, 14), (1, 24, 7, 9), (1, 32, 112, 112)])
def test_unfolded_batch_norm_relu_runs_over_whole_planes(shape):
    """``cpu_injective.py``: the per-channel square root outside a run over the whole fused plane."""
    x, params = _rand(*shape), {}

    def body(v):
        out, params["p"] = _batch_norm_relu(v, shape[1])
        return out

    mod = build_module(body, [(x.shape, "float32")])
    mean, var, gamma, beta = (a.reshape(1, -1, 1, 1) for a in params["p"])
    np.testing.assert_allclose(_run(mod, x), np.maximum((x - mean) / np.sqrt(var + 1e-5) * gamma + beta, 0),
                               rtol=1e-5, atol=1e-5)
    (kernel,) = [f.script() for f in _kernels(mod).values()]
    assert f"T.int64({shape[2] * shape[3]})" in kernel or "T.vectorized" in kernel  # h and w fused


def test_concatenate_is_a_plane_copy():
    a, b = _rand(1, 24, 13, 11), _rand(1, 40, 13, 11)
    mod = build_module(lambda u, v: relax.op.concat([u, v], axis=1), [(a.shape, "float32"), (b.shape, "float32")])
    np.testing.assert_array_equal(_run(mod, a, b), np.concatenate([a, b], 1))
    (kernel,) = [f.script() for f in _kernels(mod).values()]
    assert "T.int64(143)" in kernel  # 13 x 11: one run per channel plane


@pytest.mark.parametrize("shape, zero_point", [((1, 3, 224, 224), 0), ((1, 3, 224, 224), -3), ((1, 3, 13, 7), 5)])
def test_int8_quantize_vectors_stay_within_rows_and_round_ties_to_even(shape, zero_point):
    """``cpu_injective.py``: the input quantize ``clip(rint(x * 4) + zp, -128, 127)``, its fused rows of 224 not a
    multiple of 64 int8 lanes, takes vectors the rows divide (not one load and store per lane); exact halves round
    to even and values far outside the int8 range saturate, bit for bit."""
    x = RNG.uniform(-40, 40, shape).astype("float32")  # x * 4 reaches +-160
    flat = x.reshape(-1)
    flat[::3] = (RNG.integers(-160, 160, flat[::3].size) + 0.5) / 4  # exact halves after * 4 (1/4 is exact)
    flat[1::97] = RNG.choice([-1e6, 1e6, -0.125, 0.125, 0.375, -0.375], flat[1::97].size)
    bb = relax.BlockBuilder()
    v = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [v]):
        with bb.dataflow():
            out = bb.emit_output(int8_ops.quantize(bb, v, np.float32(0.25), zero_point))
        bb.emit_func_output(out)
    mod = bb.get()
    expected = np.clip(np.rint(x * np.float32(4)) + zero_point, -128, 127).astype("int8")
    assert np.count_nonzero(np.abs(x * 4) % 1 == 0.5) > x.size // 4
    np.testing.assert_array_equal(_run(mod, x), expected)
    (kernel,) = [f.script() for f in _kernels(mod).values()]
    widths = [int(w) for w in re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", kernel)]
    assert all(shape[-1] % w == 0 or w % shape[-1] == 0 for w in widths)
    assert bool(widths) == (shape[-1] == 224)  # rows of 7 in no vector width: LLVM's loop vectorizer
