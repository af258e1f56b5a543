"""Generate one simulation of a sweep into a dataset, exactly once (no Ray here: the sweep driver calls this).

A simulation runs into a resumable scratch run (raywave.waves.store.RunStore), so a worker that dies mid-run
resumes from its last checkpoint when retried. When the run is complete its frames are streamed into
`simulations/<id>/frames.parquet` (atomically), then the manifest is written (atomically): the commit point.
A simulation whose manifest exists is skipped. The same simulation always has the same id and the same bytes,
so even two workers racing on it leave one copy.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from raywave.data.rw_dataset import DATASET_FORMAT, MANIFEST, RWDataset, sim_dir, write_frames
from raywave.data.sweep_config import SimSpec
from raywave.provenance import code_version
from raywave.storage import Location, exists, read_json, remove_stale_temps, write_json
from raywave.waves.analysis import analyze
from raywave.waves.report import settings_for
from raywave.waves.simulate import simulate


def calcium_stats(calcium: np.ndarray, active_nM: float) -> dict[str, float]:
    """Summary of a simulation's calcium (nM) used for normalisation and for the dataset card."""
    flat = calcium.reshape(len(calcium), -1) if len(calcium) else np.zeros((0, 1), np.float32)
    active = (flat >= active_nM).mean(axis=1) if len(flat) else np.zeros(0)
    p1, p99 = np.percentile(flat, [1, 99]) if flat.size else (np.nan, np.nan)
    return {
        "min": float(flat.min()) if flat.size else float("nan"),
        "max": float(flat.max()) if flat.size else float("nan"),
        "mean": float(flat.mean(dtype=np.float64)) if flat.size else float("nan"),
        "std": float(flat.std(dtype=np.float64)) if flat.size else float("nan"),
        "p1": float(p1),
        "p99": float(p99),
        "active_threshold_nM": active_nM,
        "active_fraction_mean": float(active.mean()) if len(active) else 0.0,
        "frames_with_activity": float((active > 0).mean()) if len(active) else 0.0,
    }


