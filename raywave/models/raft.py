"""RAFT (Teed & Deng, ECCV 2020), basic and small, with the official module names (`core/raft.py`).

Inputs are images with pixel values 0-255, (N, 3, H, W); they are mapped to [-1, 1] inside, as in the
reference. H and W must be multiples of 8 and large enough for the correlation pyramid (>= 128 px).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from raywave.errors import RaywaveError
from raywave.models.corr import CorrBlock, check_pyramid_size, coords_grid
from raywave.models.extractor import BasicEncoder, SmallEncoder
from raywave.models.update import BasicUpdateBlock, SmallUpdateBlock

MAX_FLOW = 400.0


@dataclass(frozen=True)
class RAFTSpec:
    """Sizes of one RAFT variant."""

    hidden_dim: int
    context_dim: int
    corr_levels: int
    corr_radius: int
    fnet_dim: int


VARIANTS: dict[str, RAFTSpec] = {
    "basic": RAFTSpec(hidden_dim=128, context_dim=128, corr_levels=4, corr_radius=4, fnet_dim=256),
    "small": RAFTSpec(hidden_dim=96, context_dim=64, corr_levels=4, corr_radius=3, fnet_dim=128),
}


def check_pair(image1: torch.Tensor, image2: torch.Tensor, channels: int, corr_levels: int, who: str) -> None:
    """Two (N, C, H, W) images of one shape, H and W multiples of 8, large enough for the pyramid."""
    if image1.shape != image2.shape or image1.ndim != 4 or image1.shape[1] != channels:
        raise RaywaveError(f"{who} takes two (N, {channels}, H, W) images of one shape, got {tuple(image1.shape)} "
                           f"and {tuple(image2.shape)}")  # fmt: skip
    h, w = image1.shape[-2:]
    if h % 8 or w % 8:
        raise RaywaveError(f"image size {h}x{w} is not a multiple of 8; pad it (e.g. to {-(-h // 8) * 8}x"
                           f"{-(-w // 8) * 8})")  # fmt: skip
    check_pyramid_size(h // 8, w // 8, corr_levels, what=f"an image of {h}x{w} px")


def iterate_flow(update_block: nn.Module, corr_fn: CorrBlock, net: torch.Tensor, inp: torch.Tensor, iters: int,
                 flow_init: torch.Tensor | None = None):  # fmt: skip
    """RAFT's recurrence: yields (coords1 - coords0 at 1/8 resolution, full-resolution flow, hidden state)."""
    n, _, h, w = net.shape
    coords0 = coords_grid(n, h, w, device=net.device)
    coords1 = coords_grid(n, h, w, device=net.device)
    if flow_init is not None:
        coords1 = coords1 + flow_init
    for _ in range(iters):
        coords1 = coords1.detach()
        corr = corr_fn(coords1)
        net, up_mask, delta = update_block(net, inp, corr, coords1 - coords0)
        coords1 = coords1 + delta
        flow = coords1 - coords0
        yield flow, (upflow8(flow) if up_mask is None else convex_upsample(flow, up_mask)), net


def upflow8(flow: torch.Tensor) -> torch.Tensor:
    """Bilinear 8x upsampling of a flow field, vectors scaled by 8 (RAFT-small)."""
    return 8 * F.interpolate(flow, size=(8 * flow.shape[2], 8 * flow.shape[3]), mode="bilinear", align_corners=True)


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """8x upsampling as a convex combination of each coarse pixel's 3x3 neighbourhood (RAFT basic)."""
    n, _, h, w = flow.shape
    mask = torch.softmax(mask.view(n, 1, 9, 8, 8, h, w), dim=2)
    up = F.unfold(8 * flow, [3, 3], padding=1).view(n, 2, 9, 1, 1, h, w)
    up = torch.sum(mask * up, dim=2).permute(0, 1, 4, 2, 5, 3)
    return up.reshape(n, 2, 8 * h, 8 * w)


