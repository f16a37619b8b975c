"""MetaSchedule tuning of a Relax module into a JSON database that ``pipeline.build(..., tuning_db=)`` applies.

    tune(mod, "arm", "tuning-db/arm", trials=2000, rpc_tracker="127.0.0.1:9190", rpc_key="snapdragon865")

Why not ``ms.relax_integration.tune_relax``: it would tune the wrong module and the wrong space for us.

* Tasks come from ``pipeline.tuning_passes`` (our pipeline up to where it applies the database), so the database
  keys are the fused functions ``build`` looks up (notes bug D / F5).
* Every kernel's untuned schedule (its hand schedule, or on CPUs its default one: what ``build`` gives it without
  a database) is its first trial, and is measured into ``untuned_baselines.json``; ``build`` applies a record only
  if it measured faster (``tuning_db.AppliedRecords``), so a tuned build is never slower than the untuned one as
  measured. When its trace replays, that schedule is also a record and a sketch of the design space (with a sampled
  unroll depth) next to TVM's generic ones; one that edits the IR outside MetaSchedule's trace language is only
  the baseline.
* ``trials`` and/or ``time_budget_s`` end the run; a time budget is split over the kernels by FLOPs x calls
  (:mod:`tvm_ecnn.tuning_budget`, which also reports trials/s and where the time went).
* Candidates are exported as ``.so`` with the target's cross linker (a phone has no linker) by a builder that
  skips the 40 s ``tvm.s_tir.tensor_intrin`` import (bug B), which ``TuneContext`` is also kept from doing.
* Every finished batch is committed before the next task is chosen, and ``trials`` counts what the database
  already holds for these kernels: a killed run loses at most the batches in flight, a rerun resumes, and the
  total is exact. One Ctrl-C (also a terminal's, which kills the popen workers) drops the batches in flight
  instead of committing their candidates as failed trials, and ``tune`` raises ``KeyboardInterrupt``.
* Every measurement on a device ends within ``session_timeout`` seconds (TVM's ``RPCRunner`` waits for ever on a
  frozen device); a timeout, or a device the tracker no longer lists, stops tuning the same way with a
  ``ConnectionError``: a frozen or dead device is not a slow candidate.
* A tqdm bar shows trials and the best end-to-end kernel time; MetaSchedule's popen workers are reaped.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import tvm
import tvm_ffi
from tqdm.auto import tqdm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

import targets as _targets

from .tuning_budget import Clock, task_weights
from .tuning_confirm import BUDGET_SHARE as CONFIRM_SHARE
from .tuning_confirm import confirm
from .tuning_db import append_untuned, open_for_tuning, read_untuned, workload_key
from .tuning_db import read as read_database
from .tuning_process import (essential_intrinsics, logging_to, reaping_popen_workers, stopping_on_interrupt,
                             target_arch, workers_import_us)
from .tuning_stop import DROPPED, CommitMeasured, DroppableBuilder, Guard, GuardedRunner, dropped

DEFAULT_TRIALS_PER_BATCH = 32
# Under a time budget alone: smaller batches and a smaller evolving population (MetaSchedule's 512 costs ~50 s of
# search per batch on a loaded 2-core host), so that minutes reach more kernels.
BUDGET_TRIALS_PER_BATCH, BUDGET_POPULATION = 16, 128
DEFAULT_SESSION_TIMEOUT_S = 120.0  # one measurement on a device, waiting for it included
_UNROLL_STEPS = [0, 16, 64, 512]  # what TVM's ParallelizeVectorizeUnroll rule samples on CPUs
_MAX_TRIALS = 1 << 30  # MetaSchedule's trial limit when only a time budget ends the run


# ------------------------------------------------------------------------------------------------------------------
# Builder functions: run in MetaSchedule's popen workers, which unpickle them by reference (this module must stay
# cheap to import: everything heavy is imported inside `tune`).


def fast_build(mod: tvm.IRModule, target: tvm.target.Target, _params) -> tvm.runtime.Module:
    """MetaSchedule's ``default_build`` without its ``import tvm.s_tir.tensor_intrin`` (~40 s per worker, bug B):
    candidates arrive already tensorized, so building them needs no intrinsic registry."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def export_so(rt_mod: tvm.runtime.Module, target: tvm.target.Target) -> str:
    """A linked ``.so`` (not MetaSchedule's ``.tar``, which the device would have to link) in a fresh folder,
    which MetaSchedule's ``RemoveBuildArtifact`` deletes after the run."""
    from tvm_ecnn.device.export import cross_compiler_for

    path = os.path.join(tempfile.mkdtemp(prefix="tvm-ecnn-ms-"), "candidate.so")
    rt_mod.export_library(path, fcompile=cross_compiler_for(target))
    return path


