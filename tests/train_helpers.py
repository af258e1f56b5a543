"""Shared builders for the training tests: a small wave-like dataset with a validation split."""

from __future__ import annotations

import numpy as np

from raywave.data.generate import import_movie
from raywave.data.triplets import TripletConfig, _is_val, build_index
from raywave.storage import resolve


def blob_movie(n: int, side: int, vx: float, vy: float, seed: int) -> np.ndarray:
    """A bright Gaussian blob moving at constant velocity over a noisy resting level (calcium in nM)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    x0, y0 = rng.uniform(side * 0.3, side * 0.7, 2)
    frames = []
    for t in range(n):
        cx, cy = (x0 + vx * t) % side, (y0 + vy * t) % side
        d2 = np.minimum(abs(xx - cx), side - abs(xx - cx)) ** 2 + np.minimum(abs(yy - cy), side - abs(yy - cy)) ** 2
        frames.append(100 + 250 * np.exp(-d2 / (2 * (side / 8) ** 2)) + rng.uniform(0, 5, (side, side)))
    return np.stack(frames).astype(np.float32)


def wave_dataset(root, side: int = 16, frames: int = 24, sims: int = 4, ppc: int = 2, val_fraction: float = 0.3,
                 name: str = "default") -> str:  # fmt: skip
    """A dataset of `sims` moving-blob movies with >= 1 validation and >= 1 training simulation, and its index."""
    loc = resolve(root)
    ids, k = [], 0
    while len(ids) < sims:
        sim_id = f"sim-{k:04d}"
        k += 1
        n_val, is_val = sum(_is_val(s, val_fraction) for s in ids), _is_val(sim_id, val_fraction)
        if (is_val and n_val >= 1) or (not is_val and len(ids) - n_val >= sims - 1):
            continue  # exactly one validation simulation
        ids.append(sim_id)
    for i, sim_id in enumerate(ids):
        angle = 2 * np.pi * i / sims
        import_movie(loc, sim_id, blob_movie(frames, side, np.cos(angle), np.sin(angle), i), 0.1)
    cfg = TripletConfig.model_validate({"dt_s": [0.1, 0.2], "activity": {"min_fraction": 0.0},
                                        "normalization": {"method": "minmax"}, "val_fraction": val_fraction,
                                        "pixels_per_cell": ppc, "augment": {"rot90": True}})  # fmt: skip
    build_index(str(root), cfg, name)
    return str(root)
