"""scripts/benchmark.py: the deployable-equivalent swap is exact, and the script runs end to end.

Timings are never asserted: they depend on the machine and on whoever else shares it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from tvm_ecnn import models
from tvm_ecnn.benchmark import (
    BACKENDS,
    INT8_BACKENDS,
    SWAP_TOLERANCE,
    ShiftConvShape,
    relative_error,
    shift_as_depthwise_conv,
    shift_conv_timings,
    shift_label,
    to_standard_ops,
    zoo_shift_conv_shapes,
)
from tvm_ecnn.nn import ActiveShift2d, Shift2d, SparseShift2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIFTS = (Shift2d, ActiveShift2d, SparseShift2d)


def _compare(module, x):
    with torch.no_grad():
        return relative_error(shift_as_depthwise_conv(module)(x).numpy(), module(x).numpy())


@pytest.mark.parametrize("module", [
    Shift2d(18), Shift2d(50, kernel_size=5, dilation=2, mapping="grouped"),
], ids=["3x3", "5x5-dilated-grouped"])
def test_grouped_shift_is_a_onehot_depthwise_conv(module):
    conv = shift_as_depthwise_conv(module)
    reach = int(module.offsets().abs().max())
    assert conv.kernel_size == (2 * reach + 1,) * 2 and conv.padding == (reach, reach)
    assert set(conv.weight.unique().tolist()) == {0.0, 1.0}
    assert _compare(module, torch.randn(2, module.channels, 9, 11)) == 0.0


def test_sparse_shift_rounds_like_the_op():
    module = SparseShift2d(6)
    with torch.no_grad():  # half-way values round to even, one offset reaches 3
        module.offset.copy_(torch.tensor([[0.5, -0.5], [1.5, -2.5], [0.2, 0.0], [3.0, -0.7], [0.0, 0.0], [-1.4, 2.6]]))
    assert shift_as_depthwise_conv(module).kernel_size == (7, 7)
    assert _compare(module, torch.randn(1, 6, 8, 8)) == 0.0


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 0), (2, 1), (3, 2)])
def test_active_shift_is_a_bilinear_depthwise_conv(stride, padding):
    module = ActiveShift2d(7, stride=stride, padding=padding)
    with torch.no_grad():  # fractional, integer (one tap) and far offsets
        module.offset.copy_(torch.tensor([[0.3, -0.6], [1.0, -1.0], [0.0, 0.0], [-2.25, 1.5], [0.99, 0.01],
                                          [2.0, 0.5], [-0.5, -3.0]]))
    assert _compare(module, torch.randn(2, 7, 10, 9)) <= SWAP_TOLERANCE


@pytest.mark.parametrize("name", ["shiftresnet20", "asresnet_w32", "fenet1_0"])
def test_zoo_model_swap_matches_and_exports_without_ecnn_ops(name):
    torch.manual_seed(0)
    model = models.get(name).eval()
    x = torch.randn(1, 3, 32, 32)
    standard = to_standard_ops(model).eval()
    assert any(isinstance(m, SHIFTS) for m in model.modules()), "the original is left untouched"
    assert not any(isinstance(m, SHIFTS) for m in standard.modules())
    with torch.no_grad():
        assert relative_error(standard(x).numpy(), model(x).numpy()) <= SWAP_TOLERANCE
    graph = torch.export.export(standard, (x,)).graph
    assert not [n for n in graph.nodes if n.op == "call_function" and "ecnn" in str(n.target)]


def test_script_prints_every_backend(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"), "--models", "shiftresnet20", "--repeat", "1",
         "--op-size", "8", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| model"))
    for column in BACKENDS:
        assert column in header
    assert "shift_conv2d[active]" in proc.stdout and "| shiftresnet20" in proc.stdout

    results = json.loads(out.read_text())["models"]["shiftresnet20"]["results"]
    peers = {"ONNX Runtime": "onnxruntime", "MNN": "MNN", "ncnn": "ncnn"}
    for backend, result in results.items():
        if backend in peers and importlib.util.find_spec(peers[backend]) is None:
            assert "not installed" in result["failure"]
            continue
        assert result["failure"] is None, (backend, result["failure"])
        assert not result["mismatch"], (backend, result["error"])


def test_script_int8_columns_are_checked_and_compared(tmp_path):
    """--int8: our int8 build and ONNX Runtime's, agreeing with eager within INT8_AGREEMENT, and the ratio table."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"), "--models", "shiftresnet20", "--int8",
         "--backends", "tvm-ecnn", "--input-shape", "1,3,16,16", "--repeat", "1", "--warmup", "1", "--op-size", "8",
         "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["models"]["shiftresnet20"]["results"]
    assert list(results) == ["tvm-ecnn", *INT8_BACKENDS]
    for backend, result in results.items():
        if backend == "ONNX Runtime int8" and importlib.util.find_spec("onnxruntime") is None:
            assert "not installed" in result["failure"]
            continue
        assert result["failure"] is None, (backend, result["failure"])
        assert not result["mismatch"], (backend, result["error"])
        assert backend == "tvm-ecnn" or result["error"] > 0  # int8 is checked for agreement, not equality
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| shiftresnet20 | 16×16 | "))
    ort = importlib.util.find_spec("onnxruntime") is not None
    assert row.count("×") >= (3 if ort else 2)  # the input size and both ratios (vs ORT int8: "–" without ORT)


def test_zoo_shift_conv_shapes_come_from_the_imported_model():
    """ShiftResNet-20: one fused shift_conv2d per bottleneck, at the shift's width and the block's map size."""
    torch.manual_seed(0)
    model = models.get("shiftresnet20").eval()
    seen = {}

    def record(module, inputs, output):
        seen[id(module)] = tuple(inputs[0].shape[1:])

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, Shift2d)]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    shapes = zoo_shift_conv_shapes(["shiftresnet20"])
    assert {(s.channels, s.height, s.width) for s in shapes} == set(seen.values())
    assert all(s.kind == "grouped" and users == ["shiftresnet20"] for s, users in shapes.items())
    assert {s.stride for s in shapes} == {1, 2}


def test_shift_conv_timings_at_a_strided_rectangular_shape():
    times = shift_conv_timings(18, 8, 6, number=1, repeat=1, width=10, stride=2, kinds=("grouped",))
    assert set(times) == {"conv2d 1x1, stock TVM (default pipeline)", "conv2d 1x1, tvm-ecnn schedule",
                          shift_label("grouped")}
    assert all(ms > 0 for ms in times.values())
    assert ShiftConvShape(18, 8, 6, 10, 2, "grouped").stride == 2


def test_bench_nn_checks_every_hand_written_form_and_prints_ratios():
    """scripts/bench_nn.py compares outputs and input gradients of every form with tvm_ecnn.nn before timing."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "bench_nn.py"), "--batch", "2", "--rounds", "1", "--number", "1",
         "--threads", "1", "--clock", "cpu"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("| Shift2d ", "| ActiveShift2d ", "| SparseShift2d ", "| SparseShift2d, frozen offsets",
                "| ShiftResNet-20 (train)"):
        assert row in proc.stdout
    assert proc.stdout.count("×") >= 13
