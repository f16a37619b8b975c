"""Cost analyzer: exact counts on hand-computed nets, roofline arithmetic, totals, and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tvm_ecnn.analysis import (LayerStats, analyze, apply_roofline, count_macs, count_params,
                               profile_layers, resolve_unit)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "analyze.py"


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),   # 16*16*8 * 3*9   = 55,296 MACs, 216 params
        nn.BatchNorm2d(8),                           # 0 MACs, 16 params
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),     # depthwise: 16*16*8 * 1*9 = 18,432; 72 + 8
        nn.Conv2d(8, 16, 1, stride=2),               # 8*8*16 * 8      = 8,192; 128 + 16
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),                           # 16*10 = 160; 170
    )


SMALL_NET_MACS = 55_296 + 18_432 + 8_192 + 160
SMALL_NET_PARAMS = 216 + 16 + 80 + 144 + 170


def test_hand_computed_macs_and_params():
    net = small_net()
    assert count_macs(net, (1, 3, 16, 16)) == SMALL_NET_MACS
    assert count_macs(net, (2, 3, 16, 16)) == 2 * SMALL_NET_MACS  # batch scales MACs
    assert count_params(net) == SMALL_NET_PARAMS
    rows, unattributed = profile_layers(net, (1, 3, 16, 16))
    assert unattributed == 0
    assert [r.macs for r in rows] == [55_296, 0, 0, 18_432, 8_192, 0, 0, 160]
    assert rows[4].output_shape == (1, 16, 8, 8)
    assert rows[6].bytes == 0  # Flatten is a view


def test_bytes_are_activations_plus_weights_in_dtype():
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    expected = 4 * 8 * 8 + 8 * 8 * 8 + 8 * 4 * 9  # input + output + weights (elements)
    for dtype, width in (("fp32", 4), ("fp16", 2), ("int8", 1)):
        (row,), _ = profile_layers(conv, (1, 4, 8, 8), dtype)
        assert row.bytes == expected * width
        assert row.macs == 8 * 8 * 8 * 4 * 9
        assert row.name == "Conv2d"  # a bare leaf model is named by its type


def test_roofline_takes_the_max_of_compute_and_memory():
    rows = [LayerStats("c", "Conv2d", (), (), 0, macs=1_000_000, bytes=1_000),
            LayerStats("m", "ReLU", (), (), 0, macs=10, bytes=1_000_000),
            LayerStats("z", "Identity", (), (), 0, macs=0, bytes=0)]
    apply_roofline(rows, peak_gflops=100.0, bandwidth_gbs=10.0)
    compute, memory, empty = rows
    assert compute.latency_s == pytest.approx(2e6 / 100e9) and compute.bound == "compute"
    assert memory.latency_s == pytest.approx(1e6 / 10e9) and memory.bound == "memory"
    assert empty.latency_s == 0 and empty.bound == ""


def test_unit_resolution():
    assert resolve_unit("865") == "gpu"
    assert resolve_unit("snapdragon/888-adreno") == "gpu"
    assert resolve_unit("snapdragon/888-cpu") == "cpu"
    assert resolve_unit("865", "cpu") == "cpu"
    with pytest.raises(ValueError):
        resolve_unit("865", "npu")


# --------------------------------------------------------------------------- with targets (tvm)
@pytest.fixture(scope="module")
def targets():
    return pytest.importorskip("targets")


def test_single_conv_latency_against_the_preset(targets):
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    macs, moved = 8 * 8 * 8 * 4 * 9, 4 * (256 + 512 + 288)
    for unit in ("gpu", "cpu"):
        roofline = targets.preset_for("865").roofline(unit)
        report = analyze(conv, (1, 4, 8, 8), target="865", unit=unit)
        (row,) = report.layers
        peak = report.total.peak_gflops
        assert peak == pytest.approx(float(roofline.peak_gflops["float32"]))
        assert report.total.bandwidth_gbs == pytest.approx(float(roofline.bandwidth_gbs))
        expected = max(2 * macs / (peak * 1e9), moved / (roofline.bandwidth_gbs * 1e9))
        assert (row.macs, row.bytes) == (macs, moved)
        assert row.latency_s == pytest.approx(expected)
        assert report.total.latency_s == pytest.approx(expected)


def test_compute_bound_conv_on_cpu(targets):
    """A wide 3x3 conv has ~110 FLOP/B: beyond any phone CPU's ridge point."""
    report = analyze(nn.Conv2d(64, 64, 3, padding=1, bias=False), (1, 64, 32, 32), unit="cpu")
    (row,) = report.layers
    assert report.total.arithmetic_intensity > report.total.ridge_point
    assert row.bound == "compute" and row.latency_s == pytest.approx(row.compute_s)


@pytest.fixture(scope="module")
def shift_report(targets):
    torch.manual_seed(0)
    return analyze("shiftresnet20", target="865", top=5)


