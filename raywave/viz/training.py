"""Learning curves of training runs: one run (train loss and validation figures) and several overlaid."""

from __future__ import annotations

import math
from pathlib import Path

from raywave.viz.figures import pyplot, save


def _series(rows: list[dict], key: str, x: str = "step") -> tuple[list, list]:
    """(x values, key values) of the rows where `key` holds a finite number."""
    pts = [(r[x], r[key]) for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def learning_curve(rows: list[dict], val_keys: list[str], path: str | Path, title: str = "") -> Path:
    """Train loss (left) and validation figures (right) against the step."""
    fig, (a, b) = pyplot().subplots(1, 2, figsize=(10, 3.6))
    a.plot(*_series(rows, "train_loss"), lw=1)
    a.set(xlabel="step", ylabel="train loss", yscale="log", title="training")
    for key in val_keys:
        b.plot(*_series(rows, key), marker="o", ms=3, label=key)
    b.set(xlabel="step", ylabel="validation", title="validation")
    if val_keys:
        b.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path, tight=False)


def overlay(runs: dict[str, list[dict]], key: str, path: str | Path, x: str = "step") -> Path:
    """One validation figure of several runs against steps (or samples) in one plot."""
    fig, ax = pyplot().subplots(figsize=(6.5, 4))
    for name, rows in runs.items():
        ax.plot(*_series(rows, key, x), marker="o", ms=3, label=name)
    ax.set(xlabel=x, ylabel=key, title=f"{key} by {x}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path, tight=False)
