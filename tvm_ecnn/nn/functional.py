"""The shift family as ``torch.library`` custom ops.

Each op is one opaque node under ``torch.export`` (thanks to its fake kernel), so the TVM
importer sees ``ecnn.<op>.default`` instead of a decomposed gather/grid_sample graph.
Convention: ``out[n, c, h, w] = in[n, c, h + dy_c, w + dx_c]``, zero outside the image;
offsets tables are ``[C, 2]`` with columns ``(dy, dx)``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .offsets import MAPPINGS, check_kernel_size, grouped_shift_offsets

__all__ = ["shift2d", "active_shift2d", "sparse_shift2d"]


# --------------------------------------------------------------------------- validation
def _check_x(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D NCHW tensor, got shape {tuple(x.shape)}")


def _check_offsets(x: Tensor, offsets: Tensor) -> None:
    _check_x(x)
    if offsets.dim() != 2 or offsets.shape[0] != x.shape[1] or offsets.shape[1] != 2:
        raise ValueError(
            f"offsets must have shape [C, 2] = [{x.shape[1]}, 2] to match x, got {tuple(offsets.shape)}"
        )


def _check_finite(offsets: Tensor) -> None:
    """Eager-only: reading values is impossible on the fake tensors ``torch.export`` traces."""
    if not bool(torch.isfinite(offsets).all()):
        raise ValueError("offsets must be finite (found NaN or inf)")


def _check_shift_args(kernel_size: int, dilation: int, mapping: str) -> None:
    """What ``grouped_shift_offsets`` checks, minus ``channels`` (symbolic under the fake kernel)."""
    check_kernel_size(kernel_size, dilation)
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")


def check_stride_padding(stride: int, padding: int) -> None:
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")


def _check_active_args(x: Tensor, offsets: Tensor, stride: int, padding: int) -> None:
    _check_offsets(x, offsets)
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point for the bilinear active shift, got {x.dtype}")
    check_stride_padding(stride, padding)


def _active_out_size(size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - 1) // stride + 1


# --------------------------------------------------------------------------- integer shift
def _integer_shift(x: Tensor, offsets: Tensor) -> Tensor:
    """Exact per-channel shift by int64 ``offsets [C, 2]``; one gather, any dtype (int8 too)."""
    _, channels, height, width = x.shape
    rows = torch.arange(height, device=x.device) + offsets[:, :1]  # [C, H]
    cols = torch.arange(width, device=x.device) + offsets[:, 1:]  # [C, W]
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    channel = torch.arange(channels, device=x.device)[:, None, None]
    picked = x[:, channel, rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None, :]]
    return torch.where(inside, picked, 0)


def _rounded(offsets: Tensor, x: Tensor) -> Tensor:
    """``round`` half-to-even, clamped so that huge offsets (all taps outside) fit in int64."""
    bound = max(x.shape[-2:])
    return torch.round(offsets).clamp(-bound, bound).long()


# --------------------------------------------------------------------------- bilinear sampling
class _Taps(NamedTuple):
    """Per-channel bilinear taps along one axis: source indices and weights, each ``[C, out]``."""

    index: tuple[Tensor, Tensor]
    weight: tuple[Tensor, Tensor]


def _axis_taps(offset: Tensor, size: int, out_size: int, stride: int, padding: int, dtype) -> tuple[_Taps, _Taps]:
    """Taps of the Caffe ASL kernel along one axis, and their derivative w.r.t. the offset.

    ``floor`` picks the low tap, so an integer offset samples exactly one pixel and its
    derivative is the one-sided (right) difference, as in the reference kernel. Indices are
    computed in floating point so that far out-of-image offsets cannot overflow.
    """
    base = torch.floor(offset)
    frac = (offset - base).to(dtype)[:, None]
    pos = torch.arange(out_size, device=offset.device, dtype=offset.dtype) * stride - padding
    low = base[:, None] + pos  # [C, out]
    high = low + 1
    low_in = ((low >= 0) & (low < size)).to(dtype)
    high_in = ((high >= 0) & (high < size)).to(dtype)
    index = (low.clamp(0, size - 1).long(), high.clamp(0, size - 1).long())
    return _Taps(index, ((1 - frac) * low_in, frac * high_in)), _Taps(index, (-low_in, high_in))


def _sample(x: Tensor, rows: _Taps, cols: _Taps) -> Tensor:
    """Separable per-channel two-tap interpolation: rows first, then columns."""
    n, c, _, width = x.shape
    out_h, out_w = rows.index[0].shape[1], cols.index[0].shape[1]
    by_rows = sum(
        w[None, :, :, None] * x.gather(2, i[None, :, :, None].expand(n, c, out_h, width))
        for i, w in zip(rows.index, rows.weight)
    )
    return sum(
        w[None, :, None, :] * by_rows.gather(3, i[None, :, None, :].expand(n, c, out_h, out_w))
        for i, w in zip(cols.index, cols.weight)
    )


def _sample_transpose(grad: Tensor, rows: _Taps, cols: _Taps, height: int, width: int) -> Tensor:
    """Adjoint of ``_sample`` (scatter-add), i.e. the input gradient for any stride/padding."""
    n, c, out_h, out_w = grad.shape
    by_rows = grad.new_zeros(n, c, out_h, width)
    for i, w in zip(cols.index, cols.weight):
        by_rows.scatter_add_(3, i[None, :, None, :].expand(n, c, out_h, out_w), w[None, :, None, :] * grad)
    out = grad.new_zeros(n, c, height, width)
    for i, w in zip(rows.index, rows.weight):
        out.scatter_add_(2, i[None, :, :, None].expand(n, c, out_h, width), w[None, :, :, None] * by_rows)
    return out


def _bilinear_taps(x: Tensor, offsets: Tensor, stride: int, padding: int):
    height, width = x.shape[-2:]
    rows = _axis_taps(offsets[:, 0], height, _active_out_size(height, stride, padding), stride, padding, x.dtype)
    cols = _axis_taps(offsets[:, 1], width, _active_out_size(width, stride, padding), stride, padding, x.dtype)
    return rows, cols


def _offset_grad(x: Tensor, offsets: Tensor, grad: Tensor, stride: int, padding: int) -> Tensor:
    """``sum_{n,h,w} grad * dY/d(dy, dx)`` with the ASL formulas, as ``[C, 2]`` in offsets' dtype."""
    (rows, d_rows), (cols, d_cols) = _bilinear_taps(x, offsets, stride, padding)
    d_dy = (grad * _sample(x, d_rows, cols)).sum((0, 2, 3))
    d_dx = (grad * _sample(x, rows, d_cols)).sum((0, 2, 3))
    return torch.stack([d_dy, d_dx], dim=1).to(offsets.dtype)


