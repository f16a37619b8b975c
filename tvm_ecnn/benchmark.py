"""The reusable parts of ``scripts/benchmark.py`` and ``scripts/bench_shift_conv.py``.

Two questions, answered on the host in one process with the same inputs:

* op level: is the shift free once fused into the 1x1 convolution (``shift_conv_timings``)?
* model level: how does tvm-ecnn compare with what a user would otherwise deploy, i.e. PyTorch
  eager, ``torch.compile``, ONNX Runtime and stock TVM (``benchmark_models``)? And in int8
  (``INT8_BACKENDS``): our int8 build against our fp32 one and ONNX Runtime's static int8, both
  calibrated on the same inputs (``calibration_samples``).

ONNX Runtime and stock TVM know no shift op, so they get the *deployable equivalent* of each
model (``to_standard_ops``): every shift module swapped for the depthwise convolution that
runtimes without a shift op deploy. It lives here rather than in ``tvm_ecnn.nn`` (owned by
another package and kept free of deployment concerns). Timings are host-only; never quote them,
or emulated-device numbers, as phone speed.
"""
from __future__ import annotations

import copy
import importlib.metadata
import io
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import tvm
from torch import nn
from tqdm import tqdm
from tvm import relax

import relay_ops
import targets

from . import models
from .nn import ActiveShift2d, Shift2d, SparseShift2d
from .pipeline import build
from .tuning_db import AppliedRecords

# --------------------------------------------------------------------------- op level
STOCK_CONV = "conv2d 1x1, stock TVM (default pipeline)"
ECNN_CONV = "conv2d 1x1, tvm-ecnn schedule"
SHIFT_GOALS = {"grouped": 1.05, "sparse": 1.05, "active": 1.3}
"""Goal for ``shift_conv2d[kind]`` time over the best plain 1x1 ``conv2d`` (the issue's targets)."""


def shift_label(kind: str) -> str:
    return f"shift_conv2d[{kind}], tvm-ecnn"


def _relax_module(body, shape) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(x))
        bb.emit_func_output(out)
    return bb.get()


def shift_conv_timings(channels: int, out_channels: int, size: int, number: int, repeat: int,
                       target="host", *, width: int | None = None, stride: int = 1,
                       kinds=tuple(SHIFT_GOALS)) -> dict[str, float]:
    """Ms of a plain 1x1 conv (stock TVM; tvm-ecnn's schedule) and of ``shift_conv2d`` per shift kind: the
    minimum over ``repeat`` rounds of the mean of ``number`` runs, the variants interleaved per round.

    Everything has bias + ReLU fused, the same ``stride`` and the same random ``[1, channels, size, width]``
    input, so the only difference between a shift and the conv baseline is the shift itself. The grouped
    shift is in raster order (``mapping="grouped"``), as ``RasterOrderShiftGroups`` leaves a network's.
    """
    rng = np.random.default_rng(0)
    c, o = channels, out_channels
    shape = (1, c, size, size if width is None else width)
    weight = relax.const(rng.standard_normal((o, c, 1, 1)).astype("float32"))
    bias = relax.const(rng.standard_normal(o).astype("float32"))
    offsets = {
        "none": None,
        "grouped": None,
        "sparse": relax.const(rng.integers(-1, 2, (c, 2)).astype("int32")),
        "active": relax.const(rng.uniform(-1.5, 1.5, (c, 2)).astype("float32")),
    }
    x = tvm.runtime.tensor(rng.standard_normal(shape).astype("float32"))
    target = targets.get_target(target)

    def stock(v):
        conv = relax.op.nn.conv2d(v, weight, strides=stride)
        return relax.op.nn.relu(relax.op.add(conv, relax.op.reshape(bias, (1, o, 1, 1))))

    executables = {STOCK_CONV: tvm.compile(_relax_module(stock, shape), target,
                                           relax_pipeline=relax.get_default_pipeline(target))}
    for kind in ("none", *kinds):
        def body(v, kind=kind, table=offsets[kind]):
            return relay_ops.shift_conv2d(v, weight, kind, mapping="grouped", offsets=table, stride=stride,
                                          bias=bias, activation="relu")
        executables[ECNN_CONV if kind == "none" else shift_label(kind)] = build(_relax_module(body, shape), target)

    timers = {label: relax.VirtualMachine(ex, tvm.cpu()).time_evaluator("main", tvm.cpu(), number=number)
              for label, ex in executables.items()}
    times = dict.fromkeys(timers, float("inf"))
    for _ in range(repeat):  # interleaved, so that a load change hits every variant alike
        for label, timer in timers.items():
            times[label] = min(times[label], timer(x).mean * 1e3)
    return times


