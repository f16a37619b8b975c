"""Hand schedules for the Adreno kernels dlight schedules poorly: the int8 conv2d (``schedules/adreno_int8.py``).

Runs after ``ApplyEcnnSchedules`` and before dlight (which leaves functions marked ``tirx.is_scheduled`` alone);
``FoldPackedWeights`` follows it to pack the weights at compile time.
"""
from __future__ import annotations

import logging

import tvm
from tvm.s_tir import Schedule

from schedules import adreno_int8

from .schedule_unscheduled import schedule_unscheduled

_log = logging.getLogger(__name__)


def int8_conv2d_schedule(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> tvm.tirx.PrimFunc | None:
    sch = Schedule(func)
    try:
        if not adreno_int8.schedule_int8_conv2d(sch, target):
            return None
    except tvm.s_tir.ScheduleError as error:  # a shape the schedule does not cover: dlight's, still correct
        _log.debug("int8 conv2d schedule failed: %s", error)
        return None
    return sch.mod["main"]


@tvm.transform.module_pass(opt_level=0, name="ApplyAdrenoInt8Schedules")
class ApplyAdrenoInt8Schedules:
    def __init__(self, target: tvm.target.Target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return schedule_unscheduled(mod, lambda func: int8_conv2d_schedule(func, self.target))
