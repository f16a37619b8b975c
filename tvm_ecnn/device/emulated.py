"""Emulated aarch64 "Snapdragon": TVM's real RPC tracker on the host, TVM's real RPC server under qemu-user.

Why: CI has no phone, but cross-compiled modules must still be exported, uploaded over RPC, loaded and run by an
aarch64 TVM runtime. Use it to prove that pipeline and CPU numerics; emulated timings say nothing about a Snapdragon.

How (shared notes ``emulated-device.md`` A2/A3, the "sysroot route"):

* ``prepare_sysroot`` unpacks Debian bookworm arm64 python3.11 runtime debs (fetched with a private apt state, the
  host dpkg is untouched) and installs aarch64 wheels of the host's own ``apache-tvm``/``apache-tvm-ffi`` (+ RPC
  deps) with ``pip --target``. ``libtvm_compiler.so`` is dropped: the server runs runtime-only. Cached by a stamp.
* ``start_device`` runs the sysroot's python through binfmt (``QEMU_LD_PREFIX`` so that the server's popen workers,
  which are spawned as new processes, find the aarch64 loader too), with ``TVM_USE_RUNTIME_LIB=1`` and
  ``--load-library libtvm_runtime_extra.so`` (needed by MetaSchedule's ``RPCRunner``).
* Every process is started in its own session; ``stop`` kills whole process groups, so qemu'd popen workers go too.

Needs ``.ci/setup-system.sh`` (qemu-user-static, binfmt_misc with qemu-aarch64 enabled) and network access to
PyPI and deb.debian.org on the first ``prepare_sysroot``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_KEY = "snapdragon-emu"
BINFMT_ENTRY = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")

# Debian bookworm arm64 packages that make a working python3.11 (stdlib incl. ssl, sqlite3, ctypes, lzma).
DEBIAN_SUITE = "bookworm"
DEBS = ("libc6", "libgcc-s1", "libstdc++6", "gcc-12-base", "zlib1g", "libexpat1", "libffi8", "libssl3", "libbz2-1.0",
        "liblzma5", "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8", "libuuid1", "libcrypt1", "libdb5.3",
        "libnsl2", "libtirpc3", "libzstd1", "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11-minimal",
        "python3.11", "media-types", "tzdata")
DEVICE_PYTHON = "3.11"  # bookworm's python; the wheels below are fetched for this ABI.
# Pinned to the host's installed versions: the device runtime must speak the same TVM/FFI ABI as the host.
WHEELS = ("apache-tvm", "apache-tvm-ffi", "numpy", "ml_dtypes", "typing_extensions", "psutil", "cloudpickle",
          "tornado")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_24_aarch64",
                   "manylinux2014_aarch64")
_STAMP = ".tvm-ecnn-sysroot.json"


def default_workdir() -> Path:
    """``$TVM_ECNN_EMU_DIR`` or ``~/.cache/tvm-ecnn/emu``: shared across checkouts so nothing is re-downloaded."""
    return Path(os.environ.get("TVM_ECNN_EMU_DIR") or "~/.cache/tvm-ecnn/emu").expanduser()


def binfmt_enabled() -> bool:
    """True when aarch64 ELF files run transparently (qemu-aarch64 registered and enabled in binfmt_misc)."""
    try:
        return BINFMT_ENTRY.read_text().startswith("enabled")
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port (so that parallel sessions and tests never fight over 9190)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# sysroot


def _sysroot_spec() -> dict:
    return {
        "format": 1,
        "debian": DEBIAN_SUITE,
        "debs": list(DEBS),
        "python": DEVICE_PYTHON,
        "wheels": [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS],
    }


@contextlib.contextmanager
def _locked(path: Path):
    """Serialise sysroot builds between concurrent test sessions sharing one workdir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd: list[str], **kw) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-4000:]}")


def _fetch_debs(workdir: Path, dest: Path) -> None:
    """Download the arm64 debs with a private apt state and sources list, then ``dpkg -x`` them into ``dest``."""
    apt = workdir / "apt"
    for d in ("lists/partial", "cache/archives/partial"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    opts = f"[arch=arm64 signed-by={keyring}]" if os.path.exists(keyring) else "[arch=arm64]"
    mirror = "http://deb.debian.org"
    (apt / "sources.list").write_text(
        f"deb {opts} {mirror}/debian {DEBIAN_SUITE} main\n"
        f"deb {opts} {mirror}/debian {DEBIAN_SUITE}-updates main\n"
        f"deb {opts} {mirror}/debian-security {DEBIAN_SUITE}-security main\n"
    )
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    conf = {
        "APT::Architecture": "arm64",
        "APT::Architectures::": "arm64",
        "Dir::State::Lists": apt / "lists",
        "Dir::State::status": "/dev/null",
        "Dir::Cache": apt / "cache",
        "Dir::Etc::SourceList": apt / "sources.list",
        "Dir::Etc::SourceParts": apt / "sources.list.d-unused",
        "APT::Sandbox::User": user,
        "Debug::NoLocking": "1",
    }
    o = [arg for k, v in conf.items() for arg in ("-o", f"{k}={v}")]
    _run(["apt-get", *o, "-qq", "update"])
    debs = workdir / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir()
    _run(["apt-get", *o, "-qq", "download", *DEBS], cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(dest)])


