"""``nn.Module`` front-ends of the shift custom ops (see ``docs/CONTRACTS.md``)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .functional import active_shift2d, check_stride_padding, shift2d, sparse_shift2d
from .offsets import grouped_shift_offsets

__all__ = ["Shift2d", "ActiveShift2d", "SparseShift2d", "sparse_shift_penalty", "param_groups"]


class _ChannelShift(nn.Module):
    """Per-channel shift of a fixed channel count; rejects mismatching inputs before the op."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        self.channels = channels

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected x of shape [N, channels={self.channels}, H, W], got {tuple(x.shape)}")


def _learnable_offset(channels: int) -> nn.Parameter:
    """``[C, 2]`` (dy, dx) offsets, uniform in [-1, 1] so that channels start spread over a 3x3 window."""
    return nn.Parameter(torch.empty(channels, 2).uniform_(-1.0, 1.0))


def _unit_rows(grad: Tensor) -> Tensor:
    """Scale each channel's (d_dy, d_dx) to unit length; zero rows stay zero."""
    return grad / grad.norm(dim=1, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)


class Shift2d(_ChannelShift):
    """Grouped shift (Wu et al. 2018): fixed offsets, no parameters, zero FLOPs."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1, mapping: str = "interleaved") -> None:
        super().__init__(channels)
        grouped_shift_offsets(channels, kernel_size, dilation, mapping)  # validates the arguments
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.mapping = mapping

    def offsets(self) -> Tensor:
        """The ``[C, 2]`` int64 ``(dy, dx)`` table this module applies."""
        return torch.from_numpy(grouped_shift_offsets(self.channels, self.kernel_size, self.dilation, self.mapping))

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return shift2d(x, self.kernel_size, self.dilation, self.mapping)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, dilation={self.dilation}, mapping={self.mapping!r}"


class ActiveShift2d(_ChannelShift):
    """Active shift layer (Jeon & Kim 2018): learnable real offsets, bilinear interpolation.

    ``normalize_grad=True`` rescales each channel's offset gradient to unit length, as in the
    paper, through a hook on ``offset`` (not an op argument, so the exported op stays plain).
    """

    lr_mult = 0.01
    """Learning-rate multiplier the paper uses for the offsets (with no weight decay); see ``param_groups``."""

    def __init__(self, channels: int, stride: int = 1, padding: int = 0, normalize_grad: bool = False) -> None:
        super().__init__(channels)
        check_stride_padding(stride, padding)
        self.stride = stride
        self.padding = padding
        self.normalize_grad = normalize_grad
        self.offset = _learnable_offset(channels)
        self._hook_normalization()

    def _hook_normalization(self) -> None:
        if self.normalize_grad:
            self.offset.register_hook(_unit_rows)

    def __setstate__(self, state) -> None:
        """Tensor hooks are neither deep-copied nor pickled: re-attach ours."""
        super().__setstate__(state)
        self._hook_normalization()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return active_shift2d(x, self.offset, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"{self.channels}, stride={self.stride}, padding={self.padding}, normalize_grad={self.normalize_grad}"


class SparseShift2d(_ChannelShift):
    """Sparse shift layer (Chen et al. 2019): integer shift by the rounded offsets, STE gradients."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.offset = _learnable_offset(channels)

    def integer_offsets(self) -> Tensor:
        """The ``[C, 2]`` int64 offsets applied at inference (``torch.round``, half-to-even)."""
        return torch.round(self.offset.detach()).long()

    def sparsity(self) -> float:
        """Fraction of channels that move no data (rounded offset ``(0, 0)``)."""
        return float((self.integer_offsets() == 0).all(dim=1).double().mean())

    def l1_penalty(self) -> Tensor:
        """``sum |offset|``: the paper's regulariser that drives channels to ``(0, 0)``."""
        return self.offset.abs().sum()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return sparse_shift2d(x, self.offset)

    def extra_repr(self) -> str:
        return f"{self.channels}"


def sparse_shift_penalty(model: nn.Module) -> Tensor:
    """Sum of ``l1_penalty()`` over every ``SparseShift2d`` in ``model`` (0 when there is none)."""
    return sum((m.l1_penalty() for m in model.modules() if isinstance(m, SparseShift2d)), torch.tensor(0.0))


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer groups: ``ActiveShift2d`` offsets at ``lr * lr_mult`` without weight decay, the rest as given."""
    offsets = [m.offset for m in model.modules() if isinstance(m, ActiveShift2d)]
    shift_ids = {id(p) for p in offsets}
    rest = [p for p in model.parameters() if id(p) not in shift_ids]
    groups = [
        {"params": rest, "lr": lr, "weight_decay": weight_decay},
        {"params": offsets, "lr": lr * ActiveShift2d.lr_mult, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