SHIFT_NETWORKS = ("shiftresnet20", "shiftresnet56", "fenet1_0", "fenet1_37", "asresnet_w32", "asresnet_w50",
                  "asresnet_w68")
"""The zoo's shift networks, whose ``shift_conv2d`` shapes ``zoo_shift_conv_shapes`` collects."""
ZOO_SHIFT_GOAL = 1.1
"""Goal for ``shift_conv2d`` over the best plain 1x1 conv at every shape of the zoo's shift networks."""


@dataclass(frozen=True)
class ShiftConvShape:
    """One distinct fused shift + 1x1 conv of a network: input ``[1, channels, height, width]``."""

    channels: int
    out_channels: int
    height: int
    width: int
    stride: int
    kind: str


def zoo_shift_conv_shapes(names=SHIFT_NETWORKS, resolution: int | None = None) -> dict[ShiftConvShape, list[str]]:
    """Every distinct ``shift_conv2d`` that importing ``names`` produces (the importer fuses shift + 1x1 conv),
    with the models using it, read from the imported Relax modules rather than written down."""
    from relay_ops._registry import attrs_of, op_name

    from .frontend import from_torch

    shift_conv = tvm.ir.Op.get(op_name("shift_conv2d"))
    shapes: dict[ShiftConvShape, list[str]] = {}
    for name in names:
        torch.manual_seed(0)
        model = models.get(name).eval()
        x = torch.randn(input_shape(name, resolution))
        calls = []
        for func in from_torch(model, (x,)).functions.values():
            if isinstance(func, relax.Function):
                relax.analysis.post_order_visit(
                    func, lambda e: calls.append(e) if isinstance(e, relax.Call) and e.op.same_as(shift_conv) else None)
        for call in calls:
            _, c, h, w = (int(d) for d in call.args[0].ty.shape.values)
            attrs = attrs_of(call)
            out_channels = int(call.args[1].ty.shape.values[0])
            key = ShiftConvShape(c, out_channels, h, w, int(attrs["stride"]), str(attrs["shift"]))
            users = shapes.setdefault(key, [])
            if name not in users:
                users.append(name)
    return shapes


def shift_conv_ratios(times: dict[str, float]) -> dict[str, float]:
    """Each ``shift_conv2d`` time over the best 1x1 ``conv2d`` baseline, keyed by shift kind."""
    baseline = min(times[STOCK_CONV], times[ECNN_CONV])
    return {kind: times[shift_label(kind)] / baseline for kind in SHIFT_GOALS}


