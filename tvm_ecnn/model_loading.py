"""Load the model ``compile_model`` compiles: a zoo name, a saved ``torch.export`` program, ``module:callable`` or an
``nn.Module``, with its input shape checked; every bad spec is one ``ValueError`` naming what to give instead."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch

from . import models as _models
from .error_text import error_line
from .metadata import InputSpec

PT2E_OPS = "torch.ops.quantized_decomposed."  # PT2E's q/dq ops (torchao's convert_pt2e)


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
    _register_op_libraries()
    log = logging.getLogger("torch.export")  # it logs the whole traceback (naming an unknown op) before raising
    failures = _Failures()
    level = log.level
    log.setLevel(logging.WARNING)
    log.addFilter(failures)
    try:
        program = torch.export.load(path)
    except Exception as error:  # zip, pickle and version errors alike: the file is not what we need
        missing = failures.unresolved_op()
        if missing is not None:
            raise ValueError(f"{path} calls {missing}, which is not registered here: " + (
                "PT2E's q/dq ops come with torchao (pip install torchao)" if missing.startswith(PT2E_OPS) else
                "import the library that defines it, then pass torch.export.load's program to "
                "tvm_ecnn.deploy.compile_model")) from None
        raise ValueError(f"{path} is not a program saved with torch.export.save ({error_line(error)})") from None
    finally:
        log.removeFilter(failures)
        log.setLevel(level)
    return _fp32_only(program, path)


def _register_op_libraries() -> None:
    """``torch.export.load`` resolves every op by name, so the libraries of the custom ops a saved program may call
    are imported first: ours (``torch.ops.ecnn``) and PT2E's q/dq ops (``torch.ops.quantized_decomposed``, which
    torch registers for torchao's ``convert_pt2e``; from torchao itself should a torch no longer have them)."""
    from . import nn  # noqa: F401

    for library in ("torch.ao.quantization.fx._decomposed", "torchao.quantization.pt2e"):
        try:
            importlib.import_module(library)
            return
        except ImportError:
            continue


class _Failures(logging.Filter):
    """Keeps what ``torch.export.load`` logs (the op it could not resolve is named there, not in what it raises)
    from being printed."""

    UNRESOLVED = re.compile(r"failed to resolve (torch\.ops\.[\w.]+?)(?:\.default)? to an operator")

    def __init__(self):
        super().__init__()
        self.errors = []

    def filter(self, record) -> bool:
        self.errors.append(str(record.exc_info[1]) if record.exc_info and record.exc_info[1] else record.getMessage())
        return False

    def unresolved_op(self) -> str | None:
        found = (self.UNRESOLVED.search(text) for text in self.errors)
        return next((m.group(1) for m in found if m), None)


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
