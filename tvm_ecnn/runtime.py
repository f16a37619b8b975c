"""Load a compiled model (the ``.so`` of ``scripts/compile.py``), run it and time it, here or on an RPC device.

    m = load("net.so")                                  # this machine's CPU
    m = upload_and_load("net.so", "127.0.0.1:9190", "snapdragon865", device="opencl")
    outputs = m.run(x)                                  # list of numpy arrays, whatever the output nesting
    m.benchmark(x, number=10, repeat=5)                 # {"median_ms": ..., "min_ms": ..., "max_ms": ...}
    m.close()                                           # frees the remote device for the next session

Why a wrapper: the Relax VM returns tuples from an RPC device as remote objects without ``.numpy()``, and
``tvm.runtime.load_module`` on a ``.so`` for another architecture fails with a bare ``dlopen`` error; both are
handled here once.
"""
from __future__ import annotations

import gc
import socket
import statistics
import struct
from pathlib import Path

import numpy as np
import tvm
from tvm import relax, rpc
from tvm.rpc import base as rpc_base

import targets as _targets

TRACKER_TIMEOUT_S = 5.0
# ELF e_machine values (https://refspecs.linuxfoundation.org/elf/gabi4+/ch4.eheader.html) of the CPUs we meet.
_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}
DEVICE_KINDS = ("cpu", "opencl")


def elf_arch(path) -> str | None:
    """The architecture a shared object was built for, or None if the file is not ELF."""
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    order = "little" if header[5] == 1 else "big"
    machine = int.from_bytes(header[18:20], order)
    return _ELF_MACHINES.get(machine, f"ELF machine {machine}")


def _check_loadable_here(path: Path) -> None:
    arch = elf_arch(path)
    if arch is None:
        raise ValueError(f"{path} is not a shared object (no ELF header); export it with "
                         "scripts/compile.py or executable.export_library('net.so')")
    if arch != _targets.host_arch():
        raise RuntimeError(f"{path} is built for {arch}, but this machine is {_targets.host_arch()}: it cannot be "
                           f"loaded here. Run it on a device instead: scripts/run.py {path} --rpc-tracker HOST:PORT "
                           "--rpc-key KEY (or tvm_ecnn.runtime.upload_and_load)")


def _numpy(value) -> list[np.ndarray]:
    """Flatten the VM's (possibly nested tuple) result to numpy arrays."""
    if isinstance(value, (tuple, list)):
        return [array for item in value for array in _numpy(item)]
    return [value.numpy()]


