"""Per-layer cost model of a PyTorch CNN on a Snapdragon preset: is it *practically* efficient?

``analyze(model, input_shape, target="865")`` runs one forward pass of a random input with hooks
on every leaf module and reports, per layer, parameters, MACs, bytes moved and a roofline
latency ``max(2*MACs / peak_flops, bytes / bandwidth)`` for the preset's CPU or GPU. Totals add
model size in fp32/fp16/int8 and the arithmetic intensity. Shift networks show their trade
here: their spatial ops cost no MACs but still move every activation through memory.

Conventions (kept simple on purpose, so numbers are comparable across models):

* MACs: convolutions ``out_elems * in_channels/groups * kernel_area`` (depthwise included),
  linear ``out_elems * in_features``; bias adds are not counted. BatchNorm counts 0 MACs (it is
  folded into the preceding convolution at deployment); activations, pooling, shifts (grouped,
  sparse and active; ASL's bilinear taps are memory-bound anyway) and dropout count 0.
* Bytes: input + output activations + the layer's parameters, all in ``dtype``. Pure views and
  inference no-ops (``Identity``, ``Flatten``, ``Dropout``) move 0 bytes. No fusion is assumed,
  so this is an upper bound on traffic; functional ops inside ``forward`` (residual adds,
  ``torch.cat``) are not modules and are not seen.
* Latency: per layer roofline; the total is the sum over layers (layers run one after another).
* Sizes: parameters only (BN running statistics fold away), MB = 2**20 bytes, the convention of
  the SqueezeNet paper's "4.8 MB". With ``dtype="int8"`` the int8 size is not ``params x 1 B`` but
  what ``scripts/compile.py --dtype int8`` stores (``int8_plan``: the quantizer's own rewrite on the
  imported model: int8 weights, int32 biases, fp32 requantize scales, and the weights of the ops it
  leaves in float, which are listed).

The MAC/parameter counting (``profile_layers``, ``count_macs``, ``count_params``) needs no TVM;
only ``analyze`` imports ``targets`` for the roofline numbers.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["LayerStats", "Totals", "Report", "analyze", "profile_layers", "count_macs", "count_params",
           "layer_macs", "resolve_unit", "normalize_dtype", "apply_roofline", "DTYPE_BYTES"]

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
_DTYPE_ALIASES = {"fp32": ("fp32", "float32", "f32"), "fp16": ("fp16", "float16", "f16", "half"),
                  "int8": ("int8", "i8")}
_NO_TRAFFIC = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)
_GPU_WORDS = ("adreno", "gpu", "opencl", "vulkan", "texture")
_CPU_WORDS = ("cpu", "kryo", "cortex", "llvm", "aarch64", "arm")
MB = 2 ** 20


@dataclass
class LayerStats:
    """One leaf-module call. Times are in seconds (0 until a roofline is applied)."""

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int
    bytes: int
    compute_s: float = 0.0
    memory_s: float = 0.0
    latency_s: float = 0.0
    bound: str = ""  # "compute" or "memory"


@dataclass
class Totals:
    params: int
    size_fp32_mb: float
    size_fp16_mb: float
    size_int8_mb: float
    macs: int
    bytes: int
    latency_s: float
    arithmetic_intensity: float  # FLOPs (2 * MACs) per byte moved
    ridge_point: float  # FLOPs per byte at which the unit turns compute-bound
    peak_gflops: float
    bandwidth_gbs: float
    unattributed_params: int = 0  # parameters outside any called leaf module
    int8_float_ops: dict[str, int] | None = None  # dtype int8: ops the quantizer leaves in fp32 (op -> count)


@dataclass
class Report:
    model: str
    input_shape: tuple[int, ...]
    target: str
    unit: str
    dtype: str
    layers: list[LayerStats]
    total: Totals
    top: int = 15

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "input_shape": list(self.input_shape), "target": self.target,
            "unit": self.unit, "dtype": self.dtype,
            "layers": [dataclasses.asdict(row) for row in self.layers],
            "total": dataclasses.asdict(self.total),
        }

    def heaviest(self, n: int | None = None) -> list[LayerStats]:
        """The ``n`` layers with the largest roofline latency (MACs break ties), heaviest first."""
        n = self.top if n is None else n
        return sorted(self.layers, key=lambda r: (r.latency_s, r.macs, r.bytes), reverse=True)[:n]

    def table(self, top: int | None = None) -> str:
        """Aligned text table of the heaviest layers, then the totals."""
        rows = self.heaviest(top)
        header = ("layer", "type", "output", "params", "MACs", "moved", "latency", "bound")
        body = [(r.name, r.type, "x".join(map(str, r.output_shape)), _si(r.params), _si(r.macs),
                 _bytes(r.bytes), _seconds(r.latency_s), r.bound) for r in rows]
        widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
        right = {3, 4, 5, 6}

        def fmt(line: Sequence[str]) -> str:
            return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip()

        t = self.total
        shape = "x".join(map(str, self.input_shape))
        lines = [f"{self.model} @ {shape} on {self.target} ({self.unit}, {self.dtype}): "
                 f"top {len(rows)} of {len(self.layers)} layers by roofline latency",
                 fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body)]
        if len(self.layers) > len(rows):
            lines.append(f"... {len(self.layers) - len(rows)} more layers")
        lines += [
            "",
            f"params      {t.params:,} ({_si(t.params)})",
            f"model size  fp32 {t.size_fp32_mb:.2f} MB | fp16 {t.size_fp16_mb:.2f} MB | int8 {t.size_int8_mb:.2f} MB"
            + (" (as compiled: int8 weights, int32 biases, fp32 requantize scales)"
               if t.int8_float_ops is not None else ""),
            *([f"in float    {_ops(t.int8_float_ops)} (int8 build: dequantize -> fp32 op -> quantize)"]
              if t.int8_float_ops is not None else []),
            f"MACs        {t.macs:,} ({_si(t.macs)})",
            f"moved       {_bytes(t.bytes)} ({self.dtype}, no fusion)",
            f"intensity   {t.arithmetic_intensity:.2f} FLOP/B (ridge point {t.ridge_point:.1f} FLOP/B)",
            f"latency     {_seconds(t.latency_s)} roofline sum "
            f"({t.peak_gflops:g} GFLOPS, {t.bandwidth_gbs:g} GB/s)",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# --------------------------------------------------------------------------- pure counting
def layer_macs(module: nn.Module, inputs: Sequence[torch.Tensor], output: torch.Tensor) -> int:
    """Multiply-accumulates of one call of a leaf ``module`` (see the module docstring)."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return inputs[0].numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvNd):
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared tensors once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _random_input(input_shape: Sequence[int]) -> torch.Tensor:
    """A fixed random input that leaves the global RNG untouched."""
    return torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0))


