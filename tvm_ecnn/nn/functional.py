"""The shift family as ``torch.library`` custom ops.

Each op is one opaque node under ``torch.export`` (thanks to its fake kernel), so the TVM
importer sees ``ecnn.<op>.default`` instead of a decomposed gather/grid_sample graph.
Convention: ``out[n, c, h, w] = in[n, c, h + dy_c, w + dx_c]``, zero outside the image;
offsets tables are ``[C, 2]`` with columns ``(dy, dx)``.
"""
from __future__ import annotations

import functools
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


# --------------------------------------------------------------------------- sampling windows
class _Window(NamedTuple):
    """Where each channel's taps live in the zero-padded input, flattened per channel.

    Padding by the farthest read turns "zero outside the image" into plain loads, so one shift (or the
    block of source pixels of a bilinear shift) of every channel is a single ``gather`` of ``index``.
    """

    pads: tuple[int, int, int, int]  # F.pad order: left, right, top, bottom
    row: int  # length of a padded row
    index: Tensor  # [C, out_h * out_w] flat index of each output's (low) tap into the padded plane

    def gather(self, padded: Tensor) -> Tensor:
        n, c, _ = padded.shape
        return padded.gather(2, self.index.expand(n, c, -1))

    def scatter_add(self, grad: Tensor, values: Tensor) -> None:
        """Adjoint of ``gather``: add ``values`` [N, C, L] back to where they were read from."""
        n, c, _ = values.shape
        grad.scatter_add_(2, self.index.expand(n, c, -1), values)


def _window(low: Tensor, size: tuple[int, int], out_size: tuple[int, int], padding: int) -> _Window:
    """Output ``(h, w)`` of channel ``c`` reads input ``(h - padding + low[c, 0], w - padding + low[c, 1])``.

    ``low`` is first clamped to where the whole window is outside the image anyway, so that the padding
    (and the padded copy) stays bounded for far offsets.
    """
    if low.shape[0] * out_size[0] * out_size[1] > _CACHED_INDEX_MAX:
        return _build_window(low, size, out_size, padding)
    return _cached_window(tuple(low.flatten().tolist()), size, out_size, padding, low.device)


_CACHED_INDEX_MAX = 1 << 16
"""Small windows are cached by the integer table's values: building the index is a dozen small ops (~45 us,
as much as the shift itself at batch 1), reading ``low`` back is one, and learned offsets change their integer
part rarely. Larger ones are rebuilt (cheap next to the shift) so that the cache stays under 64 x 0.5 MB."""


@functools.lru_cache(maxsize=64)
def _cached_window(low_values: tuple[int, ...], size: tuple[int, int], out_size: tuple[int, int], padding: int,
                   device: torch.device) -> _Window:
    low = torch.tensor(low_values, dtype=torch.int64, device=device).view(-1, 2)
    return _build_window(low, size, out_size, padding)


def _build_window(low: Tensor, size: tuple[int, int], out_size: tuple[int, int], padding: int) -> _Window:
    (height, width), (out_h, out_w) = size, out_size
    first_y = low[:, 0].clamp(padding - out_h, height + padding) - padding
    first_x = low[:, 1].clamp(padding - out_w, width + padding) - padding
    lowest, highest = (v.tolist() for v in torch.stack([first_y, first_x]).aminmax(dim=1))
    top, left = max(0, -lowest[0]), max(0, -lowest[1])
    bottom, right = max(0, highest[0] + out_h - height), max(0, highest[1] + out_w - width)
    row = width + left + right
    grid = (torch.arange(out_h, device=low.device) * row)[:, None] + torch.arange(out_w, device=low.device)
    base = (first_y + top) * row + first_x + left
    return _Window((left, right, top, bottom), row, base[:, None] + grid.flatten()[None, :])


def _padded(x: Tensor, window: _Window) -> Tensor:
    return torch.nn.functional.pad(x, window.pads).flatten(2)


# --------------------------------------------------------------------------- integer shift
_GATHER_MAX = 1 << 18
"""Up to this many elements one ``gather`` wins (fewest ops); above, per-offset slice copies stream faster."""


class _Group(NamedTuple):
    """Channels sharing one offset: a ``slice`` when they are evenly spaced (grouped shifts), else indices."""

    channels: slice | Tensor
    dy: int
    dx: int


