"""What every default LLVM-CPU schedule (``generic_cpu.py``'s rules) asks of the target and of a block.

Target facts (SIMD lanes, accumulator registers, when a thread pool pays) and block inspection
(iteration kinds, guarded loads, inlining) shared by the conv2d, depthwise and loop-nest schedules.
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx
from tvm.s_tir import Schedule
from tvm.target.codegen import llvm_get_vector_width

from ._blocks import uses

PARALLEL_MIN_WORK = 1 << 18
"""Iterations below which a non-conv kernel stays serial: waking the thread pool (~10-20 us on a
busy host) costs more than it saves on cheap, cache-resident elementwise work."""


def vector_lanes(target, dtype: str) -> int:
    """SIMD lanes of ``dtype`` on ``target`` (AVX-512: 16 float32, AVX2: 8, NEON: 4)."""
    bits = tvm.runtime.DataType(dtype).bits
    return max(llvm_get_vector_width(target) // bits, 1)


def accumulator_budget(target) -> int:
    """Vector registers the conv micro-kernel may hold accumulators in: half the register file
    (AArch64 NEON and AVX-512 have 32, AVX2 16), the rest holds weights and input broadcasts."""
    wide = llvm_get_vector_width(target) >= 512 or "arm_cpu" in target.keys
    return 16 if wide else 8


def root_blocks(sch: Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def kinds(sch: Schedule, block) -> str:
    """``"SSSSRRR"``-style iteration kinds of ``block`` (S spatial, R reduction, O other)."""
    kind = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(kind.get(int(iv.iter_type), "O") for iv in sch.get(block).iter_vars)


def loads(expr) -> list:
    found = []
    tvm_ffi.structural_walk(expr, (tvm.ir.TensorLoad, found.append))
    return found


def guarded_by(expr, var) -> bool:
    """Whether an ``if_then_else`` condition in ``expr`` depends on ``var`` (TVM's ``vectorize``
    would scalarize such a vector: the guarded load is per lane)."""
    hits = []
    tvm_ffi.structural_walk(expr, (tvm.ir.Call, lambda c: hits.append(c)
                                   if c.op.name == "prim.if_then_else" and uses(c.args[0], var) else None))
    return bool(hits)


def has_guard(sch: Schedule, block) -> bool:
    hits = []
    tvm_ffi.structural_walk(sch.get(block).body, (tvm.ir.Call, lambda c: hits.append(c)
                                                  if c.op.name == "prim.if_then_else" else None))
    return bool(hits)


def inline_all(sch: Schedule, keep=()) -> None:
    """Inline every block that can be (fused elementwise chains, broadcast reshapes, pool padding),
    except the blocks named in ``keep``; repeat until nothing changes."""
    changed = True
    while changed:
        changed = False
        for block in root_blocks(sch):
            if sch.get(block).name_hint in keep:
                continue
            for inline in (sch.compute_inline, sch.reverse_compute_inline):
                try:
                    inline(block)
                    changed = True
                    break
                except tvm.s_tir.ScheduleError:
                    continue


def read_index(sch: Schedule, block, buffer) -> int:
    return next(i for i, r in enumerate(sch.get(block).reads) if r.source.same_as(buffer))


WEIGHT_PREPACK = "meta_schedule.layout_rewrite_preproc"
"""Block annotation of a weight-packing stage: ``relax.transform.SplitLayoutRewritePreproc`` moves
such a block into its own function called on the weight, which ``FoldConstant`` then evaluates
at compile time when the weight is a constant (``compiler_pass/fold_packed_weights.py``)."""


def mark_weight_prepack(sch: Schedule, block) -> None:
    """Mark ``block`` (a root-level stage reading only a weight parameter) to be packed at compile time.

    The value is the integer 1, not ``True``: a tuning database's JSON stores the trace's ``True`` as
    1, so a record of a schedule marked ``True`` would rebuild a kernel that differs from it."""
    sch.annotate(block, WEIGHT_PREPACK, 1)


def packed_weight_read(sch: Schedule, block, index: int, layout):
    """A root-level copy of ``block``'s read ``index`` (a weight) in ``layout``, marked to be packed at compile
    time: the stage every packing schedule (plain convs, ``shift_conv2d``, int8, ARM) shares."""
    packed = sch.cache_read(block, index, "global")
    sch.transform_layout(packed, ("write", 0), layout)
    mark_weight_prepack(sch, packed)
    return packed


def pack_weights_at_compile_time(sch: Schedule, blocks: dict, layout, inline=True) -> None:
    """The ``[O, C, 1, 1]`` weight of a ``shift_conv2d`` packed to ``layout`` (``packed_weight_read``).
    ``inline``: the ``[C, O]`` panel reads it directly (no weight copy left in the kernel); else the panel
    stays, a contiguous copy when ``layout`` is its own. (The marked block is a whole-buffer relayout of the
    weight, which MetaSchedule's builder accepts; the panel's ``weight[o, c, 0, 0]`` is not.)"""
    panel = blocks["shift_conv2d_weight"]
    packed_weight_read(sch, panel, 0, layout)
    if inline:
        sch.compute_inline(panel)