def build_candidate(mod: tvm.IRModule, target: tvm.target.Target) -> str:
    """One candidate, built and exported: what a builder worker runs."""
    return export_so(fast_build(mod, target, None), target)


# ------------------------------------------------------------------------------------------------------------------
# Where candidates are measured


def _runner_factory(target: tvm.target.Target, rpc_tracker, rpc_key, runner_workers, session_timeout: float):
    """Check now that measurements can happen (fails in seconds); return (a function making the runner later, a
    function telling from a failed measurement's error whether the device is lost: its message, or None)."""
    if rpc_tracker is None:
        _check_runs_here(target)
        return ms.runner.LocalRunner, lambda _error: None
    if not rpc_key:
        raise ValueError("--rpc-tracker needs --rpc-key (the key the device registered with)")
    from .runtime import parse_tracker, tracker_devices

    host, port = parse_tracker(rpc_tracker)
    devices = tracker_devices(host, port, rpc_key)
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=rpc_key,
                                 session_timeout_sec=session_timeout)
    # One worker per device: the tracker hands each session a free device, so the devices measure in parallel.
    make_runner = functools.partial(_rpc_runner, config, max_workers=runner_workers or devices)

    def device_lost(error: str) -> str | None:
        if error.startswith("RPCRunner: Timeout"):
            return (f"no answer from a device under key {rpc_key!r} at RPC tracker {host}:{port} within the "
                    f"{session_timeout:g} s session timeout: it is frozen, gone or busy (check it, or give more time "
                    "with --session-timeout)")
        try:
            tracker_devices(host, port, rpc_key)
        except ConnectionError as lost:
            return f"the device went away while measuring: {lost}"
        return None

    return make_runner, device_lost


def _rpc_runner(config: ms.runner.RPCConfig, max_workers: int) -> ms.runner.RPCRunner:
    """``RPCRunner`` whose pool times out after the session timeout: its own has no timeout, so a frozen device
    would block it for ever."""
    from tvm.support.popen_pool import PopenPoolExecutor

    runner = ms.runner.RPCRunner(config, max_workers=max_workers)
    runner.pool.shutdown()
    runner.pool = PopenPoolExecutor(max_workers=max_workers, timeout=config.session_timeout_sec)
    return runner


def _check_runs_here(target: tvm.target.Target) -> None:
    if target.kind.name != "llvm" or target_arch(target) != _targets.host_arch():
        raise ValueError(f"target {target.tag or target.kind.name} ({target.kind.name}, {target_arch(target)}) "
                         f"does not run on this {_targets.host_arch()} host: tune through a device with "
                         "--rpc-tracker HOST:PORT --rpc-key KEY")


# ------------------------------------------------------------------------------------------------------------------
# Design space


def replay_hand_schedule(sch: tvm.s_tir.Schedule, target: tvm.target.Target) -> bool:
    """Apply the hand schedule ``ApplyEcnnSchedules`` would give this function; False if it has none. On a traced
    schedule the trace can become a database record, if it :func:`_replays`."""
    from .compiler_pass.apply_ecnn_schedules import apply_hand_schedule

    return apply_hand_schedule(sch, target)


def _untuned(mod: tvm.IRModule, target: tvm.target.Target):
    """(the function applying the schedule ``build`` gives this kernel without a database: its hand schedule or, on
    CPUs, its default schedule; that schedule, traced), or (None, None) when it stays unscheduled."""
    from .compiler_pass.apply_default_cpu_schedules import default_rule

    hand = tvm.s_tir.Schedule(mod)
    if replay_hand_schedule(hand, target):
        return replay_hand_schedule, hand
    if target.kind.name == "llvm":
        return default_rule(mod["main"], target)
    return None, None


