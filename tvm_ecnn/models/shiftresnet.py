"""ShiftResNet for CIFAR-10 (Wu et al., CVPR 2018), 32x32 input.

The CIFAR ResNet-20/56 skeleton (3x3/16 stem, stages of 16/32/64 channels, global average, FC)
where every basic block becomes one conv-shift-conv unit::

    1x1 (in -> mid) -> BN -> ReLU -> Shift2d(k=3) -> 1x1 (mid -> out, stride s) -> BN
        (+ identity, or strided 1x1 + BN when the shape changes) -> ReLU

``mid = int(out * expansion)``. The default expansion is 6 because that is the row of the paper's
CIFAR table (and of the reference repository's README) that this reproduces: ShiftResNet-20,
epsilon = 6, 0.19 M parameters (this builds 186,746 with 10 classes); ShiftResNet-56 at
epsilon = 6 is 0.58 M there (this builds 583,226); epsilon = 9 is the plain ResNet's size.
Attribute names follow the reference code (``conv1/bn1/conv2/bn2/shortcut``, ``layer1..3``,
``linear``) so its checkpoints map by name.

``ShiftBottleneck`` is also FE-Net's IBSSL/IBPool block (``fenet.py``): only the spatial op,
the shortcut policy and the final ReLU differ.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn import Shift2d
from .mobilenetv2 import init_weights

__all__ = ["ShiftBottleneck", "ShiftResNet", "shiftresnet20", "shiftresnet56"]


class ShiftBottleneck(nn.Module):
    """1x1 -> BN -> ReLU -> ``spatial`` -> 1x1 (stride) -> BN (+ shortcut) [-> ReLU].

    ``spatial`` is the zero-MAC spatial op (grouped/sparse shift, or pooling); it must keep or
    shrink the map consistently with ``stride`` and ``spatial_stride``. When the block changes
    shape, ``project_shortcut`` picks a strided 1x1 + BN shortcut (ResNet) or no residual at all
    (inverted-residual style); same-shape blocks always get the identity."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, spatial: nn.Module,
                 stride: int = 1, spatial_stride: int = 1, project_shortcut: bool = True,
                 final_relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.spatial = spatial
        self.conv2 = nn.Conv2d(mid_channels, out_channels, 1, stride=stride, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        total_stride = stride * spatial_stride
        self.shortcut: nn.Module | None = None  # None: no residual at all
        if total_stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif project_shortcut:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=total_stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU(inplace=True) if final_relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.spatial(self.relu1(self.bn1(self.conv1(x))))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out if self.relu2 is None else self.relu2(out)


class ShiftResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, expansion: float = 6, num_classes: int = 10,
                 in_channels: int = 3, kernel_size: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        channels = 16
        stages = []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                mid = int(width * expansion)
                blocks.append(ShiftBottleneck(channels, mid, width, Shift2d(mid, kernel_size),
                                              stride=stride if i == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(64, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.flatten(self.pool(x)))


def shiftresnet20(num_classes: int = 10, in_channels: int = 3, expansion: float = 6) -> ShiftResNet:
    """ShiftResNet-20 (3 blocks per stage); default input (1, 3, 32, 32)."""
    return ShiftResNet(3, expansion, num_classes, in_channels)


def shiftresnet56(num_classes: int = 10, in_channels: int = 3, expansion: float = 6) -> ShiftResNet:
    """ShiftResNet-56 (9 blocks per stage); default input (1, 3, 32, 32)."""
    return ShiftResNet(9, expansion, num_classes, in_channels)
