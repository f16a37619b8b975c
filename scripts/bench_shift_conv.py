#!/usr/bin/env python
"""Host micro-benchmark: is the shift free when fused into the 1x1 convolution?

Compiles, in one run and for the same target, a plain 1x1 ``conv2d`` (stock TVM pipeline, and
through tvm-ecnn's schedule as ``shift_conv2d(shift="none")``) and ``shift_conv2d`` with each
shift kind, then prints median latencies and the ratio of each shift to the best 1x1 baseline
(the goal: <= 1.05 for grouped/sparse, <= 1.3 for active). Timings are host-only; never quote
emulated-device numbers as phone speed.

    python scripts/bench_shift_conv.py --channels 64 --out-channels 64 --size 56
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import targets  # noqa: E402
from tvm_ecnn.benchmark import shift_conv_ratios, shift_conv_timings, shift_label  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--out-channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--number", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    c, o, s = args.channels, args.out_channels, args.size
    times = shift_conv_timings(c, o, s, args.number, args.repeat)
    mcpu = targets.get_target("host").attrs.get("mcpu", "?")
    print(f"host {mcpu}, {os.cpu_count()} cores; x={[1, c, s, s]}, O={o}; median of {args.repeat}x{args.number}")
    for label, ms in times.items():
        print(f"  {label:44s} {ms:9.3f} ms")
    print("ratios to the best 1x1 conv2d (goal: grouped/sparse <= 1.05, active <= 1.3):")
    for kind, ratio in shift_conv_ratios(times).items():
        print(f"  {shift_label(kind):44s} {ratio:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
