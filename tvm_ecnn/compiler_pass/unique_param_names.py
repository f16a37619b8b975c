"""Give every PrimFunc parameter a unique name (``lv44``, ``lv44_1``), changing nothing else.

FuseTIR names a fused function's parameters after the Relax vars they bind and can give two of them the same
name (MobileNetV2's residual add reads ``lv44`` from two different producers). The OpenCL codegen then makes the
kernel arguments unique by itself (``lv44_ptr``, ``lv44_ptr_1``), but every tool that matches kernel arguments to
buffers by name (``tvm_ecnn.device.pocl``) cannot tell the two apart. The texture TIR pipeline
(``adreno_tir``) runs this first, so the OpenCL that ships is exactly what PoCL runs.
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx


def unique_param_names(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with duplicate parameter names suffixed ``_1``, ``_2``, ... (the same object if none clash)."""
    renamed, seen = {}, set()
    for p in func.params:
        name, k = p.name, 0
        while name in seen:
            k += 1
            name = f"{p.name}_{k}"
        seen.add(name)
        if name != p.name:
            renamed[p] = tvm.ir.Var(name, p.ty)
    if not renamed:
        return func
    return tvm_ffi.structural_map(func, ((tvm.ir.Var, lambda v: renamed.get(v, v)),))


@tirx.transform.prim_func_pass(opt_level=0, name="UniqueParamNames")
def UniqueParamNames(func: tirx.PrimFunc, _mod, _ctx) -> tirx.PrimFunc:
    return unique_param_names(func)
