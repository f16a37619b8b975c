"""MobileNetV2 (Sandler et al. 2018), and a squeeze-and-excitation variant.

``mobilenet_v2`` is torchvision's layout module for module (same ``state_dict`` keys), so
torchvision checkpoints load unchanged: 3,504,872 parameters and ~300 M MACs at 224x224 with
1000 classes. It is the depthwise-separable baseline the shift networks are measured against.

``mobilenet_v2_se`` inserts squeeze-and-excitation between the depthwise convolution and the
projection of every inverted residual, as MobileNetV3 does: squeeze to ``hidden / 4`` channels
(rounded to a multiple of 8), ReLU, expand, gate. The gate defaults to hard sigmoid
(``relu6(x + 3) / 6``): no exponential, so it stays cheap on mobile CPUs/GPUs and quantizes well;
``gate="sigmoid"`` gives the original SENet gate.

``ConvBNAct`` and ``make_divisible`` are shared by the other model families.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["ConvBNAct", "SqueezeExcite", "InvertedResidual", "MobileNetV2", "make_divisible",
           "mobilenet_v2", "mobilenet_v2_se", "init_weights"]

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` (vector-friendly) without losing over 10%."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> activation, indexed 0/1/2 like torchvision's
    ``Conv2dNormActivation`` so that checkpoints keep their keys. ``activation=None`` omits it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, activation: Callable[[], nn.Module] | None = nn.ReLU6):
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)
        self.out_channels = out_channels


GATES = {"hard": nn.Hardsigmoid, "sigmoid": nn.Sigmoid}


class SqueezeExcite(nn.Module):
    """Channel attention: global average -> 1x1 reduce -> ReLU -> 1x1 expand -> gate -> scale."""

    def __init__(self, channels: int, reduce_ratio: int = 4, gate: str = "hard"):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate must be one of {sorted(GATES)}, got {gate!r}")
        squeezed = make_divisible(channels / reduce_ratio, 8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.gate = GATES[gate]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise (stride) -> [SE] -> 1x1 linear projection (+ identity)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int,
                 se_gate: str | None = None):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, kernel_size=1))
        layers.append(ConvBNAct(hidden, hidden, stride=stride, groups=hidden))
        if se_gate is not None:
            layers.append(SqueezeExcite(hidden, gate=se_gate))
        layers += [nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def init_weights(model: nn.Module) -> None:
    """torchvision's init (kaiming fan-out convs, unit BN, N(0, 0.01) classifier): deterministic
    under ``torch.manual_seed`` and shared by every family here."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
                 se_gate: str | None = None, dropout: float = 0.2):
        super().__init__()
        channels = make_divisible(32 * width_mult)
        last_channels = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNAct(in_channels, channels, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(channels, out, s if i == 0 else 1, t, se_gate))
                channels = out
        features.append(ConvBNAct(channels, last_channels, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0) -> MobileNetV2:
    """torchvision ``mobilenet_v2``; default input (1, 3, 224, 224)."""
    return MobileNetV2(num_classes, in_channels, width_mult)


def mobilenet_v2_se(num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
                    gate: str = "hard") -> MobileNetV2:
    """MobileNetV2 with SE (reduce 4, hard-sigmoid gate by default) in every inverted residual;
    default input (1, 3, 224, 224)."""
    return MobileNetV2(num_classes, in_channels, width_mult, se_gate=gate)
