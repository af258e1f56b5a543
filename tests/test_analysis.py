"""Wave analysis against constructed movies with known answers."""

from __future__ import annotations

import numpy as np

from raywave.waves.analysis import AnalysisSettings, analyze, cell_bursts, fit_power_law, label_events


def ring_wave(speed_cells_s: float, dt: float = 0.1, T: int = 40, n: int = 41) -> np.ndarray:
    r, c = np.mgrid[:n, :n]
    d = np.hypot(r - n // 2, c - n // 2)
    ca = np.full((T, n, n), 90.0)
    for t in range(T):
        R = speed_cells_s * t * dt
        ca[t][(d <= R) & (d > R - 1.5)] = 300.0
    return ca


def test_ring_wave_speed_and_size():
    ca = ring_wave(5.0)
    stats, events, _ = analyze(ca, AnalysisSettings(frame_interval_s=0.1, spacing_um=20.0))
    assert len(events) == 1
    ev = events[0]
    assert abs(ev["speed_cells_per_s"] - 5.0) < 0.25
    assert abs(ev["speed_um_per_s"] - 100.0) < 5.0
    assert ev["size_cells"] == int((ca.max(axis=0) > 180).sum())


def test_separate_events_and_periodic_join():
    a = np.zeros((3, 6, 6), bool)
    a[1, 2, 0] = a[1, 2, 5] = True  # touching only across the periodic edge
    a[1, 4, 3] = True
    assert label_events(a, 4, periodic=False)[1] == 3
    assert label_events(a, 4, periodic=True)[1] == 2
    b = np.zeros((3, 6, 6), bool)
    b[1, 1, 1] = b[1, 2, 2] = True  # diagonal neighbours within a frame: joined only with 8 neighbours
    assert label_events(b, 4)[1] == 2
    assert label_events(b, 8)[1] == 1
    c = np.zeros((3, 6, 6), bool)
    c[0, 1, 1] = c[1, 2, 2] = True  # across frames only the same cell joins: two events either way
    assert label_events(c, 4)[1] == 2 and label_events(c, 8)[1] == 2


def test_bursts_and_intervals_of_square_pulses():
    T = 300
    ca = np.full((T, 1, 2), 90.0)
    for start in (20, 120, 220):  # 2 s bursts every 10 s in cell 0
        ca[start : start + 20, 0, 0] = 300.0
    b = cell_bursts(ca, AnalysisSettings(frame_interval_s=0.1))
    np.testing.assert_allclose(b["durations_s"], [2.0, 2.0, 2.0])
    np.testing.assert_allclose(b["ibi_s"], [10.0, 10.0])
    assert list(b["bursts_per_cell"]) == [3, 0]
    stats, events, _ = analyze(ca, AnalysisSettings(frame_interval_s=0.1))
    assert stats["fraction_cells_bursting"] == 0.5 and len(events) == 3
    assert stats["inter_event_interval_per_location_s"]["median"] == 10.0


def test_power_law_fit_recovers_exponent():
    rng = np.random.default_rng(0)
    u = rng.uniform(size=4000)
    sizes = np.floor((1 - u) ** (-1 / 1.5)).astype(int)  # continuous Pareto, alpha 2.5, floored
    fit = fit_power_law(sizes)
    assert abs(fit["alpha"] - 2.5) < 0.25
    assert fit["loglik_ratio_vs_exponential"] > 0


def test_a_silent_movie_has_no_events():
    from raywave.waves.analysis import AnalysisSettings, analyze

    stats, events, _ = analyze(np.full((5, 4, 4), 90.0, np.float32), AnalysisSettings())
    assert stats["n_events"] == 0 and events == [] and stats["inter_event_interval_per_location_s"]["n"] == 0
