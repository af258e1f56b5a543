"""The box-filter eye: cartesian frames -> the 721 hexagonal columns.

Receptor centres sit at y = d·(u + v/2), x = d·v pixels from the frame centre (d = 13, truncated to whole
pixels as in the published model), so a frame needs at least 391 × 391 pixels. Each column collects a
d × d box around its centre (zero outside the frame): the mean for luminance, the sum for flow, the median for
depth. Flow is returned in the eye's isotropic frame (x right, y up): the eye's lattice is regular there, so the
60° rotations and flips of `hexlattice` act on rendered flow vectors exactly (pixel x is scaled by √3/2, y
flipped).
"""

from __future__ import annotations

import numpy as np
import torch

from raywave.errors import RaywaveError
from raywave.fly import hexlattice

PIXEL_TO_ISO = np.array([[np.sqrt(3) / 2, 0.0], [0.0, -1.0]])  # (x, y-down) pixels -> isotropic (x, y-up)


class BoxEye:
    """Box-filter rendering onto a hex lattice of radius `extent` with `kernel`-pixel column spacing."""

    def __init__(self, extent: int = hexlattice.EXTENT, kernel: int = 13):
        self.extent, self.kernel = extent, kernel
        u, v = hexlattice.columns(extent)
        self.centres = np.stack([np.trunc(kernel * (u + v / 2)), kernel * v], 1).astype(np.int64)  # (n, 2) y, x
        self.min_size = tuple((self.centres.max(0) - self.centres.min(0) + 1).tolist())
        self.n_columns = len(u)

    def _check(self, h: int, w: int) -> None:
        if h < self.min_size[0] or w < self.min_size[1]:
            raise RaywaveError(
                f"frames of {h}x{w} px are too small for the eye: it needs at least "
                f"{self.min_size[0]}x{self.min_size[1]} px (resize or crop less)"
            )

    def _boxes(self, h: int, w: int) -> tuple[np.ndarray, ...]:
        half = (self.kernel - 1) // 2
        cy, cx = self.centres[:, 0] + h // 2, self.centres[:, 1] + w // 2
        return (np.clip(cy - half, 0, h), np.clip(cy + half + 1, 0, h),
                np.clip(cx - half, 0, w), np.clip(cx + half + 1, 0, w))  # fmt: skip

    def box_sum(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., H, W) -> (..., columns): the sum over each column's box (integral image, exact)."""
        h, w = frames.shape[-2:]
        self._check(h, w)
        ii = torch.nn.functional.pad(frames.double().cumsum(-1).cumsum(-2), (1, 0, 1, 0))
        y0, y1, x0, x1 = (torch.from_numpy(a).to(frames.device) for a in self._boxes(h, w))
        out = ii[..., y1, x1] - ii[..., y0, x1] - ii[..., y1, x0] + ii[..., y0, x0]
        return out.to(frames.dtype)

    def luminance(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., H, W) luminance -> (..., columns) box means."""
        return self.box_sum(frames) / self.kernel**2

    def flow(self, flow: torch.Tensor) -> torch.Tensor:
        """(..., H, W, 2) pixel flow (x right, y down) -> (..., columns, 2) box sums in the isotropic frame."""
        summed = self.box_sum(flow.movedim(-1, -3))  # (..., 2, columns)
        return summed.movedim(-2, -1) @ torch.from_numpy(PIXEL_TO_ISO.T).to(flow)

    def median(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., H, W) -> (..., columns) box medians (e.g. depth); boxes are fully inside a large-enough frame."""
        h, w = frames.shape[-2:]
        self._check(h, w)
        half = (self.kernel - 1) // 2
        pad = torch.nn.functional.pad(frames, (half, half, half, half), value=float("nan"))
        cy = torch.from_numpy(self.centres[:, 0] + h // 2).to(frames.device)
        cx = torch.from_numpy(self.centres[:, 1] + w // 2).to(frames.device)
        d = torch.arange(self.kernel, device=frames.device)
        rows = (cy[:, None] + d[None, :])[:, :, None]  # padded coordinates: centre - half + d + half
        cols = (cx[:, None] + d[None, :])[:, None, :]
        patches = pad[..., rows, cols].flatten(-2)  # (..., columns, k*k)
        return patches.nanmedian(-1).values
