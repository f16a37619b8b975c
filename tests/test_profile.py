"""tvm_ecnn.profiling: every kernel listed, shares that add up, FLOPs and int8 ops that match a hand count, a measured
roofline.

Times are never asserted (shared machine); only their structure and the cost model are.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import tvm
from torch import nn

import targets
from tvm_ecnn.nn import Shift2d
from tvm_ecnn import profiling
from tvm_ecnn.profiling import Roofline, kernel_costs, machine_roofline, profile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOF = Roofline(gflops=100.0, int8_gops=400.0, gbs=10.0, threads=1)  # a fixed roofline: the tests need no measurement
CALIBRATION = np.random.default_rng(0).standard_normal((4, 3, 12, 12)).astype("float32")


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 18, 3, padding=1)
        self.shift = Shift2d(18)
        self.pointwise = nn.Conv2d(18, 8, 1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.pointwise(self.shift(torch.relu(self.stem(x))))
        return self.head(x.mean((2, 3)))


def _lowered_conv(n, c, o, size, kernel):
    """A lone conv2d (no bias, no epilogue) lowered by tvm-ecnn's pipeline for the host."""
    import tvm
    from tvm import relax

    from tvm_ecnn.pipeline import relax_pipeline

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((n, c, size, size), "float32"))
    weight = relax.const(np.ones((o, c, kernel, kernel), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, weight, padding=kernel // 2))
        bb.emit_func_output(out)
    return relax_pipeline("host")(bb.get()), tvm


@pytest.mark.parametrize("c, o, size, kernel", [(16, 32, 8, 1), (8, 8, 6, 3)])
def test_conv_flops_match_a_hand_count(c, o, size, kernel):
    lowered, _ = _lowered_conv(1, c, o, size, kernel)
    costs = kernel_costs(lowered)
    assert costs, "the lowered module has PrimFuncs"
    flops = sum(cost.flops for cost in costs.values())
    assert flops == 2 * o * size * size * c * kernel * kernel  # one multiply and one add per MAC
    assert all(cost.int8_ops == 0 for cost in costs.values())
    conv_bytes = max(cost.bytes for cost in costs.values())
    assert conv_bytes >= 4 * (c * size * size + o * c * kernel * kernel + o * size * size)


def test_profile_lists_every_kernel_and_shares_sum_to_one():
    torch.manual_seed(0)
    report = profile(_Tiny(), input_shape=(1, 3, 12, 12), repeat=3, roofline=ROOF)
    kernels = [k for k in report.kernels if not k.builtin]
    names = {k.name for k in kernels}
    assert any("shift_conv2d" in n for n in names), names  # the fused shift is its own kernel
    assert any("conv2d" in n and "shift" not in n for n in names) and any("matmul" in n for n in names), names
    assert sum(k.share for k in report.kernels) == pytest.approx(1.0)
    for k in kernels:
        assert k.calls >= 1 and k.seconds > 0 and k.bytes > 0
        assert k.fraction == pytest.approx(ROOF.seconds(k.flops, k.bytes, k.int8_ops) / k.seconds)
    assert report.kernels == sorted(report.kernels, key=lambda k: k.seconds, reverse=True)
    table = report.table()
    assert all(n in table for n in names) and "of roofline" in table and "int8 GOP/s" not in table


def test_int8_conv_ops_match_a_hand_count():
    """2 ops per byte MAC, in whichever form the schedule left them: the scalar stem (3 channels), the 1x1 conv on
    ``vpdpbusd`` where the host has VNNI (its sign correction is not counted), the depthwise conv; none of them
    also in the FLOPs (TVM's estimator counts a scalar int8 MAC as a multiply and an add)."""
    from tvm_ecnn.frontend import from_torch
    from tvm_ecnn.pipeline import relax_pipeline
    from tvm_ecnn.quantize import quantize

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 1), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1, groups=32)).eval()
    mod = quantize(from_torch(model, (torch.randn(1, 3, 12, 12),)), CALIBRATION).mod
    costs = kernel_costs(relax_pipeline("host")(mod))
    pixels = 12 * 12
    assert sorted(c.int8_ops for c in costs.values() if c.int8_ops) == sorted(
        2 * pixels * macs for macs in (16 * 3 * 9, 32 * 16, 32 * 9)), costs
    assert all(0 <= c.flops < c.int8_ops for c in costs.values() if c.int8_ops), costs  # the epilogue only


class _TwoSame(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 8, 1, bias=False), nn.Conv2d(8, 8, 1, bias=False)

    def forward(self, x):
        return self.b(self.a(x))


def test_a_kernel_called_twice_counts_both_calls_flops():
    """Its time is both calls': so are its FLOPs and bytes (one call's made its GFLOP/s half the real ones)."""
    report = profile(_TwoSame(), input_shape=(1, 8, 10, 10), repeat=3, roofline=ROOF)
    [conv] = [k for k in report.kernels if "conv2d" in k.name]
    assert conv.calls == 2 and conv.flops == 2 * (2 * 8 * 8 * 10 * 10)
    assert conv.bytes >= 2 * 4 * (8 * 10 * 10 * 2 + 8 * 8)


