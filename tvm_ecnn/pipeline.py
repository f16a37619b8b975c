"""The compile pipeline, in one visible place.

TVM 0.27's ``tvm.compile`` uses ``relax.get_pipeline("default")`` on CPU targets, which neither
fuses nor schedules (bug D). We build the target's default backend pipeline ourselves and insert
the ecnn passes where they belong: graph rewrites before legalization (shift groups put in raster
order, in-place sparse shifts on CPUs), hand schedules right after FuseTIR (before dlight), and
tuned records from a MetaSchedule database after that.
"""
from __future__ import annotations

import tvm
from tvm import relax

import relay_ops  # noqa: F401  (registers the relax.ecnn ops)
import targets as _targets

from .compiler_pass.apply_ecnn_schedules import ApplyEcnnSchedules
from .compiler_pass.raster_order_shift_groups import RasterOrderShiftGroups
from .compiler_pass.sparse_shift_inplace import SparseShiftInplace


def _backend(target: tvm.target.Target):
    if "adreno" in target.keys:
        return relax.backend.adreno.pipeline
    if target.kind.name == "llvm":
        return relax.backend.cpu_generic.pipeline
    raise ValueError(f"tvm-ecnn compiles for LLVM CPUs and Adreno OpenCL, not {target.kind.name!r}")


def _before_legalize(target: tvm.target.Target) -> list:
    graph = [RasterOrderShiftGroups()]
    return graph + [SparseShiftInplace()] if target.kind.name == "llvm" else graph


def _after_fusion(target: tvm.target.Target, tuning_db) -> list:
    passes = [ApplyEcnnSchedules(target)]
    if tuning_db is not None:
        passes.append(relax.transform.MetaScheduleApplyDatabase(work_dir=str(tuning_db)))
    return passes


def _insert_after_fusion(legalize: list, extra: list) -> list:
    """Put ``extra`` right after FuseTIR (and the DCE that may follow it)."""
    names = [p.info.name for p in legalize]
    at = names.index("FuseTIR") + 1
    while at < len(names) and names[at] == "DeadCodeElimination":
        at += 1
    return legalize[:at] + extra + legalize[at:]


def relax_pipeline(target, tuning_db=None) -> tvm.transform.Pass:
    """The Relax pipeline ``build`` uses; pass it to ``tvm.compile(relax_pipeline=...)`` yourself."""
    target = _targets.get_target(target)
    backend = _backend(target)
    with target:  # the Adreno pass lists read Target.current() while being built
        passes = (
            backend.library_dispatch_passes(target)
            + _before_legalize(target)
            + _insert_after_fusion(backend.legalize_passes(target), _after_fusion(target, tuning_db))
            + backend.dataflow_lower_passes(target)
            + backend.finalize_passes(target)
        )

    @tvm.transform.module_pass(opt_level=0, name="EcnnPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def tir_pipeline(target):
    """The TIR pipeline ``build`` uses for ``target``."""
    return "default"


def build(mod: tvm.IRModule, target="host", tuning_db=None):
    """Compile a Relax module (with or without ecnn ops) to a ``relax.VMExecutable``."""
    target = _targets.get_target(target)
    return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target, tuning_db),
                       tir_pipeline=tir_pipeline(target))