# --------------------------------------------------------------------------- ecnn::shift2d
@torch.library.custom_op("ecnn::shift2d", mutates_args=())
def _shift2d(x: Tensor, kernel_size: int, dilation: int, mapping: str) -> Tensor:
    _check_x(x)
    table = grouped_shift_offsets(int(x.shape[1]), kernel_size, dilation, mapping)
    return _integer_shift(x, torch.from_numpy(table).to(x.device))


@_shift2d.register_fake
def _(x: Tensor, kernel_size: int, dilation: int, mapping: str) -> Tensor:
    _check_x(x)
    _check_shift_args(kernel_size, dilation, mapping)
    return torch.empty_like(x)


def _shift2d_setup(ctx, inputs, output) -> None:
    _, ctx.kernel_size, ctx.dilation, ctx.mapping = inputs


def _shift2d_backward(ctx, grad: Tensor):
    """The grouped shift is a permutation with zero fill: its adjoint is the reverse shift."""
    table = grouped_shift_offsets(int(grad.shape[1]), ctx.kernel_size, ctx.dilation, ctx.mapping)
    return _integer_shift(grad, -torch.from_numpy(table).to(grad.device)), None, None, None


_shift2d.register_autograd(_shift2d_backward, setup_context=_shift2d_setup)


# --------------------------------------------------------------------------- ecnn::active_shift2d
@torch.library.custom_op("ecnn::active_shift2d", mutates_args=())
def _active_shift2d(x: Tensor, offsets: Tensor, stride: int, padding: int) -> Tensor:
    _check_active_args(x, offsets, stride, padding)
    _check_finite(offsets)
    (rows, _), (cols, _) = _bilinear_taps(x, offsets, stride, padding)
    return _sample(x, rows, cols)


