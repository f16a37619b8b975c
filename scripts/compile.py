#!/usr/bin/env python
"""Compile a PyTorch model for a Snapdragon target and export a deployable ``.so``.

    python scripts/compile.py --target adreno                        # ShiftResNet-20 for the 865 GPU
    python scripts/compile.py --model fenet1_0 --target snapdragon/8gen2-cpu --tuning-db tuning-db/arm
    python scripts/compile.py --model exported.pt2 --target aarch64-linux -o net.so
    python scripts/compile.py --model mypkg.nets:build --input-shape 1,3,64,64 --target host

Bad model or target names print the valid ones and exit with status 2; a missing or failing linker exits with 1.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must look like 1,3,224,224, got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shiftresnet20", help="zoo name, a torch.export .pt2 file, or module:callable")
    parser.add_argument("--input-shape", type=parse_shape, help="e.g. 1,3,224,224 (default: the zoo model's)")
    parser.add_argument("--target", default="adreno", help="a tvm-ecnn target name or TVM tag (default: adreno)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--tuning-db", help="MetaSchedule database directory (from scripts/tune.py) to apply")
    parser.add_argument("--seed", type=int, default=0, help="seed of a zoo model's random weights (as in scripts/run.py)")
    parser.add_argument("-o", "--output", help="output .so (default: <model>-<target>.so in the current directory)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    import targets
    from tvm_ecnn.deploy import compile_model
    from tvm_ecnn.device.errors import ExternalToolError

    try:
        targets.get_target(args.target)
        result = compile_model(args.model, args.input_shape, args.target, dtype=args.dtype, tuning_db=args.tuning_db,
                               output=args.output, seed=args.seed, progress=not args.quiet)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ExternalToolError as error:  # the linker is missing or failed: its name, what to install, its output
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
