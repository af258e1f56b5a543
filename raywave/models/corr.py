"""All-pairs correlation volume with a 4-level pyramid and a windowed lookup (RAFT `core/corr.py`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raywave.errors import RaywaveError


def bilinear_sampler(img: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Sample `img` (N, C, H, W) at pixel coordinates `coords` (N, h, w, 2) as (x, y), corners aligned."""
    h, w = img.shape[-2:]
    xgrid, ygrid = coords.split([1, 1], dim=-1)
    xgrid = 2 * xgrid / (w - 1) - 1
    ygrid = 2 * ygrid / (h - 1) - 1
    return F.grid_sample(img, torch.cat([xgrid, ygrid], dim=-1), align_corners=True)


def coords_grid(batch: int, ht: int, wd: int, device=None) -> torch.Tensor:
    """(batch, 2, ht, wd) pixel coordinates, channel 0 = x, channel 1 = y."""
    ys, xs = torch.meshgrid(torch.arange(ht, device=device), torch.arange(wd, device=device), indexing="ij")
    return torch.stack([xs, ys], dim=0).float()[None].repeat(batch, 1, 1, 1)


def check_pyramid_size(ht: int, wd: int, num_levels: int, what: str = "input") -> None:
    """The coarsest level must be at least 2x2 (grid_sample with align_corners divides by size - 1)."""
    need = 2 * 2 ** (num_levels - 1)
    if ht < need or wd < need:
        raise RaywaveError(
            f"{what} gives {ht}x{wd} features at 1/8 resolution, too small for a {num_levels}-level correlation "
            f"pyramid (needs >= {need}x{need}, i.e. images of at least {8 * need}x{8 * need} px); "
            "pad or resize the images, or use fewer corr_levels"
        )


class CorrBlock:
    """Correlation of every feature vector of image 1 with every one of image 2, pooled into a pyramid."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int = 4, radius: int = 4):
        self.num_levels, self.radius = num_levels, radius
        batch, _, ht, wd = fmap1.shape
        check_pyramid_size(ht, wd, num_levels)
        corr = self.corr(fmap1, fmap2).reshape(batch * ht * wd, 1, ht, wd)
        self.corr_pyramid = [corr]
        for _ in range(num_levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.corr_pyramid.append(corr)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        """Look up (2r+1)^2 correlations around `coords` (N, 2, h, w) at every level: (N, L(2r+1)^2, h, w)."""
        r = self.radius
        coords = coords.permute(0, 2, 3, 1)
        batch, h1, w1, _ = coords.shape
        d = torch.linspace(-r, r, 2 * r + 1, device=coords.device)
        # As in the reference: meshgrid(dy, dx) ("ij") puts the row offset first, and it is added to x. The
        # window is therefore transposed relative to (x, y) order; kept, so official weights give the same flow.
        delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
        out = []
        for i, corr in enumerate(self.corr_pyramid):
            centroid = coords.reshape(batch * h1 * w1, 1, 1, 2) / 2**i
            sampled = bilinear_sampler(corr, centroid + delta)
            out.append(sampled.view(batch, h1, w1, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous().float()

    @staticmethod
    def corr(fmap1: torch.Tensor, fmap2: torch.Tensor) -> torch.Tensor:
        batch, dim, ht, wd = fmap1.shape
        f1 = fmap1.view(batch, dim, ht * wd)
        f2 = fmap2.view(batch, dim, ht * wd)
        corr = torch.matmul(f1.transpose(1, 2), f2)
        return corr.view(batch, ht, wd, 1, ht, wd) / torch.sqrt(torch.tensor(dim).float())
