"""``custom_convert_map`` entries: every shift op torch can hand us becomes an ``R.ecnn.*`` call.

Handled ops (map keys drop the namespace, so ``ecnn::shift2d`` and ``torchshifts::shift2d`` share
``"shift2d.default"`` and are told apart by ``node.target.namespace``):

* ``ecnn::shift2d / sparse_shift2d / active_shift2d``: our ``tvm_ecnn.nn`` modules;
* ``torchshifts::shift2d`` in both of its schemas (``(input, weights[C, 2], padding_mode,
  active_flag)`` up to 2.3, ``(input, weights, borders, padding_mode, active_flag)`` from 2.5) and
  ``ecnn_import::torchshifts_shift2d``, which tracing a model that uses the package produces
  (``torchshifts.py``, with its semantics). Integer offsets are ``-round(weights)``, active ones
  ``weights - 2 * floor(weights)``; ``borders`` crops the output. Padding modes zeros and periodic
  are supported (border/reflect/symmetric are not);
* ``ecnn_import::int_shift2d / bilinear_shift2d``: what the torch-side recognisers produce;
* ``aten::grid_sampler_2d``: TVM 0.27 passes torch's ``(N, H, W, 2)`` grid where Relax expects
  ``(N, 2, H, W)`` (notes bug E); this converter transposes it.
* ``aten::adaptive_max_pool2d`` (``nn.AdaptiveMaxPool2d``), which TVM 0.27 has no converter for: a
  ``max_pool2d`` when the output size divides the input, else torch's adaptive windows (rows
  ``floor(i*H/oh) .. ceil((i+1)*H/oh)``), reduced rows first, then columns (max is separable). Only
  the values: a model that uses the indices (``return_indices=True``) is refused.

Every integer table goes through one helper, which prefers ``shift2d`` when the table is a
grouped one and falls back to ``sparse_shift2d`` with an int32 offsets constant. Constant offsets
are checked first: NaN, infinity or a magnitude of 2**31 or more raises a ``ValueError`` naming
the layer and the argument (they would wrap in int32).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import fx
from tvm import relax

import relay_ops
from tvm_ecnn.compiler_pass.fx_graph import ExportedGraph, module_path, module_type
from tvm_ecnn.compiler_pass.shift_tables import channels_moved, match_grouped
from tvm_ecnn.nn.offsets import grouped_shift_offsets

from .report import RewriteReport
from .torchshifts import PADDING_MODES as TORCHSHIFTS_MODES, crop_window

TORCHSHIFTS_PADDING = {0: "zeros", 2: "circular"}
OFFSET_LIMIT = 2**31  # offsets become int32 (table entries, bilinear corner indices)
GRID_METHODS = {0: "bilinear", 1: "nearest", 2: "bicubic"}
GRID_PADDING = {0: "zeros", 1: "border", 2: "reflection"}


def _namespace(node: fx.Node) -> str:
    return getattr(node.target, "namespace", "aten")


def shape_hw(node: fx.Node) -> tuple[int, int]:
    return tuple(int(d) for d in node.meta["val"].shape[2:])


def _torchshifts_args(node: fx.Node) -> tuple:
    """``(input, weights, borders, padding_mode, active_flag)`` of any torchshifts schema (``borders``: ints or a node)."""
    if len(node.args) == 4:  # torchshifts <= 2.3
        x, weights, padding_mode, active = node.args
        return x, weights, [], padding_mode, active
    return tuple(node.args)


class ShiftConverters:
    """Converters bound to one exported graph (for constant offsets) and one report."""

    OWNED = {  # map key -> (namespaces whose op of that name we convert, converter method)
        "shift2d.default": (("ecnn", "torchshifts"), "_shift2d"),
        "torchshifts_shift2d.default": (("ecnn_import",), "_torchshifts_shift2d"),
        "sparse_shift2d.default": (("ecnn",), "_sparse_shift2d"),
        "active_shift2d.default": (("ecnn",), "_active_shift2d"),
        "int_shift2d.default": (("ecnn_import",), "_int_shift2d"),
        "bilinear_shift2d.default": (("ecnn_import",), "_bilinear_shift2d"),
        "grid_sampler_2d.default": (("aten",), "_grid_sampler_2d"),
        "adaptive_max_pool2d.default": (("aten",), "_adaptive_max_pool2d"),
    }

    def __init__(self, graph: ExportedGraph, report: RewriteReport):
        self.graph = graph
        self.report = report

    def convert_map(self) -> dict:
        return {key: getattr(self, method) for key, (_, method) in self.OWNED.items()}

    # ------------------------------------------------------------------ what cannot be converted
    def unsupported(self, node: fx.Node) -> str | None:
        """Why a node whose map key we own cannot be converted (checked before converting)."""
        name, namespace = node.target.__name__, _namespace(node)
        if name not in self.OWNED:
            return None
        if namespace not in self.OWNED[name][0]:
            return f"no converter for {namespace}::{name} (the map key is shared with {self.OWNED[name][0]})"
        if name == "sparse_shift2d.default" and self.graph.is_dynamic(node.args[1]):
            return "the sparse shift needs constant offsets (they depend on the model's inputs here)"
        if namespace == "torchshifts" or name == "torchshifts_shift2d.default":
            return self._torchshifts_unsupported(node)
        if name == "adaptive_max_pool2d.default" and any(u.args[1] != 0 and u.users for u in node.users):
            return "the indices of an adaptive max pool (return_indices=True) are not supported, only its values"
        return None

    def _torchshifts_unsupported(self, node: fx.Node) -> str | None:
        _, weights, borders, padding_mode, active = _torchshifts_args(node)
        if padding_mode not in TORCHSHIFTS_PADDING:
            mode = TORCHSHIFTS_MODES.get(padding_mode, "unknown")
            return f"torchshifts padding_mode {padding_mode} ({mode}; only 0 zeros and 2 periodic are supported)"
        if self.graph.is_dynamic(weights) or self.graph.is_dynamic(borders):
            return "torchshifts weights and borders must be constant"
        if TORCHSHIFTS_PADDING[padding_mode] == "circular":
            if active:
                return "active torchshifts shift with periodic padding (bilinear shifts zero-pad only)"
            height, width = node.args[0].meta["val"].shape[2:]
            if match_grouped(self._torchshifts_table(node), (int(height), int(width))) is None:
                return "periodic torchshifts shift whose offsets are not a grouped table (only zero padding per channel)"
        return None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _offsets(node: fx.Node, argument: str, values) -> np.ndarray:
        """Constant offsets ``values`` of ``node``'s ``argument`` as a float64 ``[C, 2]`` table,
        refused when they cannot be int32 pixel offsets."""
        table = np.asarray(torch.as_tensor(values).detach().to(torch.float64)).reshape(-1, 2)
        bad = ~np.isfinite(table) | (np.abs(table) >= OFFSET_LIMIT)
        if bad.any():
            channel, axis = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{module_path(node) or '<model>'} ({module_type(node)}): {argument} of channel {channel} "
                f"({'dy' if axis == 0 else 'dx'}) is {table[channel, axis]}; shift offsets must be finite and "
                f"smaller than 2**31 in magnitude"
            )
        return table

    def _emit(self, node: fx.Node, importer, call: relax.Expr, moved: int, default_pattern: str) -> relax.Var:
        var = importer.block_builder.emit(call)
        pattern = node.meta.get("ecnn_pattern", default_pattern)
        self.report.add(pattern, module_path(node), moved, call.op.name.rsplit(".", 1)[-1])
        return var

    def _emit_int_shift(self, node, importer, table, padding_mode: str, default_pattern: str) -> relax.Var:
        """``shift2d`` if ``table`` is a grouped table, else ``sparse_shift2d`` (zero padding only)."""
        x = importer.env[node.args[0]]
        table = np.asarray(table, dtype=np.int64).reshape(-1, 2)
        height, width = (int(d) for d in x.ty.shape.values[2:])
        grouped = match_grouped(table, (height, width) if padding_mode == "circular" else None)
        if grouped is not None:
            call = relay_ops.shift2d(x, *grouped, padding_mode=padding_mode)
        elif padding_mode == "zeros":
            call = relay_ops.sparse_shift2d(x, relax.const(table.astype("int32")))
        else:  # unsupported() and the recognisers keep these away
            raise NotImplementedError("a circular shift needs a grouped offsets table")
        return self._emit(node, importer, call, channels_moved(table), default_pattern)

    def _emit_active_shift(self, node, importer, offsets: relax.Expr, moved: int, stride, padding, pattern):
        call = relay_ops.active_shift2d(importer.env[node.args[0]], offsets, stride, padding)
        return self._emit(node, importer, call, moved, pattern)

    def _torchshifts_table(self, node: fx.Node) -> np.ndarray:
        return -np.round(self._offsets(node, "weights", self.graph.value(_torchshifts_args(node)[1]))).astype(np.int64)

    # ------------------------------------------------------------------ converters
    def _shift2d(self, node: fx.Node, importer) -> relax.Var:
        if _namespace(node) == "torchshifts":
            return self._torchshifts_shift2d(node, importer)
        x, kernel_size, dilation, mapping = node.args
        call = relay_ops.shift2d(importer.env[x], kernel_size, dilation, mapping)
        channels = int(node.meta["val"].shape[1])
        moved = channels_moved(grouped_shift_offsets(channels, kernel_size, dilation, mapping))
        return self._emit(node, importer, call, moved, "ecnn::shift2d")

    def _sparse_shift2d(self, node: fx.Node, importer) -> relax.Var:
        table = np.round(self._offsets(node, "offsets", self.graph.value(node.args[1])))  # half-to-even, like the op
        return self._emit_int_shift(node, importer, table, "zeros", "ecnn::sparse_shift2d")

    def _active_shift2d(self, node: fx.Node, importer) -> relax.Var:
        _, offsets, stride, padding = node.args
        channels = int(node.args[0].meta["val"].shape[1])
        if self.graph.is_dynamic(offsets):
            moved = channels
        else:
            moved = channels_moved(self._offsets(node, "offsets", self.graph.value(offsets)))
        return self._emit_active_shift(node, importer, importer.env[offsets], moved, stride, padding, "ecnn::active_shift2d")

    def _torchshifts_shift2d(self, node: fx.Node, importer) -> relax.Var:
        x, weights, borders, padding_mode, active = _torchshifts_args(node)
        if not active:
            table = self._torchshifts_table(node)
            var = self._emit_int_shift(node, importer, table, TORCHSHIFTS_PADDING[padding_mode], "torchshifts::shift2d")
        else:  # samples at i - floor(w) + (w - floor(w)), see torchshifts.py
            w = self._offsets(node, "weights", self.graph.value(weights))
            offsets = (w - 2 * np.floor(w)).astype(str(node.meta["val"].dtype).removeprefix("torch."))
            var = self._emit_active_shift(
                node, importer, relax.const(offsets), channels_moved(offsets), 1, 0, "torchshifts::shift2d"
            )
        top, bottom, left, right = crop_window(self._borders(borders), *shape_hw(x))
        if (top, left, bottom, right) == (0, 0, *shape_hw(x)):
            return var
        return importer.block_builder.emit(relax.op.strided_slice(var, [2, 3], [top, left], [bottom, right]))

    def _borders(self, borders) -> list[int]:
        """``borders`` as the flat ints the package reads (a tensor argument is truncated to int)."""
        if isinstance(borders, fx.Node):
            return [int(b) for b in self.graph.value(borders).to(torch.int32).flatten().tolist()]
        return list(borders)

    def _int_shift2d(self, node: fx.Node, importer) -> relax.Var:
        _, offsets, padding_mode = node.args
        return self._emit_int_shift(node, importer, self._offsets(node, "offsets", offsets), padding_mode, "int-shift")

    def _bilinear_shift2d(self, node: fx.Node, importer) -> relax.Var:
        _, offsets, stride, padding = node.args
        dtype = node.meta["val"].dtype
        table = self._offsets(node, "grid", offsets).astype(str(dtype).removeprefix("torch."))
        moved = channels_moved(table)
        return self._emit_active_shift(node, importer, relax.const(table), moved, stride, padding, "bilinear-shift")

    @staticmethod
    def _grid_sampler_2d(node: fx.Node, importer) -> relax.Var:
        data, grid, mode, padding_mode, align_corners = importer.retrieve_args(node)
        bb = importer.block_builder
        grid = bb.emit(relax.op.permute_dims(grid, [0, 3, 1, 2]))  # (N, H, W, 2) -> (N, 2, H, W)
        return bb.emit(
            relax.op.image.grid_sample(
                data, grid, method=GRID_METHODS[mode], layout="NCHW",
                padding_mode=GRID_PADDING[padding_mode], align_corners=bool(align_corners),
            )
        )

    @staticmethod
    def _adaptive_max_pool2d(node: fx.Node, importer) -> relax.Var:
        """``(values, indices)`` like torch; the indices are a placeholder (``unsupported`` refuses their use)."""
        x, output_size = importer.env[node.args[0]], node.args[1]
        bb = importer.block_builder
        sizes = [int(d) for d in x.ty.shape.values[2:]]
        if all(size % out == 0 for size, out in zip(sizes, output_size)):
            window = [size // out for size, out in zip(sizes, output_size)]
            values = bb.emit(relax.op.nn.max_pool2d(x, window, window))
        else:
            values = x
            for axis, size, out in zip((2, 3), sizes, output_size):
                rows = [
                    relax.op.max(relax.op.strided_slice(values, [axis], [i * size // out], [-(-(i + 1) * size // out)]),
                                 axis, keepdims=True)
                    for i in range(out)
                ]
                values = bb.emit(relax.op.concat(rows, axis))
        return bb.emit(relax.Tuple([values, relax.op.zeros_like(values, "int64")]))

