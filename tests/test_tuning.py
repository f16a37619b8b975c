"""MetaSchedule tuning (``tvm_ecnn.tuning``, ``scripts/tune.py``): records that ``pipeline.build`` applies, the hand
schedule inside the design space, resume after SIGKILL, RPC through a real tracker to two emulated aarch64 devices
under one key, and fail-fast errors. A search round costs ~20 s on 2 cores: one tiny ecnn kernel, few trials."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax
from tvm.s_tir import meta_schedule as ms

import relay_ops
import targets
from relax_helpers import build_module
from tvm_ecnn import tuning, tuning_budget, tuning_db, tuning_process
from tvm_ecnn.compiler_pass.apply_default_cpu_schedules import default_schedule
from tvm_ecnn.device import emulated
from tvm_ecnn.pipeline import build, relax_pipeline, scheduling_passes, tuning_passes
from tvm_ecnn.runtime import tracker_devices
from tvm_ecnn.tuning_db import AppliedRecords

REPO = Path(__file__).resolve().parents[1]
HOST = targets.get_target("host")
TRIALS, BATCH = 8, 4
RECORDS = "database_tuning_record.json"
WORKLOADS = "database_workload.json"
KEY = "two-emulated-phones"


def one_kernel_module(body, channels: int, size: int = 8) -> tvm.IRModule:
    """``main(x) = body(x, weight)`` on a 1 x channels x size x size input, with a constant 1x1 ``weight``."""
    weight = relax.const(np.random.default_rng(0).standard_normal((channels, channels, 1, 1)).astype("float32"))
    return build_module(lambda x: body(x, weight), [((1, channels, size, size), "float32")])


def shift_conv_module() -> tvm.IRModule:
    """One fused kernel our hand schedules cover: a grouped shift inside a 1x1 convolution, then ReLU. On 7 x 7
    (staged planes, channel vectors) the hand schedule is a trace; on 8 x 8 to 32 x 32 it reads the shift in place
    (``ScheduleState.replace``: a baseline only)."""
    return one_kernel_module(lambda x, w: relay_ops.shift_conv2d(x, w, activation="relu"), channels=16, size=7)


def conv_module() -> tvm.IRModule:
    """One generic kernel (1x1 convolution + ReLU): TVM's own sketches only."""
    return one_kernel_module(lambda x, w: relax.op.nn.relu(relax.op.nn.conv2d(x, w)), channels=8)


def finished_records(db: Path) -> list[str]:
    """Complete lines of the record file (a line being appended by a live process does not count)."""
    path = db / RECORDS
    text = path.read_text() if path.exists() else ""
    return text[: text.rfind("\n") + 1].splitlines()