def generate_one(
    spec: SimSpec,
    dataset: Location,
    scratch: str | Path,
    progress: Callable[[int, int], None] | None = None,
    compute_stats: bool = True,
) -> dict[str, Any]:
    """Make simulation `spec` exist in `dataset` (skip if it does). Returns {"status", "sim_id", "manifest"}."""
    ds = RWDataset(dataset)
    rel = sim_dir(spec.sim_id)
    if exists(dataset, f"{rel}/{MANIFEST}"):
        return {"status": "skipped", "sim_id": spec.sim_id, "manifest": ds.simulation(spec.sim_id).manifest}
    remove_stale_temps(dataset, rel)
    work = Path(scratch) / spec.sim_id
    work.mkdir(parents=True, exist_ok=True)
    attempts_file = work.parent / f"{spec.sim_id}.attempts"
    attempts = int(attempts_file.read_text() or 0) + 1 if attempts_file.exists() else 1
    attempts_file.write_text(str(attempts))
    (work.parent / f"{spec.sim_id}.pid").write_text(str(os.getpid()))
    t0 = time.time()
    store = simulate(spec.config, work / "run", progress=progress)
    run_man = store.manifest()
    meta = run_man["variables"]["C"]
    cfg = spec.config
    dtype = np.dtype(meta["dtype"])
    times0, dt_frame = run_man["first_frame_time_s"], cfg.frame_interval_ms / 1000.0

    stored: list[np.ndarray] = []  # kept for the statistics below, so the frames are read from disk once

    def chunks():
        for first, raw in store.iter_stored("C", verify=True, man=run_man):
            stored.append(raw)
            yield first, times0 + np.arange(first, first + len(raw)) * dt_frame, raw

    file_meta = {"sim_id": spec.sim_id, "calcium_offset": meta["offset"], "calcium_scale": meta["scale"],
                 "fingerprint": cfg.fingerprint()}  # fmt: skip
    frames_entry = write_frames(dataset, spec.sim_id, chunks(), (cfg.height, cfg.width), dtype, file_meta)
    raw = np.concatenate(stored) if stored else np.zeros((0, cfg.height, cfg.width), dtype)
    calcium = (meta["offset"] + meta["scale"] * raw.astype(np.float32)).astype(np.float32)
    settings = settings_for(store)
    stats = analyze(calcium, settings)[0] if compute_stats else None
    manifest = {
        "format": DATASET_FORMAT,
        "sim_id": spec.sim_id,
        "fingerprint": cfg.fingerprint(),
        "sweep_values": spec.overrides,
        "seed": cfg.seed,
        "backend": run_man["backend"],
        "config": cfg.model_dump(mode="json"),
        "code_version": code_version(),
        "shape": [cfg.height, cfg.width],
        "dtype": meta["dtype"],
        "calcium_offset": meta["offset"],
        "calcium_scale": meta["scale"],
        "calcium_clipped_values": meta["clipped"],
        "first_frame_time_s": times0,
        "frame_interval_s": dt_frame,
        "frames": frames_entry,
        "calcium_stats": calcium_stats(calcium, settings.threshold_nM),
        "wave_stats": stats,
        "generation": {
            "attempts": attempts,
            "host": platform.node(),
            "simulation_wall_s": run_man.get("wall_seconds"),
            "cell_steps_per_second": run_man.get("cell_steps_per_second"),
            "total_wall_s_last_attempt": time.time() - t0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    write_json(dataset, f"{rel}/{MANIFEST}", manifest)  # the commit point
    shutil.rmtree(work, ignore_errors=True)
    for suffix in (".attempts", ".pid"):
        (work.parent / f"{spec.sim_id}{suffix}").unlink(missing_ok=True)
    return {"status": "generated", "sim_id": spec.sim_id, "manifest": manifest}


def import_movie(
    dataset: Location,
    sim_id: str,
    calcium_nM: np.ndarray,
    frame_interval_s: float,
    metadata: dict[str, Any] | None = None,
    active_nM: float = 180.0,
) -> dict[str, Any]:
    """Add a calcium movie (n, H, W) in nM that was not simulated here (a recording, a test pattern) as a
    float32 simulation of the dataset, with the same files and manifest as a generated one."""
    movie = np.asarray(calcium_nM, np.float32)
    if movie.ndim != 3 or not movie.shape[0]:
        raise ValueError(f"a movie is (frames, height, width) with frames >= 1, got {movie.shape}")
    times = np.arange(len(movie)) * frame_interval_s
    meta = {"sim_id": sim_id, "calcium_offset": 0.0, "calcium_scale": 1.0}
    entry = write_frames(dataset, sim_id, iter([(0, times, movie)]), movie.shape[1:], np.dtype(np.float32), meta)
    manifest = {
        "format": DATASET_FORMAT, "sim_id": sim_id, "sweep_values": {}, "seed": None, "backend": "imported",
        "config": {"frame_interval_ms": frame_interval_s * 1000.0, "height": movie.shape[1],
                   "width": movie.shape[2]},
        "metadata": metadata or {}, "code_version": code_version(), "shape": list(movie.shape[1:]),
        "dtype": "float32", "calcium_offset": 0.0, "calcium_scale": 1.0, "first_frame_time_s": 0.0,
        "frame_interval_s": frame_interval_s, "frames": entry, "calcium_stats": calcium_stats(movie, active_nM),
        "wave_stats": None, "generation": {"attempts": 1, "host": platform.node(), "imported": True},
    }  # fmt: skip
    write_json(dataset, f"{sim_dir(sim_id)}/{MANIFEST}", manifest)
    try:
        info = read_json(dataset, "dataset.json")
    except FileNotFoundError:
        info = {"format": DATASET_FORMAT, "status": "complete", "simulations": [], "sweeps": []}
    if sim_id not in info["simulations"]:
        info["simulations"].append(sim_id)
        write_json(dataset, "dataset.json", info)
    return manifest
