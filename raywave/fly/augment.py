"""Augmentations and temporal resampling of hex-rendered sequences (luminance (T, columns), flow (T, columns, 2)).

Every random choice is drawn from a numpy Generator the caller seeds (per seed, epoch and sample), so a
sample's augmentation is reproducible and resumed training sees the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from raywave.fly import hexlattice


@dataclass(frozen=True)
class AugmentConfig:
    """Published training augmentations (defaults) — set a probability or std to 0 to switch one off."""

    p_flip: float = 0.5
    p_rot: float = 5 / 6
    contrast_std: float = 0.2
    brightness_std: float = 0.1
    noise_std: float = 0.08


def n_resampled(n_frames: int, fps: float, dt: float) -> int:
    """Number of simulation steps covering n_frames shown at fps (19 frames at 24 fps -> 40 at dt 0.02)."""
    return max(1, int(round(n_frames / fps / dt)))


def resample(lum: torch.Tensor, flow: torch.Tensor | None, fps: float, dt: float) -> tuple:
    """Resample frames to steps of dt: luminance sample-and-hold (nearest earlier frame), flow linear in time."""
    n = lum.shape[0]
    steps = n_resampled(n, fps, dt)
    pos = torch.arange(steps, dtype=torch.float64) * dt * fps
    lo = pos.floor().long().clamp(max=n - 1)
    out_lum = lum[lo]
    if flow is None:
        return out_lum, None
    hi = (lo + 1).clamp(max=n - 1)
    frac = (pos - lo).clamp(0, 1).to(flow.dtype).view(-1, *([1] * (flow.dim() - 1)))
    return out_lum, flow[lo] * (1 - frac) + flow[hi] * frac


def hex_transform(
    lum: torch.Tensor, flow: torch.Tensor | None, n_rot: int = 0, flip_axis: int = 0, extent: int = hexlattice.EXTENT
) -> tuple:
    """Flip (axis 1..3) then rotate by n_rot·60°: a column permutation, and the same map on flow vectors."""
    if n_rot % 6 == 0 and flip_axis == 0:
        return lum, flow
    perm = torch.from_numpy(hexlattice.permutation(n_rot, flip_axis, extent)).to(lum.device)
    lum = lum[..., perm]
    if flow is not None:
        q = torch.from_numpy(hexlattice.vector_matrix(n_rot, flip_axis)).to(flow)
        flow = flow[..., perm, :] @ q.T
    return lum, flow


def contrast_brightness(lum: torch.Tensor, contrast: float, brightness: float) -> torch.Tensor:
    """p' = max(0, c·(p - 0.5) + 0.5 + c·b)."""
    return torch.clamp(contrast * (lum - 0.5) + 0.5 + contrast * brightness, min=0)


def sample_params(rng: np.random.Generator, cfg: AugmentConfig) -> dict:
    flip = int(rng.integers(1, 4)) if rng.random() < cfg.p_flip else 0
    rot = int(rng.integers(1, 6)) if rng.random() < cfg.p_rot else 0
    return {
        "flip_axis": flip,
        "n_rot": rot,
        "contrast": float(np.exp(rng.normal(0, cfg.contrast_std))) if cfg.contrast_std else 1.0,
        "brightness": float(rng.normal(0, cfg.brightness_std)) if cfg.brightness_std else 0.0,
        "noise_seed": int(rng.integers(2**31)),
    }


def augment(lum: torch.Tensor, flow: torch.Tensor, params: dict, cfg: AugmentConfig) -> tuple:
    """Apply sampled augmentation `params` to one (resampled) sequence."""
    lum, flow = hex_transform(lum, flow, params["n_rot"], params["flip_axis"])
    lum = contrast_brightness(lum, params["contrast"], params["brightness"])
    if cfg.noise_std:
        g = torch.Generator().manual_seed(params["noise_seed"])
        noise = torch.randn(lum.shape, generator=g, dtype=lum.dtype) * cfg.noise_std
        lum = torch.clamp(lum + noise.to(lum.device), min=0)
    return lum, flow
