"""`raywave bench waves`: cell-steps per second of every backend on the same lattices, as ratios against
Brian2 cpp_standalone (1 thread). Compilation is timed separately and excluded from the rates."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from raywave.bench.machine import machine_info
from raywave.waves.config import SimulationConfig
from raywave.waves.state import initial_state

BASELINE = "brian2-cpp_standalone"

#: backend label -> (config overrides, max cells*steps to time: slow backends get shorter runs)
BACKENDS: dict[str, tuple[dict, float]] = {
    "brian2-cpp_standalone": ({"backend": "brian2", "brian2_target": "cpp_standalone"}, 2.0e8),
    "brian2-cython": ({"backend": "brian2", "brian2_target": "cython"}, 5.0e7),
    "brian2-numpy": ({"backend": "brian2", "brian2_target": "numpy"}, 2.0e7),
    "torch-cpu": ({"backend": "torch", "device": "cpu", "compile": "on"}, 1.0e9),
    "torch-cpu-1thread": ({"backend": "torch", "device": "cpu", "compile": "on", "threads": 1}, 5.0e8),
    "torch-cuda": ({"backend": "torch", "device": "cuda", "compile": "on"}, 2.0e10),
}


def _frames_for(cfg: SimulationConfig, budget: float, max_frames: int) -> int:
    per_frame = cfg.n_cells * cfg.steps_per_frame
    return int(max(1, min(max_frames, budget // per_frame)))


def measure(label: str, size: int, max_frames: int, seed: int = 0) -> dict:
    """Time one backend on a size x size lattice (gA 0.03, noise on, dt 0.1 ms, frames every 100 ms)."""
    import torch

    overrides, budget = BACKENDS[label]
    threads_before = torch.get_num_threads()
    base = dict(height=size, width=size, duration_s=100.0, checkpoint_every_s=100.0, seed=seed)
    cfg = SimulationConfig(**{**base, **overrides})
    n_frames = _frames_for(cfg, budget, max_frames)
    cfg = cfg.model_copy(update={"checkpoint_every_s": n_frames * cfg.frame_interval_ms / 1000.0})
    from raywave.waves.simulate import make_backend

    state = initial_state(size, size, cfg.params, seed)
    t0 = time.perf_counter()
    backend = make_backend(cfg)
    try:
        # warm-up: compilation (torch.compile / Cython / C++ build) happens here and is reported separately
        _, state = backend.run_frames(state, 0, 1 if cfg.backend == "torch" else n_frames, ["C"])
        warm = time.perf_counter() - t0
        if cfg.backend == "torch" and backend.device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        step0 = cfg.steps_per_frame * (1 if cfg.backend == "torch" else n_frames)
        frames, _ = backend.run_frames(state, step0, n_frames, ["C"])
        if cfg.backend == "torch" and backend.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t1
        if cfg.backend == "brian2" and cfg.brian2_target == "cpp_standalone":
            elapsed = backend.last_run_seconds  # the binary's own loop time (excludes process start)
        ok = bool(np.isfinite(frames["C"]).all())
    finally:
        if hasattr(backend, "close"):
            backend.close()
        torch.set_num_threads(threads_before)
    steps = n_frames * cfg.steps_per_frame
    return {
        "backend": label,
        "lattice": f"{size}x{size}",
        "cells": size * size,
        "simulated_s": steps * cfg.dt_ms / 1000.0,
        "steps": steps,
        "seconds": elapsed,
        "warmup_seconds": warm,
        "cell_steps_per_s": size * size * steps / elapsed,
        "ns_per_cell_step": elapsed / (size * size * steps) * 1e9,
        "finite": ok,
    }


def available_backends() -> list[str]:
    import torch

    labels = [b for b in BACKENDS if b != "torch-cuda"]
    if torch.cuda.is_available():
        labels.append("torch-cuda")
    return labels


def run_benchmark(
    sizes: list[int], backends: list[str], max_frames: int = 10, log: Callable[[str], None] | None = None
) -> dict:
    """Every backend on every lattice in this one run; ratios are against Brian2 cpp_standalone."""

    rows = []
    for size in sizes:
        for label in backends:
            if log:
                log(f"{label} on {size}x{size} ...")
            rows.append(measure(label, size, max_frames))
    base = {r["lattice"]: r["cell_steps_per_s"] for r in rows if r["backend"] == BASELINE}
    for r in rows:
        b = base.get(r["lattice"])
        r["speedup_vs_brian2_cpp_standalone_1thread"] = r["cell_steps_per_s"] / b if b else None
    return {
        "benchmark": "waves",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "versions": _versions(),
        "model": "SAC, gA 0.03 nS, noise on, dt 0.1 ms, 4 neighbours, zero-flux; rates exclude compilation",
        "baseline": BASELINE,
        "rows": rows,
    }


def poster_run(device: str = "cuda", duration_s: float = 540.0, size: int = 432) -> dict:
    """Wall time of the poster's full run (432x432, 540 s, dt 0.1 ms, 10 Hz frames), stored as float16."""
    import tempfile

    from raywave.waves.simulate import simulate

    cfg = SimulationConfig(height=size, width=size, duration_s=duration_s, checkpoint_every_s=min(60.0, duration_s),
                           device=device, compile="on", storage_dtype="float16")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        store = simulate(cfg, d + "/run")
        wall = time.perf_counter() - t0
        man = store.manifest()
    return {"lattice": f"{size}x{size}", "simulated_s": duration_s, "device": device, "wall_seconds": wall,
            "frames": man["n_frames"], "cell_steps_per_s": man["cell_steps_per_second"]}  # fmt: skip


def _versions() -> dict:
    import brian2
    import torch

    from raywave import __version__

    return {"raywave": __version__, "torch": torch.__version__, "brian2": brian2.__version__}