def _groups(offsets: Tensor) -> list[_Group]:
    by_offset: dict[tuple[int, int], list[int]] = {}
    for channel, (dy, dx) in enumerate(offsets.tolist()):
        by_offset.setdefault((dy, dx), []).append(channel)
    groups = []
    for (dy, dx), channels in by_offset.items():
        step = channels[1] - channels[0] if len(channels) > 1 else 1
        if step > 0 and channels == list(range(channels[0], channels[-1] + 1, step)):
            groups.append(_Group(slice(channels[0], channels[-1] + 1, step), dy, dx))
        else:
            groups.append(_Group(torch.tensor(channels, device=offsets.device), dy, dx))
    return groups


def _span(offset: int, size: int) -> tuple[slice, slice]:
    """Destination and source ranges of a shift by ``offset`` along an axis of ``size``."""
    return slice(max(0, -offset), size - max(0, offset)), slice(max(0, offset), size - max(0, -offset))


def _copy_groups(x: Tensor, groups: list[_Group]) -> Tensor:
    """One strided copy per distinct offset into a zeroed output."""
    out = torch.zeros_like(x)
    height, width = x.shape[-2:]
    for channels, dy, dx in groups:
        if abs(dy) >= height or abs(dx) >= width:
            continue
        (dst_h, src_h), (dst_w, src_w) = _span(dy, height), _span(dx, width)
        if isinstance(channels, slice):
            out[:, channels, dst_h, dst_w] = x[:, channels, src_h, src_w]
        else:
            out[:, :, dst_h, dst_w].index_copy_(1, channels, x.index_select(1, channels)[:, :, src_h, src_w])
    return out


def _shift_window(offsets: Tensor, size: tuple[int, int]) -> _Window:
    return _window(offsets, size, size, padding=0)


def _gather_shift(x: Tensor, window: _Window) -> Tensor:
    return window.gather(_padded(x, window)).view_as(x)


_COPY_MIN_PLANE = 256
"""Arbitrary offsets group channels by index sets, copied plane by plane: below 16x16 planes the gather wins."""


def _integer_shift(x: Tensor, offsets: Tensor) -> Tensor:
    """Exact per-channel shift by int64 ``offsets [C, 2]``, zero fill, any dtype (int8 too)."""
    if x.numel() > _GATHER_MAX and x.shape[-2] * x.shape[-1] >= _COPY_MIN_PLANE:
        return _copy_groups(x, _groups(offsets))
    return _gather_shift(x, _shift_window(offsets, tuple(x.shape[-2:])))


def _rounded(offsets: Tensor, x: Tensor) -> Tensor:
    """``round`` half-to-even, clamped so that huge offsets (all taps outside) fit in int64."""
    bound = max(x.shape[-2:])
    return torch.round(offsets).clamp(-bound, bound).long()


# --------------------------------------------------------------------------- bilinear sampling
def _active_out_size(size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - 1) // stride + 1


class _Bilinear(NamedTuple):
    """The Caffe ASL kernel as one gather and two ``lerp``s.

    Each channel reads one block of source pixels (its integer shift, ``(out - 1) * stride + 2`` per axis);
    the four taps of every output are strided slices of it. ``floor`` picks the low tap, so an integer
    offset reads exactly one pixel and its derivative is the one-sided (right) difference, as in the
    reference kernel.
    """

    window: _Window
    frac: Tensor  # [C, 2, 1, 1]: fractional (dy, dx) in x's dtype, broadcasting over [N, C, rows, cols]
    out_size: tuple[int, int]
    stride: int

    @property
    def block(self) -> tuple[int, int]:
        return tuple((size - 1) * self.stride + 2 for size in self.out_size)

    def source(self, x: Tensor) -> Tensor:
        return self.window.gather(_padded(x, self.window)).view(*x.shape[:2], *self.block)

    def rows(self, t: Tensor, tap: int) -> Tensor:
        return t[..., tap:tap + (self.out_size[0] - 1) * self.stride + 1:self.stride, :]

    def cols(self, t: Tensor, tap: int) -> Tensor:
        return t[..., tap:tap + (self.out_size[1] - 1) * self.stride + 1:self.stride]


def _bilinear(x: Tensor, offsets: Tensor, stride: int, padding: int) -> _Bilinear:
    height, width = x.shape[-2:]
    out_size = (_active_out_size(height, stride, padding), _active_out_size(width, stride, padding))
    # Clamped in floating point first: far out-of-image offsets must not overflow int64.
    bound = 2 * max(height, width) + padding + 2
    floor = torch.floor(offsets)
    low = floor.clamp(-bound, bound).long()
    frac = (offsets - floor).to(x.dtype)[:, :, None, None]
    block = tuple((size - 1) * stride + 2 for size in out_size)
    return _Bilinear(_window(low, (height, width), block, padding), frac, out_size, stride)


