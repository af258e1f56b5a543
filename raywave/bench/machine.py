"""What machine a benchmark ran on (recorded with every result)."""

from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }


def time_best(step, device, repeats: int, times: list | None = None):
    """Run `step` once to warm up, then `repeats` times: (the warm-up's result, the fastest seconds, peak memory in
    MiB: CUDA's allocator peak after the warm-up, or the process's max RSS on the CPU). CUDA is synchronised
    around every timed call. `times`, if given, receives every repetition's seconds."""
    import resource
    import time

    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    first = step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync()
        elapsed = time.perf_counter() - t0
        best = min(best, elapsed)
        if times is not None:
            times.append(elapsed)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # fmt: skip
    return first, best, peak
