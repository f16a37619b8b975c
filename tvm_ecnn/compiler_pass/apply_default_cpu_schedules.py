"""Default schedules for the LLVM-CPU kernels nothing else scheduled (TOPI conv2d, pools, elementwise).

TVM 0.27's CPU backend pipeline has no dlight rules: without this pass every non-ecnn kernel would
run as a naive serial loop nest. It runs after the tuning database and ``ApplyEcnnSchedules`` and
skips functions they marked ``tirx.is_scheduled``, so tuned records and hand schedules keep priority.
"""
from __future__ import annotations

import logging

import tvm
from tvm.s_tir import Schedule

from schedules import generic_cpu

from .schedule_unscheduled import schedule_unscheduled

_log = logging.getLogger(__name__)


def default_rule(func: tvm.tirx.PrimFunc, target: tvm.target.Target):
    """(the first of ``generic_cpu.RULES`` that schedules ``func`` without error, the traced schedule it made), or
    (None, None): a failed rule starts over from the unscheduled function, so unscheduled (slow, correct) is the
    worst case. The rule and its trace are what MetaSchedule measures as this kernel's untuned baseline."""
    for rule in generic_cpu.RULES:
        sch = Schedule(func)
        try:
            if rule(sch, target):
                return rule, sch
        except Exception as error:  # noqa: BLE001  (never fail the compile over a default schedule)
            _log.debug("%s failed: %s", rule.__name__, error)
    return None, None


def default_schedule(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> tvm.tirx.PrimFunc | None:
    """``func`` scheduled by its :func:`default_rule`, or None."""
    sch = default_rule(func, target)[1]
    return None if sch is None else sch.mod["main"]


@tvm.transform.module_pass(opt_level=0, name="ApplyDefaultCpuSchedules")
class ApplyDefaultCpuSchedules:
    """Runs after FuseTIR on LLVM targets, last of the scheduling passes."""

    def __init__(self, target: tvm.target.Target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return schedule_unscheduled(mod, lambda func: default_schedule(func, self.target))
