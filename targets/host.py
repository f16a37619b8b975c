"""The LLVM target of the machine we run on ("host"): what local tests, local tuning and the RPC-less path compile for.

Why not TVM's bare ``{"kind": "llvm"}``: TVM fills in LLVM's default triple but no ``mcpu`` (LLVM then tunes for a
generic CPU and uses no ISA extensions beyond the baseline) and no ``num-cores`` (the thread pool may oversubscribe a
container that sees more CPUs than it may use).
"""

from __future__ import annotations

import os

from tvm.target import codegen

_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}


def host_triple() -> str:
    """LLVM's default triple, i.e. what TVM would target anyway (e.g. ``x86_64-conda-linux-gnu``)."""
    return str(codegen.llvm_get_system_triple())


def host_arch() -> str:
    """``"x86_64"`` or ``"aarch64"`` (other architectures as LLVM names them): decides whether aarch64 code can run
    here natively or needs the emulated device."""
    return arch_of_triple(host_triple())


def arch_of_triple(triple: str) -> str:
    """The architecture part of an LLVM triple, under the names ELF files use (``arm64`` -> ``aarch64``)."""
    arch = str(triple).split("-", 1)[0].lower()
    return _ARCH_ALIASES.get(arch, arch)


def usable_cores() -> int:
    """CPUs this process may run on: the affinity mask where the OS has one (containers, taskset), else cpu_count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def host_config() -> dict:
    """Target config of this machine; ``mcpu`` is omitted when LLVM cannot name the CPU (e.g. under qemu-user)."""
    triple = host_triple()
    config = {"kind": "llvm", "tag": "host", "mtriple": triple, "num-cores": usable_cores()}
    cpu = str(codegen.llvm_get_system_cpu())
    if cpu != "generic" and codegen.llvm_is_valid_cpu(cpu, triple):
        config["mcpu"] = cpu
    return config
