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

import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import relay_ops  # noqa: E402
import targets  # noqa: E402
from tvm_ecnn.pipeline import build  # noqa: E402


def module(body, shape):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(x))
        bb.emit_func_output(out)
    return bb.get()


def median_ms(ex, x, number, repeat):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](x).numpy()
    result = vm.time_evaluator("main", tvm.cpu(), number=number, repeat=repeat)(x)
    return out, float(np.median(result.results)) * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--out-channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--number", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    c, o, s = args.channels, args.out_channels, args.size
    shape = (1, c, s, s)
    weight = relax.const(rng.standard_normal((o, c, 1, 1)).astype("float32"))
    bias = relax.const(rng.standard_normal(o).astype("float32"))
    sparse = relax.const(rng.integers(-1, 2, (c, 2)).astype("int32"))
    active = relax.const(rng.uniform(-1.5, 1.5, (c, 2)).astype("float32"))
    x = tvm.runtime.tensor(rng.standard_normal(shape).astype("float32"))
    host = targets.get_target("host")

    stock = module(lambda v: relax.op.nn.relu(relax.op.add(relax.op.nn.conv2d(v, weight), relax.op.reshape(bias, (1, o, 1, 1)))), shape)
    rows = [("conv2d 1x1, stock TVM (default pipeline)",
             tvm.compile(stock, host, relax_pipeline=relax.get_default_pipeline(host)))]
    for kind, offsets in (("none", None), ("grouped", None), ("sparse", sparse), ("active", active)):
        body = lambda v, k=kind, off=offsets: relay_ops.shift_conv2d(v, weight, k, offsets=off, bias=bias, activation="relu")  # noqa: E731
        label = "conv2d 1x1, tvm-ecnn schedule" if kind == "none" else f"shift_conv2d[{kind}], tvm-ecnn"
        rows.append((label, build(module(body, shape), host)))

    print(f"host {host.attrs.get('mcpu', '?')}, {os.cpu_count()} cores; x={list(shape)}, O={o}; median of {args.repeat}x{args.number}")
    times = {}
    reference = None
    for label, ex in rows:
        out, ms = median_ms(ex, x, args.number, args.repeat)
        times[label] = ms
        if reference is None:
            reference = out
        print(f"  {label:44s} {ms:9.3f} ms")
    baseline = min(times["conv2d 1x1, stock TVM (default pipeline)"], times["conv2d 1x1, tvm-ecnn schedule"])
    print("ratios to the best 1x1 conv2d (goal: grouped/sparse <= 1.05, active <= 1.3):")
    for label, ms in times.items():
        if label.startswith("shift_conv2d"):
            print(f"  {label:44s} {ms / baseline:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
