"""Make models using the third-party ``torchshifts`` package (ActiveSparseShifts-PyTorch) exportable.

Its ``torchshifts::shift2d`` is a C++ composite (``m.def("shift2d", fn)``) with two schemas in
its releases: ``(input, weights, padding_mode, active_flag)`` up to 2.3 and
``(input, weights, borders, padding_mode, active_flag)`` from 2.5 on (3.x calls an inner
``_shift2d_forward`` after normalising ``borders``). ``torch.export`` decomposes a composite, and
this one reads tensor data (``borders``, then the CPU kernel), so export fails. ``routed()``, a
torch-function mode around the export, calls ``ecnn_import::torchshifts_shift2d`` instead: one
node with a fake kernel, keeping the arguments (``borders`` as constant ints) for the converter,
that runs the package's own op in eager.

Semantics, from the package's CPU kernel (the same in 2.x and 3.x): output pixel ``i`` of
channel ``c`` reads input ``i - round(w_c)`` (half to even; ``padding_mode`` 0 zeros,
1 border, 2 periodic, 3 reflect, 4 symmetric); with ``active_flag`` it interpolates between
input ``i - floor(w_c)`` and the next pixel with weight ``w_c - floor(w_c)``, i.e. it samples at
``i + w_c - 2 * floor(w_c)``. ``borders[d] = (cut_before, cut_after)`` crops the output.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

PADDING_MODES = {0: "zeros", 1: "border", 2: "periodic", 3: "reflect", 4: "symmetric"}


def _has_borders_argument() -> bool:
    return len(torch.ops.torchshifts.shift2d.default._schema.arguments) == 5


def crop_window(borders: list[int], height: int, width: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` output window in input pixels: the package's ``check_borders``."""
    window = []
    for axis, size in enumerate((height, width)):
        start, end = (borders[2 * axis], size - borders[2 * axis + 1]) if borders else (0, size)
        end = start + 1 if end - start < 1 else end
        start, end = (size - 1, size) if start == size else (start, end)
        start, end = (0, 1) if end == 0 else (start, end)
        window += [max(0, start), min(size, end)]
    return tuple(window)


@torch.library.custom_op("ecnn_import::torchshifts_shift2d", mutates_args=())
def torchshifts_shift2d(input: Tensor, weights: Tensor, borders: list[int], padding_mode: int, active_flag: bool) -> Tensor:
    """The package's ``shift2d``; ``borders`` is its ``[2, 2]`` tensor as flat ints (``[]``: none)."""
    if not _has_borders_argument():
        return torch.ops.torchshifts.shift2d(input, weights, padding_mode, active_flag)
    cut = torch.tensor(borders, dtype=torch.int64).view(2, 2) if borders else torch.Tensor()
    return torch.ops.torchshifts.shift2d(input, weights, cut, padding_mode, active_flag)


@torchshifts_shift2d.register_fake
def _(input: Tensor, weights: Tensor, borders: list[int], padding_mode: int, active_flag: bool) -> Tensor:
    top, bottom, left, right = crop_window(borders, input.shape[2], input.shape[3])
    return input.new_empty(input.shape[0], input.shape[1], bottom - top, right - left)


class Routed(TorchFunctionMode):
    """While ``torch.export`` traces: each ``torchshifts::shift2d`` call becomes ``ecnn_import::torchshifts_shift2d``.

    Non-strict tracing runs ``forward`` in Python, where ``borders`` (a plain tensor attribute, as
    ``Shift2d.cut_borders`` is) is still a real tensor whose values can be read.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func not in (torch.ops.torchshifts.shift2d, torch.ops.torchshifts.shift2d.default):
            return func(*args, **(kwargs or {}))
        args = list(args) + [kwargs[name] for name in ("borders", "padding_mode", "active_flag") if name in (kwargs or {})]
        if len(args) == 4:  # <= 2.3: no borders
            x, weights, padding_mode, active_flag = args
            borders = []
        else:
            x, weights, borders, padding_mode, active_flag = args
            borders = _constant_ints(borders)
        return TORCHSHIFTS_SHIFT(x, weights, borders, padding_mode, active_flag)


def _constant_ints(borders: Tensor) -> list[int]:
    """The ``[2, 2]`` borders as flat ints (``[]`` when empty), truncated as the package does."""
    if borders.numel() == 0:
        return []
    if isinstance(borders, torch._subclasses.FakeTensor):
        raise ValueError(
            "torchshifts shift2d: `borders` must be a constant tensor (a plain tensor attribute, as "
            "Shift2d's cut_borders is), not a parameter, a buffer or a computed value"
        )
    return [int(b) for row in borders.tolist() for b in row]  # plain Python: a torch op here would fake it


def routed() -> contextlib.AbstractContextManager:
    """``Routed()`` when a ``torchshifts::shift2d`` op is registered, else nothing."""
    return Routed() if hasattr(torch.ops.torchshifts, "shift2d") else contextlib.nullcontext()


TORCHSHIFTS_SHIFT = torch.ops.ecnn_import.torchshifts_shift2d.default