class Loaded:
    """A Relax VM over a loaded module on one device (local or remote)."""

    def __init__(self, lib: tvm.runtime.Module, device: tvm.runtime.Device, session=None, entry: str = "main"):
        self.device = device
        self.session = session  # keeps the RPC connection, hence the remote module, alive
        self.entry = entry
        self.vm = relax.VirtualMachine(lib, device)

    @property
    def num_inputs(self) -> int:
        return int(self.vm._get_function_arity(self.entry))

    def _set_inputs(self, inputs) -> None:
        if len(inputs) != self.num_inputs:
            raise ValueError(f"{self.entry} takes {self.num_inputs} input(s), got {len(inputs)}")
        self.vm.set_input(self.entry, *[tvm.runtime.tensor(np.ascontiguousarray(x), self.device) for x in inputs])

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Outputs as numpy arrays (a tuple output becomes several arrays, in order)."""
        self._set_inputs(inputs)
        self.vm.invoke_stateful(self.entry)
        return _numpy(self.vm.get_outputs(self.entry))

    def benchmark(self, *inputs: np.ndarray, number: int = 10, repeat: int = 5) -> dict[str, float]:
        """Latency in ms over ``repeat`` measurements, each the mean of ``number`` runs (after one warm-up)."""
        self._set_inputs(inputs)
        timer = self.vm.time_evaluator("invoke_stateful", self.device, number=number, repeat=repeat)
        results_ms = [1e3 * float(s) for s in timer(self.entry).results]
        return {"median_ms": statistics.median(results_ms), "min_ms": min(results_ms), "max_ms": max(results_ms)}

    def close(self) -> None:
        """Release the VM and, for a remote device, the RPC session: the device serves one session at a time,
        so the next request for it waits until this one is gone."""
        self.vm = self.session = self.device = None  # a remote Device holds its session too
        gc.collect()  # VirtualMachine.get_outputs leaves a self-referencing closure that keeps the VM alive

    def __enter__(self) -> Loaded:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _device(kind: str, session=None) -> tvm.runtime.Device:
    if kind not in DEVICE_KINDS:
        raise ValueError(f"device must be one of {', '.join(DEVICE_KINDS)}, got {kind!r}")
    device = session.device(kind) if session is not None else tvm.device(kind)
    if session is None and not device.exist:
        raise RuntimeError(f"this TVM runtime has no usable {kind} device (the PyPI wheel is built without "
                           "OpenCL): run the model on the phone with --rpc-tracker HOST:PORT --rpc-key KEY")
    return device


def load(path, device="cpu") -> Loaded:
    """Load ``path`` on this machine (``device`` "cpu" or "opencl") or, given an RPC session as ``device``, upload
    it to that device and load it on its CPU (use :func:`upload_and_load` for the remote GPU)."""
    if isinstance(device, rpc.RPCSession):
        return _load_remote(Path(path), device, "cpu")
    path = Path(path)
    _check_loadable_here(path)
    return Loaded(tvm.runtime.load_module(str(path)), _device(device))


def _load_remote(path: Path, session, kind: str) -> Loaded:
    session.upload(str(path))
    return Loaded(session.load_module(path.name), _device(kind, session), session=session)


# ------------------------------------------------------------------------------------------------------------------
# RPC


def parse_tracker(address: str) -> tuple[str, int]:
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--rpc-tracker must be HOST:PORT, got {address!r}")
    return host, int(port)


def tracker_devices(host: str, port: int, key: str, timeout: float = TRACKER_TIMEOUT_S) -> int:
    """Number of devices registered under ``key``; a ``ConnectionError`` naming host, port and key within
    ``timeout`` seconds when the tracker cannot be reached or has no such device.

    Speaks the tracker's summary protocol itself because ``rpc.connect_tracker`` retries for 60 s and then blocks
    without a timeout."""
    where = f"RPC tracker {host}:{port} (key {key!r})"
    answer = None
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack("<i", rpc_base.RPC_TRACKER_MAGIC))
            if struct.unpack("<i", rpc_base.recvall(sock, 4))[0] == rpc_base.RPC_TRACKER_MAGIC:
                rpc_base.sendjson(sock, [rpc_base.TrackerCode.SUMMARY])
                answer = rpc_base.recvjson(sock)
    except (OSError, RuntimeError, ValueError) as err:  # refused, unreachable, timed out, closed, garbage
        raise ConnectionError(f"cannot reach {where}: {err}; is `python -m tvm.exec.rpc_tracker --host {host} "
                              f"--port {port}` running?") from err
    if answer is None or answer[0] != rpc_base.TrackerCode.SUCCESS:
        raise ConnectionError(f"{where}: {host}:{port} answers, but not as a TVM RPC tracker")
    summary = answer[1]
    devices = sum(1 for server in summary["server_info"] if server.get("key") == f"server:{key}")
    if devices == 0:
        keys = sorted({s["key"].split(":", 1)[1] for s in summary["server_info"] if ":" in s.get("key", "")})
        raise ConnectionError(f"no device registered under key {key!r} at RPC tracker {host}:{port} (registered keys: "
                           f"{', '.join(keys) or 'none'}); start one with `python -m tvm.exec.rpc_server "
                           f"--tracker {host}:{port} --key {key}` or the tvm_rpc app")
    return devices


def upload_and_load(path, tracker: str, key: str, device: str = "cpu", session_timeout: float = 600) -> Loaded:
    """Request a device registered under ``key`` at ``tracker`` ("HOST:PORT"), upload ``path`` and load it."""
    host, port = parse_tracker(tracker)
    tracker_devices(host, port, key)  # fails in seconds, naming host, port and key
    session = rpc.connect_tracker(host, port).request(key, session_timeout=session_timeout)
    return _load_remote(Path(path), session, device)