def _across(sampling: _Bilinear, block: Tensor) -> Tensor:
    """Every block row interpolated horizontally at the output columns."""
    return torch.lerp(sampling.cols(block, 0), sampling.cols(block, 1), sampling.frac[:, 1])


def _interpolate(sampling: _Bilinear, block: Tensor) -> Tensor:
    across = _across(sampling, block)
    return torch.lerp(sampling.rows(across, 0), sampling.rows(across, 1), sampling.frac[:, 0])


def _active_forward(x: Tensor, offsets: Tensor, stride: int, padding: int) -> Tensor:
    sampling = _bilinear(x, offsets, stride, padding)
    return _interpolate(sampling, sampling.source(x))


def _active_input_grad(x: Tensor, offsets: Tensor, grad: Tensor, stride: int, padding: int) -> Tensor:
    """Adjoint of the bilinear sampling. At stride 1 without padding it is the sampling at ``-offsets``
    (a gather); otherwise the two lerps run backwards into the block, which one scatter-add puts back."""
    if stride == 1 and padding == 0:
        return _active_forward(grad, -offsets, 1, 0)
    sampling = _bilinear(x, offsets, stride, padding)
    (fy, fx), (rows, cols) = sampling.frac.unbind(1), sampling.block
    n, c = grad.shape[:2]
    across = grad.new_zeros(n, c, rows, sampling.out_size[1])
    sampling.rows(across, 0).add_(grad * (1 - fy))
    sampling.rows(across, 1).add_(grad * fy)
    block = grad.new_zeros(n, c, rows, cols)
    sampling.cols(block, 0).add_(across * (1 - fx))
    sampling.cols(block, 1).add_(across * fx)
    window, (height, width) = sampling.window, x.shape[-2:]
    left, _, top, bottom = window.pads
    padded = grad.new_zeros(n, c, (height + top + bottom) * window.row)
    window.scatter_add(padded, block.flatten(2))
    return padded.view(n, c, -1, window.row)[:, :, top:top + height, left:left + width].contiguous()


def _block_offset_grad(sampling: _Bilinear, block: Tensor, grad: Tensor) -> Tensor:
    """``sum_{n,h,w} grad * dY/d(dy, dx)`` with the ASL formulas from the sampled ``block``, as ``[C, 2]``.

    The derivatives are bilinear in the four taps, so only the per-channel sums ``S_ab`` of ``grad`` times
    tap ``(a, b)`` are needed: four multiply-and-reduce passes, then arithmetic on ``[C]`` vectors.
    """
    s00, s01, s10, s11 = ((grad * sampling.rows(sampling.cols(block, b), a)).sum((0, 2, 3))
                          for a in (0, 1) for b in (0, 1))
    fy, fx = sampling.frac[:, 0, 0, 0], sampling.frac[:, 1, 0, 0]
    return torch.stack([torch.lerp(s10 - s00, s11 - s01, fx), torch.lerp(s01 - s00, s11 - s10, fy)], dim=1)


def _offset_grad(x: Tensor, offsets: Tensor, grad: Tensor, stride: int, padding: int) -> Tensor:
    """The offset gradient in offsets' dtype (see ``_block_offset_grad``)."""
    sampling = _bilinear(x, offsets, stride, padding)
    return _block_offset_grad(sampling, sampling.source(x), grad).to(offsets.dtype)


# --------------------------------------------------------------------------- eager fast path
def _eager_function(kernel, setup_context, backward):
    """The op's own kernel and autograd formulas as an ``autograd.Function``.

    Same numbers as the custom op, minus the dispatcher's Python round trips (~30 us per forward and
    ~50 us per backward on a 2-core x86 host, as much as the whole shift at batch 1).
    """

    class EagerOp(torch.autograd.Function):
        @staticmethod
        def forward(*inputs):
            return kernel(*inputs)

    EagerOp.setup_context = staticmethod(setup_context)
    EagerOp.backward = staticmethod(backward)
    return EagerOp.apply


def _eager(x: Tensor, kernel, function, *args) -> Tensor:
    """Small inputs: the kernel itself, differentiated by autograd (its gathers and lerps are exactly
    differentiable, and their C++ backward skips Python). Large ones: ``function`` (an ``_eager_function``),
    whose backward gathers where autograd would scatter-add, and whose forward may use the copy path."""
    return kernel(*args) if x.numel() <= _GATHER_MAX else function(*args)


_PLAIN = (Tensor, torch.nn.Parameter)


def _plain_eager(*tensors: Tensor) -> bool:
    """True for ordinary eager calls; False whenever something traces (torch.compile, torch.export, make_fx,
    functorch transforms, dispatch modes), which must see the custom op as one node."""
    return (not torch.compiler.is_compiling() and all(type(t) in _PLAIN for t in tensors)
            and torch._C._len_torch_dispatch_stack() == 0 and not torch._C._are_functorch_transforms_active())