def _install_wheels(workdir: Path, target: Path, requirements: list[str]) -> None:
    """Fetch aarch64 wheels (kept in ``workdir/wheels`` across rebuilds) and install them without emulation."""
    wheels = workdir / "wheels"
    plat = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    common = ["--only-binary", ":all:", *plat, "--python-version", DEVICE_PYTHON, "--implementation", "cp",
              "--abi", "cp" + DEVICE_PYTHON.replace(".", ""), "--disable-pip-version-check", "-q"]
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "download", *common, "-d", str(wheels), *requirements])
    _run([*pip, "install", *common, "--no-index", "--find-links", str(wheels), "--target", str(target),
          "--no-compile", *requirements])


def prepare_sysroot(workdir: str | os.PathLike | None = None) -> Path:
    """Build (once) the aarch64 sysroot with a runtime-only TVM under ``workdir/sysroot`` and return its path.

    A second call is a no-op while the stamp (deb list + pinned wheel versions) matches; a host TVM upgrade
    rebuilds it. The build goes to a temporary folder that is renamed at the end, so an interrupted build never
    leaves a half sysroot behind a valid stamp.
    """
    workdir = Path(workdir or default_workdir()).expanduser().resolve()
    sysroot = workdir / "sysroot"
    spec = _sysroot_spec()
    with _locked(workdir / ".lock"):
        with contextlib.suppress(OSError, ValueError):
            if json.loads((sysroot / _STAMP).read_text()) == spec:
                return sysroot
        tmp = workdir / "sysroot.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _fetch_debs(workdir, tmp)
        _install_wheels(workdir, tmp / "opt" / "tvm", spec["wheels"])
        # 240 MB the runtime-only server never loads.
        (tmp / "opt" / "tvm" / "tvm" / "lib" / "libtvm_compiler.so").unlink(missing_ok=True)
        (tmp / _STAMP).write_text(json.dumps(spec, indent=1))
        shutil.rmtree(sysroot, ignore_errors=True)
        tmp.rename(sysroot)
    return sysroot


# ---------------------------------------------------------------------------------------------------------------
# processes


@dataclass
class Service:
    """A started tracker or device server: ``pid`` leads its own process group (``start_new_session``);
    ``started`` is its kernel start time, which with the pid names that one process for good."""

    name: str
    pid: int
    port: int
    log: str
    started: int | None = None

    def log_tail(self, nbytes: int = 3000) -> str:
        with contextlib.suppress(OSError), open(self.log, "rb") as f:
            f.seek(max(0, os.path.getsize(self.log) - nbytes))
            return f.read().decode(errors="replace")
        return "<no log>"

    def alive(self) -> bool:
        return self.owns_group() and bool(_group_members(self.pid))

    def owns_group(self) -> bool:
        """Whether process group ``pid`` is still the one started here: its leader is the very process we
        started, or the leader is gone (Linux never hands out a pid still used as a group id, so the remaining
        members are ours). A stale state file whose pid now belongs to someone else gives False."""
        now = _start_time(self.pid)
        return now is None or (self.started is not None and now == self.started)

    def to_json(self) -> dict:
        return asdict(self)


def _start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (clock ticks since boot, /proc/PID/stat field 22); None if no such process."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    return None


_CHILDREN: dict[int, subprocess.Popen] = {}  # to reap our own children after killing them (no zombies)


