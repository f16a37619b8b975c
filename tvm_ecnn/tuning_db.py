"""The one reader of MetaSchedule tuning databases (a folder of two JSON-lines files), for compile and tune alike.

Why not ``ms.database.JSONDatabase(work_dir=...)`` directly: its C++ reader dies on a torn last line (what a kill
during an append leaves) with ``parallel_for_dynamic error ... Unexpected token`` and no file named, it creates a
missing folder instead of saying the path is wrong, and its lookup ignores the target, so records tuned for the x86
host are applied to ARM kernels without a word. Here:

* a torn last line is left out (and cut from the file by the tuner, the only writer);
* any other line that is not a record is an error naming the file and line;
* records tuned for another target (kind, ``mtriple``, ``mcpu``, ``device``) are refused: a compile finds none for
  its target, a tune may not mix them into its own;
* :class:`AppliedRecords` counts what the compile applied ("tuning records applied: N of M kernels"); no kernel
  of the model among the database's workloads means another model, input shape or dtype, and is an error.
* The tuner also measures each kernel's untuned schedule (the hand or default schedule ``build`` gives it without a
  database) into ``untuned_baselines.json``; a record applies only if it measured faster than that, so a tuned
  build is never slower than the untuned one as measured (an untuned schedule outside MetaSchedule's trace
  language is never a record, and without its baseline the best record of a noisy search could replace it).
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import tvm
import tvm_ffi
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from .error_text import error_line

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
UNTUNED = "untuned_baselines.json"
_TARGET_FIELDS = ("mtriple", "mcpu", "device")


def target_identity(target: tvm.target.Target) -> tuple[str, ...]:
    """What must match between a record's target and the build target: the kind and the fields that change the code
    (a host tuned record says nothing about an ARM core or an OpenCL device)."""
    return (target.kind.name, *(str(target.attrs.get(field, "") or "") for field in _TARGET_FIELDS))


def describe(target: tvm.target.Target) -> str:
    kind, *fields = target_identity(target)
    return ", ".join([kind] + [f"{name}={value}" for name, value in zip(_TARGET_FIELDS, fields, strict=True) if value])


def _lines(path: Path, repair: bool) -> list[tuple[int, dict | list]]:
    """(line number, parsed JSON) of each complete line; a torn last line is left out (cut from the file if
    ``repair``), any other unparsable line is a ``ValueError`` naming file and line."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if repair and complete != data:
        path.write_bytes(complete)
    parsed = []
    for number, line in enumerate(complete.decode(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed.append((number, json.loads(line)))
        except ValueError as error:
            raise ValueError(f"{path}:{number}: not a tuning database line ({error}): {line[:60]!r}; remove the line "
                             "or the file (scripts/tune.py rebuilds it)") from None
    return parsed


@dataclass
class Contents:
    """A database folder read and checked: its workloads and its records, each record with its line number."""

    folder: Path
    workloads: list[ms.database.Workload]
    records: list[tuple[int, ms.database.TuningRecord]]

    def for_target(self, target: tvm.target.Target) -> list[ms.database.TuningRecord]:
        identity = target_identity(target)
        return [r for _, r in self.records if target_identity(r.target) == identity]

    def other_targets(self, target: tvm.target.Target) -> list[str]:
        identity = target_identity(target)
        return sorted({describe(r.target) for _, r in self.records if target_identity(r.target) != identity})


def read(folder, *, repair: bool = False) -> Contents:
    """Read and check the database in ``folder`` (which must exist). ``repair`` (the tuner, its only writer) cuts a
    torn last line from the files; without it the line is only left out."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"tuning database {folder} does not exist (or is not a folder): check the --tuning-db path; "
                         "scripts/tune.py creates it")
    workloads_path, records_path = folder / WORKLOADS, folder / RECORDS
    workloads = []
    for number, item in _lines(workloads_path, repair):
        try:
            workloads.append(ms.database.Workload.from_json(item))
        except (RuntimeError, TypeError, ValueError, IndexError) as error:  # TVM errors are RuntimeErrors
            raise ValueError(f"{workloads_path}:{number}: not a workload ({error_line(error)})") from None
    records = []
    for number, item in _lines(records_path, repair):
        try:
            records.append((number, ms.database.TuningRecord.from_json(item[1], workloads[item[0]])))
        except (RuntimeError, TypeError, ValueError, IndexError, KeyError) as error:
            raise ValueError(f"{records_path}:{number}: not a tuning record of {workloads_path.name} "
                             f"({error_line(error)})") from None
    return Contents(folder, workloads, records)


def workload_key(mod: tvm.IRModule) -> str:
    """How ``untuned_baselines.json`` names a workload: its structural hash, as MetaSchedule's own matching."""
    return f"{tvm_ffi.structural_hash(mod):016x}"


def read_untuned(folder, *, repair: bool = False) -> dict[str, float]:
    """{workload key: median seconds its untuned schedule measured} (1e10 if it failed to build or run)."""
    path = Path(folder) / UNTUNED
    found = {}
    for number, item in _lines(path, repair):
        try:
            found[str(item["workload"])] = float(item["median_s"])
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"{path}:{number}: not an untuned baseline ({{\"workload\", \"median_s\"}} expected); "
                             "remove the line (scripts/tune.py measures it again)") from None
    return found


def append_untuned(folder: Path, workload_mod: tvm.IRModule, task_name: str, run_secs) -> float:
    """Record (and return) the median seconds a kernel's untuned schedule measured (``run_secs`` None: it failed,
    1e10 as MetaSchedule records failures), one line per kernel."""
    secs = statistics.median(float(s) for s in run_secs) if run_secs else 1e10
    with open(Path(folder) / UNTUNED, "a") as out:
        out.write(json.dumps({"workload": workload_key(workload_mod), "task": task_name, "median_s": secs}) + "\n")
    return secs


def open_for_tuning(folder: Path, target: tvm.target.Target) -> ms.database.JSONDatabase:
    """The database the tuner appends to, created if missing, after :func:`read` has repaired and checked it; one
    holding records for another target is refused (its trial counts and best records would mix targets)."""
    folder.mkdir(parents=True, exist_ok=True)
    others = read(folder, repair=True).other_targets(target)
    read_untuned(folder, repair=True)
    if others:
        raise ValueError(f"tuning database {folder} holds records tuned for {'; '.join(others)}, not for "
                         f"{describe(target)}: tune into another --tuning-db folder")
    return ms.database.JSONDatabase(work_dir=str(folder))


class AppliedRecords:
    """The records of ``folder`` for ``target``, read and checked now (a wrong path or file fails before the long
    compile starts), as a pass that applies them and counts what it applied: ``applied`` of ``kernels``; ``kept``
    kernels had records, none faster than their untuned schedule."""

    def __init__(self, folder, target: tvm.target.Target):
        contents = read(folder)
        self.folder, self.target = contents.folder, target
        records = [r for r in contents.for_target(target) if _valid(r)]
        if contents.records and not records:
            raise ValueError(f"tuning database {self.folder} was tuned for {'; '.join(contents.other_targets(target))}"
                             f", not for {describe(target)}: its records do not apply to this target; tune for it "
                             "(scripts/tune.py --target ...) into another folder")
        untuned = read_untuned(self.folder)
        self.tuned, self.database = ms.database.MemoryDatabase(), ms.database.MemoryDatabase()
        for record in records:
            self.tuned.commit_workload(record.workload.mod)
            if _median(record) < untuned.get(workload_key(record.workload.mod), float("inf")):
                self.database.commit_workload(record.workload.mod)
                self.database.commit_tuning_record(record)
        self.available = len(records)
        self.applied = self.kernels = self.kept = None

    def apply_pass(self) -> tvm.transform.Pass:
        @tvm.transform.module_pass(opt_level=0, name="EcnnApplyTuningRecords")
        def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
            kernels = [g for g, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
            scheduled_before = {g for g in kernels if _scheduled(mod[g])}
            with self.database:
                tuned = relax.transform.MetaScheduleApplyDatabase()(mod)
            self.kernels = len(kernels)
            self.applied = sum(1 for g in kernels if g not in scheduled_before and _scheduled(tuned[g]))
            matched = sum(1 for g in kernels if g not in scheduled_before
                          and self.tuned.has_workload(ms.tune_context._normalize_mod(mod[g])))
            self.kept = matched - self.applied
            if self.available and not matched:
                raise ValueError(f"none of the {self.available} records in tuning database {self.folder} matches a "
                                 "kernel of this model: it was tuned for another model, input shape or dtype; tune "
                                 "this one (scripts/tune.py with the same --model, --input-shape and --dtype)")
            return tuned

        return _apply

    def summary(self) -> str:
        kept = f"; {self.kept} kept their untuned schedule (it measured faster)" if self.kept else ""
        return f"tuning records applied: {self.applied} of {self.kernels} kernels{kept} (from {self.folder})"


def _median(record: ms.database.TuningRecord) -> float:
    return statistics.median(float(s) for s in record.run_secs)


def _valid(record: ms.database.TuningRecord) -> bool:
    """Measured, not one of the failures MetaSchedule records as 1e10 s (which a lookup could otherwise return)."""
    return record.run_secs is not None and all(float(s) < 1e9 for s in record.run_secs)


def _scheduled(func) -> bool:
    return isinstance(func, tvm.tirx.PrimFunc) and bool(func.attrs and func.attrs.get("tirx.is_scheduled", False))
