"""Dataset-card pictures: activity distribution and example triplets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raywave.viz.figures import pyplot, save
from raywave.viz.waves import CMAP


def save_activity(per_sim: list[np.ndarray], labels: list[str], threshold_nM: float, path: Path) -> Path:
    """Histogram of the fraction of active cells per frame, pooled, and its time course per simulation."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    pooled = np.concatenate(per_sim) if per_sim else np.zeros(0)
    ax1.hist(pooled, bins=40, range=(0, 1), color="tab:blue")
    ax1.set_yscale("log")
    ax1.set_xlabel(f"fraction of cells active (Ca >= {threshold_nM:g} nM)")
    ax1.set_ylabel("frames")
    ax1.set_title("activity per frame, all simulations")
    for frac, label in list(zip(per_sim, labels, strict=True))[:8]:
        ax2.plot(frac, lw=0.8, label=label)
    ax2.set_xlabel("frame (sampled)")
    ax2.set_ylabel("fraction active")
    ax2.set_title("activity over time (first 8 simulations)")
    if labels:
        ax2.legend(fontsize=6, loc="upper right")
    return save(fig, path)


def save_triplets(frames: np.ndarray, captions: list[str], path: Path) -> Path:
    """Rows of (I1, I2, I3), normalised values on one colour scale."""
    plt = pyplot()
    n = len(frames)
    fig, axes = plt.subplots(max(n, 1), 3, figsize=(6.3, 2.1 * max(n, 1)), squeeze=False)
    vmin, vmax = (float(np.percentile(frames, 1)), float(np.percentile(frames, 99.5))) if n else (0, 1)
    for i in range(n):
        for j, name in enumerate(("I1", "I2", "I3")):
            ax = axes[i, j]
            ax.imshow(frames[i, j], cmap=CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name)
        axes[i, 0].set_ylabel(captions[i], fontsize=7)
    return save(fig, path)
