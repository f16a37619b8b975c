"""int8 vs fp32 agreement on the calibration inputs: what the compile summary reports."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax


@dataclass
class Agreement:
    top1: float
    """fraction of samples whose arg-max class is the same"""
    max_rel: float
    mean_rel: float
    """``|int8 - fp32|`` per logit over the sample's ``max |fp32 logit|``: max and mean over all logits"""

    def __str__(self) -> str:
        return f"top-1 {self.top1 * 100:.1f}%, logits rel. error max {self.max_rel:.3g} mean {self.mean_rel:.3g}"


def agreement(int8: np.ndarray, fp32: np.ndarray) -> Agreement:
    int8, fp32 = int8.reshape(len(int8), -1), fp32.reshape(len(fp32), -1)
    norm = np.maximum(np.abs(fp32).max(axis=1, keepdims=True), 1e-12)
    rel = np.abs(int8 - fp32) / norm
    return Agreement(float(np.mean(int8.argmax(1) == fp32.argmax(1))), float(rel.max()), float(rel.mean()))


def run_host(mod_or_executable, samples: np.ndarray) -> np.ndarray:
    """Outputs ``[N, ...]`` of a Relax module (built for the host) or host executable, one sample at a time."""
    from tvm_ecnn.pipeline import build

    executable = build(mod_or_executable, "host") if isinstance(mod_or_executable, tvm.IRModule) else mod_or_executable
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return np.concatenate([vm["main"](tvm.runtime.tensor(np.ascontiguousarray(s[None], dtype="float32"))).numpy()
                           for s in samples])
