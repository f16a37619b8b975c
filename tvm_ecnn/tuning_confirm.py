"""Before a tuning run ends, each kernel's best record is measured again against its untuned schedule, alternately.

Why: a kernel's untuned schedule is measured once, in its first batch, and its best record is the minimum over
every candidate measured since; on a loaded machine those are minutes apart, and the least of many noisy
measurements is biased low. Measured on ShiftResNet-20 (2 cores, load ~12): a ``shift_conv2d`` record 1.21x faster
than the hand schedule in the database was 1.25x slower in the network. So both are built again and measured
``ROUNDS`` times, alternately; unless the record's best time beats the untuned one's by ``MARGIN``, the untuned
schedule is written again into ``untuned_baselines.json`` at the record's database time, and compile keeps it
(``AppliedRecords`` applies a record only if strictly faster than the last baseline of its kernel; a later run's
faster records can still beat it).
"""
from __future__ import annotations

import os
import shutil
import statistics

import tvm
from tvm.s_tir import meta_schedule as ms

from .tuning_db import append_untuned

ROUNDS, MARGIN = 3, 0.02
BUDGET_SHARE = 0.1  # of a time budget, kept for this


def confirm(kernels, builder, runner, target: tvm.target.Target, folder) -> list[str]:
    """``kernels``: (task name, workload, untuned ``MeasureCandidate``, best ``TuningRecord``) each. Returns one
    line per kernel for the run's report."""
    device = "cpu" if target.kind.name == "llvm" else target.kind.name  # the runner's tvm.runtime.device name
    lines = []
    for name, workload, untuned, record in kernels:
        sch = tvm.s_tir.Schedule(workload.mod)
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        args = [untuned.args_info, ms.arg_info.ArgInfo.from_entry_func(sch.mod)]
        built = builder.build([ms.builder.BuilderInput(m, target) for m in (untuned.sch.mod, sch.mod)])
        try:
            if any(b.error_msg is not None for b in built):
                lines.append(f"  {name}: not confirmed (build failed), kept untuned")
                append_untuned(folder, workload.mod, name, record.run_secs)
                continue
            best = [float("inf"), float("inf")]
            for _ in range(ROUNDS):
                for i, (b, a) in enumerate(zip(built, args, strict=True)):
                    result = runner.run([ms.runner.RunnerInput(b.artifact_path, device, a)])[0].result()
                    if result.error_msg is None and result.run_secs:
                        best[i] = min(best[i], statistics.median(float(s) for s in result.run_secs))
            faster = best[1] < best[0] * (1 - MARGIN)
            if not faster:
                append_untuned(folder, workload.mod, name, record.run_secs)
            lines.append(f"  {name}: untuned {1e3 * best[0]:.4f} ms, record {1e3 * best[1]:.4f} ms -> "
                         f"{'record applies' if faster else 'kept untuned'}")
        finally:
            for b in built:
                if b.artifact_path:
                    shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
    return lines
