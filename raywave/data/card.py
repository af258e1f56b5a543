"""A dataset card: what a wave dataset holds (simulations, parameters, frames, activity, triplets)."""

from __future__ import annotations

from typing import Any

import numpy as np

from raywave.data.rw_dataset import RWDataset
from raywave.data.triplets import PREP, active_fraction
from raywave.storage import list_dir, read_json


def describe(dataset: str, threshold_nM: float = 180.0, max_frames_per_sim: int = 2000,
             verify: bool = False) -> dict[str, Any]:  # fmt: skip
    """Summary of the dataset, with per-frame activity (sampled to at most `max_frames_per_sim` per run)."""
    ds = RWDataset(dataset)
    info = ds.info()
    sims = ds.simulations()
    rows, activity = [], []
    for sim in sims:
        if verify:
            sim.verify()
        m = sim.manifest
        calcium = sim.calcium()
        stride = max(1, len(calcium) // max_frames_per_sim)
        frac = active_fraction(calcium[::stride], threshold_nM) if len(calcium) else np.zeros(0)
        activity.append(frac)
        ws = m.get("wave_stats") or {}
        rows.append({
            "sim_id": sim.sim_id,
            "values": m.get("sweep_values", {}),
            "seed": m.get("seed"),
            "backend": m.get("backend"),
            "shape": list(sim.shape),
            "frames": sim.n_frames,
            "duration_s": sim.n_frames * sim.frame_interval_s,
            "dtype": m["dtype"],
            "bytes": m["frames"]["bytes"],
            "gA": (m["config"].get("params") or {}).get("gA"),
            "n_events": ws.get("n_events"),
            "event_size_fraction_median": (ws.get("event_size_fraction") or {}).get("median"),
            "active_fraction_mean": float(frac.mean()) if len(frac) else 0.0,
            "frames_with_activity": float((frac > 0).mean()) if len(frac) else 0.0,
        })  # fmt: skip
    all_frac = np.concatenate(activity) if activity else np.zeros(0)
    triplets = []
    for name in list_dir(ds.loc, "triplets"):
        try:
            prep = read_json(ds.loc, f"triplets/{name}/{PREP}")
        except FileNotFoundError:
            continue
        cfg = prep["config"]
        triplets.append({"name": name, "n_triplets": prep["n_triplets"], "n_val": prep["n_val"], "dt_s": cfg["dt_s"],
                         "output_shape": prep["output_shape"], "normalization": cfg["normalization"],
                         "activity": cfg["activity"]})  # fmt: skip
    hist, edges = np.histogram(all_frac, bins=20, range=(0, 1))
    return {
        "dataset": ds.loc.uri,
        "status": info.get("status"),
        "simulations_listed": len(info.get("simulations", [])),
        "simulations_committed": len(sims),
        "frames": int(sum(r["frames"] for r in rows)),
        "shapes": sorted({tuple(r["shape"]) for r in rows}),
        "bytes": int(sum(r["bytes"] for r in rows)),
        "sweeps": info.get("sweeps", []),
        "activity": {
            "threshold_nM": threshold_nM,
            "hist_counts": hist.tolist(),
            "hist_edges": edges.tolist(),
            "mean": float(all_frac.mean()) if len(all_frac) else 0.0,
            "frames_with_activity": float((all_frac > 0).mean()) if len(all_frac) else 0.0,
        },  # fmt: skip
        "simulations": rows,
        "triplets": triplets,
        "_activity_per_sim": activity,
    }
