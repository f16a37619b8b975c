"""SqueezeNet 1.0 / 1.1 (Iandola et al. 2016), module for module torchvision's layout.

Same ``state_dict`` keys as torchvision, so its checkpoints load unchanged; at 1000 classes
1,248,424 (v1.0) and 1,235,496 (v1.1) parameters, ~0.82 G / ~0.35 G MACs at 224x224.
v1.1 reaches v1.0's accuracy with 2.4x fewer MACs by starting with a 3x3/64 stride-2 conv and
pooling earlier: the Fire modules then run on smaller maps.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Fire", "SqueezeNet", "squeezenet1_0", "squeezenet1_1"]


class Fire(nn.Module):
    """1x1 squeeze (few channels) -> ReLU -> concat(1x1 expand, 3x3 expand) -> ReLU.

    Squeezing first keeps the 3x3 filters' input narrow, and half of the expand filters are
    1x1: the two SqueezeNet strategies for fewer parameters."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


class SqueezeNet(nn.Module):
    def __init__(self, version: str = "1_0", num_classes: int = 1000, in_channels: int = 3,
                 dropout: float = 0.5):
        super().__init__()
        if version == "1_0":
            layers = [
                nn.Conv2d(in_channels, 96, kernel_size=7, stride=2), nn.ReLU(inplace=True), _pool(),
                Fire(96, 16, 64, 64), Fire(128, 16, 64, 64), Fire(128, 32, 128, 128), _pool(),
                Fire(256, 32, 128, 128), Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
                Fire(384, 64, 256, 256), _pool(),
                Fire(512, 64, 256, 256),
            ]
        elif version == "1_1":
            layers = [
                nn.Conv2d(in_channels, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True), _pool(),
                Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), _pool(),
                Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), _pool(),
                Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
                Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
            ]
        else:
            raise ValueError(f"SqueezeNet version must be '1_0' or '1_1', got {version!r}")
        self.features = nn.Sequential(*layers)
        # The classifier is a 1x1 conv + global average: no fully connected layer at all.
        final_conv = nn.Conv2d(512, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )
        self.flatten = nn.Flatten(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.classifier(self.features(x)))


def squeezenet1_0(num_classes: int = 1000, in_channels: int = 3) -> SqueezeNet:
    """SqueezeNet 1.0 (7x7/96 stem); default input (1, 3, 224, 224)."""
    return SqueezeNet("1_0", num_classes, in_channels)


def squeezenet1_1(num_classes: int = 1000, in_channels: int = 3) -> SqueezeNet:
    """SqueezeNet 1.1 (3x3/64 stem, earlier pooling); default input (1, 3, 224, 224)."""
    return SqueezeNet("1_1", num_classes, in_channels)
