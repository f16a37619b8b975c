"""Tell a compiler failure (``CompileError``: which stage, which layer) from bad input (``ValueError``), and check
the output path before any work, so ``scripts/compile.py`` exits 1 or 2 with one line."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path

import tvm

import targets as _targets

from .frontend import RewriteReport
from .pipeline import tir_pipeline


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
