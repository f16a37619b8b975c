"""Process hygiene while tuning: MetaSchedule's popen workers reaped, its logs kept off the console, Ctrl-C turned
into a clean stop, the TVM import that costs 40 s skipped (bug B), and this checkout visible to the workers."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
import types
from pathlib import Path

import tvm

import targets as _targets


def target_arch(target: tvm.target.Target) -> str:
    """The architecture a target's code runs on (its triple's, or this host's)."""
    triple = str(target.attrs.get("mtriple", "") or "")
    return triple.split("-", 1)[0] if triple else _targets.host_arch()


_INTRINSIC_FAMILIES = {"aarch64": "arm_cpu", "arm": "arm_cpu", "x86_64": "x86", "riscv64": "riscv_cpu"}


@contextlib.contextmanager
def essential_intrinsics(target: tvm.target.Target):
    """Bug B in this process: ``TuneContext()`` imports all of ``tvm.s_tir.tensor_intrin`` (~40 s, mostly CUDA).
    While tuning, an empty package stands in for it, with only the CPU family whose intrinsics the target's
    default schedule rules look up imported; afterwards a real import of the package works as usual."""
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        yield
        return
    stub = types.ModuleType(name)
    stub.__path__ = list(importlib.util.find_spec(name).submodule_search_locations)
    sys.modules[name] = stub
    try:
        family = _INTRINSIC_FAMILIES.get(target_arch(target)) if target.kind.name == "llvm" else None
        if family:
            importlib.import_module(f"{name}.{family}")
        yield
    finally:
        if sys.modules.get(name) is stub:
            del sys.modules[name]


def popen_workers() -> dict[int, object]:
    """This process's own popen workers (an RPC server started from here has its own: those are not ours)."""
    import psutil

    found = {}
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if "tvm.exec.popen_worker" in " ".join(child.cmdline()):
                found[child.pid] = child
    return found


def kill(procs) -> None:
    """SIGKILL these psutil processes and their children (an RPC runner's worker may have its own) and reap them."""
    import psutil

    procs = list(procs)
    for proc in list(procs):
        with contextlib.suppress(psutil.Error):
            procs += proc.children(recursive=True)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)


@contextlib.contextmanager
def reaping_popen_workers():
    """MetaSchedule's builder/runner popen workers may outlive tuning (notes §7): end the ones started here."""
    before = set(popen_workers())
    try:
        yield
    finally:
        kill(p for pid, p in popen_workers().items() if pid not in before)


@contextlib.contextmanager
def logging_to(path: Path):
    """MetaSchedule logs every trial: into ``path``, not onto the console. (Its ``get_loggers_from_work_dir``
    reconfigures logging process-wide with ``dictConfig``, closing everyone's handlers, and fails outright when its
    logger carries an unnamed handler, as under pytest.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@contextlib.contextmanager
def stopping_on_interrupt(guard):
    """Ctrl-C stops the guard (the handler returns: raising inside MetaSchedule's callbacks would abort the
    process), and ``KeyboardInterrupt`` is raised once MetaSchedule has returned. Further Ctrl-Cs change nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(_signum, _frame):
        guard.stop(KeyboardInterrupt())

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def workers_import_us():
    """Popen workers unpickle ``fast_build``/``export_so`` by reference and only inherit the environment: put this
    checkout on their ``PYTHONPATH`` in case it is used without being installed (e.g. through scripts/)."""
    root = str(Path(__file__).resolve().parents[1])
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, before) if p)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = before
