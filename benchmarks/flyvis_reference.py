"""Time flyvis 1.2.0's own network on the fly benchmark's problem, in the user's flyvis environment.

flyvis is not a dependency of raywave (its unpinned requirements pull a CUDA torchvision, and `import flyvis`
changes process-wide state), so this script runs in an interpreter of your own that has it installed, and prints
one JSON object; `raywave bench fly --flyvis-python /path/to/venv/bin/python` runs it in fresh processes that
alternate with raywave's. It imports neither raywave nor anything outside flyvis and its requirements:

    python3.11 -m venv /tmp/flyvis-env
    /tmp/flyvis-env/bin/pip install torch==2.13.0                    # the CPU torch raywave uses
    /tmp/flyvis-env/bin/pip install flyvis==1.2.0 --no-deps
    /tmp/flyvis-env/bin/pip install numba datamate scipy matplotlib networkx scikit-learn ffmpeg-python \\
        python-dotenv hydra-core toolz tqdm requests xarray pandas joblib colorama pytz cachetools ipython pytest
    /tmp/flyvis-env/bin/python benchmarks/flyvis_reference.py --mode forward_backward

What is timed is the step `flyvis.solver.MultiTaskSolver` trains with: the default `Network()` (the published
connectome, `ConnectomeFromAvgFilters`, extent 15; `PPNeuronIGRSynapses`, relu) integrating `batch` samples of
`steps` frames at dt 0.02 s from its initial state, `DecoderGAVP` (shape [8, 2], kernel 5, dropout 0.5,
const_weight 0.001, the task config's flow decoder), the l2norm loss and the backward pass (mode
`forward_backward`); or the network's forward without gradient (mode `forward`). As in `raywave bench fly`: one
warm-up, then the fastest of `repeats` (wall clock, and separately the process's CPU seconds over all its
threads, which a loaded machine disturbs less); peak memory is the process's max RSS.

torchvision is imported by flyvis' eye rendering only; the PyPI build does not load next to a CPU torch
(`operator torchvision::nms does not exist`). When it cannot be imported, an empty stand-in module is registered
in its place (any use of it raises) and the result says so; nothing timed here touches it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import types


def _torchvision_or_stand_in() -> bool:
    """Import torchvision, or register a stand-in that raises on use; True when the stand-in was needed."""
    try:
        import torchvision.transforms.functional  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError or the CUDA build's RuntimeError
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

        class _Unavailable(types.ModuleType):
            def __getattr__(self, attr):
                raise RuntimeError(f"torchvision could not be imported; {self.__name__}.{attr} is unavailable")

        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            sys.modules[name] = _Unavailable(name)
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
        return True
    return False


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """glibc mallopt: serve blocks up to `limit` from the heap and keep freed memory for reuse, as raywave's
    processes do in `raywave bench fly` (raywave.fly.kernel.keep_freed_memory), so that neither side pays a page
    fault per 4 kB for arrays it frees and allocates again every step."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, limit)) and bool(libc.mallopt(-1, 2 * limit))  # M_MMAP_, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def measure(mode: str, batch: int, steps: int, repeats: int, threads: int, seed: int = 0) -> dict:
    # flyvis writes its compiled connectome under FLYVIS_ROOT_DIR (default: inside its installed package)
    os.environ.setdefault("FLYVIS_ROOT_DIR", os.path.join(tempfile.gettempdir(), "flyvis-reference-root"))
    stand_in = _torchvision_or_stand_in()
    import logging

    import torch

    torch.set_num_threads(threads)
    import flyvis
    from flyvis.network import Network
    from flyvis.task.decoder import DecoderGAVP
    from flyvis.task.objectives import l2norm

    logging.getLogger().setLevel(logging.WARNING)  # flyvis logs every layer at INFO on import and construction
    torch.set_default_device("cpu")  # flyvis sets the default device at import; this benchmark is on the CPU
    torch.manual_seed(seed)
    net = Network()
    dec = DecoderGAVP(net.connectome, shape=[8, 2], kernel_size=5, const_weight=0.001, p_dropout=0.5)
    n_columns = net.stimulus.n_input_elements
    g = torch.Generator().manual_seed(seed)
    lum = torch.rand(batch, steps, 1, n_columns, generator=g)
    target = torch.randn(batch, steps, 2, n_columns, generator=g)
    dt = 0.02

    def step():
        net.stimulus.zero(batch, steps)
        net.stimulus.add_input(lum)
        if mode == "forward":
            with torch.no_grad():
                return net(net.stimulus(), dt)
        net.zero_grad()
        dec.zero_grad()
        activity = net(net.stimulus(), dt)
        loss = l2norm(dec(activity), target)
        loss.backward()
        return activity.detach()

    activity = step()  # warm-up
    best = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        best, cpu = min(best, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    free = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return {
        "implementation": "flyvis", "flyvis": flyvis.__version__, "torch": torch.__version__, "mode": mode,
        "batch": batch, "steps": steps, "repeats": repeats, "torch_threads": torch.get_num_threads(),
        "seconds": best, "cpu_seconds": cpu,
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "neurons": int(activity.shape[-1]), "edges": int(len(net.connectome.edges.source_index[:])),
        "free_network_parameters": int(free), "decoder_parameters": int(sum(p.numel() for p in dec.parameters())),
        "torchvision_stand_in": stand_in, "python": sys.executable,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("forward", "forward_backward"), default="forward_backward")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40, help="Euler steps at dt 0.02 s")
    ap.add_argument("--repeats", type=int, default=10, help="timed repetitions after one warm-up (fastest counts)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own default)")
    ap.add_argument("--keep-freed-memory", action="store_true", help="glibc mallopt as raywave's processes use it")
    a = ap.parse_args()
    kept = keep_freed_memory() if a.keep_freed_memory else False
    import importlib.util

    for module, what in (("torch", "torch==2.13.0"), ("flyvis", "flyvis==1.2.0")):
        if importlib.util.find_spec(module) is None:
            sys.exit(f"{sys.executable} has no {module}; install {what} into it (see --help)")
    import torch

    res = measure(a.mode, a.batch, a.steps, a.repeats, a.threads or torch.get_num_threads())
    print(json.dumps({**res, "keep_freed_memory": kept}))


if __name__ == "__main__":
    main()