def test_int8_profile_times_the_quantized_kernels(tmp_path):
    torch.manual_seed(0)
    report = profile(_Tiny(), input_shape=(1, 3, 12, 12), repeat=3, roofline=ROOF, dtype="int8",
                     calibration=CALIBRATION)
    names = [k.name for k in report.kernels if not k.builtin]
    assert report.model.endswith("(int8)") and any("shift_conv2d" in n for n in names), names
    assert any("conv2d" in n and "round" in n for n in names), names  # the requantize epilogue: an int8 kernel
    assert all(k.int8_ops > 0 for k in report.kernels if "conv2d" in k.name), report.kernels
    for k in report.kernels:
        assert k.fraction == pytest.approx(ROOF.seconds(k.flops, k.bytes, k.int8_ops) / k.seconds)
    assert "int8 GOP/s" in report.table() and "400 GOP/s int8" in report.table()
    data = report.to_dict()
    assert data["roofline"]["int8_gops"] == 400.0 and sum(k["int8_ops"] for k in data["kernels"]) > 0
    report.plot(str(tmp_path / "int8.png"))
    assert (tmp_path / "int8.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="dtype"):
        profile(_Tiny(), input_shape=(1, 3, 12, 12), dtype="fp16")


def test_machine_roofline_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_ECNN_CACHE", str(tmp_path))
    first = machine_roofline(threads=1)
    assert first.gflops > 1 and first.int8_gops > 1 and first.gbs > 0.1 and first.threads == 1
    cached = json.loads((tmp_path / "roofline.json").read_text())
    assert len(cached) == 1 and next(iter(cached.values()))["int8_gops"] == first.int8_gops
    fake = Roofline(gflops=1.0, int8_gops=2.0, gbs=3.0, threads=1)
    monkeypatch.setattr(profiling, "measure_roofline", lambda threads: fake)
    assert machine_roofline(threads=1) == first  # read back, not measured again
    assert machine_roofline(threads=1, refresh=True) == fake  # --refresh-roofline: all three measured again
    assert list(json.loads((tmp_path / "roofline.json").read_text()).values()) == [dataclasses.asdict(fake)]


def test_fma_loop_keeps_its_accumulators_in_registers():
    """A store per FMA (the accumulators spilled to their workspace) measured a third of the real peak."""
    ll = tvm.compile(profiling._fma_kernel(1, 1000), targets.get_target("host")).mod.inspect_source("ll")
    vector_stores = ll.count("store <16 x float>")
    assert 0 < vector_stores <= 2 * profiling._CHAINS, vector_stores  # the initial values and the result only


@pytest.mark.parametrize("vnni", [True, False])
def test_int8_loop_computes_the_dot_products_it_counts(vnni):
    """Both forms of the int8 peak loop (``vpdpbusd``; the arithmetic written out, what a host without VNNI builds)
    against numpy: 4 byte products per int32 lane and step, none hoisted or folded away; the VNNI one on registers."""
    from schedules.cpu_int8 import has_vnni

    target = targets.get_target("host")
    if vnni and not has_vnni(target):
        pytest.skip("the host has no AVX-512 VNNI")
    steps, shape = 3, (profiling._CHAINS, profiling._LANES)
    executable = tvm.compile(profiling._int8_dot_kernel(1, steps, vnni), target)
    out = tvm.runtime.tensor(np.zeros((1, *shape), "int32"))
    executable["main"](out)
    expected = np.arange(np.prod(shape), dtype="int32").reshape(shape)
    for _ in range(steps):
        data = expected.view("uint8").reshape(*shape, 4).astype("int64")
        expected = (expected + (data * np.array(profiling._BYTES)).sum(-1)).astype("int32")
    np.testing.assert_array_equal(out.numpy()[0], expected)
    if vnni:
        assert "vpdpbusd" in executable.mod.inspect_source("asm")
        assert executable.mod.inspect_source("ll").count("store <16 x i32>") <= 2 * profiling._CHAINS


def test_script_prints_the_table_and_draws_the_plot(tmp_path):
    png, out = tmp_path / "profile.png", tmp_path / "profile.json"
    env = dict(os.environ, TVM_ECNN_CACHE=str(tmp_path), PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "profile_kernels.py"), "--model", "shiftresnet20", "--repeat", "2",
         "--plot", str(png), "--json", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| kernel" in proc.stdout and "shift_conv2d" in proc.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(out.read_text())
    assert data["model"] == "shiftresnet20" and sum(k["share"] for k in data["kernels"]) == pytest.approx(1.0)


def test_script_rejects_an_unknown_model():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "profile_kernels.py"), "--model", "resnet9000"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 2 and "resnet9000" in proc.stderr and "shiftresnet20" in proc.stderr


def test_script_rejects_a_target_it_cannot_time(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "profile_kernels.py"), "--target", "adreno"],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT, TVM_ECNN_CACHE=str(tmp_path)))
    assert proc.returncode == 2 and "only host (llvm) targets" in proc.stderr and "Traceback" not in proc.stderr