def _spawn(name: str, cmd: list[str], log: Path, port: int, env: dict | None = None) -> Service:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, cwd=log.parent)
    _CHILDREN[proc.pid] = proc
    return Service(name, proc.pid, port, str(log), _start_time(proc.pid))


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids of a process group, read from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp ...
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def stop(*services: Service | None, timeout: float = 10.0) -> None:
    """Terminate each service's whole process group (SIGTERM, then SIGKILL after ``timeout``).

    Only groups this module started are signalled (:meth:`Service.owns_group`): a stale state file whose pid was
    recycled by another process never kills that process.
    """
    groups = [s.pid for s in services if s is not None and s.owns_group()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for g in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(g, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for g in groups:
                if g in _CHILDREN:
                    _CHILDREN[g].poll()
            groups = [g for g in groups if _group_members(g)]
            if not groups:
                break
            time.sleep(0.1)
    for s in services:
        if s is not None and s.pid in _CHILDREN:
            _CHILDREN.pop(s.pid).wait()


def _wait_for(ready, timeout: float, service: Service, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not service.alive():
            raise RuntimeError(f"{service.name} exited before {what}; log {service.log}:\n{service.log_tail()}")
        time.sleep(0.2)
    raise TimeoutError(f"{service.name}: no {what} after {timeout:.0f} s; log {service.log}:\n{service.log_tail()}")


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` already (bound as the tracker binds, with SO_REUSEADDR, so that
    connections lingering in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _group_listens(pgid: int, port: int) -> bool:
    """Whether a member of process group ``pgid`` (the tracker serves from a popen worker child) listens on
    ``port``: the socket that answers is ours, not another tracker's."""
    import psutil

    for pid in _group_members(pgid):
        with contextlib.suppress(psutil.Error):
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                   for c in psutil.Process(pid).net_connections(kind="tcp")):
                return True
    return False


def start_tracker(host: str = "127.0.0.1", port: int | None = None, workdir=None, timeout: float = 60.0) -> Service:
    """Start ``python -m tvm.exec.rpc_tracker`` on exactly ``host:port`` (a free port by default); wait until it
    listens there. A port something else listens on is refused (``OSError``) rather than shared."""
    if port is not None and _port_in_use(host, port):
        raise OSError(f"port {port} on {host} is already in use (another RPC tracker?): choose another --port, "
                      "or leave it out to get a free one")
    port = port or free_port(host)
    log = Path(workdir or default_workdir()).expanduser() / "logs" / f"tracker-{port}.log"
    cmd = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", host, "--port", str(port),
           "--port-end", str(port + 1)]
    service = _spawn("rpc_tracker", cmd, log, port)
    try:
        _wait_for(lambda: _group_listens(service.pid, port), timeout, service, f"listening socket on {host}:{port}")
    except BaseException:
        stop(service)
        raise
    return service


def tracker_summary(host: str, port: int) -> dict:
    """The tracker's ``summary()`` dict (``queue_info`` per key, ``server_info``)."""
    from tvm import rpc

    if not _port_open(host, port):  # rpc.connect_tracker would retry a refused connection for 60 s
        raise ConnectionRefusedError(f"no RPC tracker listens on {host}:{port}")
    session = rpc.connect_tracker(host, port)
    try:
        return session.summary()
    finally:
        session.close()


def _key_free(host: str, port: int, key: str) -> bool:
    with contextlib.suppress(OSError, RuntimeError):
        return tracker_summary(host, port)["queue_info"].get(key, {}).get("free", 0) > 0
    return False


def _device_env(sysroot: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "LD_", "QEMU_")) and k not in ("VIRTUAL_ENV", "TVM_LIBRARY_PATH")}
    env.update(QEMU_LD_PREFIX=str(sysroot), PYTHONPATH=str(sysroot / "opt" / "tvm"), PYTHONNOUSERSITE="1",
               PYTHONUNBUFFERED="1", TVM_USE_RUNTIME_LIB="1")
    return env


def start_device(workdir=None, tracker: str = "127.0.0.1:9190", key: str = DEFAULT_KEY, port: int | None = None,
                 timeout: float = 180.0) -> Service:
    """Start the aarch64 ``tvm.exec.rpc_server`` under qemu and wait until the tracker lists ``key`` as free.

    ``port`` is where the server's own port search starts (a free port by default). Raises (showing the server log
    tail) when binfmt is missing, the server dies or it does not register within ``timeout`` seconds.
    """
    if not binfmt_enabled():
        raise RuntimeError(f"{BINFMT_ENTRY} is not enabled: run `sudo .ci/setup-system.sh` first")
    workdir = Path(workdir or default_workdir()).expanduser().resolve()
    sysroot = prepare_sysroot(workdir)
    tracker_host, tracker_port = tracker.rsplit(":", 1)
    port = port or free_port(tracker_host)
    site = sysroot / "opt" / "tvm"
    cmd = [str(sysroot / "usr" / "bin" / f"python{DEVICE_PYTHON}"), "-m", "tvm.exec.rpc_server",
           "--host", tracker_host, "--port", str(port), "--port-end", str(port + 50), "--tracker", tracker,
           "--key", key, "--load-library", str(site / "tvm" / "lib" / "libtvm_runtime_extra.so")]
    log = workdir / "logs" / f"device-{key}-{tracker_port}-{port}.log"  # one per server, also under a shared key
    service = _spawn(f"rpc_server[{key}]", cmd, log, port, env=_device_env(sysroot))
    try:
        _wait_for(lambda: _key_free(tracker_host, int(tracker_port), key), timeout, service,
                  f"registration of key {key!r} at tracker {tracker}")
    except BaseException:
        stop(service)
        raise
    return service


@contextlib.contextmanager
def emulated_device(workdir=None, port: int | None = None, key: str = DEFAULT_KEY, host: str = "127.0.0.1"):
    """Tracker on ``host:port`` (free port by default) plus one emulated device; yields ``(host, port, key)``.

    Usage: ``with emulated_device() as (h, p, k): remote = rpc.connect_tracker(h, p).request(k)``.
    Both process groups are killed on exit, also when the body raises.
    """
    tracker = device = None
    try:
        tracker = start_tracker(host, port, workdir)
        device = start_device(workdir, f"{host}:{tracker.port}", key)
        yield host, tracker.port, key
    finally:
        stop(device, tracker)
