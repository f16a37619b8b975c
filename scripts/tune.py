#!/usr/bin/env python
"""Tune a model for a target with MetaSchedule (XGBoost cost model) into a database that scripts/compile.py applies.

    python scripts/tune.py --target arm --rpc-tracker 127.0.0.1:9190 --rpc-key snapdragon865 --trials 2000
    python scripts/tune.py --model fenet1_0 --target host --trials 200              # measured on this machine
    python scripts/tune.py --model shiftresnet20 --target host --time-budget 10     # 10 minutes, then stops
    python scripts/compile.py --model fenet1_0 --target host --tuning-db tuning-db/host

Several phones registered under one key are measured in parallel. Ctrl-C (once) or a kill keeps every finished
batch in the database and drops the batches in flight; rerunning the same command resumes, counting the trials
already there toward --trials (--time-budget counts this run's minutes only). Every kernel's untuned schedule (ours)
is measured first; compile applies a tuned record only where it measured faster. At the end it prints trials/s and
where the time went (search, build, run; per kernel). A device that gives no answer within --session-timeout, or leaves the tracker, stops
tuning the same way (exit status 1). Bad names print the valid ones and exit with status 2; an unreachable tracker or
unknown key exits with 1.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from compile import parse_shape  # noqa: E402  (scripts/ is on sys.path when run as a script)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shiftresnet20",
                        help="zoo name (default: shiftresnet20), a torch.export .pt2 file, or module:callable")
    parser.add_argument("--input-shape", type=parse_shape, help="e.g. 1,3,224,224 (default: the zoo model's)")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "int8"],
                        help="as given to scripts/compile.py (the same --calibration for int8; default: fp32, or int8 "
                        "for a PT2E-quantized .pt2)")
    parser.add_argument("--calibration", help="int8: the calibration samples given to scripts/compile.py")
    parser.add_argument("--target", default="arm", help="a tvm-ecnn target name or TVM tag (default: arm)")
    parser.add_argument("--tuning-db", help="database directory (default: ./tuning-db/<target>)")
    parser.add_argument("--trials", type=int,
                        help="total trials, those already in the database included (default: 1000, or no limit "
                             "with --time-budget)")
    parser.add_argument("--time-budget", type=float, metavar="MINUTES",
                        help="tune this many minutes (split over the kernels by FLOPs x calls), then stop cleanly")
    parser.add_argument("--trials-per-batch", type=int,
                        help="candidates per search round (default: 32, or 16 with --time-budget alone)")
    parser.add_argument("--rpc-tracker", metavar="HOST:PORT", help="measure on the devices of this RPC tracker")
    parser.add_argument("--rpc-key", help="the devices' key at the tracker")
    parser.add_argument("--runner-workers", type=int, help="parallel measurements (default: devices under the key)")
    parser.add_argument("--session-timeout", type=float, default=120, metavar="SECONDS",
                        help="longest one measurement on a device may take, waiting for the device included "
                             "(default: 120); no answer by then stops tuning")
    parser.add_argument("--seed", type=int, help="random seed of the search")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if bool(args.rpc_tracker) != bool(args.rpc_key):
        parser.error("--rpc-tracker and --rpc-key go together")
    if args.time_budget is not None and not args.time_budget > 0:
        parser.error(f"--time-budget must be a positive number of minutes, got {args.time_budget:g}")
    if args.calibration and args.dtype != "int8":
        parser.error("--calibration is for --dtype int8")
    trials = 1000 if args.trials is None and args.time_budget is None else args.trials

    import targets
    from tvm_ecnn.deploy import import_model
    from tvm_ecnn.runtime import parse_tracker, tracker_devices
    from tvm_ecnn.tuning import tune

    tuning_db = args.tuning_db or os.path.join("tuning-db", args.target.replace("/", "-"))
    try:
        target = targets.get_target(args.target)
        if args.rpc_tracker:  # before the model import: a wrong address fails in seconds
            tracker_devices(*parse_tracker(args.rpc_tracker), args.rpc_key)
        mod = import_model(args.model, args.input_shape, args.dtype, calibration=args.calibration)[0]
        budget_s = None if args.time_budget is None else 60 * args.time_budget
        path = tune(mod, target, tuning_db, trials=trials, time_budget_s=budget_s, rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key,
                    runner_workers=args.runner_workers, seed=args.seed, trials_per_batch=args.trials_per_batch,
                    session_timeout=args.session_timeout, progress=not args.quiet, report=print)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ConnectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: the batches in flight were dropped, the finished ones are kept in {tuning_db}; "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    dtype = f" --dtype {args.dtype}" + (f" --calibration {args.calibration}" if args.calibration else "")
    print(f"tuning database: {path}\napply it: scripts/compile.py --model {args.model} --target {args.target}"
          f"{dtype if args.dtype not in (None, 'fp32') else ''} --tuning-db {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
