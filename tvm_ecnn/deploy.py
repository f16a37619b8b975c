"""``compile_model``: a PyTorch model in, a deployable ``.so`` out, with a summary.

Stages: load the model (zoo name, saved ``torch.export`` program, ``module:callable`` or an
``nn.Module``), import it (``from_torch``: shifts become ``R.ecnn.*`` and fuse into the following
1x1 convolutions), lower with :mod:`tvm_ecnn.pipeline`, build, and export with the cross linker
the target's host needs (Adreno modules carry their OpenCL source inside the ``.so``).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tvm
from tqdm.auto import tqdm
from tvm import relax

import targets as _targets
from relay_ops._registry import MIXED_PRECISION_FOLLOW

from . import models as _models
from .device.export import cross_compiler_for
from .frontend import RewriteReport, from_torch
from .pipeline import relax_pipeline, tir_pipeline

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass
class CompileResult:
    output: Path
    model: str
    target: str
    input_shape: tuple[int, ...]
    dtype: str
    report: RewriteReport
    kernels: dict[str, int]
    param_bytes: int
    roofline_ms: float | None
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        rewritten = ", ".join(f"{pattern} x{n}" for pattern, n in sorted(self.report.counts().items())) or "none"
        kernels = ", ".join(f"{device}: {n}" for device, n in self.kernels.items())
        lines = [
            f"model       {self.model} @ {'x'.join(map(str, self.input_shape))} ({self.dtype})",
            f"target      {self.target}",
            f"rewritten   {rewritten}",
            f"kernels     {kernels}",
            f"parameters  {self.param_bytes / 2**20:.2f} MB",
        ]
        if self.roofline_ms is not None:
            lines.append(f"roofline    {self.roofline_ms:.3f} ms (analyzer estimate for {self.target}, {self.dtype})")
        lines.append("stages      " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        lines.append(f"output      {self.output}")
        return "\n".join(lines)


def load_model(spec, input_shape=None, seed=0):
    """``(module_or_program, input_shape, name)`` from a zoo name, ``.pt2`` file or ``module:callable``.

    Zoo models get random weights from ``torch.manual_seed(seed)``: ``scripts/run.py --model`` rebuilds
    the same ones to compare against."""
    if isinstance(spec, torch.nn.Module):
        if input_shape is None:
            raise ValueError("input_shape is required for an nn.Module")
        return spec, tuple(input_shape), type(spec).__name__
    spec = str(spec)
    if spec.endswith(".pt2"):
        program = torch.export.load(spec)
        shape = input_shape or tuple(program.example_inputs[0][0].shape)
        return program, tuple(shape), Path(spec).stem
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        obj = getattr(importlib.import_module(module_name), attr)
        model = obj() if callable(obj) and not isinstance(obj, torch.nn.Module) else obj
        if input_shape is None:
            raise ValueError(f"--input-shape is required for {spec}")
        return model, tuple(input_shape), attr
    if spec not in _models.names():
        raise ValueError(f"unknown model {spec!r}: use a zoo name ({', '.join(_models.names())}), a .pt2 file "
                         "saved with torch.export.save, or module:callable")
    torch.manual_seed(seed)
    return _models.get(spec).eval(), tuple(input_shape or _models.default_input_shape(spec)), spec


def import_model(model, input_shape=None, dtype="fp32", seed=0):
    """``(Relax module, RewriteReport, torch model, input shape, name)``: what ``compile_model`` compiles,
    and what ``scripts/tune.py`` tunes (same module, so the database keys match)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    torch_model, shape, name = load_model(model, input_shape, seed)
    mod, report = from_torch(torch_model, (torch.randn(shape),), with_report=True)
    if dtype == "fp16":
        mod = float16_storage(mod)
    return mod, report, torch_model, shape, name


def float16_storage(mod: tvm.IRModule) -> tvm.IRModule:
    """Weights and activations in fp16, convolutions accumulating in fp32; inputs and outputs stay fp32.

    TVM's ``ToMixedPrecision`` on the fp32 import rather than importing a ``.half()`` model: TVM 0.27's
    torch importer hard-codes fp32 conv/linear outputs, so every fp16 conv followed by bias or batch norm
    fails to import. The ecnn ops follow their inputs (``relay_ops._registry``); weights are folded to fp16.
    """
    clip = tvm.ir.Op.get("relax.clip")
    if clip.get_attr("TMixedPrecisionPolicy") is None:
        # ReLU6 is R.clip with scalar bounds; unregistered, ToMixedPrecision treats it as "never fp16" and fails
        # casting those scalars ("Expected TensorType, but got T.float64"). It keeps its input's dtype: follow.
        clip.set_attr("TMixedPrecisionPolicy", MIXED_PRECISION_FOLLOW)
    return tvm.transform.Sequential([relax.transform.ToMixedPrecision(out_dtype="float32"),
                                     relax.transform.FoldConstant()])(mod)


def _kernels(lowered: tvm.IRModule, target) -> dict[str, int]:
    device = "opencl" if _targets.is_adreno(target) else "cpu"
    counts = {device: 0, "host": 0}
    for _, func in lowered.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            on_device = device == "cpu" or "threadIdx.x" in func.script()
            counts[device if on_device else "host"] += 1
    return {k: v for k, v in counts.items() if v or k == device}


def compile_model(model="shiftresnet20", input_shape=None, target="adreno", *, dtype="fp32", tuning_db=None,
                  output=None, seed=0, progress=True) -> CompileResult:
    """Compile ``model`` for ``target`` (any name of ``targets.names()``) and export a ``.so``."""
    tvm_target = _targets.get_target(target)
    stages = tqdm(total=4, desc="compile", disable=not progress, bar_format="{desc} {bar:10} {n}/{total}{postfix}")
    seconds = {}

    def stage(name):
        stages.set_postfix_str(name)
        seconds[name] = time.perf_counter()

    def done(name):
        seconds[name] = time.perf_counter() - seconds[name]
        stages.update()

    stage("import")
    mod, report, torch_model, shape, name = import_model(model, input_shape, dtype, seed)
    done("import")
    stage("lower")
    lowered = relax_pipeline(tvm_target, tuning_db)(mod)
    done("lower")
    stage("build")
    executable = tvm.compile(lowered, target=tvm_target, relax_pipeline=None, tir_pipeline=tir_pipeline(tvm_target))
    done("build")
    stage("export")
    out = Path(output or f"{name}-{str(target).replace('/', '-')}.so").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    executable.export_library(str(out), fcompile=cross_compiler_for(tvm_target))
    done("export")
    stages.close()
    param_bytes = sum(int(np.prod(c.value.shape)) * np.dtype(c.value.dtype).itemsize for c in _constants(mod))
    return CompileResult(out, name, str(target), shape, dtype, report, _kernels(lowered, tvm_target), param_bytes,
                         _roofline(torch_model, shape, target, dtype), seconds)


def _constants(mod: tvm.IRModule) -> list:
    found = []
    for _, func in mod.functions.items():
        if isinstance(func, tvm.relax.Function):
            tvm.relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, tvm.ir.expr.GenericConst) else None)
    return found


def _roofline(torch_model, shape, target, dtype) -> float | None:
    """The analyzer's estimate (ms) for Snapdragon targets; None for the host or a saved program."""
    if isinstance(torch_model, torch.export.ExportedProgram):
        return None
    try:
        _targets.preset_for(target)
    except ValueError:
        return None
    from .analysis import analyze

    return analyze(torch_model.float(), shape, target=target, dtype=dtype).total.latency_s * 1e3