# --------------------------------------------------------------------------- deployable equivalent
def _axis_taps(offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear taps along one axis: the low source offset (``floor``) and the high tap's weight."""
    low = torch.floor(offset)
    return low.long(), offset - low


def shift_as_depthwise_conv(module: nn.Module) -> nn.Conv2d:
    """The depthwise ``Conv2d`` computing what a shift module computes, with standard ops only.

    Grouped and sparse shifts (integer offsets) become one-hot kernels of size ``2R + 1``,
    ``R = max |offset|``, zero padding ``R``: exactly how runtimes without a shift op deploy them.
    The active shift becomes the same conv with the (up to) four bilinear weights as taps, stride
    and padding carried over; we chose this over ``F.grid_sample`` on a per-channel grid because
    every runtime fuses and vectorises a depthwise conv, and it is one code path for all three.
    """
    stride, padding = 1, 0
    if isinstance(module, Shift2d):
        offsets = module.offsets().double()
    elif isinstance(module, SparseShift2d):
        offsets = module.integer_offsets().double()
    elif isinstance(module, ActiveShift2d):
        offsets, stride, padding = module.offset.detach(), module.stride, module.padding
    else:
        raise TypeError(f"not a shift module: {type(module).__name__}")
    (low_y, frac_y), (low_x, frac_x) = _axis_taps(offsets[:, 0]), _axis_taps(offsets[:, 1])
    # Taps of zero weight (the high tap of an integer offset) must not widen the kernel.
    reach = torch.cat([low_y, low_x, low_y + (frac_y > 0).long(), low_x + (frac_x > 0).long()]).abs()
    radius = int(reach.max())
    channels = offsets.shape[0]
    kernel = torch.zeros(channels, 1, 2 * radius + 1, 2 * radius + 1, dtype=offsets.dtype)
    channel = torch.arange(channels)
    for dy, weight_y in ((0, 1 - frac_y), (1, frac_y)):
        for dx, weight_x in ((0, 1 - frac_x), (1, frac_x)):
            weight = weight_y * weight_x
            used = weight != 0
            kernel[channel[used], 0, (radius + low_y + dy)[used], (radius + low_x + dx)[used]] = weight[used]
    conv = nn.Conv2d(channels, channels, 2 * radius + 1, stride=stride, padding=padding + radius,
                     groups=channels, bias=False)
    conv.weight.data.copy_(kernel.to(conv.weight.dtype))
    return conv.requires_grad_(False)


def to_standard_ops(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``Shift2d`` / ``SparseShift2d`` / ``ActiveShift2d`` swapped for
    ``shift_as_depthwise_conv``: exportable to ONNX and importable by stock TVM, same numerics."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, (Shift2d, SparseShift2d, ActiveShift2d)):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, shift_as_depthwise_conv(module))
    return model


def relative_error(actual, expected) -> float:
    """``max |actual - expected| / max |expected|``: comparable across models whose outputs differ
    in scale by orders of magnitude (random-init MobileNetV2 logits are ~1e-9, ShiftResNet56's ~1e3)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    error, scale = np.abs(actual - expected).max(initial=0.0), np.abs(expected).max(initial=0.0)
    return float(error / scale) if scale > 0 else (0.0 if error == 0 else float("inf"))


SWAP_TOLERANCE = 1e-5


def deployable_equivalent(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``to_standard_ops(model)``, checked on ``x`` to agree within ``SWAP_TOLERANCE`` (relative),
    so that a wrong swap can never be timed."""
    standard = to_standard_ops(model).eval()
    with torch.no_grad():
        error = relative_error(standard(x), model(x))
    if not error <= SWAP_TOLERANCE:
        raise ValueError(f"standard-op swap differs from the model by {error:.1e} (relative)")
    return standard


# --------------------------------------------------------------------------- model level
def _vm_runner(executable, x: torch.Tensor) -> Callable[[], object]:
    vm = relax.VirtualMachine(executable, tvm.cpu())
    data = tvm.runtime.tensor(x.numpy())
    return lambda: vm["main"](data)


def _eager(model, x):
    return lambda: model(x)


def _torch_compile(model, x):
    """Inductor, default mode; reset first so that no model inherits another's recompile budget."""
    torch.compiler.reset()
    compiled = torch.compile(model)
    return lambda: compiled(x)


def _onnx_bytes(model, x) -> bytes:
    """The deployable equivalent as ONNX. Legacy TorchScript exporter (``dynamo=False``): the dynamo one would
    also need onnxscript."""
    buffer = io.BytesIO()
    torch.onnx.export(deployable_equivalent(model, x), (x,), buffer, dynamo=False)
    return buffer.getvalue()


def _onnxruntime(model, x, onnx_bytes: bytes | None = None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count()
    session = onnxruntime.InferenceSession(onnx_bytes or _onnx_bytes(model, x), options,
                                           providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


CALIBRATION_SAMPLES = 8


def calibration_samples(shape) -> np.ndarray:
    """The int8 columns' calibration set: ``CALIBRATION_SAMPLES`` seeded N(0, 1) inputs of ``shape`` (batch
    dropped), what ``scripts/compile.py --dtype int8`` uses without ``--calibration``; every int8 backend gets the
    same ones, so the two quantizers differ only in how they quantize."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((CALIBRATION_SAMPLES, *tuple(shape)[1:])).astype("float32")


def _onnxruntime_int8(model, x):
    """ONNX Runtime's own static int8 (``quantize_static``: QDQ, per-channel symmetric int8 weights, int8
    activations from min/max) of the deployable equivalent, after ORT's recommended pre-processing (shape
    inference, graph optimisation: batch norm folded before quantization)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Samples(CalibrationDataReader):
        def __init__(self, name):
            self.feeds = iter([{name: sample[None]} for sample in calibration_samples(x.shape)])

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as folder:
        fp32, prepared, int8 = (os.path.join(folder, f"{n}.onnx") for n in ("fp32", "prepared", "int8"))
        with open(fp32, "wb") as f:
            f.write(_onnx_bytes(model, x))
        quant_pre_process(fp32, prepared)
        name = onnx.load(prepared).graph.input[0].name
        root = logging.getLogger()  # ORT's quantizer warns per call through the root logger ("Axis 1 is out-of-range
        level = root.level          # for weight ... bn1.weight": a BN vector has no per-channel axis, correctly)
        root.setLevel(logging.ERROR)
        try:
            quantize_static(prepared, int8, Samples(name), quant_format=QuantFormat.QDQ, per_channel=True)
        finally:
            root.setLevel(level)
        with open(int8, "rb") as f:
            return _onnxruntime(model, x, f.read())


def _convert(tool: str, command: list[str]) -> None:
    """Run a converter in its own process (a crash or a flood of log lines must not reach the table)."""
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-300:]}")