@_active_shift2d.register_fake
def _(x: Tensor, offsets: Tensor, stride: int, padding: int) -> Tensor:
    _check_active_args(x, offsets, stride, padding)
    n, c, height, width = x.shape
    return x.new_empty(n, c, _active_out_size(height, stride, padding), _active_out_size(width, stride, padding))


def _active_shift2d_setup(ctx, inputs, output) -> None:
    x, offsets, ctx.stride, ctx.padding = inputs
    ctx.save_for_backward(x, offsets)


def _active_shift2d_backward(ctx, grad: Tensor):
    x, offsets = ctx.saved_tensors
    grad_x = grad_offsets = None
    if ctx.needs_input_grad[0]:
        (rows, _), (cols, _) = _bilinear_taps(x, offsets, ctx.stride, ctx.padding)
        grad_x = _sample_transpose(grad, rows, cols, x.shape[2], x.shape[3])
    if ctx.needs_input_grad[1]:
        grad_offsets = _offset_grad(x, offsets, grad, ctx.stride, ctx.padding)
    return grad_x, grad_offsets, None, None


_active_shift2d.register_autograd(_active_shift2d_backward, setup_context=_active_shift2d_setup)


# --------------------------------------------------------------------------- ecnn::sparse_shift2d
@torch.library.custom_op("ecnn::sparse_shift2d", mutates_args=())
def _sparse_shift2d(x: Tensor, offsets: Tensor) -> Tensor:
    _check_offsets(x, offsets)
    _check_finite(offsets)
    return _integer_shift(x, _rounded(offsets, x))


@_sparse_shift2d.register_fake
def _(x: Tensor, offsets: Tensor) -> Tensor:
    _check_offsets(x, offsets)
    return torch.empty_like(x)


def _sparse_shift2d_setup(ctx, inputs, output) -> None:
    x, offsets = inputs
    ctx.save_for_backward(x, offsets)


def _sparse_shift2d_backward(ctx, grad: Tensor):
    """Exact input gradient; straight-through offset gradient (bilinear derivative at the real offsets)."""
    x, offsets = ctx.saved_tensors
    grad_x = grad_offsets = None
    if ctx.needs_input_grad[0]:
        grad_x = _integer_shift(grad, -_rounded(offsets, x))
    if ctx.needs_input_grad[1]:
        grad_offsets = _offset_grad(x, offsets, grad, stride=1, padding=0)
    return grad_x, grad_offsets


_sparse_shift2d.register_autograd(_sparse_shift2d_backward, setup_context=_sparse_shift2d_setup)


# --------------------------------------------------------------------------- functional API
def shift2d(x: Tensor, kernel_size: int = 3, dilation: int = 1, mapping: str = "interleaved") -> Tensor:
    """Grouped shift (Wu et al. 2018): fixed offsets from ``grouped_shift_offsets``."""
    return torch.ops.ecnn.shift2d(x, kernel_size, dilation, mapping)


def active_shift2d(x: Tensor, offsets: Tensor, stride: int = 1, padding: int = 0) -> Tensor:
    """Active shift (Jeon & Kim 2018): per-channel real ``(dy, dx)`` offsets, bilinear, zero outside."""
    return torch.ops.ecnn.active_shift2d(x, offsets, stride, padding)


def sparse_shift2d(x: Tensor, offsets: Tensor) -> Tensor:
    """Sparse shift (Chen et al. 2019): integer shift by ``round(offsets)``, straight-through gradients."""
    return torch.ops.ecnn.sparse_shift2d(x, offsets)
