#!/usr/bin/env python
"""Host micro-benchmark: is the shift free when fused into the 1x1 convolution, at every shape the zoo uses?

Imports each shift network of the zoo (ShiftResNet-20/56, FE-Net, AS-ResNet), collects every distinct
``shift_conv2d`` the importer produced (input channels, output channels, map size, stride, shift kind),
and times, per shape, ``shift_conv2d`` against the plain 1x1 ``conv2d`` of the same size and stride
(stock TVM pipeline, and tvm-ecnn's schedule as ``shift_conv2d(shift="none")``), all with bias + ReLU.
The ratio is over the best plain conv; the goal is <= 1.1x everywhere. Timings are host-only; never
quote them as phone speed.

    python scripts/bench_shift_conv.py                                   # all shift networks, 224x224
    python scripts/bench_shift_conv.py --models shiftresnet20 --markdown shift_conv.md
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tvm_ecnn import benchmark  # noqa: E402

warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(benchmark.SHIFT_NETWORKS),
                        choices=benchmark.SHIFT_NETWORKS, metavar="NAME",
                        help=f"shift networks (default: all of {', '.join(benchmark.SHIFT_NETWORKS)})")
    parser.add_argument("--resolution", type=int, default=None, help="input size of ImageNet models (default 224)")
    parser.add_argument("--number", type=int, default=20, help="runs per timed round")
    parser.add_argument("--repeat", type=int, default=15,
                        help="timed rounds, the variants interleaved per round (minimum taken)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table here")
    args = parser.parse_args(argv)

    shapes = benchmark.zoo_shift_conv_shapes(args.models, args.resolution)
    print(f"{benchmark.host_description()}\n{len(shapes)} distinct shift_conv2d in {', '.join(args.models)}; "
          f"bias + ReLU, ms: min of {args.repeat} interleaved rounds of {args.number} runs", flush=True)
    rows, missed = [], 0
    for shape, users in shapes.items():
        times = benchmark.shift_conv_timings(shape.channels, shape.out_channels, shape.height, args.number,
                                             args.repeat, width=shape.width, stride=shape.stride, kinds=(shape.kind,))
        baseline = min(times[benchmark.STOCK_CONV], times[benchmark.ECNN_CONV])
        shift = times[benchmark.shift_label(shape.kind)]
        ratio = shift / baseline
        missed += ratio > benchmark.ZOO_SHIFT_GOAL
        rows.append([f"{shape.channels}→{shape.out_channels}", f"{shape.height}x{shape.width}", str(shape.stride),
                     shape.kind, " ".join(users), f"{times[benchmark.STOCK_CONV]:.3f}",
                     f"{times[benchmark.ECNN_CONV]:.3f}", f"{shift:.3f}",
                     f"{ratio:.2f}×" + ("" if ratio <= benchmark.ZOO_SHIFT_GOAL else " (missed)")])
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    table = benchmark.markdown_table(
        ["C→O", "map", "stride", "shift", "models", "1x1 stock ms", "1x1 tvm-ecnn ms", "shift_conv2d ms",
         f"shift / best 1x1 (goal ≤ {benchmark.ZOO_SHIFT_GOAL}×)"], rows)
    summary = f"{len(rows) - missed} of {len(rows)} shapes within {benchmark.ZOO_SHIFT_GOAL}× of the best 1x1 conv"
    print(f"{table}\n{summary}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"{table}\n\n{summary}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
