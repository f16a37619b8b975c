"""Load a compiled model (the ``.so`` of ``scripts/compile.py``), run it and time it, here or on an RPC device.

    m = load("net.so")                                  # this machine's CPU
    m = upload_and_load("net.so", "127.0.0.1:9190", "snapdragon865", device="opencl")
    outputs = m.run(x)                                  # list of numpy arrays, whatever the output nesting
    m.benchmark(x, number=10, repeat=5)                 # {"median_ms": ..., "min_ms": ..., "max_ms": ...}
    m.inputs                                            # [InputSpec(name, shape, dtype)] as compile embedded them
    m.close()                                           # frees the remote device for the next session

Why a wrapper: the Relax VM returns tuples from an RPC device as remote objects without ``.numpy()``;
``dlopen`` on a truncated or corrupt ``.so`` dies with SIGBUS/SIGSEGV, and on one for another architecture fails
with a bare error (over RPC: "No such file or directory"), so files are checked first (``tvm_ecnn.elf``); and a
wrong input is a ``ValueError`` naming the expected shape and dtype (from the ``.so``'s metadata) rather than a
check failure from inside the VM. All handled here once.
"""
from __future__ import annotations

import contextlib
import gc
import re
import os
import signal
import socket
import statistics
import struct
import threading
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax, rpc
from tvm.rpc import base as rpc_base

import targets as _targets
from targets.host import arch_of_triple

from . import elf
from .error_text import error_line
from . import metadata as _metadata

TRACKER_TIMEOUT_S = 5.0
DEFAULT_SESSION_TIMEOUT_S = 300.0
DEVICE_KINDS = ("cpu", "opencl")
# What a device whose TVM runtime cannot say (the tvm_rpc app has no LLVM) is assumed to be: every phone we target.
DEFAULT_DEVICE_ARCH = "aarch64"


def _check_loadable(path: Path, arch: str, where: str) -> None:
    """``ValueError`` before any ``dlopen`` when ``path`` is not a sound shared object for ``arch``."""
    found = elf.check_shared_object(path)
    if found == arch:
        return
    hint = (f"run it on a device instead: scripts/run.py {path} --rpc-tracker HOST:PORT --rpc-key KEY (or "
            "tvm_ecnn.runtime.upload_and_load)" if found == DEFAULT_DEVICE_ARCH and where == "this machine" else
            f"compile it for a target whose host is {arch} (scripts/compile.py --target ...)")
    raise ValueError(f"{path} is built for {found}, but {where} is {arch}: it cannot be loaded there; {hint}")


def _numpy(value) -> list[np.ndarray]:
    """Flatten the VM's (possibly nested tuple) result to numpy arrays."""
    if isinstance(value, (tuple, list)):
        return [array for item in value for array in _numpy(item)]
    return [value.numpy()]


class Loaded:
    """A Relax VM over a loaded module on one device (local or remote).

    ``inputs`` lists what the model takes (``metadata.InputSpec``: name, shape, dtype) and ``metadata`` what it was
    built from, as ``scripts/compile.py`` embeds them; both are None for a ``.so`` built without them."""

    def __init__(self, lib: tvm.runtime.Module, device: tvm.runtime.Device, session=None, entry: str = "main",
                 name: str = "the model"):
        self.device = device
        self.session = session  # keeps the RPC connection, hence the remote module, alive
        self.entry = entry
        self.name = name
        self.vm = relax.VirtualMachine(lib, device)
        self.metadata = _metadata.read(self.vm)
        self.inputs = self.metadata["inputs"] if self.metadata else None

    @property
    def num_inputs(self) -> int:
        return int(self.vm._get_function_arity(self.entry))

    def _set_inputs(self, inputs) -> None:
        if len(inputs) != self.num_inputs:
            expected = f": {'; '.join(map(str, self.inputs))}" if self.inputs else ""
            raise ValueError(f"{self.name} takes {self.num_inputs} input(s), got {len(inputs)}{expected}")
        arrays = [np.ascontiguousarray(x) for x in inputs]
        for i, (array, spec) in enumerate(zip(arrays, self.inputs or [], strict=False)):
            wrong = spec.mismatch(array)
            if wrong is not None:
                raise ValueError(f"input {i} ({spec.name}) of {self.name} must be {_metadata.shape_text(spec.shape)} "
                                 f"{spec.dtype}, got {wrong}")
        self.vm.set_input(self.entry, *[tvm.runtime.tensor(array, self.device) for array in arrays])

    def _invoke(self, call):
        """``call()``; TVM's check of an input against the signature (files without metadata) as a ValueError."""
        try:
            return call()
        except (ValueError, RuntimeError) as error:  # "...ErrorContext(fn=main, loc=param[0], param=x, annotation=...)"
            text = str(error)
            if "ErrorContext" not in text:
                raise
            found = re.search(r"param=(\w+), annotation=(.*?)\)\s+(.*)", text)
            detail = f"input {found.group(1)} must be {found.group(2)}: {found.group(3)}" if found else text
            raise ValueError(f"wrong input for {self.name}: {detail}") from None

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Outputs as numpy arrays (a tuple output becomes several arrays, in order)."""
        self._set_inputs(inputs)
        self._invoke(lambda: self.vm.invoke_stateful(self.entry))
        return _numpy(self.vm.get_outputs(self.entry))

    def benchmark(self, *inputs: np.ndarray, number: int = 10, repeat: int = 5) -> dict[str, float]:
        """Latency in ms over ``repeat`` measurements, each the mean of ``number`` runs (after one warm-up)."""
        for name, value in (("number", number), ("repeat", repeat)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self._set_inputs(inputs)
        timer = self.vm.time_evaluator("invoke_stateful", self.device, number=number, repeat=repeat)
        results_ms = [1e3 * float(s) for s in self._invoke(lambda: timer(self.entry)).results]
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
    _check_loadable(path, _targets.host_arch(), "this machine")
    kind = _device(device)
    try:
        lib = tvm.runtime.load_module(str(path))
    except RuntimeError as error:  # what TVM raises for dlopen / deserialisation failures
        raise RuntimeError(f"cannot load {path}: {error_line(error, last=True)}") from None
    return Loaded(lib, kind, name=path.name)


def _remote_arch(session) -> str:
    """The device's architecture, from its TVM (a full install has LLVM); else ``DEFAULT_DEVICE_ARCH``."""
    try:
        return arch_of_triple(session.get_function("target.llvm_get_system_triple")())
    except (AttributeError, RuntimeError):
        return DEFAULT_DEVICE_ARCH


