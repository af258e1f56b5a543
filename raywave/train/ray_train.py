"""The one Ray Train wrapper: a task's loop on N workers with TorchTrainer (Train v2), DDP and Ray Data shards.

    from raywave.train.ray_train import FitOptions, fit
    state = fit("raywave.train.nfp:NFPTask", task_config_dict, run_dir, FitOptions(workers=2), progress=cb)

`train_func(config)` is an ordinary Ray Train loop: it builds the task from its import path and config in each
worker, wraps the model with `ray.train.torch.prepare_model` (DDP: gloo on CPU, nccl on GPU, chosen by
TorchTrainer), takes its data from `ray.train.get_dataset_shard("train")` when the task offers Ray Data
(`task.ray_datasets(start_step)` on the driver, `task.shard_batches(shard, stage, skip)` in the worker) or
from `task.batches(...)` otherwise, and hands the core loop a `RayStore`: checkpoints go both to the run's own
RUN/checkpoints (last and best, `RunCheckpoints`) and through `ray.train.report(metrics, checkpoint=...)` into
Ray's storage RUN/ray/ (storage_path = RUN: a local path or a URI; on a multi-node cluster it must be shared).
`ray.train.get_checkpoint()` (or RUN/checkpoints/last, whichever is later) resumes: after a worker failure
(`FailureConfig(max_failures)`) and when the same command is run again after the driver died.

Resources are checked before any worker starts (`check_resources`): more workers than CPUs, or more GPUs than
the cluster has, is one line and exit 2. Workers get fractional CPUs by default so that Ray Data's actors keep a
share (a 2-worker run on 2 CPUs would otherwise starve them: ray#44687).
"""

from __future__ import annotations

import importlib
import os
import tempfile
import threading
from dataclasses import dataclass

from raywave.errors import RaywaveError
from raywave.storage import read_json, resolve

DATA_CPUS = 0.25  # CPUs of the Ray Data actor that makes the batches


@dataclass
class FitOptions:
    workers: int = 1
    cpus_per_worker: float | None = None  # None: fair share of the cluster's CPUs minus the data actor's
    gpus_per_worker: float = 0.0
    max_failures: int = 2
    threads: int = 1  # torch threads per worker
    ray_data: bool = True  # use the task's Ray Data pipeline when it has one
    precision: str = "fp32"
    seed: int = 0
    stop_after: int | None = None  # tests: stop each attempt after this many steps


def make_task(ref: str, config: dict):
    """`module:Class` -> Class(config) (a task's constructor must be cheap: it also runs on the driver)."""
    mod, _, name = ref.partition(":")
    return getattr(importlib.import_module(mod), name)(config)


def check_resources(resources: dict, opts: FitOptions, data_cpus: float) -> float:
    """CPUs per worker to request; one clear error if the cluster cannot hold the workers."""
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if opts.workers < 1:
        raise RaywaveError("--workers must be >= 1")
    if opts.workers > cpus:
        raise RaywaveError(f"--workers {opts.workers} is more than the cluster's {cpus:g} CPUs; use --workers "
                           f"{max(int(cpus), 1)} or fewer, or attach to a larger cluster (--address)")  # fmt: skip
    if opts.workers * opts.gpus_per_worker > gpus:
        raise RaywaveError(f"{opts.workers} workers x {opts.gpus_per_worker:g} GPUs need more than the cluster's "
                           f"{gpus:g} GPUs; lower --workers or --gpus-per-worker, or use --device cpu")  # fmt: skip
    per = opts.cpus_per_worker or min(1.0, (cpus - data_cpus) / opts.workers)
    if opts.workers * per + data_cpus > cpus + 1e-9:
        raise RaywaveError(f"{opts.workers} workers x {per:g} CPUs plus {data_cpus:g} for data exceed the "
                           f"cluster's {cpus:g} CPUs; lower --workers or --cpus-per-worker")  # fmt: skip
    return round(per, 3)


