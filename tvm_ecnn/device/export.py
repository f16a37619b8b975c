"""Pick the ``fcompile`` that links an exported TVM library for a target's host triple.

Why: ``export_library`` links with the host ``g++`` by default, which cannot link aarch64 objects. One linker by
default everywhere (a bare machine, a dev box, CI): LLD from the ``ziglang`` wheel, a core dependency, so what the
tests link is what users link. TVM modules need no libc/libm symbols at link time, only ``TVMFFI*`` from the loading
runtime (shared notes Part C), so a plain ``ld.lld -shared`` makes a loadable ``.so`` for both aarch64 triples.
Usage: ``ex.export_library(path, fcompile=cross_compiler_for(target))``.

* no ``mtriple``/an x86_64 triple -> ``None`` (TVM's default host compiler);
* ``aarch64-*-linux-gnu`` and ``aarch64-*-android*`` -> ``lld_shared`` (ziglang's ``ld.lld``), unless a compiler
  driver is chosen explicitly: ``TVM_NDK_CC`` (an NDK clang, Android; TVM's own variable) or ``TVM_ECNN_AARCH64_CC``
  (e.g. ``aarch64-linux-gnu-gcc``, aarch64-linux). Android without an NDK warns once that the NDK is preferred for
  release builds (no bionic libc/libm ``NEEDED`` entries).

For an OpenCL/Adreno target the triple of ``target.host`` decides (the device code is packed into the host .so).
Every failure raises ``LinkerError`` naming the tool and what to install, with the linker's output.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import warnings
from pathlib import Path

import tvm

from .errors import ExternalToolError

NDK_CC = "TVM_NDK_CC"
AARCH64_CC = "TVM_ECNN_AARCH64_CC"
_warned_no_ndk = False


class LinkerError(ExternalToolError):
    """The linker is missing or failed (the message carries its output and command line)."""


def _host_triple(target) -> str:
    target = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    if target.kind.name != "llvm" and target.host is not None:
        target = target.host
    return str(target.attrs.get("mtriple", "") or "")


def zig_executable() -> str:
    """The ``zig`` binary of the ``ziglang`` wheel (its ``zig ld.lld`` is LLD)."""
    spec = importlib.util.find_spec("ziglang")
    if spec is None or spec.origin is None:
        raise LinkerError("ld.lld, the linker for aarch64/Android exports, comes from the ziglang package, which is "
                          "not installed: pip install ziglang")
    return str(Path(spec.origin).parent / "zig")


def _run_linker(tool: str, cmd: list[str], hint: str) -> None:
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as err:
        raise LinkerError(f"{tool} could not be run ({err.strerror}): {hint}") from None
    if proc.returncode != 0:
        raise LinkerError(f"{tool} failed (exit status {proc.returncode}):\n{proc.stdout.strip()}\n"
                          f"command line: {shlex.join(cmd)}")


def lld_shared(output: str, objects: list[str], options=None) -> None:
    """Link an aarch64 shared object with LLD alone (16 KB pages for Android 15+, BIND_NOW, both hash styles)."""
    del options  # compiler-driver flags (-I..., -lm) mean nothing to a bare linker
    cmd = [zig_executable(), "ld.lld", "-shared", "-m", "aarch64linux", "--hash-style=both",
           "-z", "max-page-size=16384", "-z", "noexecstack", "-z", "now", "--build-id", "--eh-frame-hdr",
           "-soname", os.path.basename(output), "-o", output, *objects]
    _run_linker("ld.lld (from ziglang)", cmd, "reinstall it: pip install --force-reinstall ziglang")


lld_shared.output_format = "so"


def driver_shared(env_var: str, libs: tuple[str, ...] = ()):
    """An ``fcompile`` linking with the compiler driver that ``env_var`` names (may carry arguments, e.g.
    ``python -m ziglang cc -target ...``, which TVM's ``cc.cross_compiler``/``ndk.create_shared`` cannot run; the
    latter also raise a bare FileNotFoundError for a missing driver)."""
    driver = shlex.split(os.environ[env_var])

    def link(output: str, objects: list[str], options=None) -> None:
        cmd = [*driver, "-shared", "-fPIC", "-o", output, *objects, *(options or []), *libs]
        _run_linker(f"{env_var}={shlex.join(driver)}", cmd,
                    f"install it, or unset {env_var} to link with ld.lld from ziglang")

    link.output_format = "so"
    return link


def cross_compiler_for(target):
    """The ``fcompile`` for ``export_library`` matching ``target`` (a Target or its dict/tag); None for the host."""
    global _warned_no_ndk
    triple = _host_triple(target)
    if not triple or triple.startswith("x86_64"):
        return None
    if not (triple.startswith("aarch64") and "linux" in triple):
        raise ValueError(f"no cross linker known for triple {triple!r} (aarch64 Linux and Android are supported)")
    android = "android" in triple
    env_var = NDK_CC if android else AARCH64_CC
    if os.environ.get(env_var):
        return driver_shared(env_var, ("-lm",) if android else ())
    if android and not _warned_no_ndk:
        _warned_no_ndk = True
        warnings.warn(f"{NDK_CC} is not set: linking the Android .so with plain ld.lld (no bionic libc/libm NEEDED "
                      f"entries); set {NDK_CC} to an NDK clang for release builds", stacklevel=2)
    return lld_shared