def _mnn(model, x):
    """MNN on the ONNX file, converted by the wheel's compiled converter (``_tools.mnnconvert``). Not through
    ``MNN.tools.mnnconvert``: that wrapper imports MNN's usage logger, which pip-installs an SDK to report to."""
    import MNN.expr
    import MNN.nn

    with tempfile.TemporaryDirectory() as folder:
        onnx_path, mnn_path = os.path.join(folder, "model.onnx"), os.path.join(folder, "model.mnn")
        with open(onnx_path, "wb") as f:
            f.write(_onnx_bytes(model, x))
        _convert("mnnconvert", [sys.executable, "-c", "import sys, _tools; _tools.mnnconvert(sys.argv)", "-f", "ONNX",
                                "--modelFile", onnx_path, "--MNNModel", mnn_path, "--bizCode", "tvm-ecnn"])
        runtime = MNN.nn.create_runtime_manager(({"backend": "CPU", "numThread": os.cpu_count()},))
        net = MNN.nn.load_module_from_file(mnn_path, [], [], runtime_manager=runtime)
    data = MNN.expr.placeholder(list(x.shape), MNN.expr.NCHW)
    data.write(x.numpy())
    return lambda: net.forward(data).read()


def _ncnn(model, x):
    """ncnn on the ONNX file, converted by pnnx (fp32 weights: ``fp16=0``); ncnn drops the batch axis."""
    import ncnn
    import pnnx

    with tempfile.TemporaryDirectory() as folder:
        onnx_path = os.path.join(folder, "model.onnx")
        with open(onnx_path, "wb") as f:
            f.write(_onnx_bytes(model, x))
        param, weights = os.path.join(folder, "model.ncnn.param"), os.path.join(folder, "model.ncnn.bin")
        _convert("pnnx", [pnnx.EXEC_PATH, onnx_path, f"inputshape=[{','.join(map(str, x.shape))}]", "fp16=0",
                          f"ncnnparam={param}", f"ncnnbin={weights}", f"ncnnpy={folder}/model_ncnn.py",
                          f"pnnxparam={folder}/model.pnnx.param", f"pnnxbin={folder}/model.pnnx.bin",
                          f"pnnxpy={folder}/model_pnnx.py", f"pnnxonnx={folder}/model.pnnx.onnx"])
        net = ncnn.Net()
        net.opt.num_threads = os.cpu_count()
        if net.load_param(param) != 0 or net.load_model(weights) != 0:
            raise RuntimeError("ncnn could not load the pnnx output")
    image = ncnn.Mat(x[0].numpy()).clone()

    def run():
        extractor = net.create_extractor()
        extractor.input("in0", image)
        _, out = extractor.extract("out0")
        return np.array(out)[None]

    return run