class RayStore:
    """Checkpoint store for a Ray Train worker: RUN/checkpoints (rank 0) + ray.train.report on every rank."""

    def __init__(self, run_dir: str, rank: int):
        from raywave.train.checkpoints import RunCheckpoints

        self.run, self.rank = RunCheckpoints(run_dir), rank

    def load(self):
        import ray.train

        from raywave.train.checkpoints import read_checkpoint_dir

        candidates = [self.run.load()]
        ckpt = ray.train.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                candidates.append(read_checkpoint_dir(d))
        candidates = [c for c in candidates if c is not None]
        return max(candidates, key=lambda c: c[1]["state"]["step"]) if candidates else None

    def commit(self, metrics: dict, checkpoint=None, is_best: bool = False) -> None:
        import ray.train

        from raywave.train.checkpoints import write_checkpoint_dir

        flat = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        if checkpoint is None:
            ray.train.report(flat)
            return
        self.run.commit(metrics, checkpoint, is_best)
        with tempfile.TemporaryDirectory(prefix="raywave-ckpt-") as d:
            write_checkpoint_dir(d, *checkpoint)
            ray.train.report(flat, checkpoint=ray.train.Checkpoint.from_directory(d))


def train_func(config: dict) -> None:
    """The Ray Train loop (runs in every worker)."""
    import ray.train
    import ray.train.torch
    import torch

    from raywave.train.loop import Context, train
    from raywave.train.metrics import MetricsLog

    torch.set_num_threads(config["threads"])
    rc = ray.train.get_context()
    rank, world = rc.get_world_rank(), rc.get_world_size()
    task = make_task(config["task"], config["task_config"])
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(task.build_model(device))
    batches = None
    if config["ray_data"]:
        shard = ray.train.get_dataset_shard("train")
        data_start = config["data_start_step"]

        def batches(stage: int, start: int):
            return task.shard_batches(shard, stage, skip=max(0, start - data_start), world=world)

    ctx = Context(rank=rank, world=world, device=device, seed=config["seed"], precision=config["precision"],
                  batches=batches, stop_after=config["stop_after"])  # fmt: skip
    log = MetricsLog(config["run_dir"]) if rank == 0 else None
    progress = (lambda info: log.progress({**info, "pid": os.getpid()})) if log else None
    train(task, model, ctx, RayStore(config["run_dir"], rank), log, progress=progress)
    if log is not None:
        log.progress({"finished": True}, force=True)
        log.close()


def latest_step(run_dir: str) -> int:
    """The step of RUN/checkpoints/last (0 if none): where a resumed run's data stream starts."""
    try:
        return int(read_json(resolve(run_dir), "checkpoints/last.json")["step"])
    except FileNotFoundError:
        return 0


def fit(task_ref: str, task_config: dict, run_dir: str, opts: FitOptions, resources: dict, progress=None) -> None:
    """Run (or resume) the task on Ray Train in the current Ray session (`raywave.runtime.ray_session`).
    `progress(info)` is called on the driver with the rows of RUN/progress.json while training runs."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    task = make_task(task_ref, task_config)
    use_data = opts.ray_data and hasattr(task, "ray_datasets")
    per = check_resources(resources, opts, DATA_CPUS if use_data else 0.0)
    loc = resolve(run_dir)
    start = latest_step(run_dir)
    datasets = task.ray_datasets(start, cpus=DATA_CPUS) if use_data else None
    config = {"task": task_ref, "task_config": task_config, "run_dir": run_dir, "threads": opts.threads,
              "ray_data": use_data, "data_start_step": start, "seed": opts.seed, "precision": opts.precision,
              "stop_after": opts.stop_after}  # fmt: skip
    resources_per_worker = {"CPU": per, **({"GPU": opts.gpus_per_worker} if opts.gpus_per_worker else {})}
    trainer = TorchTrainer(
        train_func,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=opts.workers, use_gpu=opts.gpus_per_worker > 0, resources_per_worker=resources_per_worker
        ),  # fmt: skip
        run_config=RunConfig(
            name="ray",
            storage_path=loc.uri if not loc.is_local else loc.path,
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=opts.max_failures),
        ),  # fmt: skip
        datasets=datasets,
    )
    done = threading.Event()
    poller = threading.Thread(target=_poll_progress, args=(loc, progress, done), daemon=True) if progress else None
    if poller:
        poller.start()
    try:
        trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in several types
        raise TrainingFailed(f"training failed after {opts.max_failures} restarts: {_first_line(exc)}") from exc
    finally:
        done.set()
        if poller:
            poller.join(timeout=5)


class TrainingFailed(RaywaveError):
    """The worker group failed more often than max_failures allows (re-running the command resumes)."""


def _first_line(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


def _poll_progress(loc, progress, done: threading.Event) -> None:
    last = None
    while not done.wait(1.0):
        try:
            info = read_json(loc, "progress.json")
        except (FileNotFoundError, RaywaveError):
            continue
        if info != last and "step" in info:
            progress(info)
            last = info
