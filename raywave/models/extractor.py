"""RAFT's feature and context encoders (residual / bottleneck blocks, 1/8 resolution).

Module and parameter names follow the official release (princeton-vl/RAFT `core/extractor.py`), so its
checkpoints load with strict=True.
"""

from __future__ import annotations

import torch
from torch import nn


def make_norm(norm_fn: str, channels: int, groups: int = 8) -> nn.Module:
    """group, batch, instance (no affine parameters, as in RAFT) or none."""
    if norm_fn == "group":
        return nn.GroupNorm(num_groups=groups, num_channels=channels)
    if norm_fn == "batch":
        return nn.BatchNorm2d(channels)
    if norm_fn == "instance":
        return nn.InstanceNorm2d(channels)
    if norm_fn == "none":
        return nn.Sequential()
    raise ValueError(f"unknown norm_fn {norm_fn!r}; choose group, batch, instance or none")


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a (strided 1x1) shortcut."""

    def __init__(self, in_planes: int, planes: int, norm_fn: str = "group", stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1 = make_norm(norm_fn, planes, planes // 8)
        self.norm2 = make_norm(norm_fn, planes, planes // 8)
        self.downsample = None
        if stride != 1:
            self.norm3 = make_norm(norm_fn, planes, planes // 8)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 convolutions at a quarter of the width, with a (strided 1x1) shortcut."""

    def __init__(self, in_planes: int, planes: int, norm_fn: str = "group", stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes // 4, kernel_size=1, padding=0)
        self.conv2 = nn.Conv2d(planes // 4, planes // 4, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(planes // 4, planes, kernel_size=1, padding=0)
        self.relu = nn.ReLU(inplace=True)
        self.norm1 = make_norm(norm_fn, planes // 4, planes // 8)
        self.norm2 = make_norm(norm_fn, planes // 4, planes // 8)
        self.norm3 = make_norm(norm_fn, planes, planes // 8)
        self.downsample = None
        if stride != 1:
            self.norm4 = make_norm(norm_fn, planes, planes // 8)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        y = self.relu(self.norm3(self.conv3(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class _Encoder(nn.Module):
    """conv 7x7/2 -> three stages of two blocks (strides 1, 2, 2) -> 1x1 conv: features at 1/8 resolution."""

    block: type[nn.Module]
    widths: tuple[int, int, int]

    def __init__(self, output_dim: int, norm_fn: str, dropout: float = 0.0, in_channels: int = 3):
        super().__init__()
        self.norm_fn = norm_fn
        first = self.widths[0]
        self.norm1 = make_norm(norm_fn, first, 8)
        self.conv1 = nn.Conv2d(in_channels, first, kernel_size=7, stride=2, padding=3)
        self.relu1 = nn.ReLU(inplace=True)
        self.in_planes = first
        self.layer1 = self._make_layer(self.widths[0], stride=1)
        self.layer2 = self._make_layer(self.widths[1], stride=2)
        self.layer3 = self._make_layer(self.widths[2], stride=2)
        self.conv2 = nn.Conv2d(self.widths[2], output_dim, kernel_size=1)
        self.dropout = nn.Dropout2d(p=dropout) if dropout > 0 else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d | nn.GroupNorm):
                if m.weight is not None:
                    nn.init.constant_(m.weight, 1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def _make_layer(self, dim: int, stride: int) -> nn.Sequential:
        layers = nn.Sequential(self.block(self.in_planes, dim, self.norm_fn, stride=stride),
                               self.block(dim, dim, self.norm_fn, stride=1))  # fmt: skip
        self.in_planes = dim
        return layers

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One batch, or a list of two batches encoded together (split again on return)."""
        pair = isinstance(x, list | tuple)
        if pair:
            n = x[0].shape[0]
            x = torch.cat(x, dim=0)
        x = self.relu1(self.norm1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.conv2(x)
        if self.training and self.dropout is not None:
            x = self.dropout(x)
        return torch.split(x, [n, n], dim=0) if pair else x


class BasicEncoder(_Encoder):
    """RAFT (basic/large) encoder: residual blocks 64 -> 96 -> 128."""

    block = ResidualBlock
    widths = (64, 96, 128)

    def __init__(self, output_dim: int = 128, norm_fn: str = "batch", dropout: float = 0.0, in_channels: int = 3):
        super().__init__(output_dim, norm_fn, dropout, in_channels)


class SmallEncoder(_Encoder):
    """RAFT-small encoder: bottleneck blocks 32 -> 64 -> 96."""

    block = BottleneckBlock
    widths = (32, 64, 96)

    def __init__(self, output_dim: int = 128, norm_fn: str = "batch", dropout: float = 0.0, in_channels: int = 3):
        super().__init__(output_dim, norm_fn, dropout, in_channels)
