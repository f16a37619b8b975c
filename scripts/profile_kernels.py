#!/usr/bin/env python
"""Per-kernel profile of a zoo model compiled by tvm-ecnn: time, share, GFLOP/s, GB/s, fraction of the roofline.

The roofline (peak fp32 FMA and int8 dot-product throughput, streaming bandwidth of the threads used) is
measured on first use and cached per machine (``tvm_ecnn.profiling``). FLOPs, int8 ops (2 per byte
multiply-accumulate; an int8 build's table gets an "int8 GOP/s" column) and bytes come from each kernel's
TIR PrimFunc. (Not named ``profile.py``: in ``scripts/`` that would shadow the standard library module
that ``cProfile`` and ``torch.export`` import, for every script here.) Host timings only; never quote them as phone speed.

    python scripts/profile_kernels.py --model shiftresnet20 --target host
    python scripts/profile_kernels.py --model fenet1_0 --resolution 224 --plot profile.png --json profile.json
    python scripts/profile_kernels.py --model mobilenet_v2 --dtype int8 --calibration samples.npy
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tvm_ecnn import models  # noqa: E402

warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shiftresnet20", choices=models.names(), metavar="NAME",
                        help=f"zoo model, one of: {', '.join(models.names())}")
    parser.add_argument("--target", default="host", help="a host (llvm) target; only the host can be timed here")
    parser.add_argument("--resolution", type=int, default=None, help="input size of ImageNet models (default 224)")
    parser.add_argument("--dtype", choices=("fp32", "int8"), default="fp32",
                        help="int8: quantized as compile.py --dtype int8 does (int8 ops then get their own column and peak)")
    parser.add_argument("--calibration", metavar="FILE",
                        help="int8: .npy/.pt of N inputs for the activation scales (default: random, announced)")
    parser.add_argument("--repeat", type=int, default=20, help="profiled runs (per-kernel median)")
    parser.add_argument("--top", type=int, default=None, help="print only the slowest N kernels")
    parser.add_argument("--plot", metavar="PNG", help="also draw the times and the roofline plot here")
    parser.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    parser.add_argument("--refresh-roofline", action="store_true", help="measure the roofline (fp32, int8 and bandwidth) again")
    args = parser.parse_args(argv)

    from tvm_ecnn.profiling import machine_roofline, profile

    try:
        if args.calibration and args.dtype != "int8":
            raise ValueError("--calibration is for --dtype int8")
        report = profile(args.model, args.target, args.resolution, repeat=args.repeat,
                         roofline=machine_roofline(refresh=True) if args.refresh_roofline else None,
                         dtype=args.dtype, calibration=args.calibration)
    except ValueError as error:  # a bad --target (unknown, or not the host) or calibration file: one line
        parser.error(str(error))
    print(report.table(args.top))
    if args.plot:
        report.plot(args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_dict(), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