def _stock_tvm(model, x):
    """Relax's own importer and the target's default pipeline: plain ``tvm.compile`` would not even fuse."""
    from tvm.relax.frontend.torch import from_exported_program

    program = torch.export.export(deployable_equivalent(model, x), (x,))
    host = targets.get_target("host")
    return _vm_runner(tvm.compile(from_exported_program(program), host,
                                  relax_pipeline=relax.get_default_pipeline(host)), x)


def _tvm_ecnn(model, x, tuning_db=None):
    from .frontend import from_torch  # here, so that a broken importer fails one column, not the script

    return _vm_runner(build(from_torch(model, (x,)), "host", tuning_db), x)


def tuned_column(tuning_db) -> dict[str, Callable]:
    """The ``TUNED`` column: tvm-ecnn built with the host records of ``tuning_db`` (``scripts/tune.py --target
    host``), next to the untuned one; read and checked now, so that a wrong folder fails before any model."""
    records = AppliedRecords(tuning_db, targets.get_target("host"))
    return {TUNED: lambda model, x: _tvm_ecnn(model, x, records)}


def _tvm_ecnn_int8(model, x):
    """``tvm_ecnn.quantize`` on ``calibration_samples``, built for the host: what ``scripts/compile.py --dtype
    int8`` compiles."""
    from .frontend import from_torch
    from .quantize import quantize

    return _vm_runner(build(quantize(from_torch(model, (x,)), calibration_samples(x.shape)).mod, "host"), x)


BACKENDS: dict[str, Callable] = {
    "PyTorch eager": _eager,
    "torch.compile": _torch_compile,
    "ONNX Runtime": _onnxruntime,
    "MNN": _mnn,
    "ncnn": _ncnn,
    "stock TVM": _stock_tvm,
    "tvm-ecnn": _tvm_ecnn,
}
"""Column name -> ``prepare(model, x)`` returning a zero-argument call that runs one inference."""
INT8_BACKENDS: dict[str, Callable] = {
    "tvm-ecnn int8": _tvm_ecnn_int8,
    "ONNX Runtime int8": _onnxruntime_int8,
}
"""The int8 columns (``scripts/benchmark.py --int8``), same contract as ``BACKENDS``."""
EAGER, STOCK_TVM, ECNN, ECNN_INT8, ORT_INT8 = "PyTorch eager", "stock TVM", "tvm-ecnn", *INT8_BACKENDS
TUNED = "tvm-ecnn tuned"
AGREEMENT = 1e-3
"""A backend whose ``relative_error`` against eager exceeds this is marked as a mismatch."""
INT8_AGREEMENT = 0.1
"""The same for the int8 columns: quantization error is expected, a wrong kernel (errors of order 1) is not. The
compile summaries of the zoo's int8 builds stay under 0.07 (README, int8 section)."""


@dataclass
class Result:
    """One cell: the time in ms, the relative error against eager, or why the backend failed."""

    ms: float | None = None
    error: float | None = None
    failure: str | None = None
    mismatch: bool = False


def _numpy(output) -> np.ndarray:
    """First output of any backend (a tensor, or a tuple/list/Array holding it) as numpy."""
    while isinstance(output, (list, tuple, tvm.ir.Array)):
        output = output[0]
    return output.numpy() if hasattr(output, "numpy") else np.asarray(output)


