"""Static post-training int8 quantization of imported Relax modules (``tvm_ecnn.quantize``).

``quantize(mod, calibration)``: calibrate (``calibration.py`` on ``samples.py``'s inputs), quantize weights
(``weights.py``) and rewrite the graph to int8 (``rewrite.py``, with the int8 arithmetic of ``int8_ops.py`` and
the shift ops' int8 forms in ``shift_ops.py``); ``agreement.py`` compares with fp32.
Numerics: docs/int8-quantization.md.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from .agreement import Agreement, agreement, run_host
from .calibration import OBSERVERS, calibrate
from .rewrite import Int8Rewrite
from .samples import load_samples

__all__ = ["quantize", "QuantizedModule", "Agreement", "agreement", "run_host", "load_samples", "OBSERVERS"]


@dataclass
class QuantizedModule:
    mod: tvm.IRModule
    float_ops: dict[str, int]
    """ops left in fp32 (name -> count), the int8 graph dequantizes before and quantizes after them"""
    scales: list[tuple[str, float]]
    """activation scales in the order the rewrite chose them (fp32 var name of the tensor, scale)"""
    weight_bytes: int
    fp32_weight_bytes: int
    samples: np.ndarray
    calibration: str
    fp32_outputs: np.ndarray
    """the fp32 module's outputs on ``samples`` (what ``agreement`` compares with)"""

    def summary_lines(self, agreed: Agreement | None) -> list[str]:
        lines = [f"int8        weights {self.weight_bytes / 2**20:.3f} MB ({self.weight_bytes / max(self.fp32_weight_bytes, 1):.2f}x "
                 f"of fp32 {self.fp32_weight_bytes / 2**20:.3f} MB); calibration: {self.calibration}",
                 _float_ops_line(self.float_ops)]
        if agreed is not None:
            lines.append(f"int8 ~ fp32 {agreed} (on the calibration inputs, host build)")
        return lines


def pt2e_summary_lines(mod: tvm.IRModule, float_ops: dict[str, int]) -> list[str]:
    """The summary of a PT2E program's int8 module: its scales are PyTorch's, so there is no calibration to name."""
    return [f"int8        PT2E int8 model (scales, zero points and weights from PyTorch's convert_pt2e): weights "
            f"{_weight_bytes(mod['main']) / 2**20:.3f} MB", _float_ops_line(float_ops)]


def _float_ops_line(float_ops: dict[str, int]) -> str:
    return "in float    " + (", ".join(f"{op.removeprefix('relax.')} x{n}" for op, n in sorted(float_ops.items()))
                             or "none")


def _weight_bytes(func: relax.Function) -> int:
    found = []
    relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, tvm.ir.expr.GenericConst) else None)
    return sum(c.value.numpy().nbytes for c in found if c.value.numpy().size > 1)


def quantize(mod: tvm.IRModule, calibration=None, *, observer: str = "minmax", percentile: float = 99.99,
             seed: int = 0) -> QuantizedModule:
    """Static PTQ of ``mod`` (fp32 ``main`` with one NCHW input, as ``from_torch`` imports it). ``calibration``:
    an array ``[N, *input shape without batch]``, a ``.npy``/``.pt`` file of such, or None (random inputs, with a
    warning). ``observer``: ``minmax`` or ``percentile``. Inputs and outputs stay fp32."""
    shape = [int(d) for d in mod["main"].params[0].ty.shape.values]
    samples, description = load_samples(calibration, shape, seed)
    ranges, fp32_outputs = calibrate(mod, samples, observer, percentile)
    rewrite = Int8Rewrite(mod["main"], ranges)
    out = mod.clone()
    out["main"] = rewrite.run()
    out = relax.transform.DeadCodeElimination()(out)
    return QuantizedModule(out, dict(rewrite.float_ops), rewrite.scales, _weight_bytes(out["main"]),
                           _weight_bytes(mod["main"]), samples, description, fp32_outputs)


class _CallableModule(sys.modules[__name__].__class__):
    """``tvm_ecnn.quantize(...)`` is this package *and* its ``quantize`` function: importing the package
    (``tvm_ecnn.quantize``) makes it the ``tvm_ecnn`` attribute, so the package itself forwards calls."""

    def __call__(self, *args, **kwargs) -> QuantizedModule:
        return quantize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
