"""Default LLVM-CPU schedules for the kernels that are *not* ecnn ops (TOPI-legalized conv2d,
pools, elementwise, layout ops, reductions, dense): the registry ``ApplyDefaultCpuSchedules`` tries.

TVM 0.27's CPU backend pipeline applies no schedule at all, so every such kernel would run as a
naive serial loop nest (5-18x slower than PyTorch eager on the zoo). dlight's two CPU rules do not
fit our kernels (``GEMV`` only takes inner reductions, ``x @ W`` here reduces the outer axis;
``Reduction`` wants softmax-like block chains), hence these rules, one kernel family per module:

* ``cpu_conv2d.py``: register-blocked conv2d micro-kernels with weights packed at compile time
  (``cpu_conv2d_block.py`` matches the conv block, ``cpu_depthwise.py`` takes narrow groups);
* ``cpu_dense.py``: batch-1 ``x @ W``, weights packed at compile time into one contiguous stream (int8 on
  AVX-512 VNNI: ``cpu_int8_dense.py``);
* ``cpu_pool.py``: a max pool, rows accumulated locally;
* ``cpu_injective.py``: a function that inlines into one elementwise block (batch norm + ReLU, concat);
* ``cpu_loop_nest.py``: everything else (elementwise, pools, reductions, dense, padding).

Every step is a schedule primitive, so whatever fails leaves a correct function.
"""
from __future__ import annotations

from tvm.s_tir import Schedule

from .cpu_conv2d import schedule_conv2d
from .cpu_conv2d_block import find_conv2d
from .cpu_dense import schedule_dense
from .cpu_injective import schedule_injective
from .cpu_int8_dense import vnni_dense
from .cpu_pool import schedule_max_pool
from .cpu_loop_nest import schedule_spatial


def schedule_conv2d_function(sch: Schedule, target) -> bool:
    """The function's conv2d (and whatever is fused with it); False when it has no conv2d."""
    conv = find_conv2d(sch)
    if conv is None:
        return False
    schedule_conv2d(sch, conv, target)
    return True


def schedule_any_function(sch: Schedule, target) -> bool:
    schedule_spatial(sch, target)
    return True


RULES = (schedule_conv2d_function, vnni_dense, schedule_dense, schedule_max_pool, schedule_injective,
         schedule_any_function)
"""Tried in order on a fresh schedule each; the first that applies without error wins."""
