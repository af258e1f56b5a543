"""Flow pictures: the standard (Middlebury) colour wheel and image / ground truth / prediction panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raywave.viz.figures import pyplot, save


def colorwheel() -> np.ndarray:
    """(55, 3) RGB colours of the wheel of Baker et al. (2011): red, yellow, green, cyan, blue, magenta."""
    red, yellow, green, cyan, blue, magenta = (
        (255, 0, 0),
        (255, 255, 0),
        (0, 255, 0),
        (0, 255, 255),
        (0, 0, 255),
        (255, 0, 255),
    )
    segments = [(15, red, yellow), (6, yellow, green), (4, green, cyan), (11, cyan, blue), (13, blue, magenta),
                (6, magenta, red)]  # fmt: skip
    rows = []
    for n, a, b in segments:
        t = np.arange(n)[:, None] / n
        rows.append((1 - t) * np.array(a) + t * np.array(b))
    return np.floor(np.concatenate(rows)).astype(np.float64)


def flow_to_color(flow: np.ndarray, max_norm: float | None = None) -> np.ndarray:
    """(H, W, 2) flow -> (H, W, 3) uint8: hue = direction, saturation = magnitude / max_norm (white = still)."""
    u, v = flow[..., 0], flow[..., 1]
    rad = np.sqrt(u**2 + v**2)
    scale = max_norm if max_norm else max(float(rad.max()), 1e-9)
    u, v, rad = u / scale, v / scale, rad / scale
    wheel = colorwheel()
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi
    fk = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(int)
    k1 = (k0 + 1) % n
    f = (fk - k0)[..., None]
    col = ((1 - f) * wheel[k0] + f * wheel[k1]) / 255.0
    small = (rad <= 1)[..., None]
    col = np.where(small, 1 - rad[..., None] * (1 - col), col * 0.75)
    return np.floor(255 * col).astype(np.uint8)


def save_flow_panels(rows: list[dict[str, np.ndarray]], path: str | Path, titles=("image 1", "ground truth",
                     "prediction", "end-point error")) -> Path:  # fmt: skip
    """One row per sample: image, GT flow, predicted flow (one colour scale per row), EPE map."""
    plt = pyplot()
    n = len(rows)
    fig, axes = plt.subplots(n, 4, figsize=(13, 2.6 * n), squeeze=False)
    for i, r in enumerate(rows):
        max_norm = float(np.linalg.norm(r["gt"], axis=-1).max()) or 1.0
        epe = np.linalg.norm(r["pred"] - r["gt"], axis=-1)
        panels = [r["img1"], flow_to_color(r["gt"], max_norm), flow_to_color(r["pred"], max_norm), epe]
        for j, (ax, p) in enumerate(zip(axes[i], panels, strict=True)):
            ax.imshow(p, cmap="magma" if j == 3 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j])
        axes[i, 3].set_xlabel(f"EPE {epe.mean():.2f} px", fontsize=8)
    return save(fig, path, dpi=100)
