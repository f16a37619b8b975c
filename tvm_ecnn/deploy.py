"""``compile_model``: a PyTorch model in, a deployable ``.so`` out, with a summary.

Stages: load the model (zoo name, saved ``torch.export`` program, ``module:callable`` or an
``nn.Module``), import it (``from_torch``: shifts become ``R.ecnn.*`` and fuse into the following
1x1 convolutions), lower with :mod:`tvm_ecnn.pipeline`, build, and export with the cross linker
the target's host needs (Adreno modules carry their OpenCL source inside the ``.so``).
"""
from __future__ import annotations

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

from . import metadata as _metadata
from .compile_errors import (CompileError, _failed_at, _failing_kernel, _lower_naming_the_pass, _message,
                             _model_files, _quiet_when_refused, _raised_by_compiler, check_output)
from .compiler_pass.texture_fallback import texture_fallback
from .device.export import cross_compiler_for
from .frontend import RewriteReport, from_torch
from .frontend.pt2e import is_pt2e
from .metadata import InputSpec
from .model_loading import load_model, program_inputs
from .pipeline import relax_pipeline, tir_pipeline
from .tuning_db import AppliedRecords

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.float32}  # int8: the fp32 import, quantized


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
    texture_fallback: dict[str, int] = field(default_factory=dict)  # op -> calls kept in buffers on a texture target
    int8_lines: list[str] = field(default_factory=list)
    tuning: str | None = None  # "tuning records applied: N of M kernels (from DIR)" when a database was given

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
        if self.texture_fallback:
            kept = ", ".join(f"{op} x{n}" for op, n in sorted(self.texture_fallback.items()))
            lines.append(f"fallback    {kept} (buffer, not texture: TVM's NCHW4c layout inference fails on them, "
                         "or, where marked, the kernel would store partial texels or the op has int8 tensors)")
        if self.roofline_ms is not None:
            lines.append(f"roofline    {self.roofline_ms:.3f} ms (analyzer estimate for {self.target}, {self.dtype})")
        lines.extend(self.int8_lines)
        if self.tuning is not None:
            lines.append(self.tuning)
        lines.append("stages      " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        lines.append(f"output      {self.output}")
        return "\n".join(lines)


def import_model(model, input_shape=None, dtype=None, seed=0, calibration=None):
    """``(Relax module, RewriteReport, torch model, input shape, name)``: what ``compile_model`` compiles,
    and what ``scripts/tune.py`` tunes (same module, so the database keys match). ``int8``: quantized on
    ``calibration`` (see ``tvm_ecnn.quantize``); a PT2E program is int8 as imported (``model_dtype``)."""
    torch_model, shape, name = load_model(model, input_shape, seed)
    dtype = model_dtype(torch_model, dtype, calibration, model if isinstance(model, (str, Path)) else name)
    mod, report = from_torch(torch_model, (torch.randn(shape),), with_report=True)
    if dtype == "fp16":
        mod = float16_storage(mod)
    if dtype == "int8" and not is_pt2e(torch_model):
        from .quantize import quantize

        mod = quantize(mod, calibration, seed=seed).mod
    return mod, report, torch_model, shape, name


def model_dtype(torch_model, dtype, calibration, name) -> str:
    """What ``torch_model`` compiles to: ``dtype``; by default fp32, or int8 for a PT2E-quantized program, which is
    int8 already (its scales are PyTorch's) and so can be neither recalibrated nor compiled in another dtype."""
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    if not is_pt2e(torch_model):
        return dtype or "fp32"
    if dtype not in (None, "int8"):
        raise ValueError(f"{name} is a PT2E int8 model (quantized in PyTorch): it compiles as int8 only; drop "
                         f"--dtype {dtype} (dtype={dtype!r})")
    if calibration is not None:
        raise ValueError(f"{name} is already quantized with PT2E (scales from PyTorch's convert_pt2e): drop "
                         "--calibration (calibration=...)")
    return "int8"


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


def compile_model(model="shiftresnet20", input_shape=None, target="adreno", *, dtype=None, tuning_db=None,
                  output=None, seed=0, progress=True, calibration=None) -> CompileResult:
    """Compile ``model`` for ``target`` (any name of ``targets.names()``) and export a ``.so``.

    ``dtype="int8"``: static post-training quantization (``tvm_ecnn.quantize``) on ``calibration`` (a
    ``.npy``/``.pt`` file or array of N inputs; None: random inputs, with a warning); the summary adds weight
    bytes, the ops left in float and the int8 vs fp32 agreement on the calibration inputs. ``dtype=None``: fp32,
    or int8 for a model quantized in PyTorch with PT2E (its own scales; the summary adds weight bytes and float ops).
    Raises ``ValueError`` for bad input (model, shape, output path: checked before the compile starts) and
    ``CompileError`` (stage, layer) when the compiler fails."""
    tvm_target = _targets.get_target(target)
    torch_model, shape, name = load_model(model, input_shape, seed)
    pt2e = is_pt2e(torch_model)
    dtype = model_dtype(torch_model, dtype, calibration, model if isinstance(model, (str, Path)) else name)
    out = Path(output or f"{name}-{str(target).replace('/', '-')}.so").resolve()
    check_output(out, _model_files(model, tuning_db))
    records = AppliedRecords(tuning_db, tvm_target) if tuning_db is not None else None  # a bad path fails now
    stages = tqdm(total=5 if dtype == "int8" and not pt2e else 4, desc="compile", disable=not progress, bar_format="{desc} {bar:10} {n}/{total}{postfix}")
    seconds = {}
    report = None

    def stage(name, work, locate=lambda _error: None):
        stages.set_postfix_str(name)
        start = time.perf_counter()
        try:
            result = work()
        except Exception as error:
            if not _raised_by_compiler(error):
                raise
            message = _message(error)
            where = [w for w in (_failed_at(message, report), locate(error)) if w]
            raise CompileError(name, message, "; ".join(where) or None) from error
        seconds[name] = time.perf_counter() - start
        stages.update()
        return result

    # read before the import, which replaces the program's symbolic dims
    saved = program_inputs(torch_model) if isinstance(torch_model, torch.export.ExportedProgram) else None
    try:
        mod, report = stage("import", lambda: _quiet_when_refused(lambda: import_model(
            torch_model, shape, "fp32" if dtype == "int8" and not pt2e else dtype, seed)[:2]))
        quantized = None
        if dtype == "int8" and not pt2e:
            from .quantize import quantize

            quantized = stage("quantize", lambda: quantize(mod, calibration, seed=seed))
            mod = quantized.mod
        inputs = saved or [InputSpec(p.name, tuple(int(d) for d in p.ty.shape), str(p.ty.dtype))
                           for p in mod["main"].params]
        lowered = stage("lower", lambda: _lower_naming_the_pass(relax_pipeline(tvm_target, records), mod),
                        lambda error: f"pass {error.failed_pass}" if getattr(error, "failed_pass", None) else None)
        lowered = _metadata.attach(lowered, inputs, model=str(model) if isinstance(model, (str, Path)) else name,
                                   target=str(target), dtype=dtype, seed=seed)
        executable = stage("build", lambda: tvm.compile(lowered, target=tvm_target, relax_pipeline=None,
                                                        tir_pipeline=tir_pipeline(tvm_target)),
                           lambda _error: _failing_kernel(lowered, tvm_target))
        out.parent.mkdir(parents=True, exist_ok=True)
        stage("export", lambda: executable.export_library(str(out), fcompile=cross_compiler_for(tvm_target)))
    finally:
        stages.close()
    param_bytes = sum(int(np.prod(c.value.shape)) * np.dtype(c.value.dtype).itemsize for c in _constants(mod))
    shown = tuple(d if isinstance(d, int) else _metadata.dim_text(d) for d in inputs[0].shape)
    result = CompileResult(out, name, str(target), shown, dtype, report, _kernels(lowered, tvm_target), param_bytes,
                           _roofline(torch_model, shape, target, dtype), seconds,
                           texture_fallback=texture_fallback(lowered),
                           tuning=records.summary() if records is not None else None)
    if quantized is not None:
        result.int8_lines = _int8_lines(quantized, executable if str(target) == "host" else None)
    if pt2e:
        from .quantize import pt2e_summary_lines

        result.int8_lines = pt2e_summary_lines(mod, report.pt2e_float_ops)
    return result


def _int8_lines(quantized, host_executable=None) -> list[str]:
    """Summary lines of an int8 build: its agreement with fp32 is measured on a host build of the int8 module."""
    from .quantize import agreement, run_host

    int8_outputs = run_host(host_executable if host_executable is not None else quantized.mod, quantized.samples)
    return quantized.summary_lines(agreement(int8_outputs, quantized.fp32_outputs))


def _constants(mod: tvm.IRModule) -> list:
    found = []
    for _, func in mod.functions.items():
        if isinstance(func, tvm.relax.Function):
            tvm.relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, tvm.ir.expr.GenericConst) else None)
    return found


def _roofline(torch_model, shape, target, dtype) -> float | None:
    """The analyzer's estimate (ms) for Snapdragon targets; None for the host, a saved or a PT2E program."""
    if isinstance(torch_model, torch.export.ExportedProgram) or is_pt2e(torch_model):
        return None
    try:
        _targets.preset_for(target)
    except ValueError:
        return None
    from .analysis import analyze

    return analyze(torch_model.float(), shape, target=target, dtype=dtype).total.latency_s * 1e3
