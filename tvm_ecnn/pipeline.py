"""The compile pipeline, in one visible place.

TVM 0.27's ``tvm.compile`` uses ``relax.get_pipeline("default")`` on CPU targets, which neither
fuses nor schedules (bug D). We build the target's default backend pipeline ourselves and insert
the ecnn passes where they belong: graph rewrites before legalization (shift groups put in raster
order; on CPUs in-place sparse shifts, and BatchNorms no conv took as one multiply-add), and right
after FuseTIR (before dlight) the tuned records of a MetaSchedule database, then hand schedules for the
ecnn functions the database does not cover, then (CPUs) default schedules for every other kernel,
(Adreno) the int8 conv2d schedules, and the packing of their weights into constants.
"""
from __future__ import annotations

import tvm
from tvm import relax

import relay_ops  # noqa: F401  (registers the relax.ecnn ops)
import targets as _targets

from .compiler_pass import adreno_tir
from .compiler_pass.adreno_conv2d_legalize import LegalizeNCHW4cConv2d
from .compiler_pass.adreno_conv_epilogues import InlineConvEpilogues, ScheduleBroadcastConvolutions
from .compiler_pass.apply_adreno_int8_schedules import ApplyAdrenoInt8Schedules
from .compiler_pass.apply_default_cpu_schedules import ApplyDefaultCpuSchedules
from .compiler_pass.apply_ecnn_schedules import ApplyEcnnSchedules
from .compiler_pass.ecnn_texture_layout import EcnnTextureLayout, EcnnTextureScopes
from .compiler_pass.fold_batch_norm import BatchNormScaleShift
from .compiler_pass.fold_packed_weights import FoldPackedWeights
from .compiler_pass.partial_texel_fallback import BufferForPartialTexels
from .compiler_pass.raster_order_shift_groups import RasterOrderShiftGroups
from .compiler_pass.sparse_shift_inplace import SparseShiftInplace
from .compiler_pass.texel_schedule import ScheduleTexelWrites
from .compiler_pass.texture_fallback import KeepOffTextures
from .compiler_pass.texture_reshape import CopyTextureBeforeReshape
from .compiler_pass.unshare_constants import UnshareConstants
from .tuning_db import AppliedRecords


def _backend(target: tvm.target.Target):
    if "adreno" in target.keys:
        return relax.backend.adreno.pipeline
    if target.kind.name == "llvm":
        return relax.backend.cpu_generic.pipeline
    raise ValueError(f"tvm-ecnn compiles for LLVM CPUs and Adreno OpenCL, not {target.kind.name!r}")


def _before_legalize(target: tvm.target.Target) -> list:
    graph = [RasterOrderShiftGroups()]
    return graph + [SparseShiftInplace(), BatchNormScaleShift()] if target.kind.name == "llvm" else graph


def _after_fusion(target: tvm.target.Target, tuning_db) -> list:
    # Tuned records first: they are keyed by the fused, not yet scheduled functions (`tuning_passes`),
    # and mark what they schedule `tirx.is_scheduled`, which ApplyEcnnSchedules then leaves alone.
    # On CPUs the default schedules come last, then the weight packing they ask for is folded into constants.
    cpu = [ApplyDefaultCpuSchedules(target), FoldPackedWeights()] if target.kind.name == "llvm" else []
    # Adreno (buffer and texture: int8 tensors stay in buffers on both): the int8 conv schedules, their weights packed
    gpu = [ApplyAdrenoInt8Schedules(target), FoldPackedWeights()] if "adreno" in target.keys else []
    passes = [ApplyEcnnSchedules(target)] + cpu + gpu
    if tuning_db is not None:
        records = tuning_db if isinstance(tuning_db, AppliedRecords) else AppliedRecords(tuning_db, target)
        passes.insert(0, records.apply_pass())
    return passes


