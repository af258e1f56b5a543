"""A local sweep of the coupling gA, showing the synchronised -> wave transition (Ray: `waves generate`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from raywave.io import write_json_atomic
from raywave.waves.analysis import analyze
from raywave.waves.config import SimulationConfig
from raywave.waves.report import settings_for
from raywave.waves.simulate import simulate


def run_name(ga: float) -> str:
    return f"gA_{ga:g}"


def scan_ga(
    base: SimulationConfig,
    ga_values: list[float],
    out: str | Path,
    progress: Callable[[str, int, int], None] | None = None,
    threshold_nM: float | None = None,
) -> tuple[list[dict], Path]:
    """Simulate `base` at each gA (resumable: finished runs are skipped); summarise and plot."""
    from raywave.viz.waves import save_ga_scan

    out = Path(out)
    rows, snaps = [], []
    for ga in ga_values:
        cfg = base.model_copy(update={"params": base.params.model_copy(update={"gA": float(ga)})})
        cb = (lambda d, t, _n=run_name(ga): progress(_n, d, t)) if progress else None
        store = simulate(cfg, out / run_name(ga), progress=cb)
        calcium = store.frames("C")
        s = settings_for(store, threshold_nM)
        stats, events, _ = analyze(calcium, s)
        active = calcium >= s.threshold_nM
        frac = active.reshape(len(active), -1).mean(axis=1)
        sizes = np.array([e["size_fraction"] for e in events]) if events else np.array([0.0])
        rows.append(
            {
                "gA": float(ga),
                "n_events": stats["n_events"],
                "mean_event_size_fraction": float(sizes.mean()),
                "p90_event_size_fraction": float(np.percentile(sizes, 90)),
                "max_event_size_fraction": float(sizes.max()),
                "mean_active_fraction_when_active": float(frac[frac > 0].mean()) if (frac > 0).any() else 0.0,
                "fraction_cells_bursting": stats["fraction_cells_bursting"],
                "event_speed_um_per_s_median": stats["event_speed_um_per_s"]["median"],
                "inter_burst_interval_s_median": stats["inter_burst_interval_s"]["median"],
            }
        )
        peak = int(frac.argmax())
        snaps.append((float(ga), calcium[peak]))
    write_json_atomic(out / "scan.json", rows)
    fig = save_ga_scan(rows, snaps, out / "scan.png")
    return rows, fig
