"""tvm-ecnn: efficient CNNs (shift, SqueezeNet, depthwise-separable) on Snapdragon with Apache TVM.

Submodules are imported lazily so that ``import tvm_ecnn.nn`` (PyTorch only) does not pay for
importing TVM.
"""
from __future__ import annotations

import importlib
import os

__version__ = "0.1.0"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# TVM sizes its CPU thread pool from TVM_NUM_THREADS when it starts, and without it from half the hardware
# threads on x86 (it assumes hyper-threading): one thread on a 2-core machine, half the speed. Every core
# this process may use, unless the user chose.
os.environ.setdefault("TVM_NUM_THREADS", str(_cores()))

_LAZY = {
    "analyze": ("tvm_ecnn.analysis", "analyze"),
    "build": ("tvm_ecnn.pipeline", "build"),
    "compile_model": ("tvm_ecnn.deploy", "compile_model"),
    "from_torch": ("tvm_ecnn.frontend", "from_torch"),
    "load": ("tvm_ecnn.runtime", "load"),
    "profile": ("tvm_ecnn.profiling", "profile"),
    "tune": ("tvm_ecnn.tuning", "tune"),
    "models": ("tvm_ecnn.models", None),
    "nn": ("tvm_ecnn.nn", None),
    "quantize": ("tvm_ecnn.quantize", None),  # the package; calling it calls quantize.quantize
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tvm_ecnn' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
