#!/usr/bin/env python
"""Print the per-layer cost table of a registered model on a Snapdragon roofline.

    python scripts/analyze.py                                  # shiftresnet20, 865 GPU, fp32
    python scripts/analyze.py --model fenet1_0 --dtype fp16 --top 10
    python scripts/analyze.py --model squeezenet1_1 --target snapdragon/888-adreno --json out.json

Unknown model or target names print the valid ones and exit with status 2.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path


def _importable(name: str) -> bool:
    """True when ``name`` imports as a regular package. A namespace package (origin None) means
    an editable install made before the package had its ``__init__.py``: use the checkout."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")


if not (_importable("tvm_ecnn") and _importable("targets")):  # not installed (or stale install)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tvm_ecnn import models  # noqa: E402
from tvm_ecnn.analysis import DTYPE_BYTES, analyze  # noqa: E402

DEFAULT_MODEL = "shiftresnet20"


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must be comma-separated integers, got {text!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"input shape must be 4 positive integers N,C,H,W, got {text!r}")
    return shape


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model (default {DEFAULT_MODEL})")
    parser.add_argument("--input-shape", type=parse_shape, default=None,
                        help="N,C,H,W (default: the model's, e.g. 1,3,32,32 for CIFAR models)")
    parser.add_argument("--target", default="865", help="SoC key (865, 888, ...) or Snapdragon target name")
    parser.add_argument("--unit", choices=("cpu", "gpu"), default=None,
                        help="roofline unit (default: from the target name; gpu for a bare SoC key)")
    parser.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="fp32")
    parser.add_argument("--top", type=int, default=15, help="number of heaviest layers to print")
    parser.add_argument("--json", type=Path, default=None, help="also write the full report as JSON")
    return parser


def valid_targets() -> list[str]:
    import targets

    return sorted(set(targets.PRESETS) | {n for n in targets.names() if n != "host"})  # host: no roofline


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.model not in models.names():
        print(f"error: unknown model {args.model!r}; valid models: {', '.join(models.names())}", file=sys.stderr)
        return 2
    import targets

    try:
        targets.preset_for(args.target)
    except (ValueError, KeyError) as error:
        reason = str(error) if "valid" not in str(error) else f"unknown target {args.target!r}"
        print(f"error: {reason}; valid targets: {', '.join(valid_targets())}", file=sys.stderr)
        return 2
    shape = args.input_shape or models.default_input_shape(args.model)
    try:
        report = analyze(args.model, shape, target=args.target, unit=args.unit, dtype=args.dtype, top=args.top)
    except (RuntimeError, ValueError) as error:  # e.g. an input shape the model cannot take
        print(f"error: {args.model} at input shape {','.join(map(str, shape))}: {error}", file=sys.stderr)
        return 2
    print(report.table(args.top))
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_dict(), indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