def normalize_dtype(dtype: str) -> str:
    """"fp32"/"fp16"/"int8", also accepting TVM spellings such as "float16"."""
    for short, aliases in _DTYPE_ALIASES.items():
        if dtype in aliases:
            return short
    raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")


def profile_layers(model: nn.Module, input_shape: Sequence[int], dtype: str = "fp32") -> tuple[list[LayerStats], int]:
    """Rows (without latency) for every leaf-module call of one forward pass, and the number of
    parameters not attributed to any row. Runs in eval mode under ``no_grad``."""
    width = DTYPE_BYTES[normalize_dtype(dtype)]
    rows: list[LayerStats] = []
    counted: set[int] = set()  # parameters already attributed (module called twice, shared weights)

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: Any) -> None:
            ins, outs = list(_tensors(inputs)), list(_tensors(output))
            own = [p for p in module.parameters() if id(p) not in counted]
            counted.update(id(p) for p in own)
            params = sum(p.numel() for p in own)
            weights = sum(p.numel() for p in module.parameters())
            moved = 0 if isinstance(module, _NO_TRAFFIC) else \
                width * (sum(t.numel() for t in ins) + sum(t.numel() for t in outs) + weights)
            rows.append(LayerStats(
                name=name, type=type(module).__name__,
                input_shape=tuple(ins[0].shape) if ins else (),
                output_shape=tuple(outs[0].shape) if outs else (),
                params=params, macs=layer_macs(module, ins, outs[0]) if outs else 0, bytes=moved,
            ))
        return record

    handles = [m.register_forward_hook(hook(name or type(m).__name__))
               for name, m in model.named_modules() if next(m.children(), None) is None]
    modes = {m: m.training for m in model.modules()}
    reference = next(model.parameters(), None)
    x = _random_input(input_shape)
    if reference is not None and reference.is_floating_point():
        x = x.to(reference.device, reference.dtype)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for m, training in modes.items():
            m.training = training
        for h in handles:
            h.remove()
    unattributed = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()
                       if id(p) not in counted)
    return rows, unattributed


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Total MACs of one forward pass at ``input_shape`` (no TVM needed)."""
    return sum(row.macs for row in profile_layers(model, input_shape)[0])


# --------------------------------------------------------------------------- roofline
def resolve_unit(target: Any, unit: str | None = None) -> str:
    """``unit`` if given; else "gpu" for Adreno targets, "cpu" for CPU ones (``snapdragon/*-cpu``,
    ``arm``, ``aarch64-linux``), and "gpu" for a bare SoC key (the seed's GFLOPS figure is the
    GPU's). Names are read by their words, so this needs no TVM; a ``tvm.target.Target`` is
    asked through its keys."""
    if unit is not None:
        if unit not in ("cpu", "gpu"):
            raise ValueError(f"unit must be 'cpu' or 'gpu', got {unit!r}")
        return unit
    if not isinstance(target, str):
        import targets

        return "gpu" if targets.is_adreno(target) else "cpu"
    lowered = target.lower()
    if any(word in lowered for word in _GPU_WORDS):
        return "gpu"
    if any(word in lowered for word in _CPU_WORDS):
        return "cpu"
    return "gpu"


def _peak_gflops(peaks: dict, dtype: str, where: str) -> float:
    for key in _DTYPE_ALIASES[dtype]:
        if key in peaks:
            return float(peaks[key])
    raise ValueError(f"{where} has no peak for {dtype}; it lists {sorted(peaks)}")


def apply_roofline(rows: Iterable[LayerStats], peak_gflops: float, bandwidth_gbs: float) -> None:
    """Fill each row's compute/memory time, latency = their max, and which one bounds it."""
    for row in rows:
        row.compute_s = 2 * row.macs / (peak_gflops * 1e9)
        row.memory_s = row.bytes / (bandwidth_gbs * 1e9)
        row.latency_s = max(row.compute_s, row.memory_s)
        row.bound = "" if row.latency_s == 0 else ("compute" if row.compute_s >= row.memory_s else "memory")


def int8_plan(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, dict[str, int]]:
    """``(weight bytes, ops left in float)`` of ``model``'s int8 build: ``tvm_ecnn.quantize``'s rewrite on the
    ``from_torch`` import, as ``scripts/compile.py --dtype int8`` runs it, with placeholder activation ranges
    instead of a calibration run (what is stored and what stays float do not depend on the scales)."""
    from tvm import relax

    from .frontend import from_torch
    from .quantize import _weight_bytes
    from .quantize.calibration import tensor_vars
    from .quantize.rewrite import Int8Rewrite

    mod = from_torch(model.eval(), (_random_input(input_shape),))
    main = mod["main"]
    rewrite = Int8Rewrite(main, {var: (-1.0, 1.0) for var in [main.params[0], *tensor_vars(main)]})
    mod = mod.clone()
    mod["main"] = rewrite.run()
    return _weight_bytes(relax.transform.DeadCodeElimination()(mod)["main"]), dict(rewrite.float_ops)


def analyze(model: nn.Module | str, input_shape: Sequence[int] | None = None, target: Any = "865",
            unit: str | None = None, dtype: str = "fp32", top: int = 15) -> Report:
    """Profile ``model`` (a module, or a registered name built with random weights) at
    ``input_shape`` (default: the registered model's) against ``targets.preset_for(target)``:
    a SoC key ("865"), a ``snapdragon/*`` name or alias, or such a ``tvm.target.Target``."""
    import targets  # imports tvm: only needed for the roofline numbers

    label = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        from . import models

        if input_shape is None:
            input_shape = models.default_input_shape(model)
        model = models.get(model)
    if input_shape is None:
        raise ValueError("input_shape is required for a model passed as a module")
    input_shape = tuple(int(d) for d in input_shape)
    dtype = normalize_dtype(dtype)
    unit = resolve_unit(target, unit)
    roofline = targets.preset_for(target).roofline(unit)
    peak = _peak_gflops(dict(roofline.peak_gflops), dtype, f"{target} {unit}")
    bandwidth = float(roofline.bandwidth_gbs)

    rows, unattributed = profile_layers(model, input_shape, dtype)
    apply_roofline(rows, peak, bandwidth)
    params = sum(r.params for r in rows) + unattributed
    macs = sum(r.macs for r in rows)
    moved = sum(r.bytes for r in rows)
    int8_bytes, float_ops = int8_plan(model, input_shape) if dtype == "int8" else (params, None)
    total = Totals(
        params=params,
        size_fp32_mb=params * 4 / MB, size_fp16_mb=params * 2 / MB, size_int8_mb=int8_bytes / MB,
        macs=macs, bytes=moved, latency_s=sum(r.latency_s for r in rows),
        arithmetic_intensity=2 * macs / moved if moved else 0.0,
        ridge_point=peak / bandwidth, peak_gflops=peak, bandwidth_gbs=bandwidth,
        unattributed_params=unattributed, int8_float_ops=float_ops,
    )
    target_label = target if isinstance(target, str) else str(getattr(target, "tag", "") or target)
    return Report(label, input_shape, target_label, unit, dtype, rows, total, top)


# --------------------------------------------------------------------------- formatting
def _si(n: float) -> str:
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return f"{n:g}"


def _bytes(n: float) -> str:
    for scale, suffix in ((MB, " MB"), (2 ** 10, " KB")):
        if n >= scale:
            return f"{n / scale:.2f}{suffix}"
    return f"{n:g} B"


def _ops(counts: dict[str, int]) -> str:
    """``{"relax.nn.relu": 18}`` as the compile summary's ``in float`` line writes it."""
    return ", ".join(f"{op.removeprefix('relax.')} x{n}" for op, n in sorted(counts.items())) or "none"


def _seconds(s: float) -> str:
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.2f} us"