def _untuned_sketch(apply, target: tvm.target.Target):
    """The untuned schedule as a MetaSchedule sketch whose one free choice is the unroll depth."""

    def sketch(sch: tvm.s_tir.Schedule) -> tvm.s_tir.Schedule:
        apply(sch, target)
        root = sch.get_sblock("root")
        step = sch.sample_categorical(_UNROLL_STEPS, [1 / len(_UNROLL_STEPS)] * len(_UNROLL_STEPS))
        sch.annotate(root, "meta_schedule.unroll_explicit", step)
        return sch

    return sketch


def _replays(sch: tvm.s_tir.Schedule, mod: tvm.IRModule) -> bool:
    """Whether the schedule's trace, written to a JSON database and read back as ``build`` reads it, rebuilds the
    same function: a schedule that edits the IR outside the trace language (``ScheduleState.replace``) cannot be a
    record, nor one whose annotation values change on the way (the JSON text reads a ``True`` back as ``1``)."""
    with tempfile.TemporaryDirectory(prefix="tvm-ecnn-replay-") as folder:
        database = ms.database.JSONDatabase(work_dir=folder)
        database.commit_tuning_record(ms.database.TuningRecord(sch.trace, database.commit_workload(mod)))
        try:
            [(_, record)] = read_database(folder).records
        except ValueError:  # the record does not read back (ARM's sdot hand schedule: "3 vs. 4" outputs)
            return False
    fresh = tvm.s_tir.Schedule(mod)
    try:
        record.trace.apply_to_schedule(fresh, remove_postproc=False)
    except RuntimeError:  # ScheduleError
        return False
    return tvm_ffi.structural_equal(fresh.mod, sch.mod)


class _Baseline:
    """A kernel's untuned schedule, measured in its task's first batch: into ``untuned_baselines.json`` (what
    ``AppliedRecords`` compares records with) and, when its trace :func:`_replays`, as a record too."""

    def __init__(self, sch: tvm.s_tir.Schedule, replayable: bool):
        self.candidate = ms.MeasureCandidate(sch, ms.arg_info.ArgInfo.from_entry_func(sch.mod))
        self.replayable = replayable


def _space(mod: tvm.IRModule, target: tvm.target.Target):
    """(design space, :class:`_Baseline` or None): TVM's generic sketches, plus the untuned schedule as a sketch
    when its trace can be a record."""
    generic = ms.space_generator.PostOrderApply()
    apply, sch = _untuned(mod, target)
    if apply is None:
        return generic, None
    if not _replays(sch, mod):
        return generic, _Baseline(sch, replayable=False)
    sketches = [ms.space_generator.ScheduleFn(_untuned_sketch(apply, target)), generic]
    return ms.space_generator.SpaceGeneratorUnion(sketches), _Baseline(sch, replayable=True)


# ------------------------------------------------------------------------------------------------------------------
# Search: an exact trial budget, eager commits, progress


class _Budget:
    """Trials left for this run, shared by every task's search strategy (``math.inf`` under a time budget alone)."""

    def __init__(self, trials: float):
        self.left = trials


@derived_object
class _BudgetedSearch(ms.search_strategy.PySearchStrategy):
    """Evolutionary search that never overshoots the shared budget (MetaSchedule only checks it between
    batches), measures ``baseline`` (the untuned schedule) in the task's first batch and hands its result to
    ``on_baseline``, and books its time as search."""

    def __init__(self, budget: _Budget, clock, baseline: _Baseline | None, on_baseline, population: int = 512):
        self.inner = ms.search_strategy.EvolutionarySearch(population_size=population,
                                                           init_min_unmeasured=min(50, population // 4))
        self.budget, self.clock, self.baseline, self.on_baseline = budget, clock, baseline, on_baseline
        self.population = population
        self.sent: _Baseline | None = None

    def _initialize_with_tune_context(self, context) -> None:
        self.inner._initialize_with_tune_context(context)

    def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None) -> None:
        self.inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database, cost_model)

    def post_tuning(self) -> None:
        self.inner.post_tuning()

    def generate_measure_candidates(self):
        if self.budget.left <= 0:
            return None
        with self.clock.timed("search"):
            found = list(self.inner.generate_measure_candidates() or [])
        head = []
        if self.baseline is not None:
            self.sent, self.baseline = self.baseline, None
            head = [self.sent.candidate]
            self.budget.left -= self.sent.replayable  # only what becomes a record counts as a trial
        found = found[: min(len(found), self.budget.left, max(self.clock.batch_cap - len(head), 0))]
        self.budget.left -= len(found)
        return head + found or None

    def notify_runner_results(self, measure_candidates, results) -> None:
        if self.sent is not None and measure_candidates and measure_candidates[0].same_as(self.sent.candidate):
            self.on_baseline(results[0])
            self.sent = None
        self.inner.notify_runner_results(measure_candidates, results)

    def clone(self):
        return _BudgetedSearch(self.budget, self.clock, self.baseline, self.on_baseline, self.population)


