"""`raywave bench raft`: training-step and evaluation time and peak memory of RAFT basic and small at 368x496.

Each measurement runs in a fresh process, so its peak resident memory (CPU) is its own; on CUDA the peak is
torch's max_memory_allocated, and bf16 autocast is timed against fp32 with the flow difference between the two.
The reference implementation cannot be run here (no network); the design notes' timings of it on this machine
are recorded next to the measured ones, clearly labelled.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time

from raywave.bench.machine import machine_info

#: princeton-vl/RAFT on this 2-core machine (2 threads), from the design notes: seconds per train step
#: (batch 2, 368x496, 12 iterations) and per evaluation (24 iterations). Not measured in this run.
REFERENCE_CPU_S = {"small": {"train_step": 2.7, "eval": 0.7}, "basic": {"train_step": 9.0, "eval": 2.3}}


def _measure(variant: str, mode: str, device: str, dtype: str, repeats: int, size: tuple[int, int]) -> dict:
    import torch

    from raywave.models.raft import RAFT, sequence_loss

    torch.manual_seed(0)
    dev = torch.device(device)
    h, w = size
    model = RAFT(variant).to(dev)
    batch = 2 if mode == "train" else 1
    img1 = torch.rand(batch, 3, h, w, device=dev) * 255
    img2 = torch.roll(img1, shifts=(3, 5), dims=(2, 3))
    gt = torch.zeros(batch, 2, h, w, device=dev)
    gt[:, 0], gt[:, 1] = -5.0, -3.0
    valid = torch.ones(batch, h, w, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step():
        if mode == "train":
            model.train()
            opt.zero_grad()
            with autocast:
                preds = model(img1, img2, iters=12)
            loss, _ = sequence_loss([p.float() for p in preds], gt, valid)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return None
        model.eval()
        with torch.no_grad(), autocast:
            return model(img1, img2, iters=24, test_mode=True)[1].float()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (allocator, kernels)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # fmt: skip
    res = {"variant": variant, "mode": mode, "device": device, "dtype": dtype, "batch": batch,
           "iters": 12 if mode == "train" else 24, "size": f"{h}x{w}", "seconds": min(times),
           "seconds_all": times, "peak_memory_mib": peak / 2**20,
           "peak_kind": "max_memory_allocated" if dev.type == "cuda" else "process max RSS"}  # fmt: skip
    if out is not None:
        res["_flow"] = out.cpu().numpy()
    return res


def _in_process(args) -> dict:
    return _measure(*args)


def run_benchmark(device: str = "cpu", repeats: int = 2, size: tuple[int, int] = (368, 496), log=None) -> dict:
    import numpy as np
    import torch

    log = log or (lambda msg: None)
    dtypes = ["fp32"] + (["bf16"] if device.startswith("cuda") else [])
    rows = []
    ctx = mp.get_context("spawn")
    for variant in ("small", "basic"):
        for mode in ("train", "eval"):
            for dtype in dtypes:
                log(f"RAFT-{variant} {mode} {dtype} on {device}")
                with ctx.Pool(1) as pool:
                    rows.append(pool.apply(_in_process, ((variant, mode, device, dtype, repeats, size),)))
    for r in rows:
        ref = REFERENCE_CPU_S[r["variant"]]["train_step" if r["mode"] == "train" else "eval"]
        if device == "cpu" and r["dtype"] == "fp32":
            r["reference_cpu_s_from_design_notes"] = ref
        if r["dtype"] == "bf16":
            fp32 = next(x for x in rows if x["variant"] == r["variant"] and x["mode"] == r["mode"]
                        and x["dtype"] == "fp32")  # fmt: skip
            r["speedup_vs_fp32"] = fp32["seconds"] / r["seconds"]
            if "_flow" in r:
                r["flow_epe_vs_fp32_px"] = float(np.linalg.norm(r["_flow"] - fp32["_flow"], axis=1).mean())
    for r in rows:
        r.pop("_flow", None)
    return {"benchmark": "raft", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
            "torch": torch.__version__, "device": device, "rows": rows}  # fmt: skip
