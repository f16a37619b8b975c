"""Tiny blocks in the style of torchvision/timm efficient CNNs, written here (neither library installs beside our
torch): each one exercises layers the Adreno texture path must handle (issue 13). Channels 16-32, 16x16 maps."""
from __future__ import annotations

import torch
from torch import nn

from tvm_ecnn.nn import Shift2d


class GroupNormBlock(nn.Module):
    """conv -> GroupNorm -> ReLU -> conv (ShiftViT/AS-MLP normalise with GroupNorm)."""

    def __init__(self, c=16):
        super().__init__()
        self.conv1, self.norm, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(4, c), nn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.conv2(torch.relu(self.norm(self.conv1(x))))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels of an NCHW map (ConvNeXt-style ``LayerNorm2d``): permute, normalise, permute back."""

    def __init__(self, c=16):
        super().__init__()
        self.conv1, self.norm, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.LayerNorm(c), nn.Conv2d(c, c, 1)

    def forward(self, x):
        y = self.norm(self.conv1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv2(y)


class ChannelStatistics(nn.Module):
    """Norms and reductions over the channel axis: InstanceNorm, LayerNorm over (C, H, W) (timm's GroupNorm1 as a
    LayerNorm), and a CBAM-style spatial gate ``y * sigmoid(mean over channels)``."""

    def __init__(self, c=16):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        y = nn.functional.instance_norm(self.conv1(x))
        y = nn.functional.layer_norm(y, y.shape[1:])
        return self.conv2(y * torch.sigmoid(y.mean(1, keepdim=True)))


class SqueezeExcite(nn.Module):
    """``x * gate(conv1x1(relu(conv1x1(avg_pool(x)))))`` (SENet/MobileNetV3/EfficientNet)."""

    def __init__(self, c=16, squeezed=8, gate=nn.Sigmoid):
        super().__init__()
        self.reduce, self.expand, self.gate = nn.Conv2d(c, squeezed, 1), nn.Conv2d(squeezed, c, 1), gate()

    def forward(self, x):
        s = torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * self.gate(self.expand(s))


class SEBlock(nn.Module):
    """conv -> SE (sigmoid) -> conv."""

    def __init__(self, c=16):
        super().__init__()
        self.conv1, self.se, self.conv2 = nn.Conv2d(c, c, 3, padding=1), SqueezeExcite(c), nn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.conv2(self.se(self.conv1(x)))


class MBConv(nn.Module):
    """EfficientNet MBConv: expand 1x1 -> BN -> SiLU -> depthwise 3x3 -> BN -> SiLU -> SE -> project 1x1 -> BN,
    with the residual."""

    def __init__(self, c=16, expand=2, act=nn.SiLU, gate=nn.Sigmoid):
        super().__init__()
        hidden = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act())
        self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
                                nn.BatchNorm2d(hidden), act())
        self.se = SqueezeExcite(hidden, c // 2, gate)
        self.project = nn.Sequential(nn.Conv2d(hidden, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.project(self.se(self.dw(self.expand(x))))


class MobileNetV3Block(nn.Module):
    """MobileNetV3 bneck: hardswish activations and a hardsigmoid SE gate; then adaptive pool + dense head."""

    def __init__(self, c=16, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.Hardswish())
        self.block = MBConv(c, act=nn.Hardswish, gate=nn.Hardsigmoid)
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        y = self.block(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class ShuffleBlock(nn.Module):
    """ShuffleNetV2 unit: split channels, branch (1x1 -> depthwise 3x3 -> 1x1), concat, channel shuffle."""

    def __init__(self, c=16):
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(nn.Conv2d(half, half, 1), nn.ReLU(),
                                    nn.Conv2d(half, half, 3, padding=1, groups=half), nn.Conv2d(half, half, 1),
                                    nn.ReLU())
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        y = torch.cat((a, self.branch(b)), dim=1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.conv(y)


class ShiftMLPBlock(nn.Module):
    """ShiftViT/AS-MLP style: GroupNorm(1) -> spatial shift -> 1x1 MLP (GELU), with the residual; then a max pool.
    (``nn.AdaptiveMaxPool2d`` has no converter in TVM 0.27's importer.)"""

    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.norm, self.shift = nn.GroupNorm(1, c), Shift2d(c)
        self.mlp = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.GELU(), nn.Conv2d(2 * c, c, 1))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        x = self.stem(x)
        return self.pool(x + self.mlp(self.shift(self.norm(x))))


class ResNetBlock(nn.Module):
    """Basic ResNet block with a strided projection shortcut (run at batch 4)."""

    def __init__(self, c=16):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, padding=1, bias=False), nn.BatchNorm2d(2 * c))
        self.down = nn.Sequential(nn.Conv2d(c, 2 * c, 1, 2, bias=False), nn.BatchNorm2d(2 * c))

    def forward(self, x):
        return torch.relu(self.conv2(self.conv1(x)) + self.down(x))


def temporal_shift(x, segments=4, fold_div=8):
    """TSM's shift (Lin et al. 2019): a batch of ``segments`` frames, 1/8 of the channels moved one frame back,
    1/8 one frame forward, zero-filled (written with slice assignment, as the reference code does)."""
    nt, c, h, w = x.shape
    x = x.view(nt // segments, segments, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.view(nt, c, h, w)


class TemporalShiftBlock(nn.Module):
    """TSM ResNet block (batch 4 = 4 frames): the residual branch starts with the temporal shift. At 4x4 pixels the
    ``(n, t, c, h, w)`` view ends in a 4-long axis, which TVM's texture annotation takes for RGBA lanes."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(c, c, 3, padding=1)
        self.conv1 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        y = self.stem(x)
        return torch.relu(self.conv2(self.conv1(temporal_shift(y))) + y)


# name -> (constructor, input shape)
BLOCKS = {
    "group_norm": (GroupNormBlock, (1, 16, 16, 16)),
    "layer_norm_channels": (ChannelLayerNorm, (1, 16, 16, 16)),
    "channel_statistics": (ChannelStatistics, (1, 16, 16, 16)),
    "se_sigmoid": (SEBlock, (1, 16, 16, 16)),
    "mbconv_silu_se": (MBConv, (1, 16, 16, 16)),
    "mobilenet_v3_block": (MobileNetV3Block, (1, 3, 16, 16)),
    "channel_shuffle": (ShuffleBlock, (1, 16, 16, 16)),
    "shift_mlp": (ShiftMLPBlock, (1, 3, 16, 16)),
    "resnet_batch4": (ResNetBlock, (4, 16, 16, 16)),
    "tsm_resnet_batch4": (TemporalShiftBlock, (4, 16, 4, 4)),
}


def make(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """``(model in eval mode with random weights and BN statistics, example input)``."""
    cls, shape = BLOCKS[name]
    torch.manual_seed(seed)
    model = cls().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so folding them is checked
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(shape)