def test_totals_are_sums_of_layers(shift_report):
    rows, total = shift_report.layers, shift_report.total
    assert total.unattributed_params == 0
    assert total.params == sum(r.params for r in rows) == 186_746
    assert total.macs == sum(r.macs for r in rows)
    assert total.bytes == sum(r.bytes for r in rows)
    assert total.latency_s == pytest.approx(sum(r.latency_s for r in rows))
    assert total.arithmetic_intensity == pytest.approx(2 * total.macs / total.bytes)
    assert all(r.latency_s == max(r.compute_s, r.memory_s) for r in rows)
    assert shift_report.input_shape == (1, 3, 32, 32) and shift_report.unit == "gpu"


def test_model_sizes(shift_report):
    total = shift_report.total
    assert total.size_fp32_mb == pytest.approx(total.params * 4 / 2 ** 20)
    assert total.size_fp16_mb == pytest.approx(total.size_fp32_mb / 2)
    assert total.size_int8_mb == pytest.approx(total.size_fp32_mb / 4)


def test_shift_layers_cost_memory_not_macs(shift_report):
    shifts = [r for r in shift_report.layers if r.type == "Shift2d"]
    assert len(shifts) == 9
    assert all(r.macs == 0 and r.bytes > 0 and r.bound == "memory" for r in shifts)


def test_fp16_halves_traffic(targets):
    fp32 = analyze(small_net(), (1, 3, 16, 16), dtype="fp32")
    fp16 = analyze(small_net(), (1, 3, 16, 16), dtype="fp16")
    assert fp16.total.bytes * 2 == fp32.total.bytes
    assert fp16.total.macs == fp32.total.macs
    assert analyze(small_net(), (1, 3, 16, 16), dtype="float16").total.bytes == fp16.total.bytes


def test_target_names_pick_preset_and_unit(targets):
    conv, shape = nn.Conv2d(4, 8, 1), (1, 4, 8, 8)
    cpu = analyze(conv, shape, target="snapdragon/888-cpu")
    assert cpu.unit == "cpu"
    assert cpu.total.peak_gflops == pytest.approx(targets.PRESETS["888"].roofline("cpu").peak_gflops["float32"])
    gpu = analyze(conv, shape, target=targets.get_target("snapdragon/888-adreno"), dtype="fp16")
    assert (gpu.unit, gpu.target) == ("gpu", "snapdragon/888-adreno")
    assert gpu.total.peak_gflops == pytest.approx(targets.PRESETS["888"].roofline("gpu").peak_gflops["float16"])
    assert analyze(conv, shape, target="arm").unit == "cpu"


def test_report_table_and_dict(shift_report):
    text = str(shift_report)
    assert "shiftresnet20" in text and "186,746" in text
    assert f"... {len(shift_report.layers) - 5} more layers" in text
    heaviest = shift_report.heaviest(5)
    assert heaviest[0].latency_s == max(r.latency_s for r in shift_report.layers)
    assert all(r.name in text for r in heaviest)
    data = json.loads(json.dumps(shift_report.to_dict()))
    assert len(data["layers"]) == len(shift_report.layers)
    assert data["total"]["macs"] == shift_report.total.macs


# --------------------------------------------------------------------------- CLI
def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_cli_runs_from_another_directory(targets, tmp_path):
    out = tmp_path / "report.json"
    result = run_cli("--top", "3", "--json", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "shiftresnet20" in result.stdout and "latency" in result.stdout
    assert json.loads(out.read_text())["model"] == "shiftresnet20"


def test_cli_bad_model_exits_2(tmp_path):
    result = run_cli("--model", "resnet9000", cwd=tmp_path)
    assert result.returncode == 2
    assert "shiftresnet20" in result.stderr and "Traceback" not in result.stderr


def test_cli_bad_target_exits_2(targets, tmp_path):
    result = run_cli("--target", "snapdragon/9999", cwd=tmp_path)
    assert result.returncode == 2
    assert "865" in result.stderr and "Traceback" not in result.stderr


def test_int8_size_and_float_ops_are_what_compile_stores(targets):
    """--dtype int8: the int8 size and the float ops come from the quantizer's rewrite, equal to what
    ``tvm_ecnn.quantize`` (scripts/compile.py --dtype int8) stores, not ``params x 1 B``."""
    from tvm_ecnn.frontend import from_torch
    from tvm_ecnn.quantize import quantize

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 1), nn.SiLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    shape = (1, 3, 8, 8)
    report = analyze(net, shape, dtype="int8")
    compiled = quantize(from_torch(net, (torch.randn(shape),)), np.random.default_rng(0).standard_normal(
        (2, 3, 8, 8)).astype("float32"))
    assert report.total.size_int8_mb * 2 ** 20 == compiled.weight_bytes != count_params(net)
    assert report.total.int8_float_ops == compiled.float_ops and compiled.float_ops  # SiLU stays float
    assert "in float    " in report.table() and analyze(net, shape).total.int8_float_ops is None
