"""Cross-compiled Relax models run on the emulated aarch64 device through TVM's real RPC tracker/server."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax, rpc

from tvm_ecnn.device import emulated
from tvm_ecnn.device.export import cross_compiler_for

REPO = Path(__file__).resolve().parents[1]
CPU_FEATURES = {"mattr": ["+neon"], "mcpu": "cortex-a77"}
LINUX = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", **CPU_FEATURES})
ANDROID = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-android", **CPU_FEATURES})
EM_AARCH64 = 183


def conv_relu_conv() -> tuple[tvm.IRModule, np.ndarray]:
    """conv3x3(3->8) -> relu -> conv1x1(8->16) on 1x3x16x16, weights baked in as constants."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3), dtype="float32")
    w2 = rng.standard_normal((16, 8, 1, 1), dtype="float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 16, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w1), padding=1))
            y = bb.emit(relax.op.nn.relu(y))
            y = bb.emit_output(relax.op.nn.conv2d(y, relax.const(w2)))
        bb.emit_func_output(y)
    return bb.get(), rng.standard_normal((1, 3, 16, 16), dtype="float32")


def compile_cpu(mod: tvm.IRModule, target: tvm.target.Target):
    # relax.get_default_pipeline fuses and schedules; tvm.compile's CPU default does neither (notes bug D).
    return tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))


