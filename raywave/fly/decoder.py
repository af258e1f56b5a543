"""The flow decoder on the hex lattice and the task objectives.

ReLU voltages of the output cell types on the (2e+1)² axial map -> hex-masked 5×5 conv (34 -> 8) -> BatchNorm
-> Softplus -> Dropout 0.5 -> hex-masked 5×5 conv (8 -> 3); flow = ch[0:2] / (softplus(ch[2]) + 1).
7,427 parameters for 34 output types. The masks keep the kernel taps of a hexagon of radius 2 in axial
coordinates (19 of 25), so the convolution is a function on the hex lattice.

The maps are channels-last (frames, rows, cols, channels) throughout, which is what oneDNN convolves fastest
on a CPU (about 2× over NCHW for these shapes); a (B, T, columns, C)-ordered input, as
`FlyNetwork.output_voltages` returns, goes onto the map without a transpose.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from raywave.fly import hexlattice


class HexConv(nn.Conv2d):
    """A conv2d on axial maps whose kernel is restricted to a hexagonal neighbourhood."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5):
        super().__init__(c_in, c_out, kernel, padding=kernel // 2)
        r = kernel // 2
        du, dv = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
        mask = (np.abs(du + dv) <= r).astype(np.float32)
        self.register_buffer("mask", torch.from_numpy(mask))
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class FlowDecoder(nn.Module):
    """(batch, frames, n_out, columns) output-cell voltages -> (batch, frames, columns, 2) flow."""

    def __init__(
        self,
        n_out: int = 34,
        hidden: int = 8,
        kernel: int = 5,
        extent: int = hexlattice.EXTENT,
        dropout: float = 0.5,
        seed: int = 0,
    ):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv1 = HexConv(n_out, hidden, kernel)
            self.norm = nn.BatchNorm2d(hidden)
            self.conv2 = HexConv(hidden, 3, kernel)
            nn.init.zeros_(self.conv2.weight)  # start from the zero-flow prediction; training moves away from it
            nn.init.zeros_(self.conv2.bias)
        self.extent, self.dropout = extent, dropout
        u, v = hexlattice.columns(extent)
        self.register_buffer("flat_index", torch.from_numpy((u + extent) * (2 * extent + 1) + (v + extent)))

    def forward(self, voltages: torch.Tensor) -> torch.Tensor:
        b, t, c, n = voltages.shape
        side = 2 * self.extent + 1
        x = torch.relu(voltages).transpose(-1, -2).reshape(b * t, n, c)
        grid = x.new_zeros(b * t, side * side, c)
        grid[:, self.flat_index] = x
        x = grid.view(b * t, side, side, c).permute(0, 3, 1, 2)  # NCHW shape, channels-last memory
        x = F.softplus(self.norm(self.conv1(x)))
        if self.training and self.dropout > 0:  # inverted dropout; rand >= p is ~4x faster than bernoulli_ on CPU
            x = x * torch.rand_like(x).ge_(self.dropout).mul_(1 / (1 - self.dropout))
        y = self.conv2(x).permute(0, 2, 3, 1).reshape(b * t, side * side, 3)[:, self.flat_index]  # (bt, n, 3)
        flow = y[..., :2] / (F.softplus(y[..., 2:]) + 1)
        return flow.view(b, t, n, 2)


def l2norm(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Training loss: mean over the batch of sqrt(sum over frames, columns and xy of squared error)."""
    return ((pred - target) ** 2).flatten(1).sum(1).sqrt().mean()


def epe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """End-point error: mean over batch, frames and columns of |pred - target|."""
    return torch.linalg.vector_norm(pred - target, dim=-1).mean()
