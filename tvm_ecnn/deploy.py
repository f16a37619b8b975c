"""``compile_model``: a PyTorch model in, a deployable ``.so`` out, with a summary.

Stages: load the model (zoo name, saved ``torch.export`` program, ``module:callable`` or an
``nn.Module``), import it (``from_torch``: shifts become ``R.ecnn.*`` and fuse into the following
1x1 convolutions), lower with :mod:`tvm_ecnn.pipeline`, build, and export with the cross linker
the target's host needs (Adreno modules carry their OpenCL source inside the ``.so``).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
import time
import traceback
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
from . import models as _models
from .compiler_pass.texture_fallback import texture_fallback
from .device.export import cross_compiler_for
from .frontend import RewriteReport, from_torch
from .metadata import InputSpec
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
            lines.append(f"fallback    {kept} (buffer, not texture: TVM's NCHW4c layout inference fails on them)")
        if self.roofline_ms is not None:
            lines.append(f"roofline    {self.roofline_ms:.3f} ms (analyzer estimate for {self.target}, {self.dtype})")
        lines.extend(self.int8_lines)
        if self.tuning is not None:
            lines.append(self.tuning)
        lines.append("stages      " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        lines.append(f"output      {self.output}")
        return "\n".join(lines)


def load_model(spec, input_shape=None, seed=0):
    """``(module_or_program, input_shape, name)`` from a zoo name, ``.pt2`` file or ``module:callable``.

    Zoo models get random weights from ``torch.manual_seed(seed)``: ``scripts/run.py --model`` rebuilds
    the same ones to compare against. Every problem with ``spec`` or ``input_shape`` is a ``ValueError``
    naming it (``module`` is looked up on ``sys.path`` and then, as ``python -m`` would, in the current folder)."""
    if input_shape is not None:
        input_shape = check_shape(input_shape)
    if isinstance(spec, torch.export.ExportedProgram):
        return _fp32_only(spec, "the program"), _program_shape(spec, input_shape, "the program"), "program"
    if isinstance(spec, torch.nn.Module):
        if input_shape is None:
            raise ValueError("input_shape is required for an nn.Module")
        return _fp32_only(spec, type(spec).__name__), input_shape, type(spec).__name__
    spec = str(spec)
    if spec.endswith(".pt2"):
        program = _load_program(spec)
        return program, _program_shape(program, input_shape, spec), Path(spec).stem
    if ":" in spec:
        model = _call_factory(spec)
        if input_shape is None:
            raise ValueError(f"--input-shape is required for {spec}")
        return _fp32_only(model, spec), input_shape, spec.partition(":")[2]
    if spec not in _models.names():
        raise ValueError(f"unknown model {spec!r}: use a zoo name ({', '.join(_models.names())}), a .pt2 file "
                         "saved with torch.export.save, or module:callable")
    default = _models.default_input_shape(spec)
    if input_shape is not None and (len(input_shape) != len(default) or input_shape[1] != default[1]):
        raise ValueError(f"input shape {input_shape} does not fit {spec}: it takes N x {default[1]} x H x W images "
                         f"(default {'x'.join(map(str, default))})")
    torch.manual_seed(seed)
    return _models.get(spec).eval(), tuple(input_shape or default), spec


def check_shape(shape) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints, or a ``ValueError`` saying what is wrong with it."""
    dims = tuple(shape) if isinstance(shape, (tuple, list, torch.Size)) else ()
    if not dims or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise ValueError(f"input shape must be a list of integers such as 1,3,224,224, got {shape!r}")
    if any(d <= 0 for d in dims):
        raise ValueError(f"input shape {dims} has a zero or negative dimension; every dimension must be >= 1")
    return tuple(int(d) for d in dims)


def _load_program(path: str) -> torch.export.ExportedProgram:
    if not Path(path).is_file():
        raise ValueError(f"model file {path} " + ("is a directory" if Path(path).is_dir() else "does not exist"))
    log = logging.getLogger("torch.export")  # it logs the whole traceback before raising for a non-archive
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        program = torch.export.load(path)
    except Exception as error:  # zip, pickle and version errors alike: the file is not what we need
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is not a program saved with torch.export.save ({first})") from None
    finally:
        log.setLevel(level)
    return _fp32_only(program, path)


