"""Analysis outputs of a run directory: events.parquet, stats.json and plots under <run>/analysis/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raywave.io import atomic_path, write_json_atomic
from raywave.waves.analysis import AnalysisSettings, analyze
from raywave.waves.store import RunStore


def settings_for(store: RunStore, threshold_nM: float | None = None) -> AnalysisSettings:
    cfg = store.config()
    s = AnalysisSettings(
        frame_interval_s=cfg.frame_interval_ms / 1000.0,
        spacing_um=cfg.spacing_um,
        neighbours=cfg.neighbours,
        periodic=cfg.boundary == "periodic",
    )
    if threshold_nM is not None:
        s.threshold_nM = threshold_nM
    return s


def write_parquet_atomic(rows: list[dict], path: Path, columns: list[str]) -> None:
    table = pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.float64()) for c in columns})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


EVENT_COLUMNS = ["event", "onset_s", "duration_s", "size_cells", "size_fraction", "space_time_volume",
                 "centroid_row", "centroid_col", "speed_cells_per_s", "speed_um_per_s"]  # fmt: skip


def analyze_run(run: str | Path, threshold_nM: float | None = None) -> dict[str, Path]:
    """Analyse a finished run; writes events.parquet, bursts.parquet, stats.json and size_distribution.png."""
    from raywave.viz.waves import save_size_distribution

    store = RunStore(run)
    man = store.manifest()
    s = settings_for(store, threshold_nM)
    calcium = store.frames("C")
    stats, events, bursts = analyze(calcium, s)
    stats["time_offset_s"] = man["first_frame_time_s"]
    for e in events:
        e["onset_s"] += man["first_frame_time_s"]
    out = Path(run) / "analysis"
    out.mkdir(exist_ok=True)
    paths = {
        "events": out / "events.parquet",
        "bursts": out / "bursts.parquet",
        "stats": out / "stats.json",
        "size_distribution": out / "size_distribution.png",
    }
    write_parquet_atomic(events, paths["events"], EVENT_COLUMNS)
    burst_rows = [{"burst_duration_s": float(d)} for d in bursts["durations_s"]]
    write_parquet_atomic(burst_rows, paths["bursts"], ["burst_duration_s"])
    write_json_atomic(paths["stats"], stats)
    sizes = np.array([e["size_cells"] for e in events])
    save_size_distribution(sizes, stats["size_power_law"], paths["size_distribution"], calcium[0].size)
    return paths
