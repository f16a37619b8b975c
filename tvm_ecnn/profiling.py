"""Where the time goes: a per-kernel profile of a compiled model against this machine's measured roofline.

``tvm_ecnn.profile("shiftresnet20")`` compiles the model with tvm-ecnn's pipeline for the host, runs it with a
VM instrument that times every call (TVM 0.27's Relax VM has no ``profile=True``), and reports per
kernel: time per inference, share of the total, GFLOP/s, GB/s and the fraction of the roofline.

* FLOPs per kernel come from the scheduled TIR PrimFunc itself (``s_tir.analysis.estimate_tir_flops``:
  loop extents x arithmetic ops, so a 1x1 conv with bias + ReLU counts ``2*MACs`` plus its epilogue);
  bytes are the sizes of the kernel's argument buffers (read once, written once: the compulsory
  traffic, no cache effects). Runtime builtins (allocations, shape checks) get 0 FLOPs and 0 bytes.
* The roofline is *measured* once per machine and thread count with two TVM kernels: an FMA loop on
  registers (12 independent vector chains per thread) and a streaming copy far larger than the caches.
  It is cached in ``~/.cache/tvm-ecnn/roofline.json`` (``TVM_ECNN_CACHE`` overrides the folder).
  ``fraction`` = roofline time ``max(flops / peak, bytes / bandwidth)`` over the measured time.

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

import numpy as np
import torch
import tvm
from tvm import relax
from tvm.s_tir.analysis import estimate_tir_flops
from tvm.script import tirx as T

import targets

from . import models
from .pipeline import relax_pipeline, tir_pipeline

__all__ = ["Roofline", "KernelStats", "Profile", "profile", "profile_module", "machine_roofline", "kernel_costs"]


# --------------------------------------------------------------------------- roofline
@dataclass
class Roofline:
    """Measured peak fp32 FMA throughput and streaming bandwidth of ``threads`` cores."""

    gflops: float
    gbs: float
    threads: int

    def seconds(self, flops: float, nbytes: float) -> float:
        return max(flops / (self.gflops * 1e9), nbytes / (self.gbs * 1e9))


_CHAINS, _LANES = 24, 16  # independent accumulators x AVX-512 lanes: enough to hide FMA latency on 2 ports


_METHOD = "fma 24x16 in registers"  # in the cache key: a roofline measured by an older loop is measured again


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
    """Run the FMA loop and the copy loop (best of 7) on ``threads`` TVM threads."""
    target = targets.get_target("host")
    fma = tvm.compile(_fma_kernel(threads, fma_iters), target)["main"]
    out = tvm.runtime.tensor(np.zeros((threads, _CHAINS, _LANES), "float32"))
    flops = 2.0 * threads * _CHAINS * _LANES * fma_iters
    gflops = flops / _best_seconds(lambda: fma(out)) / 1e9

    size = copy_mb * 2**20 // 4 // (64 * threads) * (64 * threads)
    copy = tvm.compile(_copy_kernel(threads, size), target)["main"]
    a = tvm.runtime.tensor(np.ones((threads, size // threads), "float32"))
    b = tvm.runtime.tensor(np.zeros((threads, size // threads), "float32"))
    gbs = 2.0 * 4 * size / _best_seconds(lambda: copy(a, b)) / 1e9  # read + write
    return Roofline(gflops, gbs, threads)


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


def kernel_costs(mod: tvm.IRModule) -> dict[str, tuple[float, int]]:
    """``{PrimFunc name: (FLOPs, bytes of its argument buffers)}`` of a lowered module. TVM's estimator counts
    floating-point operations only: an int8 kernel's integer multiply-adds are not in its FLOPs (its GFLOP/s are its
    fp32 epilogue's, and its fraction of the roofline is in effect its bandwidth's)."""
    costs = {}
    for var, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            try:
                flops = float(estimate_tir_flops(tvm.IRModule({"main": func})))
            except tvm.error.InternalError:  # tensorized kernels (x86 VNNI): TVM's estimator has no rule for vectors
                flops = 0.0
            costs[var.name_hint] = (flops, sum(_param_bytes(p) for p in func.params))
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
    bytes: int
    fraction: float  # of the roofline: roofline time / measured time
    builtin: bool = False

    @property
    def gflops_per_s(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0

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

        rows = [[k.name + (" (runtime)" if k.builtin else ""), str(k.calls), f"{k.seconds * 1e3:.4f}",
                 f"{k.share:.1%}", f"{k.gflops_per_s:.1f}", f"{k.gbytes_per_s:.1f}",
                 f"{k.fraction:.1%}" if not k.builtin else "–"] for k in self.kernels[:top]]
        r = self.roofline
        head = (f"{self.model} {'x'.join(map(str, self.input_shape))} on {self.target}: "
                f"{self.total_s * 1e3:.3f} ms in kernels (sum of per-kernel medians), {self.wall_s * 1e3:.3f} ms "
                f"end to end; roofline {r.gflops:.0f} GFLOP/s, {r.gbs:.1f} GB/s ({r.threads} threads, measured)")
        return head + "\n" + markdown_table(
            ["kernel", "calls", "ms", "share", "GFLOP/s", "GB/s", "of roofline"], rows)

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
        intensities = [k.flops / k.bytes for k in kernels if k.bytes and k.flops]
        low, high = min(intensities + [0.05]) / 2, max(intensities + [r.gflops / r.gbs]) * 2
        grid = np.geomspace(low, high, 200)
        roof.plot(grid, np.minimum(r.gflops, grid * r.gbs), color="black",
                  label=f"roofline: {r.gflops:.0f} GFLOP/s, {r.gbs:.0f} GB/s")
        for k in kernels:
            if k.bytes and k.flops:
                roof.scatter(k.flops / k.bytes, k.gflops_per_s, s=20 + 400 * k.share, alpha=0.6)
                if k.share >= 0.04:
                    roof.annotate(k.name[:28], (k.flops / k.bytes, k.gflops_per_s), fontsize=6)
        roof.set_xscale("log")
        roof.set_yscale("log")
        roof.set_xlabel("FLOP / byte (argument buffers)")
        roof.set_ylabel("GFLOP/s")
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
        flops, nbytes = (calls * cost for cost in costs.get(name, (0.0, 0)))  # the time is every call's too
        fraction = roofline.seconds(flops, nbytes) / seconds if seconds > 0 else 0.0
        kernels.append(KernelStats(name, calls, seconds, seconds / total if total else 0.0,
                                   flops, nbytes, fraction, builtin=name not in costs))
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