class _Stats:
    """Each task's best latency after each of its finished batches (seeded from the database, untuned schedules
    included: ``build`` falls back to them): what the progress bar shows and what the task scheduler steers by."""

    def __init__(self, best: dict[int, float], untuned: dict[int, float]):
        self.untuned = dict(untuned)
        self.history = {i: [min(best.get(i, math.inf), untuned.get(i, math.inf))] for i in {*best, *untuned}}
        self.failed = 0

    def record(self, task_id: int, results) -> None:
        valid = [_median_s(r.run_secs) for r in results if r.error_msg is None and r.run_secs]
        self.failed += len(results) - len(valid)
        history = self.history.setdefault(task_id, [])
        history.append(min([history[-1] if history else math.inf, *valid]))

    def best(self) -> dict[int, float]:
        return {i: h[-1] for i, h in self.history.items() if h[-1] < 1e9}


@derived_object
class _EagerGradientScheduler(ms.task_scheduler.PyTaskScheduler):
    """MetaSchedule's ``GradientBased`` task choice (a first pass over the tasks, heaviest first, then the task whose
    weighted best latency falls fastest), or under a time budget the clock's (``Clock.choose``), but every finished batch is
    committed to the database before each choice: the stock one commits nothing during its first pass, so a kill
    then loses a whole pass of measurements."""

    ALPHA, WINDOW = 0.2, 3  # GradientBased's defaults

    def __init__(self, stats: _Stats, clock: Clock, seed: int | None):
        super().__init__()
        self.stats, self.clock = stats, clock
        self.picked: set[int] = set()
        self.rng = random.Random(seed)

    def _gradient(self, task_id: int, weight: float) -> float:
        history = self.stats.history.get(task_id, [])
        if not history or history[-1] == math.inf:
            return -1e9  # nothing valid measured yet: as GradientBased, prefer the other tasks
        n, best = len(history), history[-1]
        recent = (history[-1 - self.WINDOW] - best) / self.WINDOW if n > self.WINDOW else 0.0
        return weight * (self.ALPHA * recent + (1 - self.ALPHA) * best / n)

    def next_task_id(self) -> int:
        scheduler = self._outer()
        alive = []
        for i, task in enumerate(scheduler.tasks_):
            scheduler.touch_task(i)  # joins the task's batch if it has finished: its records reach the database
            if not task.is_terminated:
                alive.append(i)
        self.clock.settle()
        choice = self._choose(scheduler, alive)
        for i in [choice] if choice >= 0 else alive:  # on the way out, what is still running (RPC) reaches the db
            if scheduler.tasks_[i].runner_futures is not None:
                scheduler.join_running_task(i)
        if choice >= 0:
            self.clock.begin(choice)
        return choice

    def _choose(self, scheduler, alive: list[int]) -> int:
        if not alive:
            return -1
        if self.clock.budget_s is not None:
            return self.clock.choose(alive)
        fresh = [i for i in alive if i not in self.picked]
        if fresh:  # the first pass, heaviest kernels (FLOPs x calls) first: a short run tunes what matters
            choice = max(fresh, key=lambda i: self.clock.weights[i])
        else:
            grads = [self._gradient(i, float(scheduler.tasks_[i].task_weight)) for i in alive]
            choice = alive[grads.index(max(grads))] if max(grads) != min(grads) else self.rng.choice(alive)
        self.picked.add(choice)
        return choice


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """tqdm bar: trials done / total, the best end-to-end kernel time so far (each task's best times its number of
    calls, summed) and the trials of this run that failed to build or run (details in the log)."""

    def __init__(self, bar, weights: list[float], stats: _Stats, clock: Clock, is_record):
        self.bar, self.weights, self.stats, self.clock, self.is_record = bar, weights, stats, clock, is_record
        self._show()

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        measured = [(c, r) for c, b, r in zip(measure_candidates, builder_results, runner_results, strict=True)
                    if not dropped(b, r)]
        self.stats.record(task_id, [r for _, r in measured])
        trials = sum(1 for c, _ in measured if self.is_record(c))
        self.clock.measured(task_id, trials)
        self.bar.update(trials)
        self._show()

    def _show(self) -> None:
        best, parts = self.stats.best(), []
        if best:
            total_ms = 1e3 * sum(self.weights[i] * secs for i, secs in best.items())
            some = "" if len(best) == len(self.weights) else f" ({len(best)}/{len(self.weights)} kernels)"
            parts.append(f"best {total_ms:.3f} ms{some}")
        if self.stats.failed:
            parts.append(f"{self.stats.failed} failed")
        self.bar.set_postfix_str(", ".join(parts))