def _load_remote(path: Path, session, kind: str, deadline: SessionDeadline | None = None) -> Loaded:
    deadline = deadline or SessionDeadline(None, "the RPC device")
    with deadline(f"uploading and loading {path.name}"):
        _check_loadable(path, _remote_arch(session), "the RPC device")
        device = _device(kind, session)
        session.upload(str(path))
        try:
            lib = session.load_module(path.name)
        except TimeoutError:
            raise
        except RuntimeError as error:
            raise RuntimeError(f"the RPC device cannot load {path}: {error_line(error, last=True)}") from None
        loaded = _RemoteLoaded(lib, device, session=session, name=path.name)
    loaded.deadline = deadline
    return loaded


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


class _Expired(BaseException):
    """What SIGALRM raises inside a blocking RPC read: not an ``OSError`` or ``RuntimeError``, which TVM's tracker
    client catches and retries."""


class SessionDeadline:
    """The end of a device session (``session_timeout`` seconds after its request; None: no end): every remote call
    runs under it and raises a ``TimeoutError`` naming the device when the device has not answered by then.

    Why here: TVM enforces a session timeout only on the server, which a frozen or dead device cannot do, and its
    client reads the socket without a timeout. SIGALRM interrupts that read (TVM runs Python's signal handlers on
    EINTR), so this works in the main thread only; elsewhere the calls are unbounded."""

    def __init__(self, seconds: float | None, device: str):
        self.seconds, self.device = seconds, device
        self.end = None if seconds is None else time.monotonic() + seconds
        self.sockets: list[int] = []  # the session's connection: shut down on expiry

    def _abandon(self) -> None:
        """Shut the session's socket down: freeing its remote objects (``Loaded.close``, garbage collection) would
        otherwise wait for the silent device for ever; now every further call fails at once."""
        for fd in self.sockets:
            with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        self.sockets = []

    def _expired(self, doing: str) -> TimeoutError:
        return TimeoutError(f"no answer from {self.device} within the {self.seconds:g} s session timeout ({doing}): "
                            "it is frozen, gone or busy; check it, or give more time with --session-timeout")

    @contextlib.contextmanager
    def __call__(self, doing: str):
        if self.end is None or threading.current_thread() is not threading.main_thread():
            yield
            return
        left = self.end - time.monotonic()
        if left <= 0:
            raise self._expired(doing)

        def on_alarm(_signum, _frame):
            raise _Expired

        previous = signal.signal(signal.SIGALRM, on_alarm)
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, left)
                yield
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Expired:
            self._abandon()
            raise self._expired(doing) from None
        finally:
            signal.signal(signal.SIGALRM, previous)


class _RemoteLoaded(Loaded):
    """A :class:`Loaded` on an RPC device: running and timing end by the session's deadline."""

    deadline: SessionDeadline

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        with self.deadline("running the model"):
            return super().run(*inputs)

    def benchmark(self, *inputs: np.ndarray, number: int = 10, repeat: int = 5) -> dict[str, float]:
        with self.deadline(f"timing {repeat} x {number} runs"):
            return super().benchmark(*inputs, number=number, repeat=repeat)


def upload_and_load(path, tracker: str, key: str, device: str = "cpu",
                    session_timeout: float = DEFAULT_SESSION_TIMEOUT_S) -> Loaded:
    """Request a device registered under ``key`` at ``tracker`` ("HOST:PORT"), upload ``path`` and load it.

    The session lasts at most ``session_timeout`` seconds: the server ends it then, and every call made through the
    returned object (the request included) raises a ``TimeoutError`` when the device has not answered by then."""
    if not session_timeout > 0:
        raise ValueError(f"session_timeout must be a positive number of seconds, got {session_timeout!r}")
    host, port = parse_tracker(tracker)
    tracker_devices(host, port, key)  # fails in seconds, naming host, port and key
    deadline = SessionDeadline(session_timeout, f"device {key!r} at RPC tracker {host}:{port}")
    before = _connections()
    with deadline("waiting for a free device"):
        session = rpc.connect_tracker(host, port).request(key, session_timeout=session_timeout)
    deadline.sockets = [fd for fd, remote_port in _connections() - before if remote_port != port]
    return _load_remote(Path(path), session, device, deadline)


def _connections() -> set[tuple[int, int]]:
    """(fd, remote port) of this process's open TCP connections: the one a request adds is its session's."""
    import psutil

    return {(c.fd, c.raddr.port) for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.raddr}
