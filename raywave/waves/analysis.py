"""Wave statistics from calcium movies: space-time events, speeds, intervals, single-cell bursts, power laws.

An *event* is a connected component of the active set {C >= threshold} in (time, row, column), connected
through the lattice's neighbourhood within a frame and through the same cell across consecutive frames
(periodic lattices are joined across their edges). A *burst* is a maximal run of active frames of one cell.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class AnalysisSettings:
    threshold_nM: float = 180.0  # calcium above this is "active" (rest ~90-100 nM, bursts 250-370 nM)
    frame_interval_s: float = 0.1
    spacing_um: float = 25.0
    neighbours: int = 4
    periodic: bool = False
    min_event_cells: int = 1


def _structure(neighbours: int) -> np.ndarray:
    s = np.zeros((3, 3, 3), dtype=bool)
    s[0, 1, 1] = s[2, 1, 1] = True  # the same cell in the previous / next frame
    s[1] = ndimage.generate_binary_structure(2, 1 if neighbours == 4 else 2)
    return s


def label_events(active: np.ndarray, neighbours: int = 4, periodic: bool = False) -> tuple[np.ndarray, int]:
    """Label the space-time components of a boolean (T, H, W) array; labels 1..n, 0 = inactive."""
    labels, n = ndimage.label(active, structure=_structure(neighbours))
    if periodic and n:
        parent = np.arange(n + 1)

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        pairs = [(labels[:, 0, :], labels[:, -1, :]), (labels[:, :, 0], labels[:, :, -1])]
        if neighbours == 8:
            pairs += [(labels[:, 0, :], np.roll(labels[:, -1, :], 1, axis=1)),
                      (labels[:, 0, :], np.roll(labels[:, -1, :], -1, axis=1)),
                      (labels[:, :, 0], np.roll(labels[:, :, -1], 1, axis=1)),
                      (labels[:, :, 0], np.roll(labels[:, :, -1], -1, axis=1))]  # fmt: skip
        for a, b in pairs:
            both = (a > 0) & (b > 0)
            for x, y in set(zip(a[both].tolist(), b[both].tolist(), strict=True)):
                rx, ry = find(x), find(y)
                if rx != ry:
                    parent[max(rx, ry)] = min(rx, ry)
        roots = np.array([find(i) for i in range(n + 1)])
        _, relabel = np.unique(roots, return_inverse=True)
        labels = relabel[labels].astype(labels.dtype)
        n = int(relabel.max())
    return labels, n


def _speed(t: np.ndarray, r: np.ndarray, c: np.ndarray) -> float:
    """Propagation speed (cells/s): slope of distance from the initiation site vs first-activation time."""
    t0 = t.min()
    first = t == t0
    r0, c0 = r[first].mean(), c[first].mean()
    later = t > t0
    if later.sum() < 2:
        return math.nan
    d = np.hypot(r[later] - r0, c[later] - c0)
    tt = t[later] - t0
    if np.ptp(tt) == 0:
        return float(d.mean() / tt[0]) if tt[0] > 0 else math.nan
    slope = np.polyfit(tt, d, 1)[0]
    return float(slope) if slope > 0 else math.nan


def detect_events(calcium: np.ndarray, s: AnalysisSettings) -> list[dict]:
    """One row per space-time event: size (cells), duration, onset, centroid, speed (cells/s, um/s)."""
    active = calcium >= s.threshold_nM
    labels, n = label_events(active, s.neighbours, s.periodic)
    if n == 0:
        return []
    T, H, W = calcium.shape
    rows = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        sub = labels[sl] == k
        tt, rr, cc = np.nonzero(sub)
        tt, rr, cc = tt + sl[0].start, rr + sl[1].start, cc + sl[2].start
        flat = rr * W + cc
        order = np.lexsort((tt, flat))
        flat_s, t_s = flat[order], tt[order]
        firsts = np.r_[True, flat_s[1:] != flat_s[:-1]]
        cell_t, cell = t_s[firsts], flat_s[firsts]  # each cell's first active frame in this event
        size = len(cell)
        if size < s.min_event_cells:
            continue
        speed = _speed(cell_t * s.frame_interval_s, cell // W, cell % W)
        rows.append(
            {
                "event": len(rows),
                "onset_s": float(tt.min() * s.frame_interval_s),
                "duration_s": float((tt.max() - tt.min() + 1) * s.frame_interval_s),
                "size_cells": int(size),
                "size_fraction": size / (H * W),
                "space_time_volume": int(len(tt)),
                "centroid_row": float(rr.mean()),
                "centroid_col": float(cc.mean()),
                "speed_cells_per_s": speed,
                "speed_um_per_s": speed * s.spacing_um,
            }
        )
    return rows


def cell_bursts(calcium: np.ndarray, s: AnalysisSettings) -> dict[str, np.ndarray]:
    """Per-cell bursts: durations (s) and inter-burst intervals (onset to onset, s), pooled over cells."""
    active = calcium >= s.threshold_nM
    T = active.shape[0]
    a = active.reshape(T, -1).astype(np.int8)
    edges = np.diff(np.pad(a, ((1, 1), (0, 0))), axis=0)  # +1 onset, -1 offset
    onset_t, onset_c = np.nonzero(edges.T == 1)
    offset_t, offset_c = np.nonzero(edges.T == -1)
    # np.nonzero on the transposed array orders by cell, then time: onsets and offsets pair up.
    durations = (offset_c - onset_c) * s.frame_interval_s
    complete = (onset_c > 0) & (offset_c < T)  # bursts cut by the recording's edges are not measured
    same_cell = onset_t[1:] == onset_t[:-1]
    ibi = np.diff(onset_c)[same_cell] * s.frame_interval_s
    n_bursts = np.bincount(onset_t, minlength=a.shape[1])
    return {"durations_s": durations[complete], "ibi_s": ibi, "bursts_per_cell": n_bursts}


def location_intervals(calcium: np.ndarray, events: list[dict], s: AnalysisSettings) -> np.ndarray:
    """Inter-event intervals per location: time between successive events that a cell takes part in (s)."""
    active = calcium >= s.threshold_nM
    labels, _ = label_events(active, s.neighbours, s.periodic)
    T = labels.shape[0]
    flat = labels.reshape(T, -1)
    t_idx, c_idx = np.nonzero(flat)
    if not len(t_idx):  # no cell was ever active
        return np.zeros(0)
    lab = flat[t_idx, c_idx]
    order = np.lexsort((t_idx, lab, c_idx))
    c_s, l_s, t_s = c_idx[order], lab[order], t_idx[order]
    first = np.r_[True, (c_s[1:] != c_s[:-1]) | (l_s[1:] != l_s[:-1])]
    c_f, t_f = c_s[first], t_s[first]
    order2 = np.lexsort((t_f, c_f))
    c_f, t_f = c_f[order2], t_f[order2]
    same = c_f[1:] == c_f[:-1]
    return np.diff(t_f)[same] * s.frame_interval_s


def fit_power_law(sizes: np.ndarray) -> dict:
    """Discrete power-law fit of event sizes (Clauset et al. 2009, via `powerlaw`), vs an exponential."""
    sizes = np.asarray(sizes)
    out = {"n": int(len(sizes)), "alpha": math.nan, "xmin": math.nan, "ks_distance": math.nan,
           "loglik_ratio_vs_exponential": math.nan, "p_value_vs_exponential": math.nan}  # fmt: skip
    if len(sizes) < 10 or len(np.unique(sizes)) < 3:
        return out
    import powerlaw

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(sizes, discrete=True, verbose=False)
        R, p = fit.distribution_compare("power_law", "exponential", normalized_ratio=True)
    out.update(
        alpha=float(fit.power_law.alpha),
        xmin=float(fit.power_law.xmin),
        ks_distance=float(fit.power_law.D),
        loglik_ratio_vs_exponential=float(R),
        p_value_vs_exponential=float(p),
    )
    return out


def _summary(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return {"n": 0, "mean": math.nan, "median": math.nan, "p10": math.nan, "p90": math.nan}
    return {"n": int(len(x)), "mean": float(x.mean()), "median": float(np.median(x)),
            "p10": float(np.percentile(x, 10)), "p90": float(np.percentile(x, 90))}  # fmt: skip


def analyze(calcium: np.ndarray, s: AnalysisSettings) -> tuple[dict, list[dict], dict[str, np.ndarray]]:
    """Everything at once: (statistics, event rows, per-cell burst arrays)."""
    events = detect_events(calcium, s)
    bursts = cell_bursts(calcium, s)
    iei = location_intervals(calcium, events, s)
    sizes = np.array([e["size_cells"] for e in events])
    T, H, W = calcium.shape
    stats = {
        "threshold_nM": s.threshold_nM,
        "frames": T,
        "duration_s": T * s.frame_interval_s,
        "cells": H * W,
        "n_events": len(events),
        "fraction_cells_bursting": float((bursts["bursts_per_cell"] > 0).mean()),
        "event_size_cells": _summary(sizes),
        "event_size_fraction": _summary(sizes / (H * W)) if len(sizes) else _summary(np.array([])),
        "event_duration_s": _summary([e["duration_s"] for e in events]),
        "event_speed_um_per_s": _summary([e["speed_um_per_s"] for e in events]),
        "inter_event_interval_per_location_s": _summary(iei),
        "burst_duration_s": _summary(bursts["durations_s"]),
        "inter_burst_interval_s": _summary(bursts["ibi_s"]),
        "calcium_nM": {"min": float(calcium.min()), "max": float(calcium.max()), "mean": float(calcium.mean())},
        "size_power_law": fit_power_law(sizes),
    }
    return stats, events, bursts
