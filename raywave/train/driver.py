"""What every training command does around its loop, written once for `nfp pretrain` and `ofe train`.

    with contextlib.ExitStack() as stack:
        resources, opts = start(stack, cfg.workers, cfg.address, options, data_cpus)  # Ray only when workers > 0
        lock(stack, cfg.out)                                                          # one writer per run
        begin_run(...)
        update = stack.enter_context(progress("nfp", total, describe, quiet))
        rec = finish(cfg.out, task, total, t0, lambda: run_task(ref, config, cfg.out, opts, resources, device, update))

Resources are checked before any worker starts: against this machine before the embedded Ray is started (it
will hold this machine's CPUs and GPUs), against the cluster once attached.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from raywave.lock import exclusive
from raywave.storage import resolve
from raywave.train.ray_train import FitOptions, check_resources, make_task


def this_machine() -> dict:
    """The resources an embedded Ray on this machine will have."""
    import torch

    return {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}


def start(stack: contextlib.ExitStack, workers: int, address: str | None, options: Callable[[dict], FitOptions],
          data_cpus: float) -> tuple[dict | None, FitOptions]:  # fmt: skip
    """(Ray's resources or None, the fit options). With workers > 0 a Ray session (embedded, or `address`) is
    entered on `stack`; more workers or GPUs than it holds is one line, exit 2, before any worker starts."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch on a loaded box; inherited by local Ray workers
    if workers == 0:
        return None, options(this_machine())
    from raywave.runtime import ray_session

    check_before_start(workers, address, options, data_cpus)
    resources = stack.enter_context(ray_session(address=address))
    opts = options(resources)
    check_resources(resources, opts, data_cpus)
    return resources, opts


def check_before_start(workers: int, address: str | None, options: Callable[[dict], FitOptions],
                       data_cpus: float) -> None:  # fmt: skip
    """Before anything starts: more workers or GPUs than this machine has (an embedded Ray will hold its CPUs and
    GPUs), or than the Ray already running in this process has, is one line, exit 2. A cluster at `address` is
    checked once attached, still before any worker starts."""
    if workers == 0 or address or os.environ.get("RAY_ADDRESS"):
        return
    import ray

    resources = ray.cluster_resources() if ray.is_initialized() else this_machine()
    check_resources(resources, options(resources), data_cpus)


def lock(stack: contextlib.ExitStack, out: str) -> None:
    """Hold the run directory's exclusive lock (local or shared filesystems; object stores have none)."""
    if resolve(out).is_local:
        stack.enter_context(exclusive(resolve(out).path, "training run"))


@contextlib.contextmanager
def progress(label: str, total: int, describe: Callable[[dict], str], quiet: bool = False,
             console: Console | None = None) -> Iterator[Callable[[dict], None]]:  # fmt: skip
    """Yield `update(info)`: the stage (when the info names one), step/total, loss, `describe(last validation)`,
    elapsed and remaining time."""
    if quiet:
        yield lambda info: None
        return
    with Progress(TextColumn(f"[bold]{label}" + " {task.fields[stage]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console or Console(stderr=True)) as bar:  # fmt: skip
        task = bar.add_task(label, total=total, info="starting", stage="")

        def update(info: dict) -> None:
            parts = [f"loss {info['loss']:.4g}" if info.get("loss") is not None else ""]
            parts.append(describe(info.get("last_val") or {}))
            bar.update(task, completed=info.get("step", 0), info=" ".join(p for p in parts if p),
                       stage=info.get("stage_name", ""))  # fmt: skip

        yield update


def run_task(task_ref: str, task_config: dict, out: str, opts: FitOptions, resources: dict | None, device: str,
             update: Callable[[dict], None]) -> None:  # fmt: skip
    """Train `module:Class(task_config)` into `out`: in this process without Ray (opts.workers == 0), else on
    Ray Train with opts.workers workers."""
    if opts.workers == 0:
        import torch

        from raywave.train.local import train_local
        from raywave.train.loop import Context

        torch.set_num_threads(opts.threads)
        ctx = Context(device=torch.device(device), seed=opts.seed, precision=opts.precision, stop_after=opts.stop_after)
        train_local(make_task(task_ref, task_config), out, ctx, progress=update)
    else:
        from raywave.train.ray_train import fit

        fit(task_ref, task_config, out, opts, resources, update)


def finish(out: str, task, total: int, t0: float, train: Callable[[], None]) -> dict:
    """Run `train()`; mark the run failed if it raises (and re-raise), else complete (all `total` steps done)
    or running (stopped early), with the summary of its metrics. Returns run.json's record."""
    from raywave.train.metrics import read_metrics, summary
    from raywave.train.record import end_run

    try:
        train()
    except BaseException as exc:
        end_run(out, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    rows = read_metrics(out)
    done = bool(rows) and rows[-1]["step"] >= total
    return end_run(out, "complete" if done else "running", summary(rows, task.val_key, task.targets),
                   wall_s=time.time() - t0)  # fmt: skip