def ecnn_function(mod: tvm.IRModule) -> tuple[str, tvm.tirx.PrimFunc]:
    prefix = tuning_passes(HOST)(mod)
    [(gvar, func)] = [(g, f) for g, f in prefix.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    return gvar.name_hint, func


def assert_no_popen_workers_left() -> None:
    assert not tuning_process.popen_workers(), "MetaSchedule popen workers outlived tuning"


@pytest.fixture(scope="module")
def module() -> tvm.IRModule:
    return shift_conv_module()


def start_tuning(module: tvm.IRModule, db: Path, trials: int = TRIALS) -> tuple[subprocess.Popen, Path]:
    """``tune(module, host, db, trials=trials)`` in a new process group, SIGINT at its default (Ctrl-C raises)."""
    source, log = db.with_suffix(".json"), db.with_suffix(".log")
    source.write_text(tvm.ir.save_json(module))
    code = ("import sys, relay_ops, tvm; from tvm_ecnn.tuning import tune; "
            "tune(tvm.ir.load_json(open(sys.argv[1]).read()), 'host', sys.argv[2], trials=int(sys.argv[3]), "
            "trials_per_batch=int(sys.argv[4]), seed=0, progress=False)")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, str(source), str(db), str(trials), str(BATCH)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, log


def wait_for_first_batch(proc: subprocess.Popen, db: Path, log: Path) -> None:
    deadline = time.monotonic() + 240
    while len(finished_records(db)) < BATCH and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, f"tuning ended before it was interrupted:\n{log.read_text()[-3000:]}"
    assert len(finished_records(db)) >= BATCH, f"no batch recorded in time:\n{log.read_text()[-3000:]}"


def wait_until_gone(proc: subprocess.Popen) -> None:
    """Nothing of the process group (the tuning process and its popen workers) may linger."""
    deadline = time.monotonic() + 30
    while emulated._group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if emulated._group_members(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the interrupted tuning left processes behind")


@pytest.fixture(scope="module")
def killed_then_resumed(module, tmp_path_factory):
    """Tune in a subprocess, SIGKILL it once its first batch is recorded, then rerun in-process to the same trials.
    Returns (db, records before the kill, records after the rerun)."""
    db = tmp_path_factory.mktemp("killed") / "db"
    proc, log = start_tuning(module, db)
    try:
        wait_for_first_batch(proc, db, log)
        proc.kill()  # SIGKILL, the tuning process only (as `kill -9 PID` would); its workers see their pipes close
        proc.wait()
    finally:
        wait_until_gone(proc)
    before = finished_records(db)
    tuning.tune(module, HOST, db, trials=TRIALS, trials_per_batch=BATCH, seed=1, progress=False)
    assert_no_popen_workers_left()
    return db, before, finished_records(db)


def test_kill_keeps_finished_batches_and_rerun_resumes(killed_then_resumed):
    _, before, after = killed_then_resumed
    assert BATCH <= len(before) < TRIALS
    assert after[: len(before)] == before, "records of the killed run were lost or rewritten"
    assert len(after) == TRIALS, "the trials already in the database must count toward --trials, exactly"


def measured_secs(line: str) -> float:
    return min(float(s) for s in json.loads(line)[1][1])


@pytest.mark.parametrize("to", ["process", "group"])
def test_one_ctrl_c_drops_the_batch_in_flight_and_keeps_the_finished(module, tmp_path, to):
    """One SIGINT to the tuning process (``kill -INT``) or to its whole group (a terminal's Ctrl-C, which also kills
    the builder workers) mid-search: it ends at once, and no candidate of the batch in flight is recorded."""
    db = tmp_path / "db"
    proc, log = start_tuning(module, db, trials=8 * BATCH)  # batches enough that the signal finds it still tuning
    try:
        wait_for_first_batch(proc, db, log)
        before = finished_records(db)
        time.sleep(2)  # into the next batch's search or build
        assert proc.poll() is None, f"tuning ended before it was interrupted:\n{log.read_text()[-3000:]}"
        if to == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        wait_until_gone(proc)
    output = log.read_text()
    assert proc.returncode == -signal.SIGINT, output[-3000:]  # KeyboardInterrupt, not a crash (std::terminate)
    assert "KeyboardInterrupt" in output and "terminate" not in output and "Exception ignored" not in output, output
    after = finished_records(db)
    assert (db / RECORDS).read_text().endswith("\n") and after[: len(before)] == before
    assert all(measured_secs(line) < 1e9 for line in after), "a dropped candidate was recorded as a failed trial"


def test_hand_schedule_is_the_first_trial(killed_then_resumed, module):
    db, before, _ = killed_then_resumed
    index, record = json.loads(before[0])
    workload = ms.database.Workload.from_json(json.loads((db / WORKLOADS).read_text().splitlines()[index]))
    sch = tvm.s_tir.Schedule(workload.mod)
    ms.database.TuningRecord.from_json(record, workload).trace.apply_to_schedule(sch, remove_postproc=False)
    name, _ = ecnn_function(module)
    hand_scheduled = scheduling_passes(HOST)(module)[name]
    assert tvm_ffi.structural_equal(sch.mod["main"].body, hand_scheduled.body, map_free_vars=True)


def make_untuned_look_slow(db: Path) -> None:
    """Whether the best record confirmed faster than the untuned schedule is a measurement (on a loaded machine
    either way); a baseline of one second makes the record apply whatever was measured."""
    line = (db / tuning_db.UNTUNED).read_text().splitlines()[0]
    (db / tuning_db.UNTUNED).write_text(json.dumps({**json.loads(line), "median_s": 1.0}) + "\n")


def test_build_applies_the_best_record_with_unchanged_numerics(killed_then_resumed, module, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(killed_then_resumed[0], db)
    make_untuned_look_slow(db)
    name, func = ecnn_function(module)
    database = ms.database.JSONDatabase(work_dir=str(db))
    best = database.query_ir_module(ms.tune_context._normalize_mod(func), HOST, name)
    assert best is not None, "database keys do not match the functions build looks up"
    tuned = scheduling_passes(HOST, db)(module)[name]
    assert tvm_ffi.structural_equal(tuned.body, best["main"].body, map_free_vars=True)

    x = tvm.runtime.tensor(np.random.default_rng(1).standard_normal((1, 16, 7, 7)).astype("float32"))
    outputs = [relax.VirtualMachine(build(module, HOST, tuning_db=d), tvm.cpu())["main"](x).numpy() for d in (None, db)]
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)


def test_torn_last_record_is_left_out_by_compile_and_cut_by_tune(killed_then_resumed, module, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(killed_then_resumed[0], db)
    with open(db / RECORDS, "a") as f:
        f.write('[0, [[["Split", ')  # what a kill in the middle of an append leaves
    records = AppliedRecords(db, HOST)
    relax_pipeline(HOST, records)(module)  # TVM's own reader dies here in C++ ("Unexpected token")
    assert (records.applied + records.kept, records.kernels) == (1, 1), records.summary()  # the torn one left out
    assert not (db / RECORDS).read_text().endswith("\n"), "compile must not write to the database"

    tuning.tune(module, HOST, db, trials=TRIALS, trials_per_batch=BATCH, progress=False)
    assert (db / RECORDS).read_text().endswith("\n")
    assert finished_records(db) == killed_then_resumed[2]


@pytest.mark.parametrize("damaged", [WORKLOADS, RECORDS])
def test_garbage_line_is_an_error_naming_file_and_line_for_compile_and_tune(killed_then_resumed, module, tmp_path,
                                                                               damaged):
    db = tmp_path / "db"
    shutil.copytree(killed_then_resumed[0], db)
    lines = (db / damaged).read_text().splitlines(keepends=True)
    (db / damaged).write_text("".join([lines[0], "{not json\n", *lines[1:]]))
    kept = (db / damaged).read_text()
    for use in (lambda: AppliedRecords(db, HOST), lambda: tuning.tune(module, HOST, db, trials=TRIALS + 1)):
        with pytest.raises(ValueError, match=f"{db / damaged}:2: not a tuning database line"):
            use()
    assert (db / damaged).read_text() == kept


def test_record_tvm_cannot_read_is_an_error_naming_file_and_line(killed_then_resumed, tmp_path):
    """Valid JSON that TVM's record reader rejects (a TVM error, a RuntimeError): one line naming file and line."""
    db = tmp_path / "db"
    shutil.copytree(killed_then_resumed[0], db)
    lines = (db / RECORDS).read_text().splitlines(keepends=True)
    (db / RECORDS).write_text("".join([lines[0], '[0, [[["NoSuchInstruction", [], [], []]], [], 0], [1.0]]\n', *lines[1:]]))
    with pytest.raises(ValueError, match=f"{db / RECORDS}:2: not a tuning record"):
        AppliedRecords(db, HOST)


def test_records_of_another_target_are_refused(killed_then_resumed, module):
    db = killed_then_resumed[0]
    with pytest.raises(ValueError, match="tuned for llvm.*not for llvm, mtriple=aarch64-linux-gnu"):
        build(module, "aarch64-linux", tuning_db=db)
    with pytest.raises(ValueError, match="holds records tuned for llvm.*another --tuning-db"):
        tuning_db.open_for_tuning(db, targets.get_target("aarch64-linux"))  # what tune() opens (with a device)


def test_records_of_another_input_shape_are_refused(killed_then_resumed):
    """The module of the database, on a 12x12 instead of an 8x8 input."""
    wider = build_module(lambda x: relay_ops.shift_conv2d(x, relax.const(np.ones((16, 16, 1, 1), "float32")),
                                                          activation="relu"), [((1, 16, 12, 12), "float32")])
    with pytest.raises(ValueError, match="none of the .* records .* another model, input shape or dtype"):
        relax_pipeline(HOST, killed_then_resumed[0])(wider)


def test_benchmark_tuned_column_builds_with_the_records(tmp_path):
    """``scripts/benchmark.py --tuning-db``: the column compiles the model with the database's records and is
    checked against eager like every column; a wrong folder fails before any model."""
    import torch

    from tvm_ecnn import benchmark
    from tvm_ecnn.frontend import from_torch

    torch.manual_seed(0)
    model, x = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 1), torch.nn.ReLU()).eval(), torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        reference = model(x).numpy()
    db = tuning.tune(from_torch(model, (x,)), HOST, tmp_path / "db", trials=BATCH, trials_per_batch=BATCH, seed=0,
                     progress=False)
    run, result = benchmark.prepare_backend(benchmark.TUNED, model, x, reference, benchmark.tuned_column(db))
    assert run is not None and result.failure is None and not result.mismatch, result
    with pytest.raises(ValueError, match="does not exist"):
        benchmark.tuned_column(tmp_path / "missing")


def test_missing_tuning_db_folder_is_an_error_before_compiling(tmp_path):
    missing = tmp_path / "tuning-db" / "hots"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "compile.py"), "--model", "shiftresnet20",
                           "--target", "host", "--tuning-db", str(missing), "-o", str(tmp_path / "net.so")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"tuning database {missing} does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not missing.exists() and not (tmp_path / "net.so").exists()


