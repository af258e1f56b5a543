"""Wave pictures: calcium snapshots (the poster's Figure 1), movies, size distributions, gA scans."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from raywave.errors import RaywaveError
from raywave.io import atomic_path
from raywave.viz.figures import pyplot, save

CMAP = "turbo"  # blue (low calcium) -> red (high calcium)


def snapshot_indices(times: np.ndarray, every_s: float) -> np.ndarray:
    """Frame indices closest to t0, t0 + every_s, ... within the recording."""
    if len(times) == 0:
        raise RaywaveError("the run has no recorded frames")
    targets = np.arange(times[0], times[-1] + 1e-9, every_s)
    return np.unique(np.abs(times[None, :] - targets[:, None]).argmin(axis=1))


def save_snapshots(
    calcium: np.ndarray, times: np.ndarray, path: str | Path, every_s: float = 15.0, vmin=None, vmax=None
) -> Path:
    """Grid of calcium snapshots every `every_s` seconds, blue low -> red high, one shared colour scale."""
    plt = pyplot()
    idx = snapshot_indices(times, every_s)
    vmin = float(np.percentile(calcium, 1)) if vmin is None else vmin
    vmax = float(np.percentile(calcium, 99.9)) if vmax is None else vmax
    ncol = min(6, len(idx))
    nrow = math.ceil(len(idx) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.2 * ncol, 2.3 * nrow + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    im = None
    for ax, i in zip(axes.flat, idx, strict=False):
        im = ax.imshow(calcium[i], cmap=CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"t = {times[i]:.1f} s", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="calcium (nM)")
    return save(fig, path, tight=False)


def save_movie(
    calcium: np.ndarray, times: np.ndarray, path: str | Path, fps: int = 20, stride: int = 1, dpi: int = 80
) -> Path:
    """Animated GIF (Pillow) or MP4 (needs ffmpeg on PATH) of the calcium movie."""
    plt = pyplot()
    from matplotlib import animation

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise RaywaveError(f"movie format {suffix or '(none)'} is not supported; use a .gif or .mp4 path")
    if suffix == ".mp4" and shutil.which("ffmpeg") is None:
        raise RaywaveError("writing .mp4 needs ffmpeg on PATH (apt-get install ffmpeg); or use --format gif")
    frames = range(0, len(calcium), max(1, stride))
    vmin, vmax = float(np.percentile(calcium, 1)), float(np.percentile(calcium, 99.9))
    fig, ax = plt.subplots(figsize=(4, 4.3))
    ax.axis("off")
    im = ax.imshow(calcium[0], cmap=CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
    title = ax.set_title("")

    def update(i):
        im.set_data(calcium[i])
        title.set_text(f"t = {times[i]:.1f} s")
        return im, title

    anim = animation.FuncAnimation(fig, update, frames=frames, blit=False)
    writer = animation.PillowWriter(fps=fps) if suffix == ".gif" else animation.FFMpegWriter(fps=fps)
    with atomic_path(path) as tmp:
        tmp_named = tmp.with_suffix(suffix)  # the writers choose their format by the file's suffix
        try:
            anim.save(tmp_named, writer=writer, dpi=dpi)
            tmp_named.replace(tmp)
        finally:
            tmp_named.unlink(missing_ok=True)
            plt.close(fig)
    return path


def save_size_distribution(sizes: np.ndarray, fit: dict, path: str | Path, n_cells: int) -> Path:
    """Complementary CDF of event sizes on log-log axes, with the fitted power law."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    sizes = np.sort(np.asarray(sizes))
    if len(sizes):
        ccdf = 1.0 - np.arange(len(sizes)) / len(sizes)
        ax.loglog(sizes, ccdf, ".", ms=4, label=f"{len(sizes)} events")
        if np.isfinite(fit.get("alpha", math.nan)):
            xmin, alpha = fit["xmin"], fit["alpha"]
            x = np.logspace(np.log10(xmin), np.log10(max(sizes.max(), xmin * 1.01)), 50)
            frac = (sizes >= xmin).mean()
            ax.loglog(x, frac * (x / xmin) ** (1 - alpha), "r-", label=f"power law alpha={alpha:.2f}, xmin={xmin:g}")
    ax.axvline(n_cells, color="grey", ls=":", lw=1, label="whole lattice")
    ax.set_xlabel("event size (cells)")
    ax.set_ylabel("P(size >= s)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path, tight=False)


def save_ga_scan(rows: list[dict], snapshots: list[tuple[float, np.ndarray]], path: str | Path) -> Path:
    """gA scan figure: a calcium snapshot per gA, and event-size fraction / count vs gA."""
    plt = pyplot()
    n = len(snapshots)
    fig = plt.figure(figsize=(2.2 * max(n, 3), 5.2))
    gs = fig.add_gridspec(2, max(n, 3), height_ratios=[1, 1.1])
    for k, (ga, frame) in enumerate(snapshots):
        ax = fig.add_subplot(gs[0, k])
        ax.imshow(frame, cmap=CMAP, interpolation="nearest", vmin=80, vmax=400)
        ax.set_title(f"gA = {ga:g} nS", fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(gs[1, :])
    ga = [r["gA"] for r in rows]
    ax.plot(ga, [r["mean_event_size_fraction"] for r in rows], "o-", label="mean event size / lattice")
    ax.plot(ga, [r["p90_event_size_fraction"] for r in rows], "s--", label="90th pct event size / lattice")
    ax.plot(ga, [r["mean_active_fraction_when_active"] for r in rows], "^:", label="active fraction in active frames")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("gA (nS)")
    ax.set_ylabel("fraction of lattice")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path, tight=False)

