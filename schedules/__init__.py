"""Per-target schedules of the ecnn operators (TOPI's ``x86/``, ``arm_cpu/``, ``adreno/`` split).

Each target family module exposes ``RULES = {ecnn op: schedule(sch, blocks, target)}``; a new
target is one new module plus one line in ``FAMILIES``. ``tvm_ecnn``'s ``ApplyEcnnSchedules`` pass
calls :func:`rule_for` on every fused PrimFunc that contains an ecnn block.
"""
from __future__ import annotations

from . import adreno, arm_cpu, cpu, vectorizable_ops  # noqa: F401  (vectorizable_ops: marks TIR ops on import)

FAMILIES = {"cpu": cpu.RULES, "arm_cpu": arm_cpu.RULES, "adreno": adreno.RULES}


def family(target) -> str | None:
    keys = set(target.keys)
    if "adreno" in keys:
        return "adreno"
    if "arm_cpu" in keys:
        return "arm_cpu"
    if target.kind.name == "llvm":
        return "cpu"
    return None


def rule_for(target, op: str):
    """The schedule for ``op`` on ``target``, or ``None`` (left to TVM's default scheduling)."""
    rules = FAMILIES.get(family(target))
    return None if rules is None else rules.get(op)