def test_design_space_has_hand_and_generic_sketches(module):
    _, func = ecnn_function(module)
    mod = ms.tune_context._normalize_mod(func)
    space, baseline = tuning._space(mod, HOST)
    assert baseline is not None and baseline.replayable
    with tuning_process.essential_intrinsics(HOST):
        sketches = ms.TuneContext(mod, target=HOST, space_generator=space, task_name="t").generate_design_space()
    stub = sys.modules.get("tvm.s_tir.tensor_intrin")
    assert stub is None or stub.__file__, "the stand-in for tvm.s_tir.tensor_intrin outlived tuning"
    unroll = ["meta_schedule.unroll_explicit" in s.get(s.get_sblock("root")).annotations for s in sketches]
    hand = [s for s in sketches if any(i.kind.name == "TransformLayout" for i in s.trace.insts)]
    assert len(hand) == 1 and len(sketches) >= 2 and all(unroll), [str(s.trace) for s in sketches]


def test_default_schedule_is_the_baseline_of_a_generic_kernel():
    """A kernel no hand schedule covers is measured first with the default schedule ``build`` gives it."""
    [func] = [f for f in tuning_passes(HOST)(conv_module()).functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    mod = ms.tune_context._normalize_mod(func)
    _, baseline = tuning._space(mod, HOST)
    scheduled = default_schedule(func, HOST)  # what ApplyDefaultCpuSchedules gives it
    assert tvm_ffi.structural_equal(baseline.candidate.sch.mod["main"].body, scheduled.body, map_free_vars=True)


@pytest.mark.parametrize("outputs", [10, 1000])
def test_a_classifiers_default_schedule_is_a_baseline_metaschedule_can_describe(outputs):
    """The default dense schedule packs its weight at compile time; MetaSchedule's ``ArgInfo`` (every baseline's)
    accepts only a plain-copy packing stage ("Check failed: (load)" on a zero-padded one, ShiftResNet-20's 10
    classes)."""
    weight = np.random.default_rng(0).standard_normal((64, outputs)).astype("float32")
    mod = build_module(lambda v: relax.op.matmul(v, relax.const(weight)), [((1, 64), "float32")])
    [func] = [f for f in tuning_passes(HOST)(mod).functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    _, baseline = tuning._space(ms.tune_context._normalize_mod(func), HOST)
    assert "meta_schedule.layout_rewrite_preproc" in baseline.candidate.sch.mod["main"].script()  # packed
    assert [tuple(a.shape) for a in baseline.candidate.args_info][-1] == (1, outputs)


def test_untuned_schedule_outside_the_trace_language_is_a_baseline_not_a_sketch(module, monkeypatch):
    _, func = ecnn_function(module)
    mod = ms.tune_context._normalize_mod(func)
    hand = tvm.s_tir.Schedule(mod)
    tuning.replay_hand_schedule(hand, HOST)
    assert tuning._replays(hand, mod)
    assert not tuning._replays(tvm.s_tir.Schedule(hand.mod), mod)  # same IR, reached outside the trace
    marked = tvm.s_tir.Schedule(mod)
    tuning.replay_hand_schedule(marked, HOST)
    marked.annotate(marked.get_sblock("root"), "ecnn.mark", True)
    assert not tuning._replays(marked, mod)  # the database's JSON text reads True back as 1: another function

    monkeypatch.setattr(tuning, "_replays", lambda sch, mod: False)
    space, baseline = tuning._space(mod, HOST)
    assert not baseline.replayable and isinstance(space, ms.space_generator.PostOrderApply)


def test_untuned_baseline_is_measured_and_records_apply_only_when_faster(killed_then_resumed, module, tmp_path):
    """The hand schedule's measurement is in untuned_baselines.json; a compile applies no record that did not
    measure faster than it (here: a baseline made faster than every record), and says so."""
    source = killed_then_resumed[0]
    lines = [json.loads(line) for line in (source / tuning_db.UNTUNED).read_text().splitlines()]
    measured = lines[0]  # then, if its best record did not confirm being faster, the untuned schedule again
    _, func = ecnn_function(module)
    assert {line["workload"] for line in lines} == {tuning_db.workload_key(ms.tune_context._normalize_mod(func))}
    assert 0 < measured["median_s"] < 1e9 and len(lines) <= 2

    db = tmp_path / "db"
    shutil.copytree(source, db)
    (db / tuning_db.UNTUNED).write_text(json.dumps({**measured, "median_s": 1e-12}) + "\n")
    records = AppliedRecords(db, HOST)
    tuned = scheduling_passes(HOST, records)(module)
    assert (records.applied, records.kept) == (0, 1), records.summary()
    assert "1 kept their untuned schedule" in records.summary()
    name, _ = ecnn_function(module)
    assert tvm_ffi.structural_equal(tuned[name].body, scheduling_passes(HOST)(module)[name].body, map_free_vars=True)


def int8_shift_conv_module() -> tvm.IRModule:
    """One int8 kernel as ``tvm_ecnn.quantize`` makes them: grouped shift, 1x1 conv, requantize, ReLU."""
    w = np.random.default_rng(0).integers(-127, 128, (16, 16, 1, 1)).astype("int8")
    quant = dict(requant_scale=list(np.linspace(2e-3, 6e-3, 16)), requant_zero_point=-3, x_zero_point=5)
    return build_module(lambda v: relay_ops.shift_conv2d(v, relax.const(w), activation="relu", **quant),
                        [((1, 16, 8, 8), "int8")])


def test_int8_records_apply_bit_exactly(tmp_path):
    """``tune.py --dtype int8``: int8 kernels are tuned, their records apply at compile time, outputs unchanged."""
    module = int8_shift_conv_module()
    db = tuning.tune(module, HOST, tmp_path / "db", trials=BATCH, trials_per_batch=BATCH, seed=0, progress=False)
    assert len(finished_records(db)) == BATCH
    make_untuned_look_slow(db)
    records = AppliedRecords(db, HOST)
    tuned = build(module, HOST, tuning_db=records)
    assert records.applied == 1, records.summary()
    x = tvm.runtime.tensor(np.random.default_rng(1).integers(-128, 128, (1, 16, 8, 8)).astype("int8"))
    outputs = [relax.VirtualMachine(e, tvm.cpu())["main"](x).numpy() for e in (build(module, HOST), tuned)]
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_time_budget_spent_before_the_first_batch_stops_cleanly(module, tmp_path):
    reports = []
    tuning.tune(module, HOST, tmp_path / "db", time_budget_s=1e-3, progress=False, report=reports.append)
    assert_no_popen_workers_left()
    assert not finished_records(tmp_path / "db")
    [report] = reports
    assert "0 trials" in report and "ecnn_shift_conv2d" in report


def test_time_budget_goes_to_the_heaviest_tasks_in_proportion_and_cuts_the_last_batch():
    clock = tuning_budget.Clock(["big", "small", "no_flops"], [3.0, 1.0, 0.0], budget_s=1000)
    assert clock.choose([0, 1, 2]) == 0  # nothing measured yet: the heaviest first
    clock.batches = [2, 0, 0]
    assert clock.choose([0, 1, 2]) == 0  # 3/4 of the weight: its third batch before small's first
    clock.batches = [3, 0, 0]
    assert clock.choose([0, 1, 2]) == 1
    assert clock.choose([2]) == -1  # no FLOPs, no time
    # 3 batches of 10 candidates took 300 s, 240 of them building and running: 8 s a candidate, 20 s besides
    clock.phases.update(build=200.0, run=40.0)
    clock.spent, clock.trials = [300.0, 0.0, 0.0], [30, 0, 0]
    clock.start = time.monotonic() - 899  # 101 s left
    assert clock.choose([0, 1]) == 1 and clock.batch_cap == 10  # (101 - 20) / 8
    clock.start = time.monotonic() - 960  # 40 s left: fewer than MIN_BATCH candidates fit
    assert clock.choose([0, 1]) == -1


def test_tune_script_refuses_a_bad_time_budget():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "tune.py"), "--target", "host",
                           "--time-budget", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--time-budget must be a positive number of minutes" in proc.stderr


def test_tuning_for_another_architecture_needs_a_device(module, tmp_path):
    with pytest.raises(ValueError, match="--rpc-tracker"):
        tuning.tune(module, "aarch64-linux", tmp_path, trials=1)


def test_unreachable_tracker_fails_in_seconds_naming_it(module, tmp_path):
    port = emulated.free_port()
    start = time.monotonic()
    with pytest.raises(ConnectionError) as error:
        tuning.tune(module, "aarch64-linux", tmp_path, trials=1, rpc_tracker=f"127.0.0.1:{port}", rpc_key="phone")
    assert time.monotonic() - start < 10
    assert all(part in str(error.value) for part in ("127.0.0.1", str(port), "'phone'")), error.value


def test_cli_with_unreachable_tracker_exits_1_before_importing_the_model(tmp_path):
    port = emulated.free_port()
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "tune.py"), "--target", "aarch64-linux",
                           "--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", "phone", "--trials", "1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr and "'phone'" in proc.stderr
    assert not (tmp_path / "tuning-db").exists()


