#!/usr/bin/env python
"""Host benchmark: tvm-ecnn side by side with what one would otherwise deploy, in one run.

First ``shift_conv2d`` against a plain 1x1 ``conv2d`` (goal: <= 1.05x, active shift <= 1.3x),
then per zoo model (batch 1, same seeded weights and input everywhere) the fastest of ``--repeat``
interleaved rounds (every backend once per round, so a load change hits all alike) of PyTorch eager,
``torch.compile``, ONNX Runtime, stock TVM (its own importer and default pipeline) and tvm-ecnn, each
checked against eager. ONNX Runtime and stock TVM run the model's deployable equivalent (shifts as
depthwise convs, ``tvm_ecnn.benchmark.to_standard_ops``).
``--int8`` adds our int8 build and ONNX Runtime's static int8 (QDQ, per-channel weights), both calibrated
on the same 8 seeded random inputs and checked against eager within 0.1 (relative), and a table of the
ratios our int8 / our fp32 and our int8 / ONNX Runtime int8.
A backend that fails shows its error in its cell. Host timings only; never quote them as phone speed.

    python scripts/benchmark.py                                # all models, ImageNet ones at 224
    python scripts/benchmark.py --models shiftresnet20 fenet1_0 --resolution 112 --markdown bench.md
    python scripts/benchmark.py --int8 --backends tvm-ecnn     # int8 vs fp32 vs ONNX Runtime int8 only
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from tvm_ecnn import benchmark, models  # noqa: E402

# torch 2.13 warns about its own deprecated LeafSpec whenever an ExportedProgram is deep-copied (both TVM imports do).
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


def shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace("x", ",").split(","))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=models.names(), choices=models.names(), metavar="NAME",
                        help="zoo models (default: all)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="input size of the ImageNet models (default 224; CIFAR models stay 32x32)")
    parser.add_argument("--input-shape", type=shape, default=None, metavar="N,C,H,W",
                        help="one input shape for every model, overriding the defaults")
    parser.add_argument("--backends", nargs="+", default=list(benchmark.BACKENDS), choices=list(benchmark.BACKENDS),
                        metavar="NAME", help=f"fp32 columns (default: all of {', '.join(benchmark.BACKENDS)})")
    parser.add_argument("--int8", action="store_true",
                        help=f"also the int8 columns ({', '.join(benchmark.INT8_BACKENDS)}; tvm-ecnn fp32 always "
                             "runs with them) and their ratio table")
    parser.add_argument("--tuning-db", metavar="DIR",
                        help=f"also a '{benchmark.TUNED}' column: our build with the host records of this database "
                             "(scripts/tune.py --target host --tuning-db DIR)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20, help="interleaved timing rounds per model (each backend once per round; the minimum is reported)")
    parser.add_argument("--op-channels", type=int, default=64, help="C = O of the op-level shift_conv2d")
    parser.add_argument("--op-size", type=int, default=56, help="H = W of the op-level shift_conv2d")
    parser.add_argument("--op-number", type=int, default=20, help="op-level runs per timed repeat")
    parser.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    parser.add_argument("--markdown", metavar="PATH", help="also write the command and tables for the README")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count())
    try:
        columns = benchmark.tuned_column(args.tuning_db) if args.tuning_db else {}
    except (ValueError, OSError) as error:
        parser.error(f"--tuning-db: {error}")

    command = shlex.join(["python", "scripts/benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    host = benchmark.host_description()
    op_shape = (1, args.op_channels, args.op_size, args.op_size)
    print(f"{host}\nshift_conv2d, x={list(op_shape)}, O={args.op_channels}, bias+ReLU; "
          f"min of {args.repeat} interleaved rounds of {args.op_number} runs", flush=True)
    op_times = benchmark.shift_conv_timings(args.op_channels, args.op_channels, args.op_size, args.op_number,
                                            args.repeat)
    op_table = benchmark.shift_conv_table(op_times)
    print(op_table, flush=True)

    backends = list(dict.fromkeys(args.backends + ([benchmark.ECNN, *benchmark.INT8_BACKENDS] if args.int8 else [])
                                  + ([benchmark.ECNN, *columns] if columns else [])))
    table = benchmark.benchmark_models(
        args.models, lambda name: benchmark.input_shape(name, args.resolution, args.input_shape),
        args.warmup, args.repeat, backends, columns)
    legend = (f"batch 1, min of {args.repeat} interleaved rounds after {args.warmup} warm-up runs; "
              "cells: ms (time over PyTorch eager / over stock TVM, < 1 is faster); "
              f"≠: output differs from eager by more than {benchmark.AGREEMENT:g} (relative)")
    models_table = benchmark.models_table(table)
    if columns:
        models_table += "\n\n" + benchmark.ratio_line(table, benchmark.TUNED, benchmark.ECNN)
    print(f"\n{legend}\n{models_table}")
    int8_part = ""
    if args.int8:
        int8_part = (f"\nint8: calibrated on {benchmark.CALIBRATION_SAMPLES} seeded N(0,1) inputs (both); ratios < 1: "
                     f"ours int8 is faster; rel. error: max |int8 - eager| / max |eager| on the timed input (≠: over "
                     f"{benchmark.INT8_AGREEMENT:g})\n{benchmark.int8_table(table)}\n")
        print(int8_part)

    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"```\n{command}\n```\n\n{host}\n\n{op_table}\n\n{legend}\n\n{models_table}\n{int8_part}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "command": command,
                "host": host,
                "shift_conv2d": {"shape": op_shape, "ms": op_times, "ratios": benchmark.shift_conv_ratios(op_times)},
                "models": {name: dataclasses.asdict(entry) for name, entry in table.items()},
            }, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