class RAFT(nn.Module):
    """Feature encoder (fnet), context encoder (cnet), correlation pyramid and iterative update block."""

    def __init__(self, variant: Literal["basic", "small"] = "basic", dropout: float = 0.0):
        super().__init__()
        if variant not in VARIANTS:
            raise RaywaveError(f"unknown RAFT variant {variant!r}; choose basic or small")
        self.variant = variant
        s = self.spec = VARIANTS[variant]
        if variant == "small":
            self.fnet = SmallEncoder(output_dim=s.fnet_dim, norm_fn="instance", dropout=dropout)
            self.cnet = SmallEncoder(output_dim=s.hidden_dim + s.context_dim, norm_fn="none", dropout=dropout)
            self.update_block = SmallUpdateBlock(s.corr_levels, s.corr_radius, hidden_dim=s.hidden_dim)
        else:
            self.fnet = BasicEncoder(output_dim=s.fnet_dim, norm_fn="instance", dropout=dropout)
            self.cnet = BasicEncoder(output_dim=s.hidden_dim + s.context_dim, norm_fn="batch", dropout=dropout)
            self.update_block = BasicUpdateBlock(s.corr_levels, s.corr_radius, hidden_dim=s.hidden_dim)

    def check_input(self, image1: torch.Tensor, image2: torch.Tensor) -> None:
        check_pair(image1, image2, 3, self.spec.corr_levels, "RAFT")

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iters: int = 12,
                flow_init: torch.Tensor | None = None, test_mode: bool = False):  # fmt: skip
        """Flow predictions at full resolution after every iteration, or (low-res flow, final flow) in test mode."""
        self.check_input(image1, image2)
        if iters < 1:
            raise RaywaveError(f"iters must be >= 1, got {iters}")
        s = self.spec
        image1 = (2 * (image1 / 255.0) - 1.0).contiguous()
        image2 = (2 * (image2 / 255.0) - 1.0).contiguous()
        fmap1, fmap2 = self.fnet([image1, image2])
        with torch.autocast(image1.device.type, enabled=False):  # the correlation volume stays fp32 (reference)
            corr_fn = CorrBlock(fmap1.float(), fmap2.float(), num_levels=s.corr_levels, radius=s.corr_radius)
        net, inp = torch.split(self.cnet(image1), [s.hidden_dim, s.context_dim], dim=1)
        steps = list(iterate_flow(self.update_block, corr_fn, torch.tanh(net), torch.relu(inp), iters, flow_init))
        if test_mode:
            return steps[-1][0], steps[-1][1]
        return [flow_up for _, flow_up, _ in steps]


def sequence_loss(predictions: list[torch.Tensor], flow_gt: torch.Tensor, valid: torch.Tensor,
                  gamma: float = 0.8, max_flow: float = MAX_FLOW) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """L1 loss over all iterations, weighted gamma^(n-1-i); pixels with |flow| >= max_flow are ignored."""
    n = len(predictions)
    mag = torch.sum(flow_gt**2, dim=1).sqrt()
    valid = (valid >= 0.5) & (mag < max_flow)
    loss = flow_gt.new_zeros(())
    for i, pred in enumerate(predictions):
        loss = loss + gamma ** (n - i - 1) * (valid[:, None] * (pred - flow_gt).abs()).mean()
    epe = torch.sum((predictions[-1] - flow_gt) ** 2, dim=1).sqrt().view(-1)[valid.view(-1)]
    metrics = {"epe": epe.mean().item(), "1px": (epe < 1).float().mean().item(),
               "3px": (epe < 3).float().mean().item(), "5px": (epe < 5).float().mean().item()}  # fmt: skip
    return loss, metrics


def load_official(model: RAFT, state_dict: dict[str, torch.Tensor]) -> None:
    """Load an official RAFT checkpoint (keys with or without DataParallel's `module.` prefix), strictly."""
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise RaywaveError(f"checkpoint does not match RAFT-{model.variant}: {first}") from None
