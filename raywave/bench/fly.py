"""`raywave bench fly`: the fly network's forward and forward+decoder+backward against a per-edge baseline.

Both implementations run the same dynamics on the published connectome (45,669 neurons, 1,513,231 edges) for
batch 4 × 40 Euler steps in the same run: this project's sparse-matrix product with its hand-written adjoint, and
the per-edge gather/scatter that flyvis 1.2.0 uses (index the source voltages of every edge, weight them, scatter-
add into the targets, autograd through all of it). Each measurement runs in a fresh process, so its peak resident
memory is its own. The voltages and gradients of the two are compared in the same run.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np

from raywave.bench.machine import machine_info, time_best

#: flyvis 1.2.0 on a 2-core machine of this kind (2 threads, batch 4 x 40 steps, dt 1/50), measured side by side
#: with raywave in alternating fresh processes (design notes, 2026-12-01); not measured by this benchmark, and
#: absolute seconds differ 2-3x between such machines, so compare only within one run.
FLYVIS_CPU_S = {"forward": 0.98, "forward_backward": 2.65}


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
        if impl == "sparse":
            return net(x, dt, v0)
        return baseline_forward(net, x, v0, dt)

    def step():
        if mode == "forward":
            with torch.no_grad():
                return run()
        net.zero_grad()
        dec.zero_grad()
        torch.manual_seed(0)  # the same dropout mask for both implementations
        v = run()
        loss = l2norm(dec(net.output_voltages(v)), target)
        loss.backward()
        return v.detach()

    v, best, peak = time_best(step, dev, repeats)
    grads = [p.grad.double().cpu().numpy() for p in net.parameters()] if mode == "forward_backward" else []
    queue.put({"seconds": best, "peak_memory_mib": peak, "voltages": v[:, -1].double().cpu().numpy(), "grads": grads})


def _in_process(*args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_measure, args=(*args, queue))
    p.start()
    result = queue.get()
    p.join()
    return result


def run_benchmark(
    device: str = "cpu", batch: int = 4, steps: int = 40, repeats: int = 10, rounds: int = 2, log=None
) -> dict:
    """Each implementation runs in `rounds` fresh processes, alternating with the other (so that a slow spell of a
    shared machine does not fall on one side only); the fastest repetition over all is reported, and the largest
    peak memory."""
    rows, ratios = [], {}
    for mode in ("forward", "forward_backward"):
        res: dict[str, dict] = {}
        for r in range(rounds):
            for impl in ("sparse", "per_edge"):
                if log:
                    log(f"fly {mode} {impl} on {device}, round {r + 1}/{rounds} ...")
                new = _in_process(impl, mode, device, batch, steps, repeats)
                old = res.setdefault(impl, new)
                old["seconds"] = min(old["seconds"], new["seconds"])
                old["peak_memory_mib"] = max(old["peak_memory_mib"], new["peak_memory_mib"])
        v_err = float(np.abs(res["sparse"]["voltages"] - res["per_edge"]["voltages"]).max()
                      / np.abs(res["per_edge"]["voltages"]).max())  # fmt: skip
        g_err = max(
            (
                float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
                for a, b in zip(res["sparse"]["grads"], res["per_edge"]["grads"], strict=True)
            ),
            default=None,
        )
        ratios[mode] = res["per_edge"]["seconds"] / res["sparse"]["seconds"]
        for impl in ("sparse", "per_edge"):
            rows.append(
                {
                    "mode": mode,
                    "impl": impl,
                    "batch": batch,
                    "steps": steps,
                    "seconds": res[impl]["seconds"],
                    "peak_memory_mib": res[impl]["peak_memory_mib"],
                }
            )
        rows[-2].update(speedup_vs_per_edge=ratios[mode], max_rel_voltage_diff=v_err, max_rel_grad_diff=g_err)
    import torch

    return {
        "benchmark": "fly", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "device": device,
        "repeats": repeats, "rounds": rounds, "machine": machine_info(), "rows": rows,
        "speedup_forward": ratios["forward"], "speedup_forward_backward": ratios["forward_backward"],
        "goal_forward_backward": 10.0,
        "flyvis_cpu_s_from_design_notes": FLYVIS_CPU_S,
    }  # fmt: skip
