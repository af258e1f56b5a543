"""A sweep folder on disk, read without Ray: its description, every trial's parameters and metrics table.

    SWEEP/sweep.json                       kind (transfer | nfp), fingerprint, code version, scheduler, nfp runs
    SWEEP/sweep.yaml                       the resolved sweep file
    SWEEP/trials/<trial_key>/params.json   strategy, nfp setting, seed, data_fraction, overrides, status
    SWEEP/trials/<trial_key>/run/          the training run: run.json, metrics.parquet (or metrics.csv)

Every path stored in these files is relative to the sweep root, so a folder moved or copied from a cluster's
storage reads the same. The expected layout is also described in the README's sweep section.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raywave.errors import RaywaveError

# The columns the analysis uses, and the names the training runs may give them.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "step": ("step", "global_step", "iteration"),
    "stage": ("stage_name", "stage"),
    "samples": ("samples", "samples_seen", "num_samples"),
    "wall_s": ("wall_s", "wall_time_s", "time_s", "elapsed_s"),
    "lr": ("lr", "learning_rate"),
    "train_loss": ("train_loss", "loss"),
    "val_epe": ("val_epe", "epe", "val/epe"),
    "val_1px": ("val_1px", "1px", "val/1px"),
    "val_3px": ("val_3px", "3px", "val/3px"),
    "val_5px": ("val_5px", "5px", "val/5px"),
    "val_mse": ("val_mse", "mse", "val/mse"),
    "val_baseline_mse": ("val_baseline_mse", "baseline_mse", "val/baseline_mse"),
    "val_ratio": ("val_ratio", "ratio", "val/ratio"),
}
TERMINAL = ("complete", "stopped_early", "failed")


@dataclass
class Trial:
    """One trial: its parameters (as the sweep set them), status and metrics columns (numpy arrays)."""

    key: str
    params: dict[str, Any]
    metrics: dict[str, np.ndarray]
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.params.get("status", "complete"))

    @property
    def stopped_early(self) -> bool:
        return bool(self.params.get("stopped_early")) or self.status == "stopped_early"

    @property
    def seed(self) -> int:
        return int(self.params["seed"])

    def validations(self, column: str, stage: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the rows where `column` was measured, optionally within one stage."""
        if column not in self.metrics:
            return np.zeros(0, int), np.zeros(0)
        values = self.metrics[column].astype(float)
        keep = np.isfinite(values)
        if stage is not None and "stage" in self.metrics:
            keep &= self.metrics["stage"].astype(str) == str(stage)
        return self.metrics["step"][keep].astype(int), values[keep]

    def last(self, column: str) -> float:
        """The last finite value of a column (nan if none)."""
        if column not in self.metrics:
            return math.nan
        v = self.metrics[column].astype(float)
        v = v[np.isfinite(v)]
        return float(v[-1]) if v.size else math.nan


@dataclass
class Sweep:
    root: Path
    info: dict[str, Any]
    config_text: str
    trials: list[Trial]

    @property
    def kind(self) -> str:
        return str(self.info.get("kind", "transfer"))


def read_metrics(run_dir: Path) -> dict[str, np.ndarray]:
    """A run's metrics table as {canonical column: array}; metrics.parquet, else metrics.csv; {} if neither."""
    raw: dict[str, np.ndarray] = {}
    pq_path, csv_path = run_dir / "metrics.parquet", run_dir / "metrics.csv"
    if pq_path.exists():
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(pq_path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise RaywaveError(f"{pq_path} cannot be read ({exc}); re-run the trial or remove it") from None
        raw = {name: _column_array(table.column(name)) for name in table.column_names}
    elif csv_path.exists():
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        names = rows[0].keys() if rows else []
        raw = {n: _csv_array([r[n] for r in rows]) for n in names}
    out: dict[str, np.ndarray] = {}
    for canon, names in COLUMN_ALIASES.items():
        for name in names:
            if name in raw:
                out[canon] = raw[name]
                break
    if out and "step" not in out:
        raise RaywaveError(f"{run_dir}: metrics table has no step column (columns: {sorted(raw)})")
    if out:
        order = np.argsort(out["step"], kind="stable")
        out = {k: v[order] for k, v in out.items()}
    return out


def _column_array(col: Any) -> np.ndarray:
    values = col.to_pylist()
    if all(v is None or isinstance(v, int | float) for v in values):
        return np.array([math.nan if v is None else v for v in values], dtype=float)
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def _csv_array(values: list[str]) -> np.ndarray:
    try:
        return np.array([float(v) if v not in ("", "nan", "None") else math.nan for v in values], dtype=float)
    except ValueError:
        return np.array(values, dtype=object)


def load_sweep(root: str | Path) -> Sweep:
    """Read a sweep folder; a path that is not one is a one-line RaywaveError."""
    root = Path(root)
    trials_dir = root / "trials"
    if not root.is_dir():
        raise RaywaveError(f"sweep folder {str(root)!r} does not exist; give the --out of `raywave sweep ...`")
    if not trials_dir.is_dir():
        raise RaywaveError(f"{str(root)!r} is not a sweep folder (no trials/); give the --out of a sweep")
    info = _read_json(root / "sweep.json") if (root / "sweep.json").exists() else {}
    config_text = (root / "sweep.yaml").read_text() if (root / "sweep.yaml").exists() else ""
    trials = []
    for tdir in sorted(p for p in trials_dir.iterdir() if p.is_dir()):
        if not (tdir / "params.json").exists():
            continue
        params = _read_json(tdir / "params.json")
        run_dir = tdir / "run"
        run = _read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
        trials.append(Trial(tdir.name, params, read_metrics(run_dir) if run_dir.is_dir() else {}, run))
    if not trials:
        raise RaywaveError(f"sweep folder {str(root)!r} holds no trials yet; run the sweep first")
    return Sweep(root, info, config_text, trials)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RaywaveError(f"{path} cannot be read ({exc}); the sweep folder is damaged") from None
