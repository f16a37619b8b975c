"""Faults on the RPC device, injected into a real tracker + emulated aarch64 device: a frozen (SIGSTOP) or dead
(SIGKILL) device ends ``scripts/run.py``, ``tvm_ecnn.runtime`` and ``scripts/tune.py`` with one clear message and a
non-zero exit within the session timeout, and a tuning database keeps every finished record. The device is frozen
and thawed by the first tests and killed by the last ones (qemu is slow: one device for the whole module)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tvm import relax

import targets
from relax_helpers import build_module
from tvm_ecnn import runtime
from tvm_ecnn.device import emulated
from tvm_ecnn.device.export import cross_compiler_for
from tvm_ecnn.pipeline import build

REPO = Path(__file__).resolve().parents[1]
AARCH64 = targets.get_target("aarch64-linux")
KEY = "fault-injection"
SHAPE = (1, 4, 8, 8)
RECORDS = "database_tuning_record.json"


@pytest.fixture(scope="module")
def device(binfmt):
    """(tracker "HOST:PORT", the device server's Service): the server's process group is what the tests freeze or
    kill."""
    tracker = server = None
    try:
        tracker = emulated.start_tracker()
        address = f"127.0.0.1:{tracker.port}"
        server = emulated.start_device(tracker=address, key=KEY)
        yield address, server
    finally:
        emulated.stop(server, tracker)


@pytest.fixture
def frozen(device):
    """The device stopped (SIGSTOP to its whole process group, qemu'd popen workers included) for one test."""
    address, server = device
    os.killpg(server.pid, signal.SIGSTOP)
    try:
        yield address
    finally:
        os.killpg(server.pid, signal.SIGCONT)
        wait_until_free(address)


def wait_until_free(address: str) -> None:
    host, port = runtime.parse_tracker(address)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if emulated.tracker_summary(host, port)["queue_info"].get(KEY, {}).get("free", 0):
            return
        time.sleep(1)
    pytest.fail("the thawed device did not come back to the tracker")


@pytest.fixture(scope="module")
def so(tmp_path_factory) -> Path:
    """A 1x1 convolution exported for aarch64 Linux."""
    weight = np.random.default_rng(0).standard_normal((4, 4, 1, 1)).astype("float32")
    mod = build_module(lambda x: relax.op.nn.conv2d(x, relax.const(weight)), [(SHAPE, "float32")])
    path = tmp_path_factory.mktemp("so") / "conv_aarch64.so"
    build(mod, AARCH64).export_library(str(path), fcompile=cross_compiler_for(AARCH64))
    return path


@pytest.fixture(scope="module")
def tiny_program(tmp_path_factory) -> Path:
    """One 1x1 convolution + ReLU as a saved torch.export program: one small kernel to tune."""
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.ReLU()).eval()
    path = tmp_path_factory.mktemp("model") / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(SHAPE),)), str(path))
    return path


def run_cli(so: Path, address: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "run.py"), str(so), "--input-shape", "1,4,8,8",
                           "--rpc-tracker", address, "--rpc-key", KEY, "--number", "1", "--repeat", "1", *extra],
                          capture_output=True, text=True, timeout=240)


def tune_cli(program: Path, address: str, db: Path, trials: int) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "tune.py"), "--model", str(program), "--target", "aarch64-linux",
            "--rpc-tracker", address, "--rpc-key", KEY, "--trials", str(trials), "--trials-per-batch", "2",
            "--tuning-db", str(db), "--session-timeout", "20", "--seed", "0", "--quiet"]


def records(db: Path) -> list[str]:
    path = db / RECORDS
    return path.read_text().splitlines() if path.exists() else []


def measured_secs(line: str) -> float:
    return min(float(s) for s in json.loads(line)[1][1])


def test_run_cli_on_a_frozen_device_exits_1_within_the_session_timeout(frozen, so):
    proc = run_cli(so, frozen, "--session-timeout", "10")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"no answer from device {KEY!r} at RPC tracker {frozen}" in proc.stderr and "10 s" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_remote_call_on_a_device_frozen_mid_session_raises_timeout(device, so):
    address, server = device
    x = np.ones(SHAPE, "float32")
    model = runtime.upload_and_load(so, address, KEY, session_timeout=30)
    try:
        assert model.run(x)[0].shape == SHAPE
        os.killpg(server.pid, signal.SIGSTOP)
        with pytest.raises(TimeoutError, match=f"no answer from device {KEY!r}.*running the model"):
            model.run(x)
    finally:
        model.close()
        os.killpg(server.pid, signal.SIGCONT)
        wait_until_free(address)


def test_tune_cli_on_a_frozen_device_exits_1_and_records_no_failure(frozen, tiny_program, tmp_path):
    db = tmp_path / "db"
    proc = subprocess.run(tune_cli(tiny_program, frozen, db, trials=2), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"no answer from a device under key {KEY!r} at RPC tracker {frozen} within the 20 s" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert records(db) == [], "a candidate that was never measured was recorded"


def test_tune_cli_on_a_device_killed_mid_tuning_keeps_the_finished_batches(device, tiny_program, tmp_path):
    """Last user of the device: SIGKILL its whole process group once the first batch is recorded."""
    address, server = device
    db = tmp_path / "db"
    log = tmp_path / "tune.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(tune_cli(tiny_program, address, db, trials=8), stdout=out, stderr=subprocess.STDOUT,
                                text=True)
    try:
        deadline = time.monotonic() + 480
        while len(records(db)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(records(db)) >= 2, log.read_text()[-3000:]
        os.killpg(server.pid, signal.SIGKILL)
        before = records(db)
        proc.wait(timeout=300)
    finally:
        proc.kill()
    output = log.read_text()
    assert proc.returncode == 1, output[-3000:]
    assert KEY in output and f"kept in {db}" in output and "Traceback" not in output, output[-3000:]
    after = records(db)
    assert after[: len(before)] == before and all(measured_secs(line) < 1e9 for line in after), after


def test_run_cli_on_a_dead_device_exits_1_naming_the_key(device, so):
    proc = run_cli(so, device[0])
    assert proc.returncode == 1 and f"no device registered under key {KEY!r}" in proc.stderr, proc.stderr
