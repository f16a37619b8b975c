"""The Adreno texture TIR pipeline that TVM 0.27 ships but never reaches, fixed (notes bug C / F6 / F7).

* Bug C / F6: ``tvm.compile`` lowers every OpenCL module with the generic ``s_tir`` pipeline, so texture-scope
  buffers come out as pointer arithmetic on ``image2d_array_t`` (invalid OpenCL), and TVM's own ``"adreno"``
  entry returns one Pass where ``tirx.build`` unpacks a 3-tuple. We register the Adreno pass list
  (``TextureFlatten``, ``InjectTextureAlloc``, ...) with the ``s_tir`` finalisers under our own name, ``NAME``,
  which ``tvm_ecnn.pipeline.tir_pipeline`` returns for texture targets (TVM's globals are left alone).
* F7: ``TextureFlatten`` types its ``texture2d_store`` calls with the image's *pointer* type, and ``VectorizeLoop``
  scalarizes any call that does not return a primitive type. The RGBA lane loop therefore becomes four scalar
  ``write_imagef`` calls of one pixel, each broadcasting its scalar to all lanes: every lane ends up holding lane 3.
  ``TypeTextureStores`` gives the stores a ``void`` primitive type right after flattening, so the vectorizer takes
  its texture path and writes one ``float4``. A lane loop the vectorizer cannot handle (dlight's ``Pool2D``
  reduces inside it, and 0.27 does not widen the per-lane register it allocates there) is first split by
  ``StageTexelWrites``: lanes computed one by one into a register texel, then one vectorized store. The same lane
  loop writing an ``NCHW4c`` *buffer* (a max pool whose consumer is not a texture) is not refused but silently
  wrong (every lane gets one lane's maximum), so buffer outputs are staged too.
  ``CheckTextureStores`` finally rejects any store still narrower than a texel, instead of shipping a kernel that
  silently broadcasts one lane. The Relax pipeline asks ``stores_partial_texels`` first and moves such a kernel's
  output to a buffer (``partial_texel_fallback.py``), so a model reaches the refusal only when that is impossible.
* ``UniqueParamNames`` first: fused functions can have two parameters of one name (see there).
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir import Schedule
from tvm.s_tir.backend.adreno import pipeline as adreno_pipeline
from tvm.s_tir.backend.adreno import transform as adreno_transform
from tvm.tirx import compilation_pipeline

from .unique_param_names import UniqueParamNames

NAME = "ecnn-adreno-texture"
_STORE = tvm.ir.Op.get("tirx.texture2d_store")


def _texture_stores(func: tirx.PrimFunc) -> list:
    calls = []
    tvm_ffi.structural_walk(func.body, ((tvm.ir.Call, calls.append),))
    return [c for c in calls if c.op.same_as(_STORE)]


def _is_texture(buffer) -> bool:
    return "texture" in str(buffer.ty.storage_scope)


def _is_global(buffer) -> bool:
    return str(buffer.ty.storage_scope).startswith("global")


def _stage(sch: Schedule, name: str) -> None:
    """If block ``name`` writes a texture or global buffer from inside a vectorized lane loop that holds more than
    the store, compute the lanes serially into a local texel and store it with a vectorized copy after the loop."""
    block = sch.get_sblock(name)
    writes = [i for i, w in enumerate(sch.get(block).writes) if _is_global(w.source)]
    if not writes:
        return
    texel = int(sch.get(block).writes[writes[0]].source.ty.shape[-1])
    loops = sch.get_loops(block)
    lanes = [i for i, loop in enumerate(loops)
             if sch.get(loop).kind == tirx.ForKind.VECTORIZED and int(sch.get(loop).extent) == texel]
    if not lanes or lanes[-1] == 0:
        return  # no lane loop (or nothing to stage it under): CheckTextureStores will say so if it matters
    lane = loops[lanes[-1]]
    if lanes[-1] == len(loops) - 1 and isinstance(sch.get(lane).body, s_tir.SBlockRealize):
        return  # the lane loop holds the store alone: the vectorizer handles it
    copy = sch.cache_write(block, writes[0], "local")
    sch.reverse_compute_at(copy, loops[lanes[-1] - 1])
    sch.vectorize(sch.get_loops(copy)[-1])
    sch.unroll(lane)


@tirx.transform.prim_func_pass(opt_level=0, name="StageTexelWrites")
def StageTexelWrites(func: tirx.PrimFunc, _mod, _ctx) -> tirx.PrimFunc:
    """Schedule-level fix for texel writes inside a non-trivial vectorized lane loop (dlight Pool2D)."""
    blocks = []
    tvm_ffi.structural_walk(func.body, ((s_tir.SBlock, blocks.append),))
    sch = Schedule(func)
    for block in blocks[1:]:  # blocks[0] is the root
        _stage(sch, block.name_hint)
    return sch.mod["main"]


@tirx.transform.prim_func_pass(opt_level=0, name="TypeTextureStores")
def TypeTextureStores(func: tirx.PrimFunc, _mod, _ctx) -> tirx.PrimFunc:
    """Retype ``texture2d_store`` calls as ``void`` primitives so ``VectorizeLoop`` vectorizes them (F7)."""
    void = tvm.ir.PrimType("void")

    def retype(call):
        if not call.op.same_as(_STORE) or isinstance(call.ty, tvm.ir.PrimType):
            return call
        return tvm.ir.Call(call.op, list(call.args), span=call.span, ret_ty=void)

    return func.with_body(tvm_ffi.structural_map(func.body, ((tvm.ir.Call, retype),)))


@tirx.transform.prim_func_pass(opt_level=0, name="CheckTextureStores")
def CheckTextureStores(func: tirx.PrimFunc, _mod, _ctx) -> tirx.PrimFunc:
    """Every texture store must write a whole texel: ``value lanes * bits == texel bits`` (argument 4)."""
    for call in _texture_stores(func):
        value, texel_bits = call.args[-1], int(call.args[4])
        written = value.ty.dtype.lanes * value.ty.dtype.bits
        if written != texel_bits:
            name = func.attrs.get("global_symbol", "?") if func.attrs else "?"
            raise ValueError(f"{name}: texture2d_store writes {written} of a texel's {texel_bits} bits (its value "
                             f"{value.ty} is not vectorized over the RGBA lanes), which would broadcast one lane "
                             "to all four; vectorize the innermost (lane) loop of the texture output")
    return func


def stores_partial_texels(func: tirx.PrimFunc) -> bool:
    """Whether ``CheckTextureStores`` would refuse ``func``: lowered on a copy only as far as ``VectorizeLoop``."""
    passes = [UniqueParamNames, StageTexelWrites, adreno_transform.TextureFlatten(), TypeTextureStores,
              s_tir.transform.CanonicalizeLoop(), s_tir.transform.LowerCrossThreadReduction(),
              s_tir.transform.LowerInitBlock(), s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
              s_tir.transform.ConvertBlocksToOpaque(), s_tir.transform.LowerOpaqueBlock(),
              tirx.transform.FlattenBuffer(), tirx.transform.VectorizeLoop(True), CheckTextureStores]
    try:
        tvm.transform.Sequential(passes)(tvm.IRModule({"main": func}))
    except ValueError as error:
        if "of a texel's" in str(error):
            return True
        raise
    return False


def _pipeline():
    _, finalize_host, finalize_device = compilation_pipeline.get_tir_pipeline("s_tir")
    # TextureFlatten runs first, then the retype; TVM's pass list flattens again (a no-op) and lowers the rest.
    passes = [UniqueParamNames, StageTexelWrites, adreno_transform.TextureFlatten(), TypeTextureStores,
              adreno_pipeline.default_tir_pipeline(), CheckTextureStores]
    return tvm.transform.Sequential(passes, name="EcnnAdrenoTexture"), finalize_host, finalize_device


compilation_pipeline.register_tir_pipeline(NAME, _pipeline)
