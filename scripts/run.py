#!/usr/bin/env python
"""Run a compiled model (.so) here or on an RPC device: outputs, error against PyTorch, latency.

    python scripts/run.py shiftresnet20-host.so                                      # random input of its shape
    python scripts/run.py old.so --input-shape 1,3,32,32                            # a .so built before metadata
    python scripts/run.py net.so --inputs x.npz --model net.pt2                     # max error vs PyTorch eager
    python scripts/run.py net-adreno.so --model shiftresnet20 --rpc-tracker 127.0.0.1:9190 --rpc-key sd865 \\
        --device opencl

Inputs come from --inputs (an .npz, arrays in saved order) or are random normal of --input-shape, else of the
shapes and dtypes the .so records (scripts/compile.py embeds them), else of the --model's. --model takes what
scripts/compile.py takes; a zoo model gets the random weights scripts/compile.py gives it for the same --seed (a .pt2
carries its own). Without --model, a .so compiled from a zoo model (or a file still there) is compared with the
model and weight seed it records. The comparison is with PyTorch in fp32 (whatever --dtype the .so was compiled
with): max abs error and the agreement (top-1, logits' error relative to the largest |logit|: max / mean); a
program quantized in PyTorch (PT2E) is run as it is, and the max error is also given in its output's quantization
steps (within one step is the criterion).
The .so is checked before it is loaded (truncated, corrupt, another architecture: a message, not a crash), and
inputs against what it takes.
Exit status 2 for bad arguments or files, 1 when the device or runtime cannot be used.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from compile import at_least, parse_shape  # noqa: E402  (scripts/ is on sys.path when run as a script)

from tvm_ecnn.error_text import error_line  # noqa: E402


def _inputs(args, loaded, model_shape) -> list[np.ndarray]:
    if args.inputs:
        return _read_inputs(args.inputs)
    rng = np.random.default_rng(args.seed)
    if args.input_shape or not loaded.inputs:
        shape = args.input_shape or model_shape
        if shape is None:
            raise ValueError(f"{args.path} does not record its inputs (built before scripts/compile.py embedded "
                             "them): give --inputs, --input-shape or --model")
        return [rng.standard_normal(shape, dtype="float32")]
    return [rng.standard_normal(spec.example_shape()).astype(spec.dtype) for spec in loaded.inputs]


def _read_inputs(path: str) -> list[np.ndarray]:
    """The arrays of an .npz (in saved order) or a single .npy, as a ValueError naming --inputs when unreadable."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not an .npz or .npy file"
        raise ValueError(f"--inputs {path}: cannot read it ({reason})") from None
    if isinstance(data, np.ndarray):
        return [data]
    with data:
        return [data[name] for name in data.files]


def _torch_outputs(model, inputs) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out = model(*[torch.from_numpy(x) for x in inputs])
    flat = out if isinstance(out, (tuple, list)) else [out]
    return [t.float().numpy() for t in flat]


def _recorded_model(loaded) -> tuple[str, int] | None:
    """``(model, weight seed)`` the .so was compiled from (scripts/compile.py records them) when it can be loaded
    here: a zoo name, or a model file that still exists."""
    from tvm_ecnn import models

    recorded = (loaded.metadata or {}).get("model")
    if not isinstance(recorded, str) or not (recorded in models.names() or os.path.isfile(recorded)):
        return None
    return recorded, int(loaded.metadata.get("seed", 0))


def _comparison(outputs, expected, dtype: str, steps=None) -> list[str]:
    """Max abs error against PyTorch and, per output, the agreement (top-1, relative logits error); for a PT2E
    program (``steps``: its outputs' quantization steps), the max error in steps too: within one is the criterion."""
    from tvm_ecnn.quantize import agreement

    error = max(float(np.abs(o - e).max()) for o, e in zip(outputs, expected, strict=True))
    scale = max(float(np.abs(e).max()) for e in expected)
    lines = [f"max abs error vs PyTorch: {error:.3g} (largest |output| {scale:.3g})"]
    reference = "PyTorch PT2E" if steps else "PyTorch fp32"
    for i, (o, e) in enumerate(zip(outputs, expected, strict=True)):
        rows = o.shape[0] if o.ndim > 1 else 1  # one sample per batch row
        which = f"output {i} " if len(outputs) > 1 else ""
        lines.append(f"{which}{dtype} ~ {reference}: {agreement(o.reshape(rows, -1), e.reshape(rows, -1))} "
                     f"({rows} sample{'s' if rows > 1 else ''})")
        step = steps[i] if steps else None
        if step:
            off = float(np.abs(o - e).max()) / step
            lines.append(f"{which}max error {off:.2f} output quantization steps (step {step:.3g}): "
                         f"{'within' if off <= 1 + 1e-3 else 'more than'} one step of PyTorch PT2E")
    return lines


