"""int8 dense (``x @ W`` on a constant weight, int32 accumulation) on AVX-512 VNNI: ``tvm_ecnn.quantize``'s
classifiers. One of ``generic_cpu.RULES``: the plain loop nest (``cpu_loop_nest``) multiplied int32 lanes of a
strided byte column per feature vector, measured slower than the fp32 dense (MobileNetV2's 1280 -> 1000: 228 -> 21 us
on Zen 5, 2 threads)."""
from __future__ import annotations

from tvm.s_tir import Schedule

from . import cpu_common
from ._blocks import divisor, extents
from .cpu_dense import DENSE_TILES
from .cpu_int8 import DOT_8x4_S8S8, has_vnni


def vnni_dense(sch: Schedule, target) -> bool:
    """An int8 dense ``acc[n, j] += x[n, k] * w[k, j]`` (``tvm_ecnn.quantize``'s matmul on a constant ``[K, J]``
    weight, int32 accumulation) on ``vpdpbusd`` ymm channel vectors: per task a tile of ``DENSE_TILES`` features,
    the weight packed ``[J / tile, K / 4, tile, 4]`` at compile time (contiguous per step), the requantize epilogue
    per tile. False (nothing changed) when the function has no such matmul, ``K`` is not a multiple of 4 or ``J`` of
    8, or the target has no VNNI (the matmul is bandwidth-bound: ymm lanes cost nothing over zmm there)."""
    if not has_vnni(target):
        return False
    blocks = [b for b in cpu_common.root_blocks(sch) if cpu_common.kinds(sch, b) == "SSR"
              and str(sch.get(b).body.buffer.dtype) == "int32" and len(sch.get(b).reads) == 2]
    if len(blocks) != 1:
        return False
    block = blocks[0]
    n, j, k = sch.get_loops(block)
    batch, features, depth = extents(sch, [n, j, k])
    b = sch.get(block)
    v_j = b.iter_vars[1].var
    weights = [i for i, r in enumerate(b.reads) if not r.source.same_as(b.writes[0].source)
               and len(r.region) == 2 and r.region[1].extent == 1 and r.region[1].min.same_as(v_j)]
    tile = divisor(features, DENSE_TILES)
    if depth % 4 or features % 8 or len(weights) != 1:
        return False
    cpu_common.inline_all(sch, keep={sch.get(block).name_hint})
    consumers = sch.get_consumers(block)
    if consumers:
        (store,) = consumers
        sch.set_scope(block, 0, "global")
    else:
        store = sch.cache_write(block, 0, "global")
    cpu_common.packed_weight_read(sch, block, weights[0], lambda k_, j_: (j_ // tile, k_ // 4, j_ % tile, k_ % 4))
    jo, ji = sch.split(j, [None, tile])
    jb, jl = sch.split(ji, [None, 8])
    ko, k4 = sch.split(k, [None, 4])
    sch.reorder(n, jo, ko, jb, jl, k4)
    sch.reverse_compute_at(store, jo)
    if batch * features * depth >= cpu_common.PARALLEL_MIN_WORK:
        sch.parallel(sch.fuse(n, jo))
    init = sch.decompose_reduction(block, ko)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(jl, DOT_8x4_S8S8)
    sch.unroll(jb)
    sch.set_scope(init, 0, "local")
    sch.vectorize(sch.get_loops(store)[-1])
    return True
