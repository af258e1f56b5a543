"""The next-frame-prediction (NFP) model of the poster's step 3, assembled from RAFT's parts.

Given calcium frames I1, I2 (N, 1, H, W), normalised to about [0, 1], it predicts I3:

    fnet(I1), fnet(I2) -> all-pairs correlation -> ConvGRU iterations (4 or 8) from cnet(I1) -> motion f
    I3_hat = warp(I2, -f)  (constant-velocity extrapolation)  +  decoder(hidden state)  (a residual, 8x sub-pixel)

Single-channel frames are **repeated to three channels** (and mapped to [-1, 1] as RAFT maps 0-255 images), so
the encoders keep RAFT's exact shapes and names (`fnet.*`, `cnet.*`, `update_block.*`): transfer into RAFT is
a key-for-key copy. The decoder's and the flow head's last layers start at zero, so an untrained model predicts
I3 = I2 exactly (the "repeat I2" baseline), and training starts from that baseline (`baseline_init=False` keeps
PyTorch's default initialisation there instead, so that every layer gets a gradient from the first step).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from raywave.errors import RaywaveError
from raywave.models.corr import CorrBlock, coords_grid
from raywave.models.extractor import BasicEncoder, SmallEncoder
from raywave.models.raft import VARIANTS, check_pair, iterate_flow
from raywave.models.update import BasicUpdateBlock, SmallUpdateBlock


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at x + flow(x) (bilinear, border values outside)."""
    n, _, h, w = image.shape
    coords = coords_grid(n, h, w, device=image.device) + flow
    gx = 2 * coords[:, 0] / max(w - 1, 1) - 1
    gy = 2 * coords[:, 1] / max(h - 1, 1) - 1
    return F.grid_sample(image, torch.stack([gx, gy], dim=-1), align_corners=True, padding_mode="border")


class NextFrameHead(nn.Module):
    """Hidden state (1/8 resolution) -> a one-channel residual at full resolution (pixel shuffle x8)."""

    def __init__(self, hidden_dim: int, width: int = 128, zero_init: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(hidden_dim, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 64, 1)
        if zero_init:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, net: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv2(torch.relu(self.conv1(net))), 8)


class NFP(nn.Module):
    """RAFT encoders + correlation + ConvGRU iterations + a next-frame decoder."""

    def __init__(self, variant: Literal["basic", "small"] = "small", iters: int = 4, corr_levels: int | None = None,
                 corr_radius: int | None = None, baseline_init: bool = True):  # fmt: skip
        super().__init__()
        if variant not in VARIANTS:
            raise RaywaveError(f"unknown NFP encoder {variant!r}; choose basic or small")
        if iters < 1:
            raise RaywaveError(f"iters must be >= 1, got {iters}")
        if corr_levels is not None and not 1 <= corr_levels <= 4:
            raise RaywaveError(f"corr_levels must be 1-4, got {corr_levels}")
        s = VARIANTS[variant]
        self.variant, self.iters = variant, iters
        self.hidden_dim, self.context_dim = s.hidden_dim, s.context_dim
        self.corr_levels = corr_levels or s.corr_levels
        self.corr_radius = corr_radius or s.corr_radius
        if variant == "small":
            self.fnet = SmallEncoder(output_dim=s.fnet_dim, norm_fn="instance")
            self.cnet = SmallEncoder(output_dim=s.hidden_dim + s.context_dim, norm_fn="none")
            self.update_block = SmallUpdateBlock(self.corr_levels, self.corr_radius, hidden_dim=s.hidden_dim)
        else:
            self.fnet = BasicEncoder(output_dim=s.fnet_dim, norm_fn="instance")
            self.cnet = BasicEncoder(output_dim=s.hidden_dim + s.context_dim, norm_fn="batch")
            self.update_block = BasicUpdateBlock(self.corr_levels, self.corr_radius, hidden_dim=s.hidden_dim)
        self.decoder = NextFrameHead(s.hidden_dim, zero_init=baseline_init)
        if baseline_init:  # start from zero motion: I3_hat = I2
            nn.init.zeros_(self.update_block.flow_head.conv2.weight)
            nn.init.zeros_(self.update_block.flow_head.conv2.bias)

    @staticmethod
    def to_rgb_range(frames: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) in [0, 1] -> (N, 3, H, W) in [-1, 1], the range RAFT's encoders see."""
        return (2 * frames - 1).expand(-1, 3, -1, -1).contiguous()

    def forward(self, i1: torch.Tensor, i2: torch.Tensor, iters: int | None = None):
        """(predicted I3, full-resolution motion I1 -> I2)."""
        check_pair(i1, i2, 1, self.corr_levels, "NFP")
        x1, x2 = self.to_rgb_range(i1), self.to_rgb_range(i2)
        fmap1, fmap2 = self.fnet([x1, x2])
        corr_fn = CorrBlock(fmap1.float(), fmap2.float(), num_levels=self.corr_levels, radius=self.corr_radius)
        net, inp = torch.split(self.cnet(x1), [self.hidden_dim, self.context_dim], dim=1)
        *_, (_, flow_up, net_state) = iterate_flow(self.update_block, corr_fn, torch.tanh(net), torch.relu(inp),
                                                   iters or self.iters)  # fmt: skip
        pred = backward_warp(i2, -flow_up) + self.decoder(net_state)
        return pred, flow_up


def nfp_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target)
