"""Import a torch model with ``from_torch``, build it with ``tvm_ecnn.pipeline.build`` for the host, run it."""
from __future__ import annotations

import numpy as np
import torch
import tvm
from tvm import relax

from tvm_ecnn.frontend import from_torch
from tvm_ecnn.pipeline import build


class Fn(torch.nn.Module):
    """A module whose forward is a plain function of x."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def run_on_host(mod, x: torch.Tensor) -> np.ndarray:
    vm = relax.VirtualMachine(build(mod, "host"), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    return (out if hasattr(out, "numpy") else out[0]).numpy()


def assert_host_matches_eager(model, x: torch.Tensor, rtol: float = 1e-5, **import_kwargs):
    """Import, build for the host, run, compare with eager torch; returns ``(mod, report)``."""
    model.eval()
    mod, report = from_torch(model, (x,), with_report=True, **import_kwargs)
    out = run_on_host(mod, x)
    with torch.no_grad():
        ref = model(x).numpy()
    assert out.shape == ref.shape, f"shape {out.shape}, eager {ref.shape}"
    error = np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12)
    assert error <= rtol, f"relative error {error:.2e}"
    return mod, report
