"""Where the time goes: a per-kernel profile of a compiled model against this machine's measured roofline.

``tvm_ecnn.profile("shiftresnet20")`` compiles the model with tvm-ecnn's pipeline for the host, runs it with a
VM instrument that times every call (TVM 0.27's Relax VM has no ``profile=True``), and reports per
kernel: time per inference, share of the total, GFLOP/s, int8 GOP/s, GB/s and the fraction of the roofline.

* Costs per kernel come from the scheduled TIR PrimFunc itself. int8 ops: 2 per multiply-accumulate of two
  bytes (``_int8_macs``: widened byte products, and dot-product instructions such as ``vpdpbusd`` at 4 bytes
  per int32 lane), counted like FLOPs so that int8 and fp32 rates compare. FLOPs: the rest of what
  ``s_tir.analysis.estimate_tir_flops`` counts (loop extents x arithmetic ops, so a 1x1 conv with bias + ReLU
  counts ``2*MACs`` plus its epilogue; it fails on tensorized kernels, whose epilogue then counts 0). Bytes
  are the sizes of the kernel's argument buffers (read once, written once: the compulsory traffic, no cache
  effects). Runtime builtins (allocations, shape checks) get 0 ops and 0 bytes.
* The roofline is *measured* once per machine and thread count with three TVM kernels: an FMA loop and
  an int8 dot-product loop on registers (24 independent vector chains per thread) and a streaming copy far
  larger than the caches. It is cached in ``~/.cache/tvm-ecnn/roofline.json`` (``TVM_ECNN_CACHE`` overrides
  the folder). ``fraction`` = roofline time ``max(flops / peak + int8 ops / int8 peak, bytes / bandwidth)``
  over the measured time.

Host timings only; never quote them as phone speed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.s_tir.analysis import estimate_tir_flops
from tvm.script import tirx as T

import targets
from schedules.cpu_int8 import has_vnni

from . import models
from .pipeline import relax_pipeline, tir_pipeline

__all__ = ["Roofline", "KernelStats", "Profile", "profile", "profile_module", "machine_roofline", "kernel_costs",
           "Cost"]


# --------------------------------------------------------------------------- roofline
@dataclass
class Roofline:
    """Measured peak fp32 FMA and int8 dot-product throughput and streaming bandwidth of ``threads`` cores."""

    gflops: float
    int8_gops: float
    gbs: float
    threads: int

    def seconds(self, flops: float, nbytes: float, int8_ops: float = 0.0) -> float:
        """Both kinds of arithmetic share the vector units: their compute times add."""
        return max(flops / (self.gflops * 1e9) + int8_ops / (self.int8_gops * 1e9), nbytes / (self.gbs * 1e9))


_CHAINS, _LANES = 24, 16  # independent accumulators x AVX-512 lanes: enough to hide FMA latency on 2 ports


# in the cache key: a roofline measured by an older loop (or without the int8 peak) is measured again
_METHOD = "fma 24x16, int8 dot 24x16x4 in registers"
_BYTES = (23, 47, 61, 91)  # the int8 loop's constant operand, per int32 lane: the same 4 bytes in every lane


def _fma_kernel(threads: int, iters: int):
    """``acc = acc * 0.999 + 0.001`` on ``_CHAINS`` vectors. The multiplier is a constant, not a loaded
    scalar: with a load in the loop LLVM cannot keep the accumulators (a TVM workspace that may alias it) in
    registers, and a store per FMA measured a third of the peak (87 of 250 GFLOP/s on 2 Zen 5 cores)."""
    @T.prim_func
    def fma(out: T.Buffer((threads, _CHAINS, _LANES), "float32")):
        for t in T.parallel(threads):
            acc = T.alloc_buffer((_CHAINS, _LANES), "float32", scope="local")
            for c in T.unroll(_CHAINS):
                for lane in T.vectorized(_LANES):
                    acc[c, lane] = T.Cast("float32", c * _LANES + lane)
            for _ in range(iters):
                for c in T.unroll(_CHAINS):
                    for lane in T.vectorized(_LANES):
                        acc[c, lane] = acc[c, lane] * T.float32(0.999) + T.float32(1e-3)
            for c in T.unroll(_CHAINS):
                for lane in T.vectorized(_LANES):
                    out[t, c, lane] = acc[c, lane]

    return fma


def _dot4(acc, vnni: bool):
    """``acc + sum_k byte_k(acc) * _BYTES[k]`` per int32 lane, the bytes of ``acc`` unsigned: one ``vpdpbusd``
    where the target has AVX-512 VNNI, else the same arithmetic written out (whatever LLVM makes of it). The
    multiplicand is the accumulator itself: with loop-invariant operands LLVM would hoist the products."""
    data = T.reinterpret(acc, dtype=f"uint8x{4 * _LANES}")
    if vnni:
        packed = sum(b << 8 * k for k, b in enumerate(_BYTES))
        return T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id(f"llvm.x86.avx512.vpdpbusd.{32 * _LANES}"), acc, data,
            T.reinterpret(T.Broadcast(T.int32(packed), _LANES), dtype=f"int8x{4 * _LANES}"), dtype=f"int32x{_LANES}")
    return acc + sum(T.Cast(f"int32x{_LANES}", T.Shuffle([data], list(range(k, 4 * _LANES, 4))))
                     * T.Broadcast(T.int32(b), _LANES) for k, b in enumerate(_BYTES))


def _int8_dot_kernel(threads: int, iters: int, vnni: bool):
    """``_CHAINS`` vectors of ``_LANES`` int32 each take ``iters`` 4-byte dot products (``_dot4``)."""
    @T.prim_func
    def dot(out: T.Buffer((threads, _CHAINS, _LANES), "int32")):
        for t in T.parallel(threads):
            acc = T.alloc_buffer((_CHAINS, _LANES), "int32", scope="local")
            for c in T.unroll(_CHAINS):
                for lane in T.vectorized(_LANES):
                    acc[c, lane] = c * _LANES + lane
            for _ in range(iters):
                for c in T.unroll(_CHAINS):
                    acc[c, T.ramp(0, 1, _LANES)] = _dot4(acc[c, T.ramp(0, 1, _LANES)], vnni)
            for c in T.unroll(_CHAINS):
                for lane in T.vectorized(_LANES):
                    out[t, c, lane] = acc[c, lane]

    return dot


def _copy_kernel(threads: int, size: int):
    per_thread = size // threads

    @T.prim_func
    def copy(a: T.Buffer((threads, per_thread), "float32"), b: T.Buffer((threads, per_thread), "float32")):
        for t in T.parallel(threads):
            for i in T.serial(per_thread // 64):
                for lane in T.vectorized(64):
                    b[t, i * 64 + lane] = a[t, i * 64 + lane]

    return copy


def _best_seconds(run, rounds: int = 7) -> float:
    run()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def measure_roofline(threads: int, fma_iters: int = 200_000, copy_mb: int = 256) -> Roofline:
    """Run the FMA loop, the int8 dot loop and the copy loop (best of 7 each) on ``threads`` TVM threads."""
    target = targets.get_target("host")
    fma = tvm.compile(_fma_kernel(threads, fma_iters), target)["main"]
    out = tvm.runtime.tensor(np.zeros((threads, _CHAINS, _LANES), "float32"))
    flops = 2.0 * threads * _CHAINS * _LANES * fma_iters
    gflops = flops / _best_seconds(lambda: fma(out)) / 1e9

    dot = tvm.compile(_int8_dot_kernel(threads, fma_iters, has_vnni(target)), target)["main"]
    out = tvm.runtime.tensor(np.zeros((threads, _CHAINS, _LANES), "int32"))
    int8_gops = 4 * flops / _best_seconds(lambda: dot(out)) / 1e9  # 4 byte products per int32 lane

    size = copy_mb * 2**20 // 4 // (64 * threads) * (64 * threads)
    copy = tvm.compile(_copy_kernel(threads, size), target)["main"]
    a = tvm.runtime.tensor(np.ones((threads, size // threads), "float32"))
    b = tvm.runtime.tensor(np.zeros((threads, size // threads), "float32"))
    gbs = 2.0 * 4 * size / _best_seconds(lambda: copy(a, b)) / 1e9  # read + write
    return Roofline(gflops, int8_gops, gbs, threads)


def _cache_path() -> str:
    folder = os.environ.get("TVM_ECNN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "tvm-ecnn"))
    return os.path.join(folder, "roofline.json")


def machine_roofline(threads: int | None = None, refresh: bool = False) -> Roofline:
    """This machine's roofline for ``threads`` (default: TVM's, ``TVM_NUM_THREADS`` or all cores), measured
    on first use and cached per host, CPU and thread count."""
    threads = threads or int(os.environ.get("TVM_NUM_THREADS", os.cpu_count()))
    mcpu = targets.get_target("host").attrs.get("mcpu", "?")
    key = f"{platform.node()}/{platform.processor() or platform.machine()}/{mcpu}/{threads} threads/{_METHOD}"
    path = _cache_path()
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    if refresh or key not in cache:
        cache[key] = dataclasses.asdict(measure_roofline(threads))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(cache, f, indent=1)
    return Roofline(**cache[key])


# --------------------------------------------------------------------------- per-kernel costs
def _param_bytes(param) -> int:
    """Size of a buffer parameter (TVM 0.27's tirx params carry shape and dtype); 0 for scalars."""
    shape = getattr(param, "shape", None)
    if not shape:
        return 0
    return int(np.prod([int(d) for d in shape])) * tvm.DataType(str(param.dtype)).bits // 8


def _is_byte(expr) -> bool:
    dtype = expr.ty.dtype
    return dtype.bits == 8 and dtype.type_code in (0, 1)  # int8 / uint8


def _is_constant(expr) -> bool:
    return isinstance(expr, tirx.Broadcast) and isinstance(expr.value, tirx.IntImm)


def _children(node):
    """The TIR statements and expressions under ``node`` (its fields, by the FFI's reflection)."""
    info = type(node).__tvm_ffi_type_info__
    while info is not None:
        for field in info.fields:
            value = getattr(node, field.name)
            for item in value if isinstance(value, tvm_ffi.Array) else (value,):
                if isinstance(item, (tirx.Expr, tirx.Stmt)):
                    yield item
        info = info.parent_type_info


def _int8_macs(node) -> int:
    """Byte multiply-accumulates of one run of ``node``: a product of two bytes widened (per vector lane), or a
    call of an LLVM dot-product instruction (x86 ``vpdpbusd``, AArch64 ``sdot``: 4 bytes per int32 lane), except
    one with a constant byte operand (the VNNI sign correction, ``schedules/cpu_int8.py``: not the model's work).
    Loops multiply by their extent; of an if/else the larger branch counts."""
    if isinstance(node, tirx.For):
        body = _int8_macs(node.body)
        return body and int(node.extent) * body  # padding loops have symbolic extents, and no MACs
    if isinstance(node, tirx.IfThenElse):
        return max(_int8_macs(node.then_case), _int8_macs(node.else_case) if node.else_case else 0)
    if isinstance(node, tirx.Mul) and all(isinstance(x, tirx.Cast) and _is_byte(x.value) for x in (node.a, node.b)):
        return node.ty.dtype.lanes
    if isinstance(node, tvm.ir.Call) and node.op.name.startswith("tirx.call_llvm"):
        operands = [x for x in node.args[1:] if _is_byte(x)]
        if len(operands) == 2 and str(node.ty.dtype).startswith("int32") and not any(map(_is_constant, operands)):
            return operands[0].ty.dtype.lanes
    return sum(_int8_macs(child) for child in _children(node))


class Cost(NamedTuple):
    """One call of a kernel: fp32 (and other non-int8) FLOPs, int8 ops (2 per byte MAC), argument bytes."""

    flops: float
    int8_ops: float
    bytes: int


def kernel_costs(mod: tvm.IRModule) -> dict[str, Cost]:
    """``{PrimFunc name: Cost}`` of a lowered module. TVM's estimator counts a scalar int8 MAC as 2 ops too
    (multiply, add): those are taken out of the FLOPs, so each op is in exactly one column."""
    costs = {}
    for var, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            int8_ops = 2.0 * _int8_macs(func.body)
            try:
                flops = float(estimate_tir_flops(tvm.IRModule({"main": func}))) - int8_ops
            except tvm.error.InternalError:  # tensorized kernels (x86 VNNI): TVM's estimator has no rule for vectors
                flops = 0.0
            costs[var.name_hint] = Cost(flops, int8_ops, sum(_param_bytes(p) for p in func.params))
    return costs


# --------------------------------------------------------------------------- profile
@dataclass
class KernelStats:
    """One kernel (or runtime builtin): time per inference over all its calls, and its cost."""

    name: str
    calls: int
    seconds: float
    share: float
    flops: float
    int8_ops: float
    bytes: int
    fraction: float  # of the roofline: roofline time / measured time
    builtin: bool = False

    @property
    def gflops_per_s(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def int8_gops_per_s(self) -> float:
        return self.int8_ops / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def gbytes_per_s(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclass
class Profile:
    model: str
    input_shape: tuple[int, ...]
    target: str
    roofline: Roofline
    kernels: list[KernelStats]  # slowest first
    total_s: float  # sum of the kernels' medians: drops the load spikes that hit random kernels of a run
    wall_s: float  # median end-to-end time without the instrument

    def to_dict(self) -> dict:
        return {"model": self.model, "input_shape": list(self.input_shape), "target": self.target,
                "roofline": dataclasses.asdict(self.roofline), "total_s": self.total_s, "wall_s": self.wall_s,
                "kernels": [dataclasses.asdict(k) for k in self.kernels]}

    def table(self, top: int | None = None) -> str:
        from .benchmark import markdown_table

        int8 = any(k.int8_ops for k in self.kernels)  # an fp32 model's table keeps its columns
        rows = [[k.name + (" (runtime)" if k.builtin else ""), str(k.calls), f"{k.seconds * 1e3:.4f}",
                 f"{k.share:.1%}", f"{k.gflops_per_s:.1f}", *([f"{k.int8_gops_per_s:.1f}"] if int8 else []),
                 f"{k.gbytes_per_s:.1f}", f"{k.fraction:.1%}" if not k.builtin else "–"] for k in self.kernels[:top]]
        r = self.roofline
        head = (f"{self.model} {'x'.join(map(str, self.input_shape))} on {self.target}: "
                f"{self.total_s * 1e3:.3f} ms in kernels (sum of per-kernel medians), {self.wall_s * 1e3:.3f} ms "
                f"end to end; roofline {r.gflops:.0f} GFLOP/s fp32, {r.int8_gops:.0f} GOP/s int8, {r.gbs:.1f} GB/s "
                f"({r.threads} threads, measured)")
        return head + "\n" + markdown_table(
            ["kernel", "calls", "ms", "share", "GFLOP/s", *(["int8 GOP/s"] if int8 else []), "GB/s", "of roofline"],
            rows)

    def plot(self, path: str, top: int = 20) -> None:
        """Two panels: the slowest kernels' times, and every kernel on the measured roofline."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        kernels = [k for k in self.kernels if not k.builtin]
        fig, (bars, roof) = plt.subplots(1, 2, figsize=(15, max(4.0, 0.3 * min(top, len(self.kernels)) + 1.5)))
        shown = self.kernels[:top][::-1]
        bars.barh([k.name[:40] for k in shown], [k.seconds * 1e3 for k in shown], color="tab:blue")
        for i, k in enumerate(shown):
            bars.text(k.seconds * 1e3, i, f" {k.share:.0%}", va="center", fontsize=7)
        bars.set_xlabel("ms per inference")
        bars.set_title(f"{self.model} {'x'.join(map(str, self.input_shape))}: {self.total_s * 1e3:.2f} ms in kernels")
        bars.tick_params(axis="y", labelsize=7)

        r = self.roofline
        int8 = any(k.int8_ops for k in kernels)
        points = [k for k in kernels if k.bytes and (k.flops + k.int8_ops)]
        intensities = [(k.flops + k.int8_ops) / k.bytes for k in points]
        low, high = min(intensities + [0.05]) / 2, max(intensities + [(r.int8_gops if int8 else r.gflops) / r.gbs]) * 2
        grid = np.geomspace(low, high, 200)
        roof.plot(grid, np.minimum(r.gflops, grid * r.gbs), color="black",
                  label=f"roofline: {r.gflops:.0f} GFLOP/s fp32, {r.gbs:.0f} GB/s")
        if int8:
            roof.plot(grid, np.minimum(r.int8_gops, grid * r.gbs), color="black", linestyle="--",
                      label=f"int8 roofline: {r.int8_gops:.0f} GOP/s")
        for k, intensity in zip(points, intensities):
            rate = (k.flops + k.int8_ops) / k.seconds / 1e9
            roof.scatter(intensity, rate, s=20 + 400 * k.share, alpha=0.6, marker="^" if k.int8_ops else "o")
            if k.share >= 0.04:
                roof.annotate(k.name[:28], (intensity, rate), fontsize=6)
        roof.set_xscale("log")
        roof.set_yscale("log")
        roof.set_xlabel("op / byte (argument buffers)")
        roof.set_ylabel("GOP/s (fp32 FLOPs + int8 ops; int8 kernels ^)" if int8 else "GFLOP/s")
        roof.set_title("kernels on the measured roofline (area ~ share of time)")
        roof.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    def __str__(self) -> str:
        return self.table()


class _CallTimer:
    """VM instrument: wall time of every call, per function symbol, for the current run."""

    def __init__(self):
        self.runs: list[dict[str, list[float]]] = []
        self._start: dict[str, float] = {}

    def new_run(self) -> None:
        self.runs.append(defaultdict(list))

    def __call__(self, func, symbol, before_run, ret_value, *args):
        now = time.perf_counter()
        if before_run:
            self._start[symbol] = now
        else:
            self.runs[-1][symbol].append(now - self._start.pop(symbol))
        return 0  # relax.VMInstrumentReturnKind.NO_OP


def profile_module(mod: tvm.IRModule, inputs: list[np.ndarray], target="host", repeat: int = 20,
                   model: str = "module", roofline: Roofline | None = None) -> Profile:
    """Compile ``mod`` as ``pipeline.build`` does and profile ``repeat`` runs of ``main`` (per-kernel medians)."""
    target = targets.get_target(target)
    if target.kind.name != "llvm":
        raise ValueError(f"profile: only host (llvm) targets can be timed here, not {target.kind.name!r}")
    lowered = relax_pipeline(target)(mod)
    costs = kernel_costs(lowered)
    executable = tvm.compile(lowered, target, relax_pipeline=None, tir_pipeline=tir_pipeline(target))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    args = [tvm.runtime.tensor(np.asarray(x)) for x in inputs]
    wall = float(np.median([_best_seconds(lambda: vm["main"](*args), rounds=1) for _ in range(repeat)]))

    timer = _CallTimer()
    vm.set_instrument(tvm.runtime.convert(timer) if hasattr(tvm.runtime, "convert") else timer)
    for _ in range(repeat + 1):
        timer.new_run()
        vm["main"](*args)
    runs = timer.runs[1:]  # the first run warms the allocator and caches
    roofline = roofline or machine_roofline()
    medians = {name: float(np.median([sum(run.get(name, [0.0])) for run in runs])) for name in runs[0]}
    total = sum(medians.values())
    kernels = []
    for name, seconds in medians.items():
        calls = len(runs[0][name])
        flops, int8_ops, nbytes = (calls * c for c in costs.get(name, Cost(0.0, 0.0, 0)))  # every call's time
        fraction = roofline.seconds(flops, nbytes, int8_ops) / seconds if seconds > 0 else 0.0
        kernels.append(KernelStats(name, calls, seconds, seconds / total if total else 0.0,
                                   flops, int8_ops, nbytes, fraction, builtin=name not in costs))
    kernels.sort(key=lambda k: k.seconds, reverse=True)
    shape = tuple(np.asarray(inputs[0]).shape) if inputs else ()
    return Profile(model, shape, f"llvm -mcpu={target.attrs.get('mcpu', '?')}", roofline, kernels, total, wall)


def profile(model, target="host", resolution: int | None = None, input_shape=None, repeat: int = 20,
            roofline: Roofline | None = None, dtype: str = "fp32", calibration=None) -> Profile:
    """Profile a zoo model by name (seeded weights, ImageNet models at ``resolution``) or an ``nn.Module``
    (then ``input_shape`` is required). ``dtype="int8"``: the model quantized as ``compile.py --dtype int8``
    does (``calibration``: a file or array of inputs; None: random inputs, announced)."""
    if dtype not in ("fp32", "int8"):
        raise ValueError(f"profile: dtype must be fp32 or int8, got {dtype!r}")
    from .benchmark import input_shape as zoo_shape
    from .frontend import from_torch

    if isinstance(model, str):
        name = model
        shape = zoo_shape(name, resolution, input_shape)
        torch.manual_seed(0)
        module = models.get(name).eval()
    else:
        if input_shape is None:
            raise ValueError("profile: input_shape is required when model is an nn.Module")
        name, module, shape = type(model).__name__, model.eval(), tuple(input_shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    mod = from_torch(module, (x,))
    if dtype == "int8":
        from .quantize import quantize

        mod, name = quantize(mod, calibration).mod, f"{name} (int8)"
    return profile_module(mod, [x.numpy()], target, repeat, model=name, roofline=roofline)
