"""Fly-network pictures: hex-lattice maps of luminance and flow, cell responses, predicted vs true flow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raywave.fly import hexlattice
from raywave.viz.figures import pyplot, save
from raywave.viz.flow import flow_to_color


def _hex(ax, values: np.ndarray, **kw) -> None:
    """Scatter `values` (columns,) or RGB (columns, 3) on the hex lattice in the eye's isotropic frame."""
    extent = hexlattice.EXTENT
    xy = hexlattice.positions(extent)
    if values.ndim == 2:
        ax.scatter(xy[:, 0], xy[:, 1], c=values, marker="h", s=28, linewidths=0)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], c=values, marker="h", s=28, linewidths=0, cmap="binary_r", **kw)
    ax.set_aspect("equal")
    ax.axis("off")


def _flow_rgb(flow: np.ndarray, max_norm: float) -> np.ndarray:
    return flow_to_color(flow[None].astype(np.float64) * np.array([1, -1]), max_norm)[0] / 255.0


def plot_sample(lum: np.ndarray, flow: np.ndarray, path: str | Path, title: str = "", frames: int = 4) -> Path:
    """Luminance and flow (colour wheel; y up) of a few frames of one rendered sample."""
    plt = pyplot()
    idx = np.linspace(0, len(lum) - 1, min(frames, len(lum))).astype(int)
    fig, axes = plt.subplots(2, len(idx), figsize=(2.6 * len(idx), 5.4), squeeze=False)
    vmax = float(np.linalg.norm(flow, axis=-1).max()) or 1.0
    for j, k in enumerate(idx):
        _hex(axes[0, j], lum[k], vmin=0, vmax=1)
        axes[0, j].set_title(f"step {k}", fontsize=9)
        _hex(axes[1, j], _flow_rgb(flow[k], vmax))
    axes[0, 0].text(-0.1, 0.5, "luminance", transform=axes[0, 0].transAxes, rotation=90, va="center")
    axes[1, 0].text(-0.1, 0.5, "flow", transform=axes[1, 0].transAxes, rotation=90, va="center")
    fig.suptitle(title)
    return save(fig, path)


def plot_prediction(flow: np.ndarray, pred: np.ndarray, path: str | Path, frames: int = 4) -> Path:
    """True vs predicted flow on the hex lattice for a few frames (same colour scale)."""
    plt = pyplot()
    idx = np.linspace(len(flow) // 4, len(flow) - 1, min(frames, len(flow))).astype(int)
    fig, axes = plt.subplots(2, len(idx), figsize=(2.6 * len(idx), 5.4), squeeze=False)
    vmax = float(np.linalg.norm(flow, axis=-1).max()) or 1.0
    for j, k in enumerate(idx):
        _hex(axes[0, j], _flow_rgb(flow[k], vmax))
        _hex(axes[1, j], _flow_rgb(pred[k], vmax))
        axes[0, j].set_title(f"step {k}", fontsize=9)
    axes[0, 0].text(-0.1, 0.5, "true", transform=axes[0, 0].transAxes, rotation=90, va="center")
    axes[1, 0].text(-0.1, 0.5, "predicted", transform=axes[1, 0].transAxes, rotation=90, va="center")
    return save(fig, path)


def plot_responses(t_s: np.ndarray, responses: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Voltage traces of central cells over time."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, trace in responses.items():
        ax.plot(t_s, trace, label=name)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("voltage (a.u.)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    return save(fig, path)

