"""Calibration: run the fp32 Relax module on sample inputs and observe every intermediate tensor's range.

The observed module is the imported one with every bound tensor made an output (``ToNonDataflow``), built
for the host with the project pipeline: the ranges are those of exactly the graph that gets quantized.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

OBSERVERS = ("minmax", "percentile")


class MinMaxObserver:
    """Running min and max over all samples: no clipping, a single outlier widens the scale."""

    def __init__(self):
        self.low, self.high = np.inf, -np.inf

    def update(self, value: np.ndarray) -> None:
        self.low = min(self.low, float(value.min()))
        self.high = max(self.high, float(value.max()))

    def range(self) -> tuple[float, float]:
        return self.low, self.high


class PercentileObserver:
    """The ``percentile``-th percentile of ``|x|`` (and of the signed extremes) over all samples: clips rare
    outliers so the common values keep more resolution."""

    def __init__(self, percentile: float = 99.99):
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile
        self.values: list[np.ndarray] = []

    def update(self, value: np.ndarray) -> None:
        self.values.append(value.ravel())

    def range(self) -> tuple[float, float]:
        values = np.concatenate(self.values)
        return (float(np.percentile(values, 100.0 - self.percentile)), float(np.percentile(values, self.percentile)))


def make_observer(kind: str, percentile: float = 99.99):
    if kind == "minmax":
        return MinMaxObserver()
    if kind == "percentile":
        return PercentileObserver(percentile)
    raise ValueError(f"observer {kind!r} is not supported; use one of {', '.join(OBSERVERS)}")


def tensor_vars(func: relax.Function) -> list[relax.Var]:
    found = []
    for block in func.body.blocks:
        for binding in block.bindings:
            ty = binding.var.ty
            if isinstance(ty, relax.TensorType) and ty.dtype == "float32":
                found.append(binding.var)
    return found


def observed_module(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` whose ``main`` returns ``(output, every fp32 tensor it binds...)``, in ``tensor_vars`` order."""
    flat = relax.transform.ToNonDataflow()(mod)
    func = flat["main"]
    observed = tensor_vars(func)
    body = relax.BlockBuilder().normalize(relax.SeqExpr(func.body.blocks, relax.Tuple([func.body.body] + observed)))
    new_func = relax.Function(func.params, body, attrs=func.attrs)
    out = tvm.IRModule({gv: (new_func if gv.name_hint == "main" else f) for gv, f in flat.functions.items()})
    return out


def calibrate(mod: tvm.IRModule, samples: np.ndarray, observer: str = "minmax", percentile: float = 99.99):
    """``(ranges {var: (low, high)}, fp32 outputs [N, ...])`` of ``mod``'s ``main`` over ``samples`` ([N, *input]);
    the keys are ``main``'s parameter and bound vars."""
    from tvm_ecnn.pipeline import build

    func = mod["main"]
    if len(func.params) != 1:
        raise ValueError(f"quantize supports single-input models, this one has {len(func.params)} inputs")
    watched = [func.params[0]] + tensor_vars(func)
    observers = [make_observer(observer, percentile) for _ in watched]
    vm = relax.VirtualMachine(build(observed_module(mod), "host"), tvm.cpu())
    outputs = []
    for sample in samples:
        sample = np.ascontiguousarray(sample[None], dtype="float32")
        result = vm["main"](tvm.runtime.tensor(sample))
        outputs.append(result[0].numpy())
        values = [sample] + [t.numpy() for t in list(result)[1:]]
        for obs, value in zip(observers, values):
            obs.update(value)
    return {var: obs.range() for var, obs in zip(watched, observers)}, np.concatenate(outputs)
