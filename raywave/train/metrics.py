"""Metrics of a run: metrics.parquet (+ metrics.csv), TensorBoard event files, progress.json, efficiency.

Rows come from the loop core (rank 0): step, stage, stage_name, samples, wall_s, lr, train_loss, and on
validation steps the task's validation figures (NFP: val_mse, val_baseline_mse, val_ratio, val_mse_dt<dt>).
The rows live in every checkpoint too, so a resumed run rewrites the files from the checkpoint's rows and never
duplicates a step; TensorBoard is told to purge events after the resumed step.
"""

from __future__ import annotations

import io
import json
import math
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raywave.storage import Location, atomic_output, resolve, write_bytes

PARQUET, CSV, PROGRESS, TB_DIR = "metrics.parquet", "metrics.csv", "progress.json", "tensorboard"


def rows_table(rows: list[dict]) -> pa.Table:
    """Rows with different keys as one table (missing values are nulls), columns in first-seen order."""
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    return pa.table({c: [r.get(c) for r in rows] for c in cols}) if rows else pa.table({})


class MetricsLog:
    """Rank 0's writer of a run's metrics files (a local path or URI; TensorBoard only on a local path)."""

    def __init__(self, run: str | Location, tensorboard: bool = True, progress_every_s: float = 2.0):
        self.loc = run if isinstance(run, Location) else resolve(run)
        self.rows: list[dict] = []
        self.tensorboard = tensorboard and self.loc.is_local
        self._tb = None
        self._progress_every, self._last_progress = progress_every_s, 0.0

    def resume(self, rows: list[dict], step: int) -> None:
        """Start from a checkpoint's rows; TensorBoard drops events after `step` (a previous attempt's)."""
        self.rows = [dict(r) for r in rows]
        if self.tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(self.loc.join(TB_DIR), purge_step=step + 1 if step else None)

    def add(self, row: dict) -> None:
        self.rows.append(dict(row))
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and math.isfinite(v):
                    self._tb.add_scalar(k, v, row["step"])

    def flush(self) -> None:
        table = rows_table(self.rows)
        with atomic_output(self.loc, PARQUET) as tmp:
            pq.write_table(table, tmp, filesystem=self.loc.fs)
        buf = io.StringIO()
        cols = table.column_names
        buf.write(",".join(cols) + "\n")
        for r in self.rows:
            buf.write(",".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + "\n")
        write_bytes(self.loc, CSV, buf.getvalue().encode())
        if self._tb is not None:
            self._tb.flush()

    def progress(self, info: dict, force: bool = False) -> None:
        """progress.json for a driver that is not the training process (at most every few seconds)."""
        now = time.time()
        if force or now - self._last_progress >= self._progress_every:
            self._last_progress = now
            write_bytes(self.loc, PROGRESS, json.dumps({**info, "time": now}, default=str).encode())

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(run: str | Location) -> list[dict]:
    """A run's metrics rows (empty if none yet)."""
    loc = run if isinstance(run, Location) else resolve(run)
    try:
        return pq.read_table(loc.join(PARQUET), filesystem=loc.fs).to_pylist()
    except (FileNotFoundError, OSError):
        return []


def efficiency(rows: list[dict], targets: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Training efficiency: for each metric and target, the first step and sample count at which the
    validation figure was at or below the target (None: not reached)."""
    out = []
    for key, values in targets.items():
        for target in sorted(values, reverse=True):
            hit = next((r for r in rows if r.get(key) is not None and r[key] <= target), None)
            out.append({"metric": key, "target": target, "step": hit and hit["step"],
                        "samples": hit and hit["samples"], "wall_s": hit and hit.get("wall_s")})  # fmt: skip
    return out


def summary(rows: list[dict], val_key: str, targets: dict[str, list[float]]) -> dict[str, Any]:
    """Final, best and efficiency figures of a run from its rows."""
    vals = [r for r in rows if r.get(val_key) is not None]
    last = rows[-1] if rows else {}
    best = min(vals, key=lambda r: r[val_key]) if vals else None
    return {"steps": last.get("step", 0), "samples": last.get("samples", 0), "train_wall_s": last.get("wall_s"),
            "final": vals[-1] if vals else None, "best": best, "efficiency": efficiency(rows, targets)}  # fmt: skip
