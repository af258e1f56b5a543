"""Shared builders for the training tests: a small wave-like dataset with a validation split."""

from __future__ import annotations

from raywave.bench.train import blob_dataset


def wave_dataset(root, side: int = 16, frames: int = 24, sims: int = 4, ppc: int = 2, val_fraction: float = 0.3,
                 name: str = "default") -> str:  # fmt: skip
    """`sims` moving-blob movies (one of them for validation) at 2 px per cell and their triplet index."""
    return blob_dataset(root, side, frames, sims, ppc, val_fraction, name)
