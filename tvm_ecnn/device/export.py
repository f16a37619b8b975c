"""Pick the ``fcompile`` that links an exported TVM library for a target's host triple.

Why: ``export_library`` links with the host ``g++`` by default, which cannot link aarch64 objects, and the NDK
is not installed in CI. Usage: ``ex.export_library(path, fcompile=cross_compiler_for(target))``.

* no ``mtriple``/an x86_64 triple -> ``None`` (TVM's default host compiler);
* ``aarch64-*-linux-gnu`` -> ``aarch64-linux-gnu-gcc`` if installed, else clang + lld;
* ``*-android*`` -> ``tvm.support.ndk.create_shared`` when ``TVM_NDK_CC`` is set (set it before importing tvm),
  else a plain ``ld.lld`` link (shared notes Part C: TVM modules need no libc/libm symbols at link time, only
  ``TVMFFI*`` from the loading runtime), with a one-time warning that a real NDK is preferred.

For an OpenCL/Adreno target the triple of ``target.host`` decides (the device code is packed into the host .so).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings

import tvm
from tvm.support import cc

_warned_no_ndk = False


def _host_triple(target) -> str:
    target = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    if target.kind.name != "llvm" and target.host is not None:
        target = target.host
    return str(target.attrs.get("mtriple", "") or "")


def lld_android_shared(output: str, objects: list[str], options=None) -> None:
    """Link an Android aarch64 shared object with ``ld.lld`` alone (16 KB pages, BIND_NOW, both hash styles)."""
    del options  # the NDK-only defaults (-lm, ...) cannot be honoured without a sysroot
    cmd = ["ld.lld", "-shared", "-m", "aarch64linux", "--hash-style=both", "-z", "max-page-size=16384",
           "-z", "noexecstack", "-z", "now", "--build-id", "--eh-frame-hdr",
           "-soname", os.path.basename(output), "-o", output, *objects]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ld.lld failed:\n{proc.stdout}\nCommand line: {' '.join(cmd)}")


lld_android_shared.output_format = "so"


def cross_compiler_for(target):
    """The ``fcompile`` for ``export_library`` matching ``target`` (a Target or its dict/tag); None for the host."""
    global _warned_no_ndk
    triple = _host_triple(target)
    if not triple or triple.startswith("x86_64"):
        return None
    if "android" in triple:
        if os.environ.get("TVM_NDK_CC"):
            from tvm.support import ndk

            return ndk.create_shared
        if not _warned_no_ndk:
            _warned_no_ndk = True
            warnings.warn("TVM_NDK_CC is not set: linking the Android .so with plain ld.lld (no bionic libc/libm "
                          "NEEDED entries); set TVM_NDK_CC to an NDK clang for release builds", stacklevel=2)
        return lld_android_shared
    if triple.startswith("aarch64") and "linux" in triple:
        if shutil.which("aarch64-linux-gnu-gcc"):
            return cc.cross_compiler("aarch64-linux-gnu-gcc")
        return cc.cross_compiler("clang", options=["--target=aarch64-linux-gnu", "-fuse-ld=lld", "-nostdlib"])
    raise ValueError(f"no cross linker known for triple {triple!r}")