def _backward_op(name: str, kernel, fake):
    """A gradient kernel as its own custom op, called directly in plain eager. Tracers (torch.compile's
    AOTAutograd, torch.export) see one opaque node: the kernels read offsets' values to size their windows."""
    op = torch.library.custom_op(f"ecnn::{name}", kernel, mutates_args=())
    op.register_fake(fake)

    def call(*args):
        return kernel(*args) if _plain_eager(*(a for a in args if isinstance(a, Tensor))) else op(*args)

    return call


def _reverse_shift2d_kernel(grad: Tensor, kernel_size: int, dilation: int, mapping: str) -> Tensor:
    return _grouped_shift(grad, kernel_size, dilation, mapping, -1)


def _reverse_sparse_shift2d_kernel(grad: Tensor, offsets: Tensor) -> Tensor:
    return _integer_shift(grad, -_rounded(offsets, grad))


def _active_input_grad_kernel(x: Tensor, offsets: Tensor, grad: Tensor, stride: int, padding: int) -> Tensor:
    return _active_input_grad(x, offsets, grad, stride, padding)


def _offset_grad_kernel(x: Tensor, offsets: Tensor, grad: Tensor, stride: int, padding: int) -> Tensor:
    return _offset_grad(x, offsets, grad, stride, padding)


_reverse_shift2d = _backward_op("reverse_shift2d", _reverse_shift2d_kernel, lambda grad, *_: torch.empty_like(grad))
_reverse_sparse_shift2d = _backward_op("reverse_sparse_shift2d", _reverse_sparse_shift2d_kernel,
                                       lambda grad, offsets: torch.empty_like(grad))
_active_input_grad_op = _backward_op("active_shift2d_input_grad", _active_input_grad_kernel,
                                     lambda x, offsets, grad, stride, padding: torch.empty_like(x))
_offset_grad_op = _backward_op("shift_offset_grad", _offset_grad_kernel,
                               lambda x, offsets, grad, stride, padding: torch.empty_like(offsets))


# --------------------------------------------------------------------------- ecnn::shift2d
@functools.lru_cache(maxsize=64)
def _grouped_table(channels: int, kernel_size: int, dilation: int, mapping: str, sign: int,
                   device: torch.device) -> tuple[Tensor, list[_Group]]:
    """The fixed offsets of a grouped shift (``sign`` -1: reversed, for its gradient) and their channel groups."""
    table = sign * torch.from_numpy(grouped_shift_offsets(channels, kernel_size, dilation, mapping)).to(device)
    return table, _groups(table)


@functools.lru_cache(maxsize=64)
def _grouped_window(channels: int, kernel_size: int, dilation: int, mapping: str, sign: int, size: tuple[int, int],
                    device: torch.device) -> _Window:
    table, _ = _grouped_table(channels, kernel_size, dilation, mapping, sign, device)
    return _shift_window(table, size)


def _grouped_shift(x: Tensor, kernel_size: int, dilation: int, mapping: str, sign: int) -> Tensor:
    """``_integer_shift`` with the table, groups and gather index cached: they depend on shapes only."""
    key = (int(x.shape[1]), kernel_size, dilation, mapping, sign)
    if x.numel() > _GATHER_MAX:
        return _copy_groups(x, _grouped_table(*key, x.device)[1])
    return _gather_shift(x, _grouped_window(*key, tuple(x.shape[-2:]), x.device))


def _shift2d_kernel(x: Tensor, kernel_size: int, dilation: int, mapping: str) -> Tensor:
    _check_x(x)
    return _grouped_shift(x, kernel_size, dilation, mapping, 1)


_shift2d = torch.library.custom_op("ecnn::shift2d", _shift2d_kernel, mutates_args=())


@_shift2d.register_fake
def _(x: Tensor, kernel_size: int, dilation: int, mapping: str) -> Tensor:
    _check_x(x)
    _check_shift_args(kernel_size, dilation, mapping)
    return torch.empty_like(x)


def _shift2d_setup(ctx, inputs, output) -> None:
    _, ctx.kernel_size, ctx.dilation, ctx.mapping = inputs


def _shift2d_backward(ctx, grad: Tensor):
    """The grouped shift is a permutation with zero fill: its adjoint is the reverse shift."""
    return _reverse_shift2d(grad, ctx.kernel_size, ctx.dilation, ctx.mapping), None, None, None


_shift2d.register_autograd(_shift2d_backward, setup_context=_shift2d_setup)
_shift2d_eager = _eager_function(_shift2d_kernel, _shift2d_setup, _shift2d_backward)


