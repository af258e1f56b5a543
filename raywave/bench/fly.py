"""`raywave bench fly`: the fly network's forward and forward+decoder+backward against a per-edge baseline and,
given a flyvis environment, against flyvis 1.2.0 itself.

All implementations run the same problem on the published connectome (45,669 neurons, 1,513,231 edges): batch 4
x 40 Euler steps from rest. This project's network (`FlyNetwork`: the native kernel, or the torch sparse-product
path where no compiler is found); the per-edge gather/scatter formulation that flyvis uses, written here (index
the source voltages of every edge, weight them, scatter-add into the targets, autograd through all of it); and,
with `flyvis_python`, flyvis' own `Network` + `DecoderGAVP` run by `benchmarks/flyvis_reference.py` in that
interpreter (flyvis is never imported here). Every measurement runs in a fresh process, alternating between the
implementations over `rounds`, so its peak resident memory is its own and a slow spell of a shared machine does
not fall on one side only. The voltages and gradients of this project and the per-edge baseline are compared.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from raywave.bench.machine import machine_info, time_best
from raywave.errors import RaywaveError

#: flyvis 1.2.0 on a 2-core machine of this kind (2 threads, batch 4 x 40 steps, dt 1/50), measured side by side
#: with raywave in alternating fresh processes (design notes, 2026-12-01); recorded only when flyvis is not timed in
#: the run itself (absolute seconds differ 2-3x between such machines: compare only within one run).
FLYVIS_CPU_S = {"forward": 0.98, "forward_backward": 2.65}
#: where the flyvis side's script lies in a source checkout
FLYVIS_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "flyvis_reference.py"
#: flyvis steps take seconds: at most this many timed repetitions per flyvis process
FLYVIS_MAX_REPEATS = 5


def baseline_forward(net, x, v0, dt: float):
    """Per-edge gather/scatter dynamics (the flyvis formulation): voltages (B, T, N)."""
    import torch

    c = net.connectome
    dev = x.device
    src, tar = torch.from_numpy(c.edge_src).to(dev), torch.from_numpy(c.edge_tar).to(dev)
    pair, group = torch.from_numpy(c.edge_type).to(dev), torch.from_numpy(c.edge_group).to(dev)
    w = net.sign[pair] * net.n_syn[group] * net.strength[pair]
    nt = net.node_type
    a = dt / torch.clamp(net.tau[nt], min=dt)
    b = net.v_rest[nt]
    inputs = net.input_index
    n_in = len(inputs) // net.n_columns
    v, out = v0, []
    for k in range(x.shape[1]):
        current = torch.zeros_like(v).index_add(1, tar, w * torch.relu(v[:, src]))
        stim = torch.zeros_like(v).index_add(1, inputs, x[:, k].repeat(1, n_in))
        v = v + a * (-v + b + current + stim)
        out.append(v)
    return torch.stack(out, 1)


def _measure(impl: str, mode: str, device: str, batch: int, steps: int, repeats: int, queue) -> None:
    import torch

    from raywave.fly.kernel import keep_freed_memory

    keep_freed_memory()  # as the training loop does (and as the flyvis side is run): no page faults per step

    from raywave.fly.connectome import load
    from raywave.fly.decoder import FlowDecoder, l2norm
    from raywave.fly.network import FlyNetwork

    dev = torch.device(device)
    net = FlyNetwork(load(), seed=0).to(dev)
    dec = FlowDecoder(len(net.connectome.output_types)).to(dev)
    with torch.no_grad():  # the decoder's last layer starts at zero; give it weights so gradients reach the network
        dec.conv2.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1)).mul_(dec.conv2.mask)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, steps, net.n_columns, generator=g).to(dev)
    target = torch.randn(batch, steps, net.n_columns, 2, generator=g).to(dev)
    dt = 0.02

    def run():
        v0 = net.resting_state(batch).detach()
        if impl == "raywave":
            return net(x, dt, v0)
        return baseline_forward(net, x, v0, dt)

    def step():
        if mode == "forward":
            with torch.no_grad():
                return run()
        net.zero_grad()
        dec.zero_grad()
        torch.manual_seed(0)  # the same dropout mask for both implementations
        if impl == "raywave":  # the decoder's input map from the integration itself, as training does
            v, maps = net(x, dt, net.resting_state(batch).detach(), readout=dec.readout())
            pred = dec.decode(maps)
        else:
            v = run()
            pred = dec(net.output_voltages(v))
        l2norm(pred, target).backward()
        return v.detach()

    cpu: list[float] = []  # process CPU seconds (all threads) of every call: robust to a loaded machine

    def timed():
        t0 = time.process_time()
        out = step()
        cpu.append(time.process_time() - t0)
        return out

    v, best, peak = time_best(timed, dev, repeats)
    grads = [p.grad.double().cpu().numpy() for p in net.parameters()] if mode == "forward_backward" else []
    from raywave.fly import kernel

    path = "native" if kernel.available(dev, x.dtype) else "torch"
    queue.put({"seconds": best, "cpu_seconds": min(cpu[1:]), "peak_memory_mib": peak,
               "voltages": v[:, -1].double().cpu().numpy(), "grads": grads,
               "kernel": path if impl == "raywave" else None})  # fmt: skip


def _in_process(*args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_measure, args=(*args, queue))
    p.start()
    result = queue.get()
    p.join()
    return result


def check_flyvis_python(python: str | Path) -> Path:
    """The flyvis interpreter and the reference script exist (one line if not; checked before anything runs)."""
    exe = Path(python).expanduser()
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise RaywaveError(f"--flyvis-python {python}: not an executable file; give the python of an environment "
                           "with flyvis 1.2.0 (see benchmarks/flyvis_reference.py)")  # fmt: skip
    if not FLYVIS_SCRIPT.is_file():
        raise RaywaveError(f"{FLYVIS_SCRIPT} is missing: timing flyvis needs raywave's source checkout")
    return exe


def _flyvis_process(python: Path, mode: str, batch: int, steps: int, repeats: int, threads: int) -> dict:
    """One flyvis measurement in a fresh process of the user's interpreter (benchmarks/flyvis_reference.py)."""
    cmd = [str(python), str(FLYVIS_SCRIPT), "--mode", mode, "--batch", str(batch), "--steps", str(steps),
           "--repeats", str(repeats), "--threads", str(threads), "--keep-freed-memory"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=FLYVIS_SCRIPT.parent)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RaywaveError(f"timing flyvis with {python} failed: {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_benchmark(device: str = "cpu", batch: int = 4, steps: int = 40, repeats: int = 10, rounds: int = 2,
                  log=None, flyvis_python: str | Path | None = None) -> dict:  # fmt: skip
    """Each implementation runs in `rounds` fresh processes, alternating with the others; the fastest repetition
    over all is reported, and the largest peak memory. flyvis (with `flyvis_python`, CPU only) runs at most
    FLYVIS_MAX_REPEATS repetitions per process, with the same torch thread count as this project's processes."""
    import torch

    impls = ["raywave", "per_edge"]
    flyvis = check_flyvis_python(flyvis_python) if flyvis_python else None
    if flyvis is not None:
        if device != "cpu":
            raise RaywaveError("--flyvis-python times flyvis on the CPU; use --device cpu")
        impls.append("flyvis")
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    rows, ratios, flyvis_info = [], {}, None
    for mode in ("forward", "forward_backward"):
        res: dict[str, dict] = {}
        for r in range(rounds):
            for impl in impls:
                if log:
                    log(f"fly {mode} {impl} on {device}, round {r + 1}/{rounds} ...")
                if impl == "flyvis":
                    new = _flyvis_process(flyvis, mode, batch, steps, min(repeats, FLYVIS_MAX_REPEATS), threads)
                    flyvis_info = {k: new[k] for k in ("flyvis", "torch", "torch_threads", "neurons", "edges",
                                                      "free_network_parameters", "decoder_parameters",
                                                      "torchvision_stand_in", "python")}  # fmt: skip
                else:
                    new = _in_process(impl, mode, device, batch, steps, repeats)
                old = res.setdefault(impl, new)
                old["seconds"] = min(old["seconds"], new["seconds"])
                old["cpu_seconds"] = min(old["cpu_seconds"], new["cpu_seconds"])
                old["peak_memory_mib"] = max(old["peak_memory_mib"], new["peak_memory_mib"])
        ours, base = res["raywave"], res["per_edge"]
        v_err = float(np.abs(ours["voltages"] - base["voltages"]).max() / np.abs(base["voltages"]).max())
        g_err = max((float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
                     for a, b in zip(ours["grads"], base["grads"], strict=True)), default=None)  # fmt: skip
        ratios[mode] = base["seconds"] / ours["seconds"]
        for impl in impls:
            rows.append({"mode": mode, "impl": impl, "batch": batch, "steps": steps, "seconds": res[impl]["seconds"],
                         "cpu_seconds": res[impl]["cpu_seconds"],
                         "peak_memory_mib": res[impl]["peak_memory_mib"]})  # fmt: skip
            if impl == "raywave":
                rows[-1].update(kernel=ours["kernel"], speedup_vs_per_edge=ratios[mode], max_rel_voltage_diff=v_err,
                                max_rel_grad_diff=g_err)  # fmt: skip
                if flyvis is not None:
                    rows[-1]["speedup_vs_flyvis"] = res["flyvis"]["seconds"] / ours["seconds"]
                    rows[-1]["cpu_time_ratio_vs_flyvis"] = res["flyvis"]["cpu_seconds"] / ours["cpu_seconds"]
    result = {
        "benchmark": "fly", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "device": device,
        "repeats": repeats, "rounds": rounds, "machine": machine_info(), "rows": rows,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "speedup_forward": ratios["forward"], "speedup_forward_backward": ratios["forward_backward"],
        "goal_forward_backward": 10.0,
        "malloc": "freed memory kept for reuse in every process (raywave.fly.kernel.keep_freed_memory)",
    }  # fmt: skip
    if flyvis is not None:
        fly_rows = {r["mode"]: r for r in rows if r["impl"] == "raywave"}
        result.update(flyvis=flyvis_info, flyvis_repeats=min(repeats, FLYVIS_MAX_REPEATS),
                      speedup_vs_flyvis_forward=fly_rows["forward"]["speedup_vs_flyvis"],
                      speedup_vs_flyvis_forward_backward=fly_rows["forward_backward"]["speedup_vs_flyvis"],
                      cpu_time_ratio_vs_flyvis_forward_backward=fly_rows["forward_backward"]["cpu_time_ratio_vs_flyvis"],
                      goal_vs_flyvis_forward_backward=20.0)  # fmt: skip
    else:
        result["flyvis_cpu_s_from_design_notes"] = FLYVIS_CPU_S
    return result
