"""The torchshifts package (ActiveSparseShifts-PyTorch 3.1): the real one if it is installed, else a
stand-in registered exactly as the package registers itself, for tests.

The stand-in defines ``torchshifts::shift2d(input, weights, borders, padding_mode, active_flag)``
as a composite kernel that, like the package's C++ ``check_borders``, reads ``borders`` and builds
its normalised form as tensor data before calling ``torchshifts::_shift2d_forward`` (so that
``torch.export`` cannot trace it without tvm-ecnn's help), and ``_shift2d_forward``'s CPU kernel
is a line-by-line port of ``shift_forward_kernel_nchwd`` (zeros and periodic padding).
"""
from __future__ import annotations

import torch

try:
    import torchshifts  # noqa: F401  (registers torch.ops.torchshifts.*)

    REAL_PACKAGE = True
except ImportError:
    REAL_PACKAGE = False


def _check_borders(input: torch.Tensor, borders: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Port of the package's ``check_borders`` for 2-D: ``[top, bottom, left, right, 0, 1]`` and the new size."""
    sizes = input.shape
    std = torch.empty(6, dtype=torch.int32)
    std[:] = torch.tensor([0, sizes[2], 0, sizes[3], 0, 1])
    if borders.numel():
        cut = borders.to(torch.int32).flatten().tolist()
        values = std.tolist()
        for i in range(2):
            size = sizes[i + 2]
            values[2 * i + 1] -= cut[2 * i + 1]
            values[2 * i] = cut[2 * i]
            if values[2 * i + 1] - values[2 * i] < 1:
                values[2 * i + 1] = values[2 * i] + 1
            if values[2 * i] == size:
                values[2 * i], values[2 * i + 1] = size - 1, size
            if values[2 * i + 1] == 0:
                values[2 * i], values[2 * i + 1] = 0, 1
            values[2 * i], values[2 * i + 1] = max(0, values[2 * i]), min(size, values[2 * i + 1])
        std = torch.tensor(values, dtype=torch.int32)
    bounds = std.tolist()  # data read: what makes the composite untraceable
    return std, [sizes[0], sizes[1], bounds[1] - bounds[0], bounds[3] - bounds[2]]


def _shift2d_forward(input, weights, borders, new_size, padding_mode: int, active_flag: bool):
    """``out[i - top] = in[i - round(w)]``; active: interpolate in[i - floor(w)], in[i - floor(w) + 1] by w - floor(w)."""
    n, c, h, w = input.shape
    iweights = (torch.floor(weights) if active_flag else torch.round(weights)).long()
    dweights = weights - iweights if active_flag else torch.zeros_like(weights)
    channels = torch.arange(c)[:, None, None]

    def value(rows, cols):  # rows [C, H], cols [C, W] source indices; zero or periodic padding
        if padding_mode == 2:
            return input[:, channels, (rows % h)[:, :, None], (cols % w)[:, None, :]]
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        picked = input[:, channels, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
        return torch.where(inside, picked, torch.zeros((), dtype=input.dtype))

    rows = torch.arange(h)[None, :] - iweights[:, :1]
    cols = torch.arange(w)[None, :] - iweights[:, 1:]
    if active_flag:
        x, y = dweights[:, 0, None, None], dweights[:, 1, None, None]
        v1, v2 = value(rows, cols), value(rows + 1, cols)
        v3, v4 = value(rows, cols + 1), value(rows + 1, cols + 1)
        out = (v1 * (1 - x) + v2 * x) * (1 - y) + (v3 * (1 - x) + v4 * x) * y
    else:
        out = value(rows, cols)
    top, bottom, left, right = borders.tolist()[:4]
    return out[:, :, top:bottom, left:right].contiguous()


def _shift2d(input, weights, borders, padding_mode: int, active_flag: bool):
    std, new_size = _check_borders(input, borders)
    return torch.ops.torchshifts._shift2d_forward(input, weights, std, new_size, padding_mode, active_flag)


if not REAL_PACKAGE and not hasattr(torch.ops.torchshifts, "shift2d"):
    _LIB = torch.library.Library("torchshifts", "DEF")
    _LIB.define("shift2d(Tensor input, Tensor weights, Tensor borders, int padding_mode, bool active_flag) -> Tensor")
    _LIB.define(
        "_shift2d_forward(Tensor input, Tensor weights, Tensor borders, int[] new_size, int padding_mode, "
        "bool active_flag) -> Tensor"
    )
    _LIB.impl("shift2d", _shift2d, "CompositeImplicitAutograd")
    _LIB.impl("_shift2d_forward", _shift2d_forward, "CPU")


class Shift2d(torch.nn.Module):
    """What ``torchshifts.Shift2d`` does in inference (``weight`` parameter, ``cut_borders`` plain tensor)."""

    def __init__(self, weights, padding: int = 0, active: bool = False, borders=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.as_tensor(weights, dtype=torch.float32))
        self.padding, self.active = padding, active
        self.cut_borders = None if borders is None else torch.as_tensor(borders, dtype=torch.long)

    def forward(self, x):
        borders = torch.Tensor() if self.cut_borders is None else self.cut_borders
        return torch.ops.torchshifts.shift2d(x, self.weight, borders, self.padding, self.active)
