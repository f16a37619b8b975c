"""A tuning run's clock: a time budget split over the tasks by weight, and where the time went.

* A task's weight is its FLOPs times its calls in the network (:func:`task_weights`): that is where a network
  spends its time, so where tuning pays. Kernels without FLOPs (reshapes) get no time.
* With a budget, :meth:`Clock.choose` gives the next batch to the task with the largest share per batch it has
  had, so the heaviest kernels get the first batches and each task's time follows its share; the last batch is cut
  to what fits before the deadline (going by the batches so far), and none starts if fewer than ``MIN_BATCH``
  candidates fit: the run stops cleanly, every finished batch in the database.
* :class:`Clock` adds up wall time per task and per phase (setup: task extraction and our untuned schedules;
  search: the cost model and evolution proposing a batch; build; run: the measurements; the rest is design space
  generation, database commits, cost-model training and task scheduling; confirm: ``tuning_confirm``) and
  :meth:`Clock.report` prints trials/s and that breakdown.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict

import tvm

PHASES = ("setup", "search", "build", "run", "confirm")
MIN_BATCH = 4  # candidates: a smaller last batch would pay a whole search for little


def task_weights(tasks) -> list[float]:
    """FLOPs x calls of each extracted MetaSchedule task (``ExtractedTask``)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    return [float(estimate_tir_flops(task.dispatched[0])) * int(task.weight) for task in tasks]


class Clock:
    """Wall time of a tuning run, per task and per phase; with ``budget_s``, the task choice that keeps to it."""

    def __init__(self, names: list[str], weights: list[float], budget_s: float | None = None,
                 start: float | None = None):
        self.start = time.monotonic() if start is None else start
        self.names, self.weights, self.budget_s = names, weights, budget_s
        total = sum(weights)
        self.shares = [w / total if total else 0.0 for w in weights]
        self.spent = [0.0] * len(names)
        self.phases = defaultdict(float)
        self.batches = [0] * len(names)
        self.trials = [0] * len(names)
        self.current: int | None = None
        self._since: float | None = None
        self.batch_cap = math.inf

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def timed(self, phase: str):
        """Context manager adding the wall time of its body to ``phase``."""
        clock = self

        class _Timer:
            def __enter__(self):
                self.t0 = time.monotonic()

            def __exit__(self, *_):
                clock.phases[phase] += time.monotonic() - self.t0

        return _Timer()

    def settle(self) -> None:
        """The batch of the task last begun has been joined: its wall time since then is that task's."""
        if self.current is not None:
            self.spent[self.current] += time.monotonic() - self._since
        self.current = None

    def begin(self, task_id: int) -> None:
        self.current, self._since = task_id, time.monotonic()
        self.batches[task_id] += 1

    def measured(self, task_id: int, trials: int) -> None:
        self.trials[task_id] += trials

    def _batch_cost(self) -> tuple[float, float] | None:
        """(seconds of a batch besides building and running its candidates, seconds per candidate), from the
        batches so far; None before the first."""
        done = sum(self.batches) - (self.current is not None)
        trials = sum(self.trials)
        if done <= 0 or trials <= 0:
            return None
        per_trial = (self.phases["build"] + self.phases["run"]) / trials
        return max(sum(self.spent) / done - per_trial * trials / done, 0.0), per_trial

    def choose(self, alive: list[int]) -> int:
        """The alive task with the largest share per batch it has had (so the first batches go to the heaviest
        kernels, and over a run each task's batches follow its share), or -1 once a batch of ``MIN_BATCH``
        candidates would likely end after the deadline. Sets ``batch_cap``: the candidates that fit before it."""
        self.batch_cap = math.inf
        eligible = [i for i in alive if self.shares[i] > 0]
        cost = self._batch_cost() if self.budget_s is not None else None
        if cost is not None:
            overhead, per_trial = cost
            self.batch_cap = int((self.budget_s - self.elapsed() - overhead) / per_trial)
        elif self.budget_s is not None and self.elapsed() >= self.budget_s:
            self.batch_cap = 0
        if not eligible or self.batch_cap < MIN_BATCH:
            return -1
        return max(eligible, key=lambda i: (self.shares[i] / (self.batches[i] + 1), self.weights[i]))

    def report(self, untuned: dict[int, float], best: dict[int, float]) -> str:
        """Trials/s, the phases' shares, and per task: share of the weight, batches, trials, time, untuned and best
        measured kernel time. ``untuned``/``best``: median seconds per task index."""
        total = self.elapsed()
        trials = sum(self.trials)
        lines = [f"tuned for {total:.0f} s: {trials} trials, {trials / total if total else 0:.2f} trials/s"]
        other = total - sum(self.phases[p] for p in PHASES)
        parts = [f"{p} {self.phases[p]:.0f} s ({self.phases[p] / total:.0%})" for p in PHASES]
        lines.append("  time: " + ", ".join(parts) + f", other (design spaces, database, cost model) "
                     f"{other:.0f} s ({other / total:.0%})")
        lines.append(f"  {'task':44s} {'weight':>6s} {'batches':>7s} {'trials':>6s} {'time s':>6s} "
                     f"{'untuned ms':>10s} {'best ms':>8s} {'speed-up':>8s}")
        for i in sorted(range(len(self.names)), key=lambda i: -self.weights[i]):
            base, tuned = untuned.get(i), best.get(i)
            gain = f"{base / tuned:.2f}x" if base and tuned and base < 1e9 else "-"
            lines.append(f"  {self.names[i][:44]:44s} {self.shares[i]:6.1%} {self.batches[i]:7d} "
                         f"{self.trials[i]:6d} {self.spent[i]:6.0f} {_ms(base):>10s} {_ms(tuned):>8s} {gain:>8s}")
        return "\n".join(lines)


def _ms(secs: float | None) -> str:
    return "-" if secs is None or secs >= 1e9 else f"{1e3 * secs:.4f}"
