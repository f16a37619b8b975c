"""Loading and running compiled ``.so`` files (``tvm_ecnn.runtime``, ``scripts/run.py``): on this machine, refused
with a hint when built for another architecture, and uploaded to the emulated aarch64 device over RPC."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program

import relay_ops
import targets
from relax_helpers import build_module
from tvm_ecnn import runtime
from tvm_ecnn.device.export import cross_compiler_for
from tvm_ecnn.pipeline import build

REPO = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(REPO / "scripts" / "run.py")]
AARCH64 = targets.get_target("aarch64-linux")
SHAPE = (1, 8, 8, 8)


def two_output_module() -> tvm.IRModule:
    """A shift fused into a 1x1 convolution, returning ``(y, (relu(y), x))``: nested tuple outputs."""
    weight = relax.const(np.random.default_rng(0).standard_normal((8, 8, 1, 1)).astype("float32"))

    def body(x):
        y = relay_ops.shift_conv2d(x, weight)
        return relax.Tuple([y, relax.Tuple([relax.op.nn.relu(y), x])])

    return build_module(body, [(SHAPE, "float32")])


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal(SHAPE).astype("float32")


@pytest.fixture(scope="module")
def libraries(tmp_path_factory) -> dict[str, Path]:
    """The test module exported for this machine and for aarch64 Linux."""
    folder = tmp_path_factory.mktemp("so")
    mod = two_output_module()
    paths = {"host": folder / "net_host.so", "aarch64": folder / "net_aarch64.so"}
    build(mod, "host").export_library(str(paths["host"]))
    build(mod, AARCH64).export_library(str(paths["aarch64"]), fcompile=cross_compiler_for(AARCH64))
    return paths


@pytest.fixture(scope="module")
def expected(x) -> list[np.ndarray]:
    vm = relax.VirtualMachine(build(two_output_module(), "host"), tvm.cpu())
    y, (r, x_out) = vm["main"](tvm.runtime.tensor(x))
    return [y.numpy(), r.numpy(), x_out.numpy()]


def assert_outputs(outputs, expected) -> None:
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_host_so_runs_flattens_tuples_and_benchmarks(libraries, x, expected):
    with runtime.load(libraries["host"]) as model:
        assert model.num_inputs == 1
        assert_outputs(model.run(x), expected)
        timing = model.benchmark(x, number=2, repeat=3)
    assert set(timing) == {"median_ms", "min_ms", "max_ms"}
    assert 0 < timing["min_ms"] <= timing["median_ms"] <= timing["max_ms"]


def test_wrong_number_of_inputs_is_refused(libraries, x):
    with runtime.load(libraries["host"]) as model, pytest.raises(ValueError, match="takes 1 input"):
        model.run(x, x)


@pytest.mark.skipif(targets.host_arch() == "aarch64", reason="the aarch64 .so is native here")
def test_so_for_another_architecture_is_refused_with_a_hint(libraries):
    with pytest.raises(ValueError) as error:
        runtime.load(libraries["aarch64"])
    message = str(error.value)
    assert "aarch64" in message and targets.host_arch() in message and "--rpc-tracker" in message


def test_file_that_is_not_a_shared_object_is_refused(tmp_path):
    path = tmp_path / "net.tar"
    path.write_bytes(b"not an ELF file")
    with pytest.raises(ValueError, match="not a shared object"):
        runtime.load(path)


def test_opencl_without_an_opencl_runtime_says_so(libraries):
    if tvm.device("opencl").exist:
        pytest.skip("this TVM runtime has OpenCL")
    with pytest.raises(RuntimeError, match="rpc-tracker"):
        runtime.load(libraries["host"], device="opencl")


def test_run_cli_reports_error_against_pytorch_and_latency(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    example = torch.randn(1, 3, 16, 16)
    program = torch.export.export(net, (example,))
    torch.export.save(program, str(tmp_path / "net.pt2"))
    build(from_exported_program(program, keep_params_as_input=False), "host").export_library(str(tmp_path / "net.so"))
    np.savez(tmp_path / "x.npz", x=example.numpy())
    proc = subprocess.run([*RUN, str(tmp_path / "net.so"), "--inputs", str(tmp_path / "x.npz"),
                           "--model", str(tmp_path / "net.pt2"), "--number", "2", "--repeat", "2"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "output 0: (1, 4, 16, 16) float32" in proc.stdout
    error = float(re.search(r"max abs error vs PyTorch: (\S+)", proc.stdout).group(1))
    assert error < 1e-4, proc.stdout
    assert re.search(r"latency on this machine \(cpu\): median [\d.]+ ms, min [\d.]+ ms, max [\d.]+ ms", proc.stdout)


@pytest.mark.skipif(targets.host_arch() == "aarch64", reason="the aarch64 .so is native here")
def test_run_cli_on_a_foreign_so_exits_2_with_the_hint(libraries):
    proc = subprocess.run([*RUN, str(libraries["aarch64"]), "--input-shape", "1,8,8,8"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert "built for aarch64" in proc.stderr and "--rpc-tracker" in proc.stderr


def test_upload_and_run_on_the_device_matches_the_host(device, libraries, x, expected):
    host, port, key = device
    tracker = f"{host}:{port}"
    for _ in range(2):  # closing frees the device: the second session gets it at once
        with runtime.upload_and_load(libraries["aarch64"], tracker, key) as model:
            assert_outputs(model.run(x), expected)
            timing = model.benchmark(x, number=1, repeat=2)
            assert 0 < timing["min_ms"] <= timing["max_ms"]


def test_run_cli_through_the_tracker(device, libraries, x, tmp_path):
    host, port, key = device
    tracker = f"{host}:{port}"
    np.savez(tmp_path / "x.npz", x=x)
    proc = subprocess.run([*RUN, str(libraries["aarch64"]), "--inputs", str(tmp_path / "x.npz"), "--rpc-tracker",
                           tracker, "--rpc-key", key, "--number", "1", "--repeat", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "output 2: (1, 8, 8, 8) float32" in proc.stdout
    assert f"latency on {key} via {tracker} (cpu)" in proc.stdout


def test_unknown_key_fails_in_seconds_naming_it(device, libraries):
    host, port, _ = device
    tracker = f"{host}:{port}"
    with pytest.raises(ConnectionError) as error:
        runtime.upload_and_load(libraries["aarch64"], tracker, "nobody")
    assert tracker in str(error.value) and "'nobody'" in str(error.value)


@pytest.fixture(scope="module")
def int8_so(tmp_path_factory):
    """``int8_so(target)``: ShiftResNet-20 at 16x16 compiled in int8 (random calibration) for ``target``, once."""
    from tvm_ecnn.deploy import compile_model

    folder, built = tmp_path_factory.mktemp("int8"), {}

    def get(target: str) -> Path:
        if target not in built:
            built[target] = compile_model("shiftresnet20", (1, 3, 16, 16), target, dtype="int8",
                                          output=folder / f"{target}.so", progress=False).output
        return built[target]

    return get


@pytest.mark.parametrize("where", ["host", "device"])
def test_run_cli_compares_an_int8_build_with_pytorch_fp32(where, int8_so, request):
    """No --model: the .so records its zoo model and seed; the int8 output agrees with PyTorch's fp32 one."""
    rpc = []
    if where == "device":
        host, port, key = request.getfixturevalue("device")
        rpc = ["--rpc-tracker", f"{host}:{port}", "--rpc-key", key]
    path = int8_so("host" if where == "host" else "aarch64-linux")
    proc = subprocess.run([*RUN, str(path), *rpc, "--number", "1", "--repeat", "1"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"int8 ~ PyTorch fp32: top-1 ([\d.]+)%, logits rel\. error max (\S+) mean (\S+) \(1 sample\)",
                      proc.stdout)
    assert found, proc.stdout
    top1, worst, mean = map(float, found.groups())
    assert top1 == 100.0 and 0 < mean <= worst < 0.1, proc.stdout  # int8 error, but not a wrong kernel's
    assert "max abs error vs PyTorch" in proc.stdout


def _tvm_threads_after_import(env: dict) -> int:
    code = "import tvm_ecnn, tvm; print(tvm.get_global_func('runtime.NumThreads')())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def test_tvm_thread_pool_takes_every_core():
    """TVM alone sizes its pool to half the x86 hardware threads (one thread on a 2-core VM); importing tvm_ecnn
    gives it every core this process may use, and leaves a user's TVM_NUM_THREADS alone."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    assert _tvm_threads_after_import(env) == len(os.sched_getaffinity(0))
    assert _tvm_threads_after_import({**env, "TVM_NUM_THREADS": "1"}) == 1
