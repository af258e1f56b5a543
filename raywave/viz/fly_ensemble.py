"""Ensemble pictures: the task-error histogram, polar direction tuning with the ensemble's spread, responses."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raywave.viz.figures import pyplot, save


def _colours(errors: np.ndarray):
    """One colour per model from its task error (viridis: low error dark), and the scalar mappable."""
    plt = pyplot()
    lo, hi = float(np.nanmin(errors)), float(np.nanmax(errors))
    norm = plt.Normalize(lo, hi if hi > lo else lo + 1e-9)
    cmap = plt.get_cmap("viridis")
    return [cmap(norm(e)) for e in errors], plt.cm.ScalarMappable(norm=norm, cmap=cmap)


def plot_task_error_histogram(errors: np.ndarray, path: str | Path, bins: int = 10) -> Path:
    """Histogram of the models' task errors (best validation EPE), as flyvis' task_error_histogram."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(errors, bins=min(bins, max(1, len(errors))), color="0.4", edgecolor="white")
    ax.set_xlabel("task error (validation EPE)")
    ax.set_ylabel("models")
    ax.set_title(f"{len(errors)} models, median {np.median(errors):.3g}")
    return save(fig, path)


def plot_tuning(angles_deg: np.ndarray, peaks: dict[str, np.ndarray], errors: np.ndarray, path: str | Path,
                dsi: dict[str, np.ndarray] | None = None) -> Path:  # fmt: skip
    """Polar tuning per cell type: every model's peak responses over directions (normalised to its maximum), one
    line each coloured by task error."""
    plt = pyplot()
    types = list(peaks)
    cols = min(4, len(types))
    rows = int(np.ceil(len(types) / cols))
    fig = plt.figure(figsize=(3.2 * cols, 3.2 * rows))
    colours, mappable = _colours(errors)
    theta = np.radians(np.append(angles_deg, angles_deg[0]))
    for i, t in enumerate(types):
        ax = fig.add_subplot(rows, cols, i + 1, projection="polar")
        for k, r in enumerate(peaks[t]):
            r = r / r.max() if r.max() > 0 else r
            ax.plot(theta, np.append(r, r[0]), color=colours[k], lw=1)
        label = t if dsi is None else f"{t}  DSI {np.median(dsi[t]):.2f}"
        ax.set_title(label, fontsize=9, pad=12)
        ax.set_yticklabels([])
        ax.set_xticks(np.radians(np.arange(0, 360, 90)))  # 0/90/180/270: labels clear of the neighbours'
        ax.tick_params(labelsize=8)
    fig.subplots_adjust(wspace=0.45, hspace=0.45)
    fig.colorbar(mappable, ax=fig.axes, shrink=0.6, label="task error")
    return save(fig, path)


def plot_ensemble_responses(t_s: np.ndarray, traces: dict[str, np.ndarray], errors: np.ndarray, path: str | Path,
                            title: str = "") -> Path:  # fmt: skip
    """Central-cell voltages of each type (one panel each), every model a line coloured by task error."""
    plt = pyplot()
    types = list(traces)
    fig, axes = plt.subplots(len(types), 1, figsize=(7, 1.8 * len(types)), sharex=True, squeeze=False)
    colours, mappable = _colours(errors)
    for ax, t in zip(axes[:, 0], types, strict=True):
        for k, tr in enumerate(traces[t]):
            ax.plot(t_s, tr, color=colours[k], lw=1)
        ax.set_ylabel(t)
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].set_title(title)
    fig.colorbar(mappable, ax=list(axes[:, 0]), shrink=0.6, label="task error")
    return save(fig, path)
