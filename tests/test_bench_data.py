"""`raywave bench data` runs end to end (tiny sizes) and reports consistent figures."""

from __future__ import annotations

import pytest


@pytest.mark.slow  # two Ray sweeps and two loaders: minutes on 2 CPUs (`make test-slow`)
def test_bench_data_smoke(ray_local):
    from raywave.bench.data import run_benchmark

    r = run_benchmark(sweep_size=8, sweep_duration_s=0.5, sweep_sims=2, load_size=16, load_sims=2,
                      load_duration_s=0.5, epochs=2, batch_size=8)  # fmt: skip
    s, ld = r["sweep"], r["loading"]
    assert s["speedup_2_vs_1"] == s["workers_1"]["wall_s"] / s["workers_2"]["wall_s"] > 0
    n = ld["triplets_per_epoch"] * 2
    assert ld["torch_dataloader"]["triplets"] == ld["ray_data"]["triplets"] == n > 0
    assert r["machine"]["cpus"] >= 1 and r["versions"]["ray"]
