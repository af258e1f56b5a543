"""What every figure module needs: matplotlib's pyplot on the non-interactive Agg backend, and an atomic save
(a figure is written to a temporary file and renamed, so a killed job never leaves half a PNG)."""

from __future__ import annotations

from pathlib import Path

from raywave.io import atomic_path


def pyplot():
    """matplotlib.pyplot on Agg (imported on first use: commands that draw nothing never import matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write `fig` atomically in the format of the path's suffix (PNG without one) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight" if tight else None)
    pyplot().close(fig)
    return path
