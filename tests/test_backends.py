"""Torch vs Brian2: exact trajectories with noise off (acceptance 2a); single-cell bursting and matching
statistics with noise on (acceptance 1, 2b)."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from raywave.waves.analysis import AnalysisSettings, analyze, cell_bursts
from raywave.waves.backend_brian2 import Brian2Backend
from raywave.waves.backend_torch import TorchBackend
from raywave.waves.config import SimulationConfig
from raywave.waves.simulate import simulate
from raywave.waves.state import initial_state

from .conftest import LATTICE

#: Documented tolerance: noise off, float64 torch vs Brian2, 8x8 lattice, 3 s (30,000 steps).
TRAJ_ATOL = {"V": 1e-6, "C": 1e-6, "A": 1e-9}


@pytest.mark.parametrize("target", ["cython", "cpp_standalone"])
def test_noise_free_trajectories_agree(target):
    cfg = SimulationConfig(height=8, width=8, duration_s=3, checkpoint_every_s=3, precision="float64",
                           compile="off", brian2_target=target, params={"sigma": 0.0, "gA": 0.1},
                           record=["V", "A"])  # fmt: skip
    state = initial_state(8, 8, cfg.params, seed=4)
    with Brian2Backend(cfg) as b2:
        ref, ref_state = b2.run_frames(state, 0, 30, cfg.record)
    got, got_state = TorchBackend(cfg).run_frames(state, 0, 30, cfg.record)
    assert ref["V"].max() > -40  # something happened: cells depolarised within 3 s
    for var, tol in TRAJ_ATOL.items():
        np.testing.assert_allclose(got[var], ref[var], atol=tol, rtol=0, err_msg=var)
        np.testing.assert_allclose(got_state[var], ref_state[var], atol=tol, rtol=0, err_msg=var)


def _calcium(cfg: SimulationConfig) -> np.ndarray:
    """Simulate `cfg` into a temporary run directory and return its calcium frames."""
    with tempfile.TemporaryDirectory() as d:
        return simulate(cfg, d + "/run").frames()


def _isolated_cells(backend: str, **extra) -> tuple[np.ndarray, dict]:
    cfg = SimulationConfig(backend=backend, height=LATTICE, width=LATTICE, duration_s=150, transient_s=20,
                           checkpoint_every_s=10, storage_dtype="float32", seed=3,
                           params={"gA": 0.0}, **extra)  # fmt: skip
    ca = _calcium(cfg)
    return ca, cell_bursts(ca, AnalysisSettings())


@pytest.fixture(scope="module")
def isolated():
    return {
        "torch": _isolated_cells("torch", compile="on"),
        "brian2": _isolated_cells("brian2", brian2_target="cpp_standalone"),
    }


@pytest.mark.slow  # 150 s of 100 cells in both backends, compiled on a fresh machine: minutes (`make test-slow`)
@pytest.mark.parametrize("backend", ["torch", "brian2"])
def test_single_cell_bursting(isolated, backend):
    """gA = 0: 100 independent cells. Bursts last seconds, inter-burst intervals are tens of seconds."""
    ca, b = isolated[backend]
    assert len(b["durations_s"]) >= 100
    assert 0.8 <= np.median(b["durations_s"]) <= 4.0
    assert np.percentile(b["durations_s"], 90) <= 6.0
    assert 15.0 <= np.median(b["ibi_s"]) <= 90.0
    assert 60 <= ca.min() <= 110 and 250 <= ca.max() <= 450  # rest ~90 nM, bursts 250-370 nM


@pytest.mark.slow  # shares the 150 s two-backend simulation above: minutes (`make test-slow`)
def test_backends_agree_statistically(isolated):
    """Different noise streams, same model: burst statistics agree within 20% (documented tolerance)."""
    (_, bt), (_, bb) = isolated["torch"], isolated["brian2"]
    for key in ("durations_s", "ibi_s"):
        mt, mb = np.median(bt[key]), np.median(bb[key])
        assert abs(mt - mb) / mb < 0.2, (key, mt, mb)
    nt, nb = len(bt["durations_s"]), len(bb["durations_s"])
    assert abs(nt - nb) / nb < 0.2


@pytest.mark.slow  # 120 s of the shared lattice in both backends: minutes on 2 CPUs (`make test-slow`)
def test_coupled_wave_statistics_agree():
    """gA = 0.05 on the shared lattice: event counts and sizes agree between backends within stated bounds."""
    stats = {}
    for backend, extra in (("torch", {"compile": "on"}), ("brian2", {"brian2_target": "cpp_standalone"})):
        cfg = SimulationConfig(backend=backend, height=LATTICE, width=LATTICE, duration_s=120, transient_s=20,
                               checkpoint_every_s=10, storage_dtype="float32", seed=5, params={"gA": 0.05},
                               **extra)  # fmt: skip
        stats[backend] = analyze(_calcium(cfg), AnalysisSettings())[0]
    t, b = stats["torch"], stats["brian2"]
    assert t["n_events"] > 0 and b["n_events"] > 0
    assert abs(t["fraction_cells_bursting"] - b["fraction_cells_bursting"]) < 0.1
    for key in ("event_size_fraction", "inter_burst_interval_s"):
        mt, mb = t[key]["median"], b[key]["median"]
        assert abs(mt - mb) / mb < 0.35, (key, mt, mb)
