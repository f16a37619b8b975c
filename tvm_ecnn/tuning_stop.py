"""Stopping a tuning run cleanly: one Ctrl-C or a lost device drops the batches in flight instead of committing
them as failed trials. An exception raised inside MetaSchedule's Python callbacks would unwind through C++ and abort
the process, so every piece below checks a shared ``Guard`` instead."""
from __future__ import annotations

import contextlib
from pathlib import Path

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from .tuning_budget import Clock
from .tuning_process import kill, popen_workers

DROPPED = "tvm-ecnn: dropped, tuning stopped before this candidate finished"


class Guard:
    """Why tuning stops (None while it runs). Stopping empties the budget (no new batch), cancels the candidates
    not yet started and kills the popen workers busy with the others, whose results then read ``DROPPED``."""

    def __init__(self, budget):
        self.budget = budget
        self.reason: BaseException | None = None
        self.pools: list = []  # popen pools with candidates in flight
        self.workers_before = set(popen_workers())

    def stop(self, reason: BaseException) -> None:
        if self.reason is None:
            self.reason = reason
        self.budget.left = 0
        for pool in list(self.pools):
            pool._threadpool.shutdown(wait=False, cancel_futures=True)
        kill(p for pid, p in popen_workers().items() if pid not in self.workers_before)

    def raise_reason(self, tuning_db: Path) -> None:
        if isinstance(self.reason, ConnectionError):
            raise ConnectionError(f"{self.reason}. The batches in flight were dropped; the finished ones are kept in "
                                  f"{tuning_db}: rerun the same command to resume")
        if self.reason is not None:
            raise self.reason


def _cancel(future) -> None:
    with contextlib.suppress(AttributeError):
        future.cancel()


@derived_object
class DroppableBuilder(ms.builder.PyBuilder):
    """``LocalBuilder``'s parallel build of a batch with :func:`build_candidate`, which the guard can stop midway
    (``LocalBuilder`` would restart a worker for every candidate left). Its popen workers live for the whole run:
    ``LocalBuilder`` starts fresh ones per batch, each paying ``import tvm`` (which imports torch: 3-12 s)."""

    def __init__(self, build_candidate, guard: Guard, clock: Clock, timeout_sec: float, max_workers: int | None = None):
        super().__init__()
        self.build_candidate, self.guard, self.clock, self.timeout_sec = build_candidate, guard, clock, timeout_sec
        self.max_workers = max_workers or ms.utils.cpu_count()
        self.pool = None

    def build(self, build_inputs):
        with self.clock.timed("build"):
            return self._build(build_inputs)

    def _build(self, build_inputs):
        from tvm.support.popen_pool import PopenPoolExecutor

        if self.guard.reason is not None:
            return [ms.builder.BuilderResult(None, DROPPED) for _ in build_inputs]
        if self.pool is None:  # a worker that times out is killed, and restarted for the next candidate
            self.pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec)
            self.guard.pools.append(self.pool)
        futures = [self.pool.submit(self.build_candidate, i.mod, i.target) for i in build_inputs]
        return [self._result(future) for future in futures]

    def close(self) -> None:
        if self.pool is not None:
            self.guard.pools.remove(self.pool)
            self.pool.shutdown()

    def _result(self, future):
        if self.guard.reason is not None and not future.done():
            future.cancel()
            return ms.builder.BuilderResult(None, DROPPED)
        try:
            return ms.builder.BuilderResult(future.result(), None)
        except Exception as error:  # noqa: BLE001  (a popen worker's exception, as LocalBuilder reports it)
            if self.guard.reason is not None:
                return ms.builder.BuilderResult(None, DROPPED)
            if isinstance(error, TimeoutError):
                return ms.builder.BuilderResult(None, f"LocalBuilder: Timeout, killed after {self.timeout_sec} s")
            return ms.builder.BuilderResult(None, f"LocalBuilder: An exception occurred\n{error}")


@derived_object
class GuardedFuture(ms.runner.PyRunnerFuture):
    """A measurement that reads ``DROPPED`` once tuning stops, and stops tuning when it shows the device lost."""

    def __init__(self, inner, guard: Guard, device_lost):
        super().__init__()
        self.inner, self.guard, self.device_lost = inner, guard, device_lost

    def done(self) -> bool:
        return self.guard.reason is not None or self.inner.done()

    def result(self):
        if self.guard.reason is not None and not self.inner.done():
            _cancel(getattr(self.inner, "future", None))
            return ms.runner.RunnerResult(None, DROPPED)
        result = self.inner.result()
        if result.error_msg is not None and self.guard.reason is None:
            lost = self.device_lost(str(result.error_msg))
            if lost is not None:
                self.guard.stop(ConnectionError(lost))
        return ms.runner.RunnerResult(None, DROPPED) if self.guard.reason is not None and result.error_msg \
            else result


@derived_object
class GuardedRunner(ms.runner.PyRunner):
    """Sends candidates one at a time to ``inner`` (``LocalRunner`` measures each inside ``run``), none after the
    guard stops."""

    def __init__(self, inner, guard: Guard, device_lost, clock: Clock):
        super().__init__()
        self.inner, self.guard, self.device_lost, self.clock = inner, guard, device_lost, clock

    def run(self, runner_inputs):
        with self.clock.timed("run"):  # LocalRunner measures inside run; an RPC runner's waits count as "other"
            return self._run(runner_inputs)

    def _run(self, runner_inputs):
        futures = []
        for runner_input in runner_inputs:
            if self.guard.reason is not None:
                futures.append(ms.runner.LocalRunnerFuture(None, DROPPED))
            else:
                futures += [GuardedFuture(f, self.guard, self.device_lost) for f in self.inner.run([runner_input])]
        return futures

    def close(self) -> None:
        """Cancel what is queued and end the pool's workers, whose threads would otherwise keep the process alive."""
        pool = getattr(self.inner, "pool", None)
        if pool is not None:
            pool._threadpool.shutdown(wait=False, cancel_futures=True)
            pool.shutdown()


@derived_object
class CommitMeasured(ms.measure_callback.PyMeasureCallback):
    """MetaSchedule's ``AddToDatabase`` (failures recorded as 1e10 s), minus the dropped candidates (they were not
    measured, so they must neither count toward the trials nor be kept from a rerun as failures) and the untuned
    schedules whose trace cannot be a record (``is_record``)."""

    def __init__(self, is_record):
        super().__init__()
        self.is_record = is_record

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        task = task_scheduler.tasks_[task_id].ctx
        database = task_scheduler.database_
        workload = database.commit_workload(task.mod)
        for candidate, built, result in zip(measure_candidates, builder_results, runner_results, strict=True):
            if dropped(built, result) or not self.is_record(candidate):
                continue
            run_secs = [float(s) for s in result.run_secs] if result.run_secs is not None else [1e10]
            database.commit_tuning_record(ms.database.TuningRecord(
                candidate.sch.trace, workload, run_secs, task.target, candidate.args_info))


def dropped(built, result) -> bool:
    return DROPPED in (str(built.error_msg), str(result.error_msg))
