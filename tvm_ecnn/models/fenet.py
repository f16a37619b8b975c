"""FE-Net (Chen et al., CVPR 2019, "All You Need is a Few Shifts"), 224x224 input.

Blocks (``ShiftBottleneck`` from ``shiftresnet.py`` with a different spatial op)::

    IBSSL:  1x1 (in -> out*e) -> BN -> ReLU -> SparseShift2d -> 1x1 (-> out) -> BN (+ identity
            when in == out; no residual otherwise)
    IBPool: the same with a 2x2 average pool instead of the sparse shift, no residual

After the 3x3/2 stem, IBPool is the only downsampling: 112 -> 56 -> 28 -> 14 -> 7.

Stage table. The paper's table is not reproduced here; this one was derived to land on the
published FE-Net-1.0 numbers (3.7 M parameters, 301 M MACs) *and*, with every width scaled by
1.37 and rounded to a multiple of 8, on FE-Net-1.37 (5.9 M, 563 M). The MAC ratio
563/301 = 1.87 ~ 1.37**2 says FE-Net-1.37 is a plain width multiplier. Starting from
MobileNetV2's table (shift-friendly widths, 1280-wide head) with the expansion applied to the
*output* width, a small search over stage repeats, last width and head width picked

    stem 3x3/2 -> 32                                (112x112)
    IBSSL e1 c16 x1                                 (112)
    IBPool e6 c24, IBSSL e6 c24 x1                  (56)
    IBPool e6 c32, IBSSL e6 c32 x1                  (28)
    IBPool e6 c64, IBSSL e6 c64 x3, IBSSL e6 c96 x2 (14)
    IBPool e6 c160, IBSSL e6 c160 x1, IBSSL e6 c320 x1 (7)
    1x1 -> 1280, global average, FC

which measures 3.62 M / 301 M (1.0) and 6.08 M / 544 M (1.37): within 2% and 4% of the paper.
Train with ``tvm_ecnn.nn.sparse_shift_penalty(model)`` added to the loss to sparsify the shifts.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn import SparseShift2d
from .mobilenetv2 import ConvBNAct, init_weights, make_divisible
from .shiftresnet import ShiftBottleneck

__all__ = ["FENet", "ibssl", "ibpool", "fenet", "fenet1_0", "fenet1_37"]

# kind, expansion e, output channels c, repeats n
STAGES = (
    ("ssl", 1, 16, 1),
    ("pool", 6, 24, 1), ("ssl", 6, 24, 1),
    ("pool", 6, 32, 1), ("ssl", 6, 32, 1),
    ("pool", 6, 64, 1), ("ssl", 6, 64, 3), ("ssl", 6, 96, 2),
    ("pool", 6, 160, 1), ("ssl", 6, 160, 1), ("ssl", 6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def ibssl(in_channels: int, out_channels: int, expansion: int) -> ShiftBottleneck:
    """Inverted bottleneck with a sparse shift; linear (no ReLU) output like MobileNetV2."""
    mid = out_channels * expansion
    return ShiftBottleneck(in_channels, mid, out_channels, SparseShift2d(mid),
                           project_shortcut=False, final_relu=False)


def ibpool(in_channels: int, out_channels: int, expansion: int) -> ShiftBottleneck:
    """Inverted bottleneck whose 2x2 average pool halves the map (the only downsampling)."""
    mid = out_channels * expansion
    return ShiftBottleneck(in_channels, mid, out_channels, nn.AvgPool2d(2), spatial_stride=2,
                           project_shortcut=False, final_relu=False)


class FENet(nn.Module):
    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000, in_channels: int = 3,
                 dropout: float = 0.2):
        super().__init__()
        channels = make_divisible(STEM_CHANNELS * width_mult)
        blocks: list[nn.Module] = [ConvBNAct(in_channels, channels, stride=2, activation=nn.ReLU)]
        for kind, expansion, width, repeats in STAGES:
            out = make_divisible(width * width_mult)
            make_block = ibpool if kind == "pool" else ibssl
            for _ in range(repeats):
                blocks.append(make_block(channels, out, expansion))
                channels = out
        head = make_divisible(HEAD_CHANNELS * max(1.0, width_mult))
        blocks.append(ConvBNAct(channels, head, kernel_size=1, activation=nn.ReLU))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def fenet(width_mult: float = 1.0, num_classes: int = 1000, in_channels: int = 3) -> FENet:
    """FE-Net with width multiplier ``width_mult``; default input (1, 3, 224, 224)."""
    return FENet(width_mult, num_classes, in_channels)


def fenet1_0(num_classes: int = 1000, in_channels: int = 3) -> FENet:
    """FE-Net-1.0: published 3.7 M parameters, 301 M MACs, 72.9% top-1."""
    return FENet(1.0, num_classes, in_channels)


def fenet1_37(num_classes: int = 1000, in_channels: int = 3) -> FENet:
    """FE-Net-1.37: published 5.9 M parameters, 563 M MACs, 75.0% top-1."""
    return FENet(1.37, num_classes, in_channels)
