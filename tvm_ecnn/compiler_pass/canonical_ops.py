"""The torch ops the torch-side recognisers rewrite a recognised idiom into.

Offsets travel as plain lists in the op's arguments, so a rewrite needs no new tensor constant
in the ExportedProgram's signature; the importer's converters turn them into ``R.ecnn.*`` calls
(``frontend/converters.py``). The eager kernels let a rewritten program still run in torch,
which is how the tests check a rewrite independently of TVM.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tvm_ecnn.nn import functional as _ecnn  # noqa: F401  (registers torch.ops.ecnn.*)
from tvm_ecnn.nn.functional import _active_out_size

PADDING_MODES = ("zeros", "circular")


@torch.library.custom_op("ecnn_import::int_shift2d", mutates_args=())
def int_shift2d(x: Tensor, offsets: list[int], padding_mode: str) -> Tensor:
    """``out[n,c,h,w] = x[n,c,h+dy_c,w+dx_c]``; ``offsets`` is the flat ``[C, 2]`` (dy, dx) table."""
    table = torch.tensor(offsets, dtype=torch.int64).view(-1, 2)
    if padding_mode == "zeros":
        return torch.ops.ecnn.sparse_shift2d(x, table.to(torch.float32))
    rolled = [torch.roll(x[:, c], (-dy, -dx), (1, 2)) for c, (dy, dx) in enumerate(table.tolist())]
    return torch.stack(rolled, 1)


@int_shift2d.register_fake
def _(x: Tensor, offsets: list[int], padding_mode: str) -> Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("ecnn_import::bilinear_shift2d", mutates_args=())
def bilinear_shift2d(x: Tensor, offsets: list[float], stride: int, padding: int) -> Tensor:
    """The active shift with a constant flat ``[C, 2]`` (dy, dx) table."""
    table = torch.tensor(offsets, dtype=x.dtype).view(-1, 2)
    return torch.ops.ecnn.active_shift2d(x, table, stride, padding)


@bilinear_shift2d.register_fake
def _(x: Tensor, offsets: list[float], stride: int, padding: int) -> Tensor:
    n, c, h, w = x.shape
    return x.new_empty(n, c, _active_out_size(h, stride, padding), _active_out_size(w, stride, padding))


INT_SHIFT = torch.ops.ecnn_import.int_shift2d.default
BILINEAR_SHIFT = torch.ops.ecnn_import.bilinear_shift2d.default