def _with_texture_passes(legalize: list) -> list:
    """Texture targets (only their pass lists contain ConvertLayout), around TVM's Adreno passes:

    * before ConvertLayout: keep ops whose NCHW4c layout inference is broken (norms and reductions over channels) on
      NCHW buffers (``compiler_pass/texture_fallback.py``; reported by the compile summary);
    * after ConvertLayout: keep ecnn ops in NCHW4c rather than wrapped in layout transforms (our stand-in for
      FRelaxInferLayout);
    * before AnnotateCustomMemoryScope: let ecnn ops use textures, and give the pipeline its own constants (that
      pass types them in place, which would change the caller's module);
    * after it: legalize the packed conv2d ourselves (TVM's drops fp16 and divides by zero on depthwise);
    * before dlight's Adreno rules: fused convolutions whose epilogue ``dl.adreno.Conv2d`` would leave outside every
      kernel (SE gates, SiLU; ``compiler_pass/adreno_conv_epilogues.py``);
    * between dlight's Adreno and generic GPU rules: whole-texel schedules for the image writers they leave;
    * last (right before the dataflow lowering's ``RewriteDataflowReshape``): a kernel the partial-texel guard would
      refuse writes a buffer, copied to its texture (``compiler_pass/partial_texel_fallback.py``, reported); reshapes
      from a texture to a buffer become a copy and a view (``compiler_pass/texture_reshape.py``).
    """
    names = [p.info.name for p in legalize]
    if "ConvertLayout" not in names:
        return legalize
    convert = names.index("ConvertLayout")
    layout, scopes = convert + 1, names.index("AnnotateCustomMemoryScope")
    dlight = names.index("ApplyDefaultSchedule")  # the first one holds the dl.adreno rules
    before_dlight = [ScheduleBroadcastConvolutions(), InlineConvEpilogues()]
    return (legalize[:convert] + [KeepOffTextures()] + legalize[convert:layout] + [EcnnTextureLayout()]
            + legalize[layout:scopes] + [EcnnTextureScopes(), UnshareConstants()] + legalize[scopes:scopes + 1]
            + [LegalizeNCHW4cConv2d()] + legalize[scopes + 1:dlight] + before_dlight + legalize[dlight:dlight + 1]
            + [ScheduleTexelWrites()] + legalize[dlight + 1:]
            + [BufferForPartialTexels(), CopyTextureBeforeReshape()])


def _fusion_end(legalize: list) -> int:
    """Index right after FuseTIR (and the DCE that may follow it): where the ecnn passes go."""
    names = [p.info.name for p in legalize]
    at = names.index("FuseTIR") + 1
    while at < len(names) and names[at] == "DeadCodeElimination":
        at += 1
    return at


def _pass_lists(target: tvm.target.Target, tuning_db) -> tuple[list, list]:
    """``relax_pipeline``'s passes, split where the ecnn schedules and the tuning database apply."""
    backend = _backend(target)
    with target:  # the Adreno pass lists read Target.current() while being built
        legalize = _with_texture_passes(backend.legalize_passes(target))
        at = _fusion_end(legalize)
        before = backend.library_dispatch_passes(target) + _before_legalize(target) + legalize[:at]
        after = (_after_fusion(target, tuning_db) + legalize[at:] + backend.dataflow_lower_passes(target)
                 + backend.finalize_passes(target))
    return before, after


def _as_pass(target: tvm.target.Target, passes: list, name: str) -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name=name)
    def _run(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _run


def relax_pipeline(target, tuning_db=None) -> tvm.transform.Pass:
    """The Relax pipeline ``build`` uses; pass it to ``tvm.compile(relax_pipeline=...)`` yourself. ``tuning_db``: a
    database folder (read and checked now, see :mod:`tvm_ecnn.tuning_db`) or an ``AppliedRecords`` of one."""
    target = _targets.get_target(target)
    before, after = _pass_lists(target, tuning_db)
    return _as_pass(target, before + after, "EcnnPipeline")


def tuning_passes(target) -> tvm.transform.Pass:
    """``relax_pipeline`` up to where it applies a tuning database: MetaSchedule extracts its tasks from
    this fused, not yet scheduled form so that the database keys are exactly what ``build`` looks up."""
    target = _targets.get_target(target)
    return _as_pass(target, _pass_lists(target, None)[0], "EcnnTuningPrefix")


def scheduling_passes(target, tuning_db=None) -> tvm.transform.Pass:
    """``relax_pipeline`` up to its scheduled kernels, before ``FoldPackedWeights`` moves their weight packing
    out (a kernel that packs becomes ``<name>_prepacked``, reading the packed constant): the form in which a
    tuning record schedules a kernel, by the name MetaSchedule gave its task."""
    target = _targets.get_target(target)
    before, after = _pass_lists(target, tuning_db)
    folds = next((i for i, p in enumerate(after) if p.info.name == "FoldPackedWeights"), len(after))
    return _as_pass(target, before + after[:folds], "EcnnScheduling")


def tir_pipeline(target):
    """The TIR pipeline ``build`` uses for ``target``: texture targets need our fixed Adreno pipeline (notes
    bug C / F6 / F7, ``compiler_pass/adreno_tir.py``); TVM's default never lowers texture accesses."""
    return adreno_tir.NAME if _targets.is_texture(_targets.get_target(target)) else "default"


def build(mod: tvm.IRModule, target="host", tuning_db=None):
    """Compile a Relax module (with or without ecnn ops) to a ``relax.VMExecutable``."""
    target = _targets.get_target(target)
    return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target, tuning_db),
                       tir_pipeline=tir_pipeline(target))