def _program_shape(program, input_shape, spec) -> tuple[int, ...]:
    """The shape to import ``program`` at: ``input_shape`` if the program accepts it, else its example input's."""
    specs = program_inputs(program)
    if len(specs) != 1:
        raise ValueError(f"{spec} takes {len(specs)} inputs; scripts/compile.py compiles models with one input")
    wanted = specs[0]
    example = tuple(program.example_inputs[0][0].shape) if program.example_inputs else wanted.example_shape()
    if input_shape is None:
        return example
    if wanted.mismatch(np.empty(input_shape, wanted.dtype)) is not None:
        raise ValueError(f"input shape {input_shape} does not fit {spec}, which takes {str(wanted).split(': ')[1]}")
    return input_shape


def program_inputs(program: torch.export.ExportedProgram) -> list:
    """The user inputs of ``program`` as ``InputSpec``s; a dynamic dim becomes its ``(min, max)`` range (TVM's
    importer names such a dim after its example value, which would read as a fixed size)."""
    from torch.export.graph_signature import InputKind

    user = {s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT}
    ranges = program.range_constraints
    specs = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user and isinstance(node.meta.get("val"), torch.Tensor):
            value = node.meta["val"]
            dims = []
            for d in value.shape:
                if isinstance(d, int):
                    dims.append(d)
                else:
                    bounds = ranges.get(d.node.expr)
                    low = int(bounds.lower) if bounds is not None else 0
                    high = int(bounds.upper) if bounds is not None and bounds.upper.is_finite else None
                    dims.append((low, high))
            specs.append(InputSpec(node.name, tuple(dims), str(value.dtype).replace("torch.", "")))
    return specs


def _call_factory(spec: str):
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--model {spec!r}: module:callable needs both parts, e.g. mypkg.nets:build")
    # python -m would look in the current folder too; a script has its own folder as sys.path[0] instead
    added = os.getcwd() not in sys.path and "" not in sys.path
    if added:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise ValueError(f"--model {spec}: no module named {error.name!r} on sys.path or in the current "
                             "folder") from None
        raise ValueError(f"--model {spec}: importing {module_name} failed: {error}") from None
    except Exception as error:
        raise ValueError(f"--model {spec}: importing {module_name} failed: {type(error).__name__}: {error}") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    if not hasattr(module, attr):
        raise ValueError(f"--model {spec}: module {module_name} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if callable(obj) and not isinstance(obj, torch.nn.Module):
        try:
            obj = obj()
        except Exception as error:
            raise ValueError(f"--model {spec}: {attr}() raised {type(error).__name__}: {error}") from None
    if not isinstance(obj, torch.nn.Module):
        raise ValueError(f"--model {spec}: expected a torch.nn.Module (or a function returning one), got "
                         f"{type(obj).__name__}")
    return obj


def _fp32_only(model, name):
    """``model`` if its weights and inputs are fp32; a ``.half()`` model cannot be imported (TVM's importer
    hard-codes fp32 conv outputs), and ``--dtype fp16`` gives the same storage from the fp32 model."""
    if isinstance(model, torch.export.ExportedProgram):
        tensors = [*model.state_dict.values(), *model.constants.values()]
        tensors += [torch.empty(0, dtype=getattr(torch, s.dtype)) for s in program_inputs(model)
                    if hasattr(torch, s.dtype)]
    else:
        tensors = [*model.parameters(), *model.buffers()]
    low = sorted({str(t.dtype).replace("torch.", "") for t in tensors
                  if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16)})
    if low:
        raise ValueError(f"{name} has {', '.join(low)} weights or inputs: give the fp32 model (without .half()) "
                         "and use --dtype fp16 (dtype='fp16') for half-precision storage")
    return model


