"""`raywave bench data`: sweep throughput with 2 workers vs 1, and triplet loading through Ray Data vs a plain
torch DataLoader over the same files, all in one run on one embedded Ray."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from raywave.bench.machine import machine_info


def _sweep(size: int, duration_s: float, n_sims: int, workers: int):
    from raywave.config import build
    from raywave.data.sweep_config import SweepConfig

    base = {"height": size, "width": size, "duration_s": duration_s, "checkpoint_every_s": duration_s,
            "storage_dtype": "float16", "params": {"gA": 0.03}}  # fmt: skip
    return build(SweepConfig, {"base": base, "seeds": n_sims, "workers": workers, "analyze": False})


def sweep_throughput(tmp: Path, size: int, duration_s: float, n_sims: int, log) -> dict:
    """The same sweep with 1 and then 2 simulation actors; wall time includes actor start-up."""
    from raywave.data.sweep_config import expand
    from raywave.data.sweep_runner import run_sweep
    from raywave.waves.simulate import simulate

    sweep1 = _sweep(size, duration_s, n_sims, 1)
    # threads=1 as in the actors: inductor's compiled kernel (and its disk cache) depends on the thread count
    warm = expand(sweep1)[0].config.model_copy(update={"duration_s": 1.0, "checkpoint_every_s": 1.0, "threads": 1})
    log(f"warm-up: compile the {size}x{size} kernel once for 1 thread (kept in inductor's disk cache)")
    simulate(warm, tmp / "warmup")
    out = {}
    for workers in (1, 2):
        log(f"sweep of {n_sims} simulations ({size}x{size}, {duration_s:g} s) with {workers} worker(s)")
        t0 = time.perf_counter()
        report = run_sweep(_sweep(size, duration_s, n_sims, workers), tmp / f"sweep-{workers}")
        wall = time.perf_counter() - t0
        assert len(report.generated) == n_sims and not report.failed
        out[workers] = {"wall_s": wall, "simulations_per_minute": 60.0 * n_sims / wall}
    cfg = expand(sweep1)[0].config
    cell_steps = n_sims * cfg.n_cells * (cfg.n_frames + cfg.transient_frames) * cfg.steps_per_frame
    return {
        "simulations": n_sims,
        "lattice": f"{size}x{size}",
        "duration_s": duration_s,
        "cell_steps": cell_steps,
        "workers_1": out[1],
        "workers_2": out[2],
        "speedup_2_vs_1": out[1]["wall_s"] / out[2]["wall_s"],
        "goal": ">= 1.7x on 2 cores",
    }


def _time_batches(batches, n_expected: int) -> dict:
    """Triplets per second over an iterator of batches; also without the first batch (start-up)."""
    t0 = time.perf_counter()
    t_first, n, n_first = None, 0, 0
    for batch in batches:
        n += len(batch["frames"])
        if t_first is None:
            t_first, n_first = time.perf_counter(), n
    t1 = time.perf_counter()
    assert n == n_expected, (n, n_expected)
    steady = (n - n_first) / (t1 - t_first) if t1 > t_first and n > n_first else float("nan")
    return {"triplets": n, "wall_s": t1 - t0, "triplets_per_s": n / (t1 - t0), "steady_triplets_per_s": steady,
            "first_batch_s": t_first - t0}  # fmt: skip


def loading_throughput(tmp: Path, size: int, n_sims: int, duration_s: float, epochs: int, batch_size: int,
                       workers: int, log) -> dict:  # fmt: skip
    """Triplets per second of both loaders over the same dataset, triplets, epochs and augmentations."""
    from raywave.config import build
    from raywave.data.ray_pipelines import triplet_dataset
    from raywave.data.sweep_runner import run_sweep
    from raywave.data.triplets import TripletConfig, TripletDataset, build_index

    root = tmp / "triplet-data"
    log(f"dataset for loading: {n_sims} simulations of {size}x{size}, {duration_s:g} s")
    run_sweep(_sweep(size, duration_s, n_sims, 2), root)
    cfg = build(TripletConfig, {"dt_s": [0.1, 0.2], "activity": {"min_fraction": 0.0},
                                "augment": {"rot90": True, "hflip": True, "vflip": True}})  # fmt: skip
    prep = build_index(str(root), cfg)
    n = prep["n_triplets"] * epochs
    runs: dict[str, list[dict]] = {"torch_dataloader": [], "ray_data": []}
    for attempt in ("cold", "warm"):  # cold: the first pipeline of this process / Ray session
        log(f"{attempt}: {prep['n_triplets']} triplets x {epochs} epochs, batch {batch_size}: torch DataLoader "
            f"({workers} worker processes)")  # fmt: skip
        plain = TripletDataset(str(root))
        runs["torch_dataloader"].append(_time_batches(plain.loader(batch_size, num_workers=workers, epochs=epochs), n))
        log(f"{attempt}: Ray Data ({workers} actors of 0.5 CPU, prefetch 4 batches)")
        ds = triplet_dataset(str(root), epochs=epochs, batch_size=batch_size, workers=workers,
                             cpus_per_worker=0.5)  # fmt: skip
        runs["ray_data"].append(_time_batches(ds.iter_torch_batches(batch_size=batch_size, prefetch_batches=4), n))
    res_plain, res_ray = runs["torch_dataloader"][1], runs["ray_data"][1]
    return {
        "lattice": f"{size}x{size}",
        "storage_dtype": "float16",
        "triplets_per_epoch": prep["n_triplets"],
        "epochs": epochs,
        "batch_size": batch_size,
        "workers": workers,
        "augment": "rot90 + hflip + vflip, per (seed, epoch, triplet)",
        "torch_dataloader": res_plain,
        "ray_data": res_ray,
        "ray_vs_plain": res_ray["triplets_per_s"] / res_plain["triplets_per_s"],
        "ray_vs_plain_steady": res_ray["steady_triplets_per_s"] / res_plain["steady_triplets_per_s"],
        "cold": {k: v[0] for k, v in runs.items()},
        "ray_vs_plain_cold": runs["ray_data"][0]["triplets_per_s"] / runs["torch_dataloader"][0]["triplets_per_s"],
        "note": "headline = warm runs (a second pipeline in the same process and Ray session); cold runs include "
        "the first pipeline's start-up (worker imports, Ray Data executor)",
        "goal": "Ray Data >= 0.8x the plain loader and >= 1,000 triplets/s at 128x128",
    }


def run_benchmark(
    sweep_size: int = 64,
    sweep_duration_s: float = 20.0,
    sweep_sims: int = 12,
    load_size: int = 128,
    load_sims: int = 4,
    load_duration_s: float = 10.0,
    epochs: int = 100,
    batch_size: int = 64,
    workers: int = 2,
    log: Callable[[str], None] | None = None,
) -> dict:
    from raywave.runtime import ray_session

    log = log or (lambda msg: None)
    tmp = Path(tempfile.mkdtemp(prefix="raywave-bench-data-"))
    try:
        with ray_session(num_cpus=2):
            sweep = sweep_throughput(tmp, sweep_size, sweep_duration_s, sweep_sims, log)
            loading = loading_throughput(tmp, load_size, load_sims, load_duration_s, epochs, batch_size, workers,
                                         log)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import ray

    return {
        "benchmark": "data",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "versions": {"ray": ray.__version__},
        "embedded_ray_cpus": 2,
        "sweep": sweep,
        "loading": loading,
    }
