"""Hand-schedule every fused PrimFunc that contains an ecnn block, for the target at hand."""
from __future__ import annotations

import tvm
from tvm.s_tir import Schedule

import schedules
from schedules._blocks import anchor, ecnn_blocks, inline_neighbours

from .schedule_unscheduled import schedule_unscheduled


def apply_hand_schedule(sch: Schedule, target: tvm.target.Target) -> bool:
    """Schedule the function of ``sch`` around its ecnn block; False if no rule covers it.

    Shared by this pass and MetaSchedule's design space (``tvm_ecnn.tuning``), so a tuned record
    starts from exactly the schedule ``build`` would apply."""
    op = anchor(ecnn_blocks(sch))
    rule = None if op is None else schedules.rule_for(target, op)
    if rule is None:
        return False
    inline_neighbours(sch, keep={op, op + "_input", op + "_weight", op + "_epilogue"})
    rule(sch, ecnn_blocks(sch), target)
    return True


@tvm.transform.module_pass(opt_level=0, name="ApplyEcnnSchedules")
class ApplyEcnnSchedules:
    """Runs after FuseTIR (blocks are found by annotation) and before dlight/MetaSchedule, which
    leave functions marked ``tirx.is_scheduled`` alone."""

    def __init__(self, target: tvm.target.Target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        def hand_schedule(func):
            sch = Schedule(func)
            return sch.mod["main"] if apply_hand_schedule(sch, self.target) else None

        return schedule_unscheduled(mod, hand_schedule)