def import_model(model, input_shape=None, dtype="fp32", seed=0, calibration=None):
    """``(Relax module, RewriteReport, torch model, input shape, name)``: what ``compile_model`` compiles,
    and what ``scripts/tune.py`` tunes (same module, so the database keys match). ``int8``: quantized on
    ``calibration`` (see ``tvm_ecnn.quantize``)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    torch_model, shape, name = load_model(model, input_shape, seed)
    mod, report = from_torch(torch_model, (torch.randn(shape),), with_report=True)
    if dtype == "fp16":
        mod = float16_storage(mod)
    if dtype == "int8":
        from .quantize import quantize

        mod = quantize(mod, calibration, seed=seed).mod
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


class CompileError(RuntimeError):
    """The compiler failed on a valid input (a TVM error or a limitation of ours), as opposed to a ``ValueError``
    about the input: ``stage`` is import, lower, build or export; ``layer`` the torch module path, Relax op or kernel
    the failure names, when one can be found."""

    def __init__(self, stage: str, message: str, layer: str | None = None):
        self.stage, self.layer = stage, layer
        where = f" ({layer})" if layer else ""
        super().__init__(f"compilation failed in the {stage} stage{where}: {message}")


# Our compiler's code: exceptions raised there mean the compiler failed. Input checks live in the rest of the project.
_HERE = Path(__file__).resolve().parent
_PROJECT = str(_HERE.parent)
_COMPILER_CODE = tuple(str(p) for p in (Path(_targets.__file__).resolve().parent, _HERE.parent / "schedules",
                                        _HERE / "compiler_pass", _HERE / "pipeline.py"))


def _raised_by_compiler(error: BaseException) -> bool:
    """False for input errors: the frontend's ExportError and UnsupportedOperatorError, and ``ValueError``s raised by
    this project's own checks. True for everything else: raised inside TVM, torch, a toolchain or our passes."""
    from .frontend import ExportError, UnsupportedOperatorError

    if isinstance(error, (ExportError, UnsupportedOperatorError)):
        return False
    if not isinstance(error, ValueError):
        return True
    frames = traceback.extract_tb(error.__traceback__)
    origin = str(Path(frames[-1].filename).resolve()) if frames else ""
    ours = origin.startswith(_PROJECT) and "site-packages" not in Path(origin).parts  # the venv may live inside
    return not ours or origin.startswith(_COMPILER_CODE)


def _failed_at(message: str, report: RewriteReport | None) -> str | None:
    """The torch module path (via the import's Relax var names), else the Relax op or kernel a message names."""
    words = re.findall(r"[A-Za-z_][\w.]*", message)
    origins = report.origins if report is not None else {}
    for word in words:
        if origins.get(word):
            return f"torch module {origins[word]}, Relax var {word}"
    return next((f"op {w}" if w.startswith("relax.") else f"kernel {w}" for w in words
                 if w.startswith(("relax.", "fused_", "ecnn_"))), None)


@tvm.instrument.pass_instrument
class _PassStack:
    """Records the passes running, so that after a failure the innermost one names the step that failed."""

    def __init__(self):
        self.running = []

    def run_before_pass(self, _mod, info):
        self.running.append(info.name)

    def run_after_pass(self, _mod, _info):
        self.running.pop()


def _lower_naming_the_pass(pipeline, mod):
    """``pipeline(mod)``; on failure the exception carries ``failed_pass``."""
    passes = _PassStack()
    current = tvm.transform.PassContext.current()
    with tvm.transform.PassContext(opt_level=current.opt_level, config=dict(current.config),
                                   instruments=[*current.instruments, passes]):
        try:
            return pipeline(mod)
        except Exception as error:
            error.failed_pass = passes.running[-1] if passes.running else None
            raise


def _failing_kernel(lowered: tvm.IRModule, target) -> str | None:
    """``kernel NAME``: the first kernel that does not build on its own (to name it after a build failure)."""
    for gvar, func in lowered.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            try:
                tvm.tirx.build(tvm.IRModule({gvar: func}), target=target, pipeline=tir_pipeline(target))
            except Exception:  # noqa: BLE001  (any failure: this is the kernel)
                return f"kernel {gvar.name_hint}"
    return None


