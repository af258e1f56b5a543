"""`waves snapshot` and `waves movie` on one simulation of a wave dataset (DATASET/simulations/ID), as the demo
draws them: the frames and times come from the dataset's parquet, exactly as stored."""

from __future__ import annotations

import numpy as np

from raywave.data.generate import import_movie
from raywave.data.rw_dataset import RWDataset
from raywave.storage import resolve


def test_snapshot_and_movie_of_a_dataset_simulation(tmp_path, cli):
    movie = np.random.default_rng(0).uniform(0, 400, (30, 8, 8)).astype(np.float32)
    import_movie(resolve(tmp_path / "ds"), "sim-test", movie, 0.1)
    sim = RWDataset(str(tmp_path / "ds")).simulation("sim-test")
    assert np.allclose(sim.times(), np.arange(30) * 0.1)
    assert np.array_equal(sim.calcium(), movie)  # an imported movie is stored as float32
    folder = tmp_path / "ds" / "simulations" / "sim-test"
    res = cli("waves", "snapshot", str(folder), "--every-s", "1", "--out", str(tmp_path / "snap.png"))
    assert res.returncode == 0, res.stderr
    res = cli("waves", "movie", str(folder), "--out", str(tmp_path / "movie.gif"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "snap.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "movie.gif").read_bytes()[:3] == b"GIF"
