"""`raywave bench waves`: cell-steps per second of every backend on the same lattices, as ratios against
Brian2 cpp_standalone (1 thread), next to the arithmetic limit of this machine for the native kernel's
float32 loop. Compilation is timed separately (a fresh build of the native kernel; each backend's warm-up) and
excluded from the rates."""

from __future__ import annotations

import os
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
    "native-cpu": ({"backend": "torch", "device": "cpu", "compile": "native"}, 2.0e9),
    "native-cpu-1thread": ({"backend": "torch", "device": "cpu", "compile": "native", "threads": 1}, 1.0e9),
    "torch-cuda": ({"backend": "torch", "device": "cuda", "compile": "on"}, 2.0e10),
}


#: The native kernel's float32 row step (row_step<float, FastF32, 4 neighbours>: four vectorised loops) as GCC 12.2
#: builds it for AVX2 (-O3 -march=native), counted in `objdump -d`: vector instructions per 8 cells that occupy a
#: vector pipe (loads, stores, broadcasts from memory and register moves left out), and how many of them are
#: FMA/MUL/DIV-class, which only 2 of the 4 vector pipes execute (AMD Zen 2-4; Intel since Skylake has 2 FMA
#: ports too). The floor is max(all / 4, FMA-class / 2) cycles per 8 cells: an estimate that assumes perfect
#: scheduling, not a bound the kernel is expected to reach.
KERNEL_LOOP = {"cells": 8, "vector_instructions": 234, "fma_class": 125, "vector_pipes": 4, "fma_pipes": 2}


def arithmetic_limit(threads: int) -> dict | None:
    """ns per cell-step at which the native float32 loop would run if every vector pipe were busy every cycle, at
    the clock measured by a float32 FMA loop (2 FMA pipes x 8 lanes x 2 flops per cycle per core)."""
    from raywave.native import NativeUnavailable
    from raywave.waves.backend_native import peak_flops

    try:
        peak_1 = peak_flops(1)
        peak_n = peak_flops(threads) if threads > 1 else peak_1
    except NativeUnavailable:
        return None
    k = KERNEL_LOOP
    clock_hz = peak_1 / (k["fma_pipes"] * 8 * 2)
    cycles_per_cell = max(k["vector_instructions"] / k["vector_pipes"], k["fma_class"] / k["fma_pipes"]) / k["cells"]
    ns_1 = cycles_per_cell / clock_hz * 1e9
    return {  # N threads on N cores: the machine's limit is the one-core limit / N (the measured N-thread peak
        # is recorded too; on a busy box it shows how much of the other cores was free)
        "peak_flops_float32_1thread": peak_1,
        f"peak_flops_float32_{threads}threads": peak_n,
        "clock_ghz_from_fma_peak": clock_hz / 1e9,
        "kernel_loop": k,
        "cycles_per_cell_step": cycles_per_cell,
        "ns_per_cell_step": {t: ns_1 / t for t in range(1, threads + 1)},
    }


def fresh_native_build_seconds() -> float | None:
    """Seconds to compile the native kernel from scratch (into a temporary cache), or None without a compiler."""
    import tempfile

    from raywave.native import NativeUnavailable, build
    from raywave.waves.backend_native import NAME, SOURCE

    with tempfile.TemporaryDirectory() as d:
        try:
            return build(SOURCE, NAME, cache=d).seconds
        except NativeUnavailable:
            return None


def _frames_for(cfg: SimulationConfig, budget: float, max_frames: int) -> int:
    per_frame = cfg.n_cells * cfg.steps_per_frame
    return int(max(1, min(max_frames, budget // per_frame)))


def measure(label: str, size: int, max_frames: int, seed: int = 0, repeats: int = 3) -> dict:
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
        step0 = cfg.steps_per_frame * (1 if cfg.backend == "torch" else n_frames)
        elapsed = float("inf")
        for _ in range(repeats if cfg.backend == "torch" else 1):  # fast runs: the fastest of a few
            if cfg.backend == "torch" and backend.device.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            frames, _ = backend.run_frames(state, step0, n_frames, ["C"])
            if cfg.backend == "torch" and backend.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = min(elapsed, time.perf_counter() - t1)
        if cfg.backend == "brian2" and cfg.brian2_target == "cpp_standalone":
            elapsed = backend.last_run_seconds  # the binary's own loop time (excludes process start)
        ok = bool(np.isfinite(frames["C"]).all())
        path = getattr(backend, "path", cfg.brian2_target)
        threads = cfg.threads or (torch.get_num_threads() if cfg.backend == "torch" else 1)
        if getattr(backend, "_native", None):  # the native kernel may run small lattices on fewer threads
            threads = backend._native.threads
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
        "path": path,
        "threads": threads,
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
    limit = arithmetic_limit(max(r["threads"] for r in rows)) if rows else None
    for r in rows:
        b = base.get(r["lattice"])
        r["speedup_vs_brian2_cpp_standalone_1thread"] = r["cell_steps_per_s"] / b if b else None
        floor = limit["ns_per_cell_step"].get(r["threads"]) if limit else None
        r["limit_ns_per_cell_step"] = floor
        r["fraction_of_limit"] = floor / r["ns_per_cell_step"] if floor else None
    return {
        "benchmark": "waves",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "load_average_1min": os.getloadavg()[0],
        "versions": _versions(),
        "model": "SAC, gA 0.03 nS, noise on, dt 0.1 ms, 4 neighbours, zero-flux, float32 (torch/native); "
        "rates exclude compilation",
        "baseline": BASELINE,
        "native_build_seconds": fresh_native_build_seconds() if any(r["path"] == "native" for r in rows) else None,
        "arithmetic_limit": limit,
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
