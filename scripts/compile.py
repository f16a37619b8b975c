#!/usr/bin/env python
"""Compile a PyTorch model for a Snapdragon target and export a deployable ``.so``.

    python scripts/compile.py --target adreno                        # ShiftResNet-20 for the 865 GPU
    python scripts/compile.py --model fenet1_0 --target snapdragon/8gen2-cpu --tuning-db tuning-db/arm
    python scripts/compile.py --model exported.pt2 --target aarch64-linux -o net.so
    python scripts/compile.py --model mypkg.nets:build --input-shape 1,3,64,64 --target host
    python scripts/compile.py --model mobilenet_v2 --target host --dtype int8 --calibration samples.npy
    python scripts/compile.py --model net_pt2e.pt2 --target host -o net.so         # quantized in PyTorch (PT2E): int8

Exit status 2 and one line for bad arguments or input (bad model or target names print the valid ones; the output
path is checked before compiling and never replaces an input), 1 when the compiler fails (the message names the
stage and, where it can be found, the layer; --traceback prints the details to report); a missing or failing
linker exits with 1 and names it.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tvm_ecnn.error_text import error_line  # noqa: E402


def parse_shape(text: str) -> tuple[int, ...]:
    """``1,3,224,224`` or ``1x3x224x224``: every dim a positive integer (``1,3,x`` is an error, not ``(1, 3)``)."""
    parts = [part.strip() for part in re.split(r"[,x]", text)]
    if not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"must be positive integers like 1,3,224,224, got {text!r}")
    if any(int(part) == 0 for part in parts):
        raise argparse.ArgumentTypeError(f"every dimension must be at least 1, got {text!r}")
    return tuple(int(part) for part in parts)


def at_least(minimum: int):
    """An argparse type: an int >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def first_line(error: BaseException) -> str:
    """An input error's first line and its hint: torch.export's messages run to pages."""
    hint = next((line for line in str(error).splitlines()[1:] if line.startswith("hint:")), None)
    return "\n".join([error_line(error)] + ([hint] if hint else []))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shiftresnet20", help="zoo name, a torch.export .pt2 file, or module:callable")
    parser.add_argument("--input-shape", type=parse_shape, help="e.g. 1,3,224,224 (default: the zoo model's)")
    parser.add_argument("--target", default="adreno", help="a tvm-ecnn target name or TVM tag (default: adreno)")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "int8"],
                        help="int8: static post-training quantization on --calibration (inputs and outputs stay fp32); "
                        "default: fp32, or int8 for a .pt2 quantized in PyTorch with PT2E (its own scales)")
    parser.add_argument("--calibration", help="int8: .npy or .pt file of N input samples [N, C, H, W] "
                        "(default: random inputs, with a warning)")
    parser.add_argument("--tuning-db", help="MetaSchedule database directory (from scripts/tune.py) to apply")
    parser.add_argument("--seed", type=at_least(0), default=0,
                        help="seed of a zoo model's random weights (as in scripts/run.py)")
    parser.add_argument("-o", "--output", help="output .so (default: <model>-<target>.so in the current directory)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--traceback", action="store_true", help="print the full traceback of a compiler failure")
    args = parser.parse_args(argv)

    import logging

    import torch

    import targets
    from tvm_ecnn.deploy import CompileError, compile_model
    from tvm_ecnn.frontend import ExportError, UnsupportedOperatorError

    if not args.traceback:
        torch._logging.set_logs(all=logging.ERROR)  # torch.export's warnings on a refused model repeat the error
    try:
        targets.get_target(args.target)
        result = compile_model(args.model, args.input_shape, args.target, dtype=args.dtype, tuning_db=args.tuning_db,
                               output=args.output, seed=args.seed, progress=not args.quiet,
                               calibration=args.calibration)
    except CompileError as error:
        if args.traceback:
            traceback.print_exception(error.__cause__ or error)
        print(f"error: {error}", file=sys.stderr)
        if not args.traceback:
            print("(a compiler failure, not a bad argument: --traceback prints the details to report)", file=sys.stderr)
        return 1
    except UnsupportedOperatorError as error:
        print(f"error: {error}", file=sys.stderr)  # one line per op that cannot be imported
        return 2
    except (ValueError, ExportError) as error:
        print(f"error: {first_line(error)}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