@pytest.fixture(scope="module")
def model_and_reference():
    mod, x = conv_relu_conv()
    vm = relax.VirtualMachine(compile_cpu(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return mod, x, vm["main"](tvm.runtime.tensor(x)).numpy()


def run_remote(device, so_path: Path, x: np.ndarray) -> np.ndarray:
    host, port, key = device
    remote = rpc.connect_tracker(host, port).request(key, session_timeout=120)
    remote.upload(str(so_path))
    vm = relax.VirtualMachine(remote.load_module(so_path.name), remote.cpu())
    return vm["main"](tvm.runtime.tensor(x, remote.cpu())).numpy()


def assert_aarch64_elf(path: Path) -> None:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == EM_AARCH64, path


def test_linux_aarch64_model_runs_on_device(device, model_and_reference, tmp_path):
    mod, x, expected = model_and_reference
    so = tmp_path / "net_linux_aarch64.so"
    compile_cpu(mod, LINUX).export_library(str(so), fcompile=cross_compiler_for(LINUX))
    assert_aarch64_elf(so)
    np.testing.assert_allclose(run_remote(device, so, x), expected, atol=1e-5, rtol=1e-5)


def test_android_triple_so_loads_on_glibc_device(device, model_and_reference, tmp_path):
    """Android .so linked by plain ld.lld: validates relocations, symbols and TVM ABI (not bionic specifics)."""
    mod, x, expected = model_and_reference
    so = tmp_path / "net_android.so"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "TVM_NDK_CC is not set" is expected here
        fcompile = cross_compiler_for(ANDROID)
    compile_cpu(mod, ANDROID).export_library(str(so), fcompile=fcompile)
    assert_aarch64_elf(so)
    np.testing.assert_allclose(run_remote(device, so, x), expected, atol=1e-5, rtol=1e-5)


def test_zoo_mobilenet_v2_fp32_and_int8_on_device(device, tmp_path):
    """A real network through the plugin's pipeline on the Snapdragon CPU target, fp32 and int8 in one module (one
    cross-build, one upload): every conv kernel family at once (1x1 and the stem in fp32 FMLA and int8 ``sdot`` or
    its fallback, depthwise NEON, residual adds, pool, dense). fp32 against PyTorch; int8 against the host build
    of the same quantized module (itself bit-exact against numpy in test_int8_ops.py): equal to the bit."""
    import torch

    from tvm_ecnn import models, pipeline
    from tvm_ecnn.frontend import from_torch
    from tvm_ecnn.quantize import quantize

    torch.manual_seed(0)
    model = models.get("mobilenet_v2", num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    fp32 = from_torch(model, (x,))
    int8 = quantize(fp32, x.numpy()).mod
    both = tvm.IRModule({"fp32": fp32["main"].with_attr("global_symbol", "fp32"),  # the int8 rewrite shares vars
                         "int8": relax.utils.copy_with_new_vars(int8["main"]).with_attr("global_symbol", "int8")})
    so = tmp_path / "mobilenet_v2_fp32_int8.so"
    pipeline.build(both, "aarch64-linux").export_library(str(so), fcompile=cross_compiler_for(LINUX))
    host, port, key = device
    remote = rpc.connect_tracker(host, port).request(key, session_timeout=300)
    remote.upload(str(so))
    vm = relax.VirtualMachine(remote.load_module(so.name), remote.cpu())
    on_device = {name: vm[name](tvm.runtime.tensor(x.numpy(), remote.cpu())).numpy() for name in ("fp32", "int8")}
    with torch.no_grad():
        np.testing.assert_allclose(on_device["fp32"], model(x).numpy(), rtol=1e-4, atol=1e-4)
    host_int8 = relax.VirtualMachine(pipeline.build(int8, "host"), tvm.cpu())["main"](tvm.runtime.tensor(x.numpy()))
    np.testing.assert_array_equal(on_device["int8"], host_int8.numpy())


def test_tracker_lists_device(device):
    host, port, key = device
    summary = emulated.tracker_summary(host, port)
    assert key in summary["queue_info"]
    assert [s["key"] for s in summary["server_info"]] == [f"server:{key}"]


def test_cli_start_status_stop_leaves_no_processes(binfmt, tmp_path):
    """The detached CLI round trip; afterwards no process of either group (qemu'd popen workers included) lives."""
    cli = [sys.executable, str(REPO / "scripts" / "emulated_device.py")]
    state = tmp_path / "state.json"
    start = subprocess.run([*cli, "start", "--key", "cli-check", "--state", str(state)],
                           capture_output=True, text=True, cwd=tmp_path)
    services = [emulated.Service(**json.loads(state.read_text())[n]) for n in ("tracker", "device")] \
        if state.exists() else []
    try:
        assert start.returncode == 0, start.stderr
        assert "--rpc-key cli-check" in start.stdout
        status = subprocess.run([*cli, "status", "--state", str(state)], capture_output=True, text=True)
        assert status.returncode == 0 and "cli-check" in status.stdout, status.stdout + status.stderr
    finally:
        subprocess.run([*cli, "stop", "--state", str(state)], check=True, capture_output=True)
    assert services and not any(s.alive() for s in services)
    assert not state.exists()


CLI = [sys.executable, str(REPO / "scripts" / "emulated_device.py")]


@pytest.fixture(scope="module")
def other_tracker():
    """An RPC tracker this test module started itself: the 'other TVM process' of the tests below."""
    tracker = emulated.start_tracker()
    yield tracker
    emulated.stop(tracker)


def test_cli_start_refuses_a_port_another_tracker_owns(other_tracker, tmp_path):
    state = tmp_path / "state.json"
    proc = subprocess.run([*CLI, "start", "--port", str(other_tracker.port), "--state", str(state)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (f"error: port {other_tracker.port} on 127.0.0.1 is already in use (another RPC "
                                   "tracker?): choose another --port, or leave it out to get a free one")
    assert other_tracker.alive() and not state.exists()
    assert emulated.tracker_summary("127.0.0.1", other_tracker.port)["server_info"] == []  # nothing registered


def test_cli_stop_with_a_stale_state_file_leaves_the_pids_new_owner_alone(other_tracker, tmp_path):
    """The state names the other tracker's pid, but with another start time: a recycled pid, not ours."""
    service = dict(other_tracker.to_json(), started=other_tracker.started - 1)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"host": "127.0.0.1", "port": other_tracker.port, "key": "k",
                                 "tracker": service, "device": service}))
    proc = subprocess.run([*CLI, "stop", "--state", str(state)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"(pid {other_tracker.pid}) ended long ago and its pid now belongs to another process" in proc.stdout
    assert other_tracker.alive() and emulated._port_open("127.0.0.1", other_tracker.port)
    assert not state.exists()


@pytest.mark.parametrize("content", ['{"host": "127.0.0.1", "port": 9190}', "[]", "{not json",
                                     '{"host": "h", "port": 1, "key": "k", "tracker": {"pid": 1}, "device": {}}'])
def test_cli_stop_with_a_foreign_state_file_exits_2_in_one_line(tmp_path, content):
    state = tmp_path / "state.json"
    state.write_text(content)
    proc = subprocess.run([*CLI, "stop", "--state", str(state)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(state) in proc.stderr and "Traceback" not in proc.stderr
    assert state.read_text() == content, "a state file we did not write must be left for the user to check"


def test_cli_port_out_of_range_exits_2_in_one_line():
    proc = subprocess.run([*CLI, "start", "--port", "99999"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --port must be a TCP port (1-65535), got 99999"
