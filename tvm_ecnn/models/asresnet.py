"""AS-ResNet (Jeon & Kim, NeurIPS 2018): a ResNet built from 1x1 convs and active shifts.

Block (pre-activation, as in the paper's basic module)::

    BN -> ReLU -> 1x1 (in -> w_s) -> BN -> ReLU -> ActiveShift2d(stride) -> 1x1 (w_s -> w_s)
        (+ identity, or a strided 1x1 on the pre-activated input when the shape changes)

Downsampling is done by the active shift itself (stride 2), so the first 1x1 runs at the input
resolution and the shift picks the sampling points.

Stage layout, and how it was derived from the published counts: the paper gives 0.90 / 1.96 /
3.42 M parameters for base widths w = 32 / 50 / 68. Fitting ``params = a*w**2 + b*w`` to the
three points gives a = 615 and b = 8435 (the fit predicts the third point to 0.1%). The linear
term is the classifier (``8w x 1000``) plus BN/offsets, so the last stage is 8w wide; the
quadratic term is the 1x1 convs. The ResNet-34-like layout

    stem 3x3/2 (w) | stage widths w, w, 2w, 4w, 8w | blocks 1, 3, 4, 6, 3 | strides 1, 2, 2, 2, 2

has exactly 617 w**2 conv weights (2 + 7 + 32 + 192 + 384) and ~8390 w linear ones, and builds
0.90 / 1.96 / 3.42 M parameters at 1000 classes, i.e. it matches all three published numbers.
Spatial sizes at 224x224 input: 112 (stage 1), 56, 28, 14, 7, then global average and FC.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn import ActiveShift2d
from .mobilenetv2 import init_weights

__all__ = ["ActiveShiftBlock", "ASResNet", "asresnet", "asresnet_w32", "asresnet_w50", "asresnet_w68"]

STAGE_BLOCKS = (1, 3, 4, 6, 3)
STAGE_WIDTH_FACTORS = (1, 1, 2, 4, 8)
STAGE_STRIDES = (1, 2, 2, 2, 2)


class ActiveShiftBlock(nn.Module):
    """Pre-activation 1x1 -> ASL(stride) -> 1x1 residual block."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.shift = ActiveShift2d(out_channels, stride=stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.projects = stride != 1 or in_channels != out_channels
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False) \
            if self.projects else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.shift(self.relu2(self.bn2(self.conv1(pre)))))
        # Pre-activation ResNet: a projection sees the activated input, the identity the raw one.
        return out + (self.shortcut(pre) if self.projects else x)


class ASResNet(nn.Module):
    def __init__(self, width: int = 32, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False)
        channels = width
        stages = []
        for blocks, factor, stride in zip(STAGE_BLOCKS, STAGE_WIDTH_FACTORS, STAGE_STRIDES):
            out = width * factor
            stage = [ActiveShiftBlock(channels, out, stride)]
            stage += [ActiveShiftBlock(out, out) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            channels = out
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(channels)  # closes the last pre-activation block
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.layers(self.conv1(x))))
        return self.fc(self.flatten(self.pool(x)))


def asresnet(width: int = 32, num_classes: int = 1000, in_channels: int = 3) -> ASResNet:
    """AS-ResNet with base width ``width``; default input (1, 3, 224, 224)."""
    return ASResNet(width, num_classes, in_channels)


def asresnet_w32(num_classes: int = 1000, in_channels: int = 3) -> ASResNet:
    """AS-ResNet-w32: 0.90 M parameters published (64.1% top-1)."""
    return ASResNet(32, num_classes, in_channels)


def asresnet_w50(num_classes: int = 1000, in_channels: int = 3) -> ASResNet:
    """AS-ResNet-w50: 1.96 M parameters published (69.9% top-1)."""
    return ASResNet(50, num_classes, in_channels)


def asresnet_w68(num_classes: int = 1000, in_channels: int = 3) -> ASResNet:
    """AS-ResNet-w68: 3.42 M parameters published (72.2% top-1)."""
    return ASResNet(68, num_classes, in_channels)