# --------------------------------------------------------------------------- ecnn::active_shift2d
def _active_shift2d_kernel(x: Tensor, offsets: Tensor, stride: int, padding: int) -> Tensor:
    _check_active_args(x, offsets, stride, padding)
    _check_finite(offsets)
    return _active_forward(x, offsets, stride, padding)


_active_shift2d = torch.library.custom_op("ecnn::active_shift2d", _active_shift2d_kernel, mutates_args=())


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
        grad_x = _active_input_grad_op(x, offsets, grad, ctx.stride, ctx.padding)
    if ctx.needs_input_grad[1]:
        grad_offsets = _offset_grad_op(x, offsets, grad, ctx.stride, ctx.padding)
    return grad_x, grad_offsets, None, None


_active_shift2d.register_autograd(_active_shift2d_backward, setup_context=_active_shift2d_setup)


class _ActiveShift2dEager(torch.autograd.Function):
    """The op's formulas in plain eager, keeping the forward's sampled block for the offset gradient
    (one gather fewer than the custom op's backward, which must stay a function of x and offsets)."""

    @staticmethod
    def forward(ctx, x: Tensor, offsets: Tensor, stride: int, padding: int) -> Tensor:
        _check_active_args(x, offsets, stride, padding)
        _check_finite(offsets)
        sampling = _bilinear(x, offsets, stride, padding)
        block = sampling.source(x)
        ctx.sampling, ctx.stride, ctx.padding = sampling, stride, padding
        ctx.save_for_backward(x, offsets, block if ctx.needs_input_grad[1] else None)
        return _interpolate(sampling, block)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, offsets, block = ctx.saved_tensors
        grad_x = grad_offsets = None
        if ctx.needs_input_grad[0]:
            grad_x = _active_input_grad(x, offsets, grad, ctx.stride, ctx.padding)
        if ctx.needs_input_grad[1]:
            grad_offsets = _block_offset_grad(ctx.sampling, block, grad).to(offsets.dtype)
        return grad_x, grad_offsets, None, None


# --------------------------------------------------------------------------- ecnn::sparse_shift2d
def _sparse_shift2d_kernel(x: Tensor, offsets: Tensor) -> Tensor:
    _check_offsets(x, offsets)
    _check_finite(offsets)
    return _integer_shift(x, _rounded(offsets, x))


_sparse_shift2d = torch.library.custom_op("ecnn::sparse_shift2d", _sparse_shift2d_kernel, mutates_args=())


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
        grad_x = _reverse_sparse_shift2d(grad, offsets)
    if ctx.needs_input_grad[1]:
        grad_offsets = _offset_grad_op(x, offsets, grad, 1, 0)
    return grad_x, grad_offsets


_sparse_shift2d.register_autograd(_sparse_shift2d_backward, setup_context=_sparse_shift2d_setup)
_sparse_shift2d_eager = _eager_function(_sparse_shift2d_kernel, _sparse_shift2d_setup, _sparse_shift2d_backward)


# --------------------------------------------------------------------------- functional API
def shift2d(x: Tensor, kernel_size: int = 3, dilation: int = 1, mapping: str = "interleaved") -> Tensor:
    """Grouped shift (Wu et al. 2018): fixed offsets from ``grouped_shift_offsets``."""
    if _plain_eager(x):
        return _eager(x, _shift2d_kernel, _shift2d_eager, x, kernel_size, dilation, mapping)
    return torch.ops.ecnn.shift2d(x, kernel_size, dilation, mapping)


def active_shift2d(x: Tensor, offsets: Tensor, stride: int = 1, padding: int = 0) -> Tensor:
    """Active shift (Jeon & Kim 2018): per-channel real ``(dy, dx)`` offsets, bilinear, zero outside."""
    if _plain_eager(x, offsets):
        return _eager(x, _active_shift2d_kernel, _ActiveShift2dEager.apply, x, offsets, stride, padding)
    return torch.ops.ecnn.active_shift2d(x, offsets, stride, padding)


def sparse_shift2d(x: Tensor, offsets: Tensor) -> Tensor:
    """Sparse shift (Chen et al. 2019): integer shift by ``round(offsets)``, straight-through gradients."""
    if _plain_eager(x, offsets):
        if offsets.requires_grad:  # autograd through the rounding would give no straight-through gradient
            return _sparse_shift2d_eager(x, offsets)
        return _eager(x, _sparse_shift2d_kernel, _sparse_shift2d_eager, x, offsets)
    return torch.ops.ecnn.sparse_shift2d(x, offsets)
