"""Fly-network ensembles on Ray (the fly network's orchestration: the only fly code that imports Ray): a
TorchTrainer whose W workers each train their shard of the models K per network pass, and checkpoint
validation spread as Ray tasks.

The models are independent: no gradient is all-reduced between workers. Every model's checkpoints live in its
own directory (`raywave.fly.ensemble_run`), so a worker restarted by `FailureConfig` or a re-run of the same
command after a killed driver resumes each model from its newest checkpoint and skips finished ones. On a
multi-node cluster `--root` must be shared storage (NFS or a mounted bucket).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from raywave.errors import RaywaveError
from raywave.fly import ensemble_run as er
from raywave.fly.train import FlyTrainConfig, latest_checkpoint
from raywave.runtime import ray_session


def _train_func(config: dict) -> None:
    """One Ray Train worker: its shard of the models, K per pass (Ray only at the edges)."""
    import ray.train
    import torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    edir = Path(config["edir"])
    if config.get("pid_dir"):  # tests: which process is which worker
        Path(config["pid_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(config["pid_dir"]) / f"rank-{rank}-{os.getpid()}").write_text(str(os.getpid()))
    cfg = FlyTrainConfig.model_validate(config["cfg"])
    models = er.shard(config["n_models"], world, rank)
    faults = {int(k): v for k, v in (config.get("faults") or {}).items()}
    er.train_shard(edir, cfg, models, config["per_pass"], config["restart_diverged"], faults)
    ray.train.report({"rank": rank, "models": len(models)})


def _check_resources(resources: dict, workers: int, cpus: float, gpus: float) -> None:
    have_cpu, have_gpu = resources.get("CPU", 0), resources.get("GPU", 0)
    if workers * cpus > have_cpu:
        raise RaywaveError(f"--workers {workers} need {workers * cpus:g} CPUs but the cluster has {have_cpu:g}; use "
                           "fewer workers")  # fmt: skip
    if workers * gpus > have_gpu:
        raise RaywaveError(f"--workers {workers} x --gpus-per-worker {gpus:g} need {workers * gpus:g} GPUs but the "
                           f"cluster has {have_gpu:g}")  # fmt: skip


def train(cfg: FlyTrainConfig, root: str | Path, name: str, n_models: int, workers: int, per_pass: int,
          gpus_per_worker: float = 0.0, restart_diverged: bool = False, max_failures: int = 2,
          address: str | None = None, faults: dict | None = None, pid_dir: str | None = None) -> dict:  # fmt: skip
    """Train (or resume) the ensemble `name` under `root`; returns the ensemble summary (ensemble.json)."""
    er.check_request(n_models, workers, per_pass)
    edir = er.ensemble_dir(Path(root).resolve(), name)
    if gpus_per_worker > 0:
        cfg = cfg.model_copy(update={"device": "cuda"})
    er.check_existing(edir, cfg, n_models)
    cpus = 1.0
    with ray_session(address) as resources:
        _check_resources(resources, workers, cpus, gpus_per_worker)
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        edir.mkdir(parents=True, exist_ok=True)
        er.prepare_shared(edir, cfg)
        er.write_summary(edir, cfg, n_models)
        per_worker = {"CPU": cpus, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
        loop = {"cfg": cfg.model_dump(), "edir": str(edir), "n_models": n_models, "per_pass": per_pass,
                "restart_diverged": restart_diverged, "threads": max(1, int(cpus)),
                "faults": {str(k): v for k, v in (faults or {}).items()}, "pid_dir": pid_dir}  # fmt: skip
        trainer = TorchTrainer(
            _train_func,
            train_loop_config=loop,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                         resources_per_worker=per_worker),  # fmt: skip
            # a fresh Ray run name each time: models resume from their own checkpoints, not from Ray's run state
            run_config=RunConfig(name=f"train-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                                 storage_path=str(edir / "ray"),
                                 failure_config=FailureConfig(max_failures=max_failures)),  # fmt: skip
        )
        try:
            trainer.fit()
        except Exception as exc:  # noqa: BLE001 - a worker's failure is one line; the models keep their checkpoints
            lines = [ln for ln in str(exc).splitlines() if ln.strip()]
            raise RaywaveError(f"ensemble training stopped ({type(exc).__name__}: {lines[-1] if lines else exc}); "
                               "fix the cause and re-run the same command to resume") from None  # fmt: skip
        finally:
            summary = er.write_summary(edir, cfg, n_models)
    return summary


def validate(root: str | Path, name: str, address: str | None = None) -> list[dict]:
    """Validation EPE of every checkpoint of every model as Ray tasks; validation.json per model, the best
    checkpoint per model in ensemble.json; returns the models sorted by task error."""
    edir, cfg, data = er.load_summary(Path(root).resolve(), name)
    jobs = []
    for j in range(data["models"]):
        out = er.model_dir(edir, j)
        if latest_checkpoint(out) is not None:
            jobs += [(j, str(p), str(out)) for p in sorted((out / "checkpoints").glob("it-*.pt"))]
    with ray_session(address):
        import ray

        task = ray.remote(num_cpus=1)(er.validate_checkpoint)
        results = ray.get([task.remote(ck, out) for _, ck, out in jobs])
    by_model: dict[int, list] = {}
    for (j, _, _), r in zip(jobs, results, strict=True):
        by_model.setdefault(j, []).append(r)
    for j, rows in by_model.items():
        er.record_validation(er.model_dir(edir, j), rows)
    return er.sorted_table(er.write_summary(edir, cfg, data["models"]))
