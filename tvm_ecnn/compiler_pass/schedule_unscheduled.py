"""The loop every scheduling pass shares: schedule each PrimFunc nothing has scheduled yet, and mark it.

``tirx.is_scheduled`` is how the passes after FuseTIR (tuning database, hand schedules, CPU defaults, dlight)
leave each other's work alone.
"""
from __future__ import annotations

from collections.abc import Callable

import tvm


def schedule_unscheduled(mod: tvm.IRModule, schedule: Callable[[tvm.tirx.PrimFunc], tvm.tirx.PrimFunc | None]):
    """A copy of ``mod`` (never the caller's module) where ``schedule(func)``, unless None, replaces each
    PrimFunc not marked ``tirx.is_scheduled``, marked."""
    mod = mod.clone()
    for gvar, func in list(mod.functions.items()):
        if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
            continue
        scheduled = schedule(func)
        if scheduled is not None:
            mod[gvar] = scheduled.with_attr("tirx.is_scheduled", True)
    return mod
