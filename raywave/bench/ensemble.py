"""`raywave bench ensemble`: per-model training throughput of K fly models in one network pass, K = 1, 4, 8 (and
50 on a GPU), in the same run.

One training step of the pass as `raywave.fly.train` runs it: the K models' dynamics on the published connectome
(batch 4 x 40 Euler steps from rest), the K decoders, the per-model l2norm losses, the backward pass (hand-written
adjoint) and Adam. Each K runs in a fresh process (its peak memory its own), `rounds` times alternating with the
other K values; the fastest repetition counts. Throughput is model-iterations per second = K / step seconds;
the ratio is against K = 1 measured in the same run. Also recorded: the median step over all repetitions of all
rounds, and the ratio of medians (the fastest of many short K = 1 steps can catch a quiet moment that one long
K = 8 step cannot, so on a shared machine the two statistics bracket the truth).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np

from raywave.bench.machine import machine_info, time_best


def _measure(k: int, device: str, batch: int, steps: int, repeats: int, queue) -> None:
    import torch

    from raywave.fly.connectome import load
    from raywave.fly.decoder import FlowDecoder
    from raywave.fly.ensemble import FlyEnsemble
    from raywave.fly.kernel import keep_freed_memory
    from raywave.fly.train import l2norm_models

    keep_freed_memory()  # as the training loop does

    dev = torch.device(device)
    seeds = list(range(k))
    ens = FlyEnsemble(load(), seeds).to(dev)
    dec = FlowDecoder(len(ens.connectome.output_types), seed=seeds).to(dev)
    opt = torch.optim.Adam([*ens.parameters(), *dec.parameters()], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(k, batch, steps, ens.n_columns, generator=g).to(dev)
    target = torch.randn(k, batch, steps, ens.n_columns, 2, generator=g).to(dev)
    gens = [torch.Generator(device=dev).manual_seed(s) for s in seeds]

    def step():
        _, maps = ens(x, 0.02, readout=dec.readout())
        pred = dec.decode(maps, gens).permute(3, 0, 1, 2, 4)
        opt.zero_grad()
        l2norm_models(pred, target).sum().backward()
        opt.step()
        ens.clamp_()

    times: list[float] = []
    _, best, peak = time_best(step, dev, repeats, times)
    from raywave.fly import kernel

    queue.put({"seconds": best, "times": times, "peak_memory_mib": peak,
               "kernel": "native" if kernel.available(dev, x.dtype) else "torch"})  # fmt: skip


def _in_process(*args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_measure, args=(*args, queue))
    p.start()
    result = queue.get()
    p.join()
    return result


def run_benchmark(ks: list[int], device: str = "cpu", batch: int = 4, steps: int = 40, repeats: int = 3,
                  rounds: int = 2, log=None) -> dict:  # fmt: skip
    """Per-model throughput for every K, fastest over `rounds` alternating fresh processes."""
    best: dict[int, dict] = {}
    load_before = os.getloadavg()
    for r in range(rounds):
        for k in ks:
            if log:
                log(f"ensemble K={k} on {device}, round {r + 1}/{rounds} ...")
            new = _in_process(k, device, batch, steps, repeats)
            old = best.setdefault(k, {**new, "times": []})
            old["times"] += new["times"]
            old["seconds"] = min(old["seconds"], new["seconds"])
            old["peak_memory_mib"] = max(old["peak_memory_mib"], new["peak_memory_mib"])
    k0 = min(ks)
    median = {k: float(np.median(best[k]["times"])) for k in ks}
    base, base_median = k0 / best[k0]["seconds"], k0 / median[k0]
    rows = [{"models_per_pass": k, "batch": batch, "steps": steps, "step_seconds": best[k]["seconds"],
             "model_iterations_per_s": k / best[k]["seconds"],
             "per_model_vs_k1": (k / best[k]["seconds"]) / base if k0 == 1 else None,
             "median_step_seconds": median[k],
             "per_model_vs_k1_median": (k / median[k]) / base_median if k0 == 1 else None,
             "peak_memory_mib": best[k]["peak_memory_mib"], "kernel": best[k]["kernel"]} for k in ks]  # fmt: skip
    import torch

    return {"benchmark": "ensemble", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
            "device": device, "repeats": repeats, "rounds": rounds, "machine": machine_info(), "rows": rows,
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "goal": "K=8 per-model throughput >= 1.0x K=1 on CPU; K=50 >= 20x K=1 on a GPU"}  # fmt: skip
