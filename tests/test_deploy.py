"""The user's workflow end to end: scripts/compile.py, the exported .so, its kernels on PoCL."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tvm_ecnn.deploy import _constants, import_model
from tvm_ecnn.device.pocl import build_on_pocl, opencl_source_from_library

ROOT = Path(__file__).resolve().parents[1]


def compile_cli(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "compile.py"), "--quiet", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_compile_adreno_default_model_so_builds_on_pocl(tmp_path):
    done = compile_cli("--target", "adreno", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    library = tmp_path / "shiftresnet20-adreno.so"
    assert library.exists()
    assert library.read_bytes()[:4] == b"\x7fELF" and library.read_bytes()[18] == 183  # EM_AARCH64
    for line in ("rewritten", "kernels     opencl:", "parameters", "roofline", str(library)):
        assert line in done.stdout, done.stdout
    assert "shift-conv x9" in done.stdout
    source = opencl_source_from_library(library)
    assert source.count("__kernel void") >= 9
    build_on_pocl(source)


@pytest.mark.parametrize("args, expected", [
    (("--target", "snapdragon/999-gpu"), "valid names"),
    (("--model", "resnet9000", "--target", "host"), "zoo name"),
])
def test_compile_bad_names_exit_2_with_the_valid_ones(tmp_path, args, expected):
    done = compile_cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr


def test_shiftresnet20_tuned_over_rpc_exported_and_run_on_the_emulated_device(tmp_path, device):
    """The issue's end-to-end check: tune a few trials over RPC, compile with the records, upload, run."""
    import numpy as np
    import torch

    from tvm_ecnn import models
    from tvm_ecnn.deploy import compile_model
    from tvm_ecnn.frontend import from_torch
    from tvm_ecnn.runtime import upload_and_load
    from tvm_ecnn.tuning import tune

    host, port, key = device
    tracker = f"{host}:{port}"
    torch.manual_seed(0)
    model = models.get("shiftresnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    database = tune(from_torch(model, (x,)), "aarch64-linux", tmp_path / "db", trials=8, trials_per_batch=8,
                    rpc_tracker=tracker, rpc_key=key, progress=False)
    assert (database / "database_tuning_record.json").read_text().count("\n") >= 1
    result = compile_model(model, x.shape, "aarch64-linux", tuning_db=database, output=tmp_path / "net.so",
                           progress=False)
    loaded = upload_and_load(result.output, tracker, key)
    try:
        out = loaded.run(x.numpy())[0]
    finally:
        loaded.close()
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("dtype", "tolerance"), [("fp32", 1e-4), ("fp16", 1e-2)])
def test_compile_then_run_script_matches_pytorch(tmp_path, dtype, tolerance):
    """fp16: weights and activations stored in half, fp32 in and out (``deploy.float16_storage``)."""
    done = compile_cli("--target", "host", "--dtype", dtype, "-o", "net.so", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"({dtype})" in done.stdout
    ran = subprocess.run([sys.executable, str(ROOT / "scripts" / "run.py"), "net.so", "--model", "shiftresnet20",
                          "--repeat", "2", "--number", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert "median" in ran.stdout
    error = float(ran.stdout.split("max abs error vs PyTorch:")[1].split()[0])
    largest = float(ran.stdout.split("(largest |output|")[1].split(")")[0])
    assert error < tolerance * max(1.0, largest), ran.stdout


@pytest.mark.parametrize("model", ["shiftresnet20", "mobilenet_v2"])  # MobileNetV2: ReLU6 is R.clip
def test_fp16_halves_the_weights(model):
    fp32 = import_model(model, (1, 3, 16, 16), "fp32")[0]
    fp16 = import_model(model, (1, 3, 16, 16), "fp16")[0]
    weights = {dtype: sum(int(np.prod(c.value.shape)) for c in _constants(m) if str(c.value.dtype) == dtype)
               for dtype, m in (("float32", fp32), ("float16", fp16))}
    assert weights["float16"] == weights["float32"] > 0
    assert [str(p.ty.dtype) for p in fp16["main"].params] == ["float32"]