@pytest.fixture(scope="module")
def two_devices(binfmt):
    """A real tracker with two emulated aarch64 devices registered under one key."""
    tracker = devices = None
    try:
        tracker = emulated.start_tracker()
        address = f"127.0.0.1:{tracker.port}"
        devices = [emulated.start_device(tracker=address, key=KEY) for _ in range(2)]
        deadline = time.monotonic() + 60
        while tracker_devices("127.0.0.1", tracker.port, KEY) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        yield address
    finally:
        emulated.stop(*(devices or []), tracker)


def test_rpc_tuning_measures_so_files_on_the_devices_of_the_key(two_devices, tmp_path):
    address = two_devices
    # one runner worker per device under the key: the tracker spreads the candidates over them
    make_runner, _ = tuning._runner_factory(targets.get_target("aarch64-linux"), address, KEY, None, 120)
    assert make_runner.keywords["max_workers"] == 2
    db = tuning.tune(conv_module(), "aarch64-linux", tmp_path / "db", trials=BATCH,
                     trials_per_batch=BATCH, rpc_tracker=address, rpc_key=KEY, seed=0, progress=False)
    assert_no_popen_workers_left()
    records = ms.database.JSONDatabase(work_dir=str(db)).get_all_tuning_records()
    # the devices have no linker: valid measurements mean the builder shipped linked aarch64 .so files
    assert len(records) == BATCH and all(float(r.run_secs[0]) < 1e9 for r in records)


def test_key_without_device_fails_in_seconds_naming_it(two_devices, module, tmp_path):
    address = two_devices
    start = time.monotonic()
    with pytest.raises(ConnectionError) as error:
        tuning.tune(module, "aarch64-linux", tmp_path, trials=1, rpc_tracker=address, rpc_key="no-such-phone")
    assert time.monotonic() - start < 10
    assert all(part in str(error.value) for part in (address, "'no-such-phone'", KEY)), error.value


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_arm_hand_schedules_are_replayable_records(dtype):
    """The Snapdragon CPU's fp32 FMLA and int8 sdot kernels enter the design space (not kept untuned)."""
    arm = targets.get_target("aarch64-linux")
    rng = np.random.default_rng(0)
    w = rng.integers(-3, 4, (16, 16, 1, 1)).astype(dtype)
    mod = build_module(lambda v: relay_ops.shift_conv2d(v, relax.const(w), "grouped"), [((1, 16, 8, 8), dtype)])
    [func] = [f for _, f in tuning_passes(arm)(mod).functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    normalized = ms.tune_context._normalize_mod(func)
    hand = tvm.s_tir.Schedule(normalized)
    assert tuning.replay_hand_schedule(hand, arm)
    assert tuning._replays(hand, normalized)