def _median_s(run_secs) -> float:
    return statistics.median(float(s) for s in run_secs)


# ------------------------------------------------------------------------------------------------------------------
# Database


def _to_confirm(database, workloads, tasks, spaces, stats) -> list:
    """(name, workload, untuned candidate, best record) of each kernel whose best record measured faster than its
    untuned schedule, and is not that schedule (:mod:`tvm_ecnn.tuning_confirm`)."""
    found = []
    for i, workload in enumerate(workloads):
        top, baseline = database.get_top_k(workload, 1), spaces[i][1]
        if top and baseline is not None and _median_s(top[0].run_secs) < stats.untuned.get(i, -math.inf):
            found.append((tasks[i].task_name, workload, baseline.candidate, top[0]))
    return found


def _history(database, workloads) -> tuple[list[int], dict[int, float]]:
    """(trials recorded per workload, best valid median seconds per workload index)."""
    counts, best = [0] * len(workloads), {}
    for record in database.get_all_tuning_records():
        i = next((j for j, w in enumerate(workloads) if record.workload.same_as(w)), None)
        if i is None:
            continue
        counts[i] += 1
        secs = _median_s(record.run_secs) if record.run_secs else math.inf
        if secs < min(best.get(i, math.inf), 1e9):  # MetaSchedule records failures as 1e10 s
            best[i] = secs
    return counts, best


# ------------------------------------------------------------------------------------------------------------------


