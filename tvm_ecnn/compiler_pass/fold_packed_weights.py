"""Pack conv weights once, at compile time, instead of on every call.

The CPU conv micro-kernels read their weights packed (``[O / tile, C, kh, kw, tile]``, the tile
chosen per conv by the schedule). Their schedules keep the packing as a root-level stage marked
``meta_schedule.layout_rewrite_preproc`` (``schedules.cpu_common.mark_weight_prepack``). Here TVM's
``SplitLayoutRewritePreproc`` moves each marked stage into its own PrimFunc, called from Relax on the
weight; when the weight is a constant (every imported model), ``FoldConstant`` evaluates that call
and the kernel receives the packed constant: up to ~14 MB of per-inference packing traffic gone on
MobileNetV2. A weight that is a runtime input is still packed per call, correctly.
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax

from schedules.cpu_common import WEIGHT_PREPACK


def _packs_weights(func) -> bool:
    found = []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlock, lambda b: found.append(b)
                                        if WEIGHT_PREPACK in b.annotations else None))
    return bool(found)


@tvm.transform.module_pass(opt_level=0, name="FoldPackedWeights")
class FoldPackedWeights:
    """Runs after the scheduling passes, before the kernels are lowered.

    ``SplitLayoutRewritePreproc`` only sees the kernels that pack weights: it rejects PrimFuncs
    whose body is not a root block (hand-written in-place kernels), whatever their annotations.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        others = {gv: f for gv, f in mod.functions.items()
                  if isinstance(f, tvm.tirx.PrimFunc) and not _packs_weights(f)}
        if len(others) == sum(isinstance(f, tvm.tirx.PrimFunc) for f in mod.functions.values()):
            return mod
        split = relax.transform.SplitLayoutRewritePreproc()(
            tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv not in others}, attrs=mod.attrs,
                         global_infos=mod.global_infos))  # texture targets: the vdevices CallTIRRewrite looks up
        for gv, f in others.items():
            split[gv] = f
        return tvm.transform.Sequential([relax.transform.FoldConstant(), relax.transform.DeadCodeElimination()])(split)