def _message(error: BaseException) -> str:
    """An exception's message without TVM's C++ backtrace."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    text = next((line for line in lines if "Check failed" in line or "Error" in line.split(":")[0]), None)
    text = (text or (lines[0] if lines else type(error).__name__)).strip()
    return re.sub(r'ir\.Op\(.*?name="([\w.]+)".*?\)', r"\1", text)  # an Op's repr is all fields: keep the name


def check_output(output: Path, inputs: list[Path]) -> None:
    """``ValueError`` before any work when ``output`` is an input, a directory or cannot be written."""
    for given in inputs:
        if given.exists() and (output == given.resolve() or (output.exists() and os.path.samefile(output, given))):
            raise ValueError(f"output {output} is the input {given}: choose another -o/--output, the input would "
                             "be overwritten")
    if output.is_dir():
        raise ValueError(f"output {output} is a directory: give a file name, e.g. -o {output / 'net.so'}")
    folder = output.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"output {output}: {folder} is not a directory")
    try:  # as root, os.access says yes even on read-only mounts: try it
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise ValueError(f"output {output} cannot be written in {folder}: {error.strerror}") from None
    if output.exists() and not os.access(output, os.W_OK):
        raise ValueError(f"output {output} exists and is not writable")


def _model_files(model, tuning_db) -> list[Path]:
    """Files compile_model reads, which its output must never replace."""
    files = [Path(str(model))] if str(model).endswith(".pt2") else []
    if isinstance(model, str) and ":" in model:
        found = importlib.util.find_spec(model.partition(":")[0]) if model.partition(":")[0] else None
        files += [Path(found.origin)] if found is not None and found.origin else []
    if tuning_db is not None and Path(tuning_db).is_dir():
        files += list(Path(tuning_db).iterdir())
    return files


def _quiet_when_refused(work):
    """``work()``, holding back what it prints to stderr: shown afterwards, unless torch.export refused the model
    (then it is torch's partial graph dump, and the ExportError says what matters)."""
    from .frontend import ExportError

    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            return work()
    except ExportError:
        held = None
        raise
    finally:
        if held is not None:
            sys.stderr.write(held.getvalue())


def compile_model(model="shiftresnet20", input_shape=None, target="adreno", *, dtype="fp32", tuning_db=None,
                  output=None, seed=0, progress=True, calibration=None) -> CompileResult:
    """Compile ``model`` for ``target`` (any name of ``targets.names()``) and export a ``.so``.

    ``dtype="int8"``: static post-training quantization (``tvm_ecnn.quantize``) on ``calibration`` (a
    ``.npy``/``.pt`` file or array of N inputs; None: random inputs, with a warning); the summary adds weight
    bytes, the ops left in float and the int8 vs fp32 agreement on the calibration inputs.
    Raises ``ValueError`` for bad input (model, shape, output path: checked before the compile starts) and
    ``CompileError`` (stage, layer) when the compiler fails."""
    tvm_target = _targets.get_target(target)
    if dtype == "int8" and _targets.is_texture(tvm_target):
        raise ValueError(f"--dtype int8 does not compile for the texture target {target!r} yet: TVM 0.27's OpenCL "
                         "codegen has no 8-bit images (int8 NCHW4c texels are 32 bits, it takes 64/128); use the "
                         "buffer target (e.g. 'adreno') for int8, or fp16 on textures")
    torch_model, shape, name = load_model(model, input_shape, seed)
    out = Path(output or f"{name}-{str(target).replace('/', '-')}.so").resolve()
    check_output(out, _model_files(model, tuning_db))
    records = AppliedRecords(tuning_db, tvm_target) if tuning_db is not None else None  # a bad path fails now
    stages = tqdm(total=5 if dtype == "int8" else 4, desc="compile", disable=not progress, bar_format="{desc} {bar:10} {n}/{total}{postfix}")
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
            torch_model, shape, "fp32" if dtype == "int8" else dtype, seed)[:2]))
        quantized = None
        if dtype == "int8":
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
    """The analyzer's estimate (ms) for Snapdragon targets; None for the host or a saved program."""
    if isinstance(torch_model, torch.export.ExportedProgram):
        return None
    try:
        _targets.preset_for(target)
    except ValueError:
        return None
    from .analysis import analyze

    return analyze(torch_model.float(), shape, target=target, dtype=dtype).total.latency_s * 1e3