def tune(mod: tvm.IRModule, target, tuning_db, *, trials: int | None = None, time_budget_s: float | None = None,
         rpc_tracker: str | None = None, rpc_key: str | None = None, runner_workers: int | None = None,
         seed: int | None = None, trials_per_batch: int | None = None,
         session_timeout: float = DEFAULT_SESSION_TIMEOUT_S, progress: bool = True, report=None) -> Path:
    """Tune ``mod`` for ``target`` until ``tuning_db`` holds ``trials`` trials of its tasks, or for ``time_budget_s``
    seconds more (split over the kernels by FLOPs x calls, see :mod:`tvm_ecnn.tuning_budget`; the batch in flight
    at the deadline is not started), whichever ends first; returns the folder. ``report``, if given, is called
    with the run's summary (trials/s, where the time went, per kernel), also when tuning stops early.
    ``trials_per_batch``: default ``DEFAULT_TRIALS_PER_BATCH``, or ``BUDGET_TRIALS_PER_BATCH`` (with a smaller
    search population) under a time budget alone.

    Measures locally, or on the devices registered under ``rpc_key`` at ``rpc_tracker`` ("HOST:PORT"), one
    runner worker per device unless ``runner_workers`` says otherwise; a measurement that gets no answer from the
    device within ``session_timeout`` seconds stops tuning with a ``ConnectionError`` (the batches in flight are
    dropped, finished ones kept). Build with ``pipeline.build(mod, target, tuning_db=<returned path>)``.
    """
    from .pipeline import tuning_passes  # relay_ops, schedules, passes: not for the builder workers

    if trials is None and time_budget_s is None:
        raise ValueError("give a number of trials, a time budget or both")
    quick = trials is None  # minutes, not trials: smaller batches and population
    if trials_per_batch is None:
        trials_per_batch = BUDGET_TRIALS_PER_BATCH if quick else DEFAULT_TRIALS_PER_BATCH
    if (trials is not None and trials < 1) or trials_per_batch < 1:
        raise ValueError(f"trials and trials_per_batch must be positive, got {trials} and {trials_per_batch}")
    if time_budget_s is not None and not time_budget_s > 0:
        raise ValueError(f"time_budget_s must be a positive number of seconds, got {time_budget_s!r}")
    if not session_timeout > 0:
        raise ValueError(f"session_timeout must be a positive number of seconds, got {session_timeout!r}")
    start = time.monotonic()  # the time budget counts from here
    target = _targets.get_target(target)
    make_runner, device_lost = _runner_factory(target, rpc_tracker, rpc_key, runner_workers, session_timeout)
    tuning_db = Path(tuning_db).expanduser().resolve()
    tuning_db.mkdir(parents=True, exist_ok=True)

    with (essential_intrinsics(target), logging_to(tuning_db / "logs" / "tuning.log"), workers_import_us(),
          reaping_popen_workers()):
        tasks = ms.relax_integration.extract_tasks(tuning_passes(target)(mod), target)
        if not tasks:
            raise ValueError("the module has no kernels MetaSchedule may tune")
        scheduling_s = None if time_budget_s is None else time_budget_s * (1 - CONFIRM_SHARE)
        clock = Clock([t.task_name for t in tasks], task_weights(tasks), scheduling_s, start)
        spaces = [_space(task.dispatched[0], target) for task in tasks]
        database = open_for_tuning(tuning_db, target)
        workloads = [database.commit_workload(task.dispatched[0]) for task in tasks]
        counts, best = _history(database, workloads)
        measured = read_untuned(tuning_db)
        untuned = {i: measured[k] for i, w in enumerate(workloads) if (k := workload_key(w.mod)) in measured}
        done = sum(counts)
        budget = _Budget(math.inf if trials is None else trials - done)
        if budget.left <= 0:
            return tuning_db
        stats = _Stats(best, untuned)

        def on_baseline(i: int):
            def record(result) -> None:
                if DROPPED not in str(result.error_msg):
                    run_secs = result.run_secs if result.error_msg is None else None
                    stats.untuned[i] = append_untuned(tuning_db, workloads[i].mod, tasks[i].task_name, run_secs)
            return record

        not_records = [b.candidate for _, b in spaces if b is not None and not b.replayable]

        def is_record(candidate) -> bool:
            return not any(candidate.same_as(c) for c in not_records)

        contexts = [
            ms.TuneContext(task.dispatched[0], target=target, space_generator=space, task_name=task.task_name,
                           # the untuned schedule is measured first, unless a resumed task has it already
                           search_strategy=_BudgetedSearch(budget, clock, None if i in untuned else baseline,
                                                           on_baseline(i), BUDGET_POPULATION if quick else 512),
                           rand_state=rand_state, logger=logging.getLogger(f"tvm.s_tir.meta_schedule.task_{i}"))
            for i, (task, (space, baseline), rand_state)
            in enumerate(zip(tasks, spaces, ms.utils.fork_seed(seed, len(tasks)), strict=True))
        ]
        calls = [float(task.weight) for task in tasks]
        guard = Guard(budget)
        confirmed = []
        runner = GuardedRunner(make_runner(), guard, device_lost, clock)
        builder = DroppableBuilder(build_candidate, guard, clock, timeout_sec=120)
        clock.phases["setup"] = clock.elapsed()
        try:
            with (tqdm(total=trials, initial=done, unit="trial", desc=f"tuning {target.tag or target.kind.name}",
                       disable=not progress) as bar, stopping_on_interrupt(guard)):
                ms.tune_tasks(
                    tasks=contexts, task_weights=calls, work_dir=str(tuning_db),
                    max_trials_global=_MAX_TRIALS if quick else budget.left,
                    num_trials_per_iter=trials_per_batch if quick else min(trials_per_batch, budget.left),
                    builder=builder, runner=runner, database=database,
                    cost_model="xgb", task_scheduler=_EagerGradientScheduler(stats, clock, seed),
                    measure_callbacks=[CommitMeasured(is_record), ms.measure_callback.RemoveBuildArtifact(),
                                       ms.measure_callback.UpdateCostModel(),
                                       _Progress(bar, calls, stats, clock, is_record)])
            if guard.reason is None:
                with clock.timed("confirm"):
                    confirmed = confirm(_to_confirm(database, workloads, tasks, spaces, stats), builder, runner,
                                        target, tuning_db)
        finally:
            runner.close()
            builder.close()
            clock.settle()
            if report is not None:
                report("\n".join([clock.report(stats.untuned, stats.best()), *confirmed]))
        guard.raise_reason(tuning_db)
    return tuning_db