def _summary(i: int, a: np.ndarray) -> str:
    stats = f"mean {a.mean():.4g}  std {a.std():.4g}  min {a.min():.4g}  max {a.max():.4g}" if a.size else "empty"
    return f"output {i}: {tuple(a.shape)} {a.dtype}  {stats}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="the compiled .so (scripts/compile.py)")
    parser.add_argument("--inputs", help=".npz with the input arrays, in order (or one .npy)")
    parser.add_argument("--input-shape", type=parse_shape,
                        help="random float32 input of this shape, e.g. 1,3,32,32 (default: what the .so records)")
    parser.add_argument("--model", help="the source model to compare with (zoo name, .pt2 or module:callable; "
                        "default: the zoo model or file the .so records)")
    parser.add_argument("--seed", type=at_least(0), default=0,
                        help="seed of the random input and of a zoo model's weights")
    parser.add_argument("--rpc-tracker", metavar="HOST:PORT", help="run on a device of this RPC tracker")
    parser.add_argument("--rpc-key", help="the device's key at the tracker")
    parser.add_argument("--device", default="cpu", choices=["cpu", "opencl"])
    parser.add_argument("--session-timeout", type=float, default=300, metavar="SECONDS",
                        help="longest the device session may last, request to last result (default: 300): a frozen "
                             "or dead device ends the run with an error then")
    parser.add_argument("--number", type=at_least(1), default=10, help="runs averaged per measurement (default: 10)")
    parser.add_argument("--repeat", type=at_least(1), default=5, help="measurements (default: 5)")
    args = parser.parse_args(argv)
    if bool(args.rpc_tracker) != bool(args.rpc_key):
        parser.error("--rpc-tracker and --rpc-key go together")

    from tvm_ecnn import runtime

    try:
        model = shape = steps = None
        if args.rpc_tracker:
            loaded = runtime.upload_and_load(args.path, args.rpc_tracker, args.rpc_key, device=args.device,
                                             session_timeout=args.session_timeout)
        else:
            loaded = runtime.load(args.path, device=args.device)
        source = (args.model, args.seed) if args.model else _recorded_model(loaded)
        if source:
            import torch

            from tvm_ecnn.deploy import load_model
            from tvm_ecnn.frontend.pt2e import is_pt2e, output_steps

            recorded = loaded.inputs[0].example_shape() if loaded.inputs and not args.inputs else None
            # the model the .so records is built at the .so's shape: a wrong --input-shape is the .so's error
            wanted = (args.input_shape or recorded) if args.model else (recorded or args.input_shape)
            model, shape, _name = load_model(source[0], wanted, seed=source[1])
            steps = output_steps(model) if is_pt2e(model) else None
            model = model.module() if isinstance(model, torch.export.ExportedProgram) else model.float().eval()
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ConnectionError, TimeoutError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    try:
        with loaded:
            try:
                inputs = _inputs(args, loaded, shape)
                outputs = loaded.run(*inputs)
            except ValueError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            for i, out in enumerate(outputs):
                print(_summary(i, out))
            if model is not None:
                try:
                    expected = _torch_outputs(model, inputs)
                except (RuntimeError, ValueError, TypeError) as error:
                    print(f"error: --model {source[0]} does not take these inputs: {error_line(error)}",
                          file=sys.stderr)
                    return 2
                if [o.shape for o in outputs] != [e.shape for e in expected]:
                    print(f"outputs do not match PyTorch's: {[o.shape for o in outputs]} vs {[e.shape for e in expected]}")
                else:
                    print("\n".join(_comparison(outputs, expected, (loaded.metadata or {}).get("dtype", "fp32"),
                                                 steps)))
            latency = loaded.benchmark(*inputs, number=args.number, repeat=args.repeat)
    except TimeoutError as error:  # a frozen or dead RPC device
        print(f"error: {error}", file=sys.stderr)
        return 1
    where = f"{args.rpc_key} via {args.rpc_tracker}" if args.rpc_tracker else "this machine"
    print(f"latency on {where} ({args.device}): median {latency['median_ms']:.3f} ms, min {latency['min_ms']:.3f} ms, "
          f"max {latency['max_ms']:.3f} ms ({args.repeat} x {args.number} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