def short_error(error: BaseException, limit: int = 80) -> str:
    """First line of an exception, cut to fit a table cell."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def prepare_backend(backend: str, model: nn.Module, x: torch.Tensor, reference: np.ndarray, columns=None
                    ) -> tuple[Callable[[], object] | None, Result]:
    """Build one backend (of ``BACKENDS``, ``INT8_BACKENDS`` or ``columns``, e.g. ``tuned_column``) and check its
    output against ``reference`` (eager's); never raises. The call is ``None`` when the backend failed (the
    ``Result`` says why)."""
    try:
        with torch.no_grad():
            run = {**BACKENDS, **INT8_BACKENDS, **(columns or {})}[backend](model, x)
            output = _numpy(run())
    except ImportError as error:
        return None, Result(failure=f"not installed ({error.name or error})")
    except Exception as error:  # noqa: BLE001  (a failing backend is a table cell, not a crash)
        return None, Result(failure=short_error(error))
    error = relative_error(output, reference)
    limit = INT8_AGREEMENT if backend in INT8_BACKENDS else AGREEMENT
    return run, Result(error=error, mismatch=not error <= limit)


BURST_S = 0.01
"""Each backend's turn in a round lasts this long (two runs at least), its fastest run counting: the previous
runtime's worker threads (ONNX Runtime's, ncnn's OpenMP) spin on the shared cores for a while after its turn, and
a runtime whose own threads slept wakes them first; the later runs of a turn are the steady state of an app that
keeps inferring (right after ncnn, single runs of SqueezeNet 1.1 took 2x their time)."""


def interleaved_min_ms(runs: dict[str, Callable[[], object]], warmup: int, rounds: int) -> dict[str, float]:
    """Per call, the fastest run over ``rounds`` rounds, the calls taking turns (``BURST_S`` each) within each
    round: a change of load on the shared cores then hits every column alike, and the minimum is the run least
    disturbed by it."""
    with torch.no_grad():
        for run in runs.values():
            for _ in range(warmup):
                run()
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(rounds):
            for name, run in runs.items():
                spent, count = 0.0, 0
                while count < 2 or spent < BURST_S:
                    start = time.perf_counter()
                    run()
                    seconds = time.perf_counter() - start
                    best[name] = min(best[name], seconds)
                    spent, count = spent + seconds, count + 1
    return {name: seconds * 1e3 for name, seconds in best.items()}


def input_shape(name: str, resolution: int | None = None, override=None) -> tuple[int, ...]:
    """``override`` if given, else the zoo default with ImageNet models at ``resolution`` (CIFAR stays 32)."""
    if override is not None:
        return tuple(override)
    shape = models.default_input_shape(name)
    return shape if resolution is None or shape != models.IMAGENET_SHAPE else (*shape[:2], resolution, resolution)


@dataclass
class ModelResult:
    """One row: the input shape used and a ``Result`` per backend."""

    shape: tuple[int, ...]
    results: dict[str, Result]


def benchmark_models(names, shape_of: Callable[[str], tuple], warmup: int, rounds: int,
                     backends=tuple(BACKENDS), columns=None) -> dict[str, ModelResult]:
    """Each of ``backends`` (names of ``BACKENDS`` / ``INT8_BACKENDS`` / ``columns``) on every model (seeded weights and
    input, eager's output as the reference), built and checked one after the other with one tqdm line saying
    which, then timed together (``interleaved_min_ms``)."""
    table = {}
    with tqdm(total=len(names) * (len(backends) + 1), unit="step", file=sys.stderr) as progress:
        for name in names:
            torch.manual_seed(0)
            model = models.get(name).eval()
            shape = shape_of(name)
            x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                reference = model(x).numpy()
            results, runs = {}, {}
            for backend in backends:
                progress.set_description(f"{name} / {backend}")
                run, results[backend] = prepare_backend(backend, model, x, reference, columns)
                if run is not None:
                    runs[backend] = run
                progress.update()
            progress.set_description(f"{name} / timing {len(runs)} backends")
            for backend, ms in interleaved_min_ms(runs, warmup, rounds).items():
                results[backend].ms = ms
            progress.update()
            table[name] = ModelResult(shape, results)
    return table


# --------------------------------------------------------------------------- rendering
def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub table padded to align in a terminal too, so the console output pastes as is."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (width + 2) for width in widths) + "|", *map(line, rows)])


def _ratio(ms: float, reference: Result) -> str:
    return f"{ms / reference.ms:.2g}×" if reference.ms is not None else "–"


def _cell(result: Result, eager: Result, stock: Result) -> str:
    if result.failure is not None:
        return f"✗ {result.failure}"
    cell = f"{result.ms:.2f} ms ({_ratio(result.ms, eager)} / {_ratio(result.ms, stock)})"
    return cell + (f" ≠ err {result.error:.1e}" if result.mismatch else "")


def models_table(table: dict[str, ModelResult]) -> str:
    """Models x backends: ms (time over eager / over stock TVM), and a last row with each
    column's largest relative error against eager."""
    backends = list(next(iter(table.values())).results) if table else []
    rows = []
    for name, entry in table.items():
        eager, stock = entry.results.get(EAGER, Result()), entry.results.get(STOCK_TVM, Result())
        size = "×".join(map(str, entry.shape[2:]))
        rows.append([name, size] + [_cell(entry.results[b], eager, stock) for b in backends])
    worst = []
    for backend in backends:
        errors = [e.results[backend].error for e in table.values() if e.results[backend].error is not None]
        worst.append(f"{max(errors):.1e}" if errors else "–")
    rows.append(["max rel. error vs eager", ""] + worst)
    return markdown_table(["model", "input"] + backends, rows)


def _over(entry: ModelResult, numerator: str, denominator: str) -> str:
    top, bottom = entry.results.get(numerator, Result()), entry.results.get(denominator, Result())
    return f"{top.ms / bottom.ms:.2f}×" if top.ms is not None and bottom.ms is not None else "–"


def ratio_line(table: dict[str, ModelResult], numerator: str, denominator: str) -> str:
    """``numerator / denominator: model r×, ...`` (< 1: the numerator column is faster)."""
    return f"{numerator} / {denominator}: " + ", ".join(f"{name} {_over(entry, numerator, denominator)}"
                                                          for name, entry in table.items())


def int8_table(table: dict[str, ModelResult]) -> str:
    """Per model: our fp32 and int8 and ONNX Runtime's int8 (ms, or why it failed), our int8 over our fp32
    and over ONNX Runtime's int8 (< 1: ours int8 is faster), and each int8 column's relative error against eager."""
    def ms(result: Result) -> str:
        return f"✗ {result.failure}" if result.failure is not None else f"{result.ms:.2f} ms"

    def error(result: Result) -> str:
        return "–" if result.error is None else f"{result.error:.3f}" + (" ≠" if result.mismatch else "")

    rows = []
    for name, entry in table.items():
        cells = [entry.results.get(b, Result(failure="not run")) for b in (ECNN, ECNN_INT8, ORT_INT8)]
        rows.append([name, "×".join(map(str, entry.shape[2:])), *map(ms, cells), _over(entry, ECNN_INT8, ECNN),
                     _over(entry, ECNN_INT8, ORT_INT8), error(cells[1]), error(cells[2])])
    return markdown_table(["model", "input", "tvm-ecnn fp32", ECNN_INT8, ORT_INT8, "ours int8 / ours fp32",
                           "ours int8 / ORT int8", "rel. error ours int8", "rel. error ORT int8"], rows)


def shift_conv_table(times: dict[str, float]) -> str:
    ratios = shift_conv_ratios(times)
    rows = [[label, f"{ms:.3f}", ""] for label, ms in times.items() if not label.startswith("shift_conv2d")]
    rows += [[shift_label(kind), f"{times[shift_label(kind)]:.3f}",
              f"{ratio:.3f}× (goal ≤ {SHIFT_GOALS[kind]}×{'' if ratio <= SHIFT_GOALS[kind] else ', missed'})"]
             for kind, ratio in ratios.items()]
    return markdown_table(["op", "min ms", "vs best 1x1 conv2d"], rows)


def host_description() -> str:
    """Where the numbers come from: CPU, threads, load (other processes share the cores) and versions."""
    def version(package):
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    mcpu = targets.get_target("host").attrs.get("mcpu", "?")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    peers = ", ".join(f"{p} {version(p)}" for p in ("onnxruntime", "mnn", "ncnn", "pnnx"))
    return (f"host {mcpu}, {os.cpu_count()} threads, load average {load}; torch {torch.__version__}, {peers}, "
            f"tvm {tvm.__version__}")
