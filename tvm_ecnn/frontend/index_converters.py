"""``custom_convert_map`` entries for torch's integer indexing, which TVM 0.27 converts wrongly.

* ``select.int`` (``x[:, -1]``, kornia's ``H[..., -1, -1]``): TVM emits ``take(x, -1)`` in
  ``"fast"`` mode, an out-of-bounds read: garbage, no error.
* ``index.Tensor`` (``x[:, idx]``, ``torch.take``): negative index values the same way; and
  with a full slice among several index tensors (``x[:, i, j]``, ``x[:, i, :, j]``) TVM takes
  them one after the other (an outer product) or broadcasts them wrongly: a wrong shape, no error.
* ``index_put`` (``y[:, idx] = v`` after functionalisation): fewer index tensors than dimensions
  or a full slice among them fails to import.

Index tensors are wrapped to ``[0, size)`` as torch does (constant non-negative ones are left as
they are). Several index tensors, or any ``index_put``, are expanded to one index grid per
dimension laid out like torch's result (the indexed dimensions in place when adjacent, first
otherwise), which is the plain NumPy case Relax's ``index_tensor``/``index_put`` implement.
``slice``/``narrow``, ``slice_scatter``, ``select_scatter`` and the ops whose negative indices torch
itself rejects (``gather``, ``index_select``, ``scatter``, ``embedding``) are right as TVM converts
them (``tests/test_import_indexing.py`` checks each against eager torch).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import fx
from tvm import relax

from tvm_ecnn.compiler_pass.fx_graph import ExportedGraph, shape_of, tensor_meta


class IndexConverters:
    """Converters bound to one exported graph (to tell constant non-negative indices apart)."""

    def __init__(self, graph: ExportedGraph):
        self.graph = graph

    def convert_map(self) -> dict:
        return {"select.int": self._select, "index.Tensor": self._index, "index_put.default": self._index_put}

    # ------------------------------------------------------------------ helpers
    def _wrapped(self, importer, index: fx.Node, size: int) -> relax.Expr:
        """``index`` as an int64 Relax tensor with negative entries wrapped: ``i + size`` where ``i < 0``."""
        bb = importer.block_builder
        expr = importer.env[index]
        if expr.ty.dtype != "int64":
            expr = bb.emit(relax.op.astype(expr, "int64"))
        if not self.graph.is_dynamic(index) and bool((self.graph.value(index) >= 0).all()):
            return expr
        negative = bb.emit(relax.op.less(expr, relax.const(0, "int64")))
        return bb.emit(relax.op.where(negative, relax.op.add(expr, relax.const(size, "int64")), expr))

    def _grids(self, importer, data: fx.Node, indices: list) -> tuple[list[relax.Expr], list[int]]:
        """One int64 index grid per dimension of ``data`` and the shape torch's ``data[indices]`` has."""
        shape = shape_of(data)
        indices = list(indices) + [None] * (len(shape) - len(indices))
        indexed = [d for d, index in enumerate(indices) if index is not None]
        block = list(torch.broadcast_shapes(*(shape_of(indices[d]) for d in indexed)))
        sliced = [d for d, index in enumerate(indices) if index is None]
        adjacent = indexed == list(range(indexed[0], indexed[-1] + 1))
        before = [d for d in sliced if adjacent and d < indexed[0]]
        after = [d for d in sliced if d not in before]
        result = [shape[d] for d in before] + block + [shape[d] for d in after]
        bb, grids = importer.block_builder, []
        for d, index in enumerate(indices):
            if index is None:
                position = before.index(d) if d in before else len(before) + len(block) + after.index(d)
                layout = [1] * len(result)
                layout[position] = shape[d]
                grids.append(relax.const(np.arange(shape[d], dtype="int64").reshape(layout)))
            else:
                own = list(shape_of(index))
                layout = [1] * (len(before) + len(block) - len(own)) + own + [1] * len(after)
                grids.append(bb.emit(relax.op.reshape(self._wrapped(importer, index, shape[d]), layout)))
        return grids, result

    # ------------------------------------------------------------------ converters
    @staticmethod
    def _select(node: fx.Node, importer) -> relax.Var:
        x, dim, index = node.args
        size = shape_of(x)[dim]
        index = index + size if index < 0 else index
        return importer.block_builder.emit(relax.op.take(importer.env[x], relax.const(index, "int64"), axis=dim))

    def _index(self, node: fx.Node, importer) -> relax.Var:
        data, indices = node.args[:2]
        if any(tensor_meta(i) is not None and tensor_meta(i).dtype == torch.bool for i in indices):
            return importer._index_tensor(node)  # boolean masks: TVM's converter (shape depends on data)
        bb = importer.block_builder
        indexed = [(d, index) for d, index in enumerate(indices) if index is not None]
        if len(indexed) == 1:  # x[..., i, ...]: a take along that axis has torch's layout
            (axis, index), = indexed
            return bb.emit(relax.op.take(importer.env[data], self._wrapped(importer, index, shape_of(data)[axis]), axis))
        grids, _ = self._grids(importer, data, indices)
        return bb.emit(relax.op.index_tensor(importer.env[data], grids))

    def _index_put(self, node: fx.Node, importer) -> relax.Var:
        data, indices, values = node.args[:3]
        accumulate = node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False)
        bb = importer.block_builder
        grids, result = self._grids(importer, data, indices)
        values = importer.env[values]
        if values.ty.dtype != importer.env[data].ty.dtype:
            values = bb.emit(relax.op.astype(values, importer.env[data].ty.dtype))
        if shape_of(node.args[2]) != tuple(result):
            values = bb.emit(relax.op.broadcast_to(values, result))
        return bb.emit(relax.op.index_put(importer.env[data], relax.Tuple(grids), values, bool(accumulate)))
