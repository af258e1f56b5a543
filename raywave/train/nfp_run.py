"""The driver of `raywave nfp pretrain` (orchestration, next to `ofe_run`): check every input (one line, exit 2,
nothing written, no worker started), then train (or resume, or report a finished run) on Ray Train or, with
`workers: 0`, in this process. run.json records the config, the data (wave dataset id and triplet index
fingerprint), the options and the summary (final and best validation, training efficiency)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from raywave.config import build, load_yaml
from raywave.errors import ConfigError
from raywave.io import check_output
from raywave.train import driver
from raywave.train.nfp import NFPConfig, NFPTask
from raywave.train.ray_train import DATA_CPUS, FitOptions

TASK_REF = "raywave.train.nfp:NFPTask"
RUN_KEYS = ("address", "max_failures", "threads", "cpus_per_worker", "out")  # not part of a run's identity


class PretrainConfig(NFPConfig):
    """`raywave nfp pretrain` options; every one is also a YAML key of --config."""

    out: str | None = Field(None, description="run directory (path or URI); re-run with the same one to resume")
    workers: int = Field(1, ge=0, description="Ray Train workers (0: the plain loop in this process, no Ray)")
    cpus_per_worker: float | None = Field(None, gt=0, description="Ray CPUs per worker (None: a fair share)")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per worker (> 0 trains on CUDA)")
    max_failures: int = Field(2, ge=0, description="worker-group restarts from the last checkpoint")
    threads: int = Field(1, ge=1, description="torch threads per worker")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision")
    address: str | None = Field(None, description="Ray cluster address (default: RAY_ADDRESS or embedded Ray)")


def identity(cfg: PretrainConfig) -> dict:
    """The config a resumed run must match (what decides the numbers)."""
    return cfg.model_dump(mode="json", exclude=set(RUN_KEYS))


def load(config: Path | None, overrides: dict) -> PretrainConfig:
    data = load_yaml(config) if config else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = build(PretrainConfig, data, what=f"config {str(config)!r}" if config else "nfp config")
    if not cfg.out:
        raise ConfigError("give --out RUN (or `out:` in the config): the run directory")
    return cfg


def describe_validation(val: dict) -> str:
    return f"val {val['val_mse']:.4g} ({val['val_ratio']:.3f}x repeat-I2)" if "val_mse" in val else ""


def pretrain_run(cfg: PretrainConfig, quiet: bool = False, stop_after: int | None = None) -> tuple[dict, bool]:
    """Check everything, then train (or resume); (run.json's record, False if the run was already complete)."""
    from raywave.train.record import begin_run, check_resumable

    check_output(cfg.out, "dir", "--out", uri_ok=True)
    device = "cuda" if cfg.gpus_per_worker > 0 else "cpu"
    opts = FitOptions(workers=cfg.workers, cpus_per_worker=cfg.cpus_per_worker, gpus_per_worker=cfg.gpus_per_worker,
                      max_failures=cfg.max_failures, threads=cfg.threads, precision=cfg.precision, seed=cfg.seed,
                      stop_after=stop_after)  # fmt: skip
    driver.check_before_start(cfg.workers, cfg.address, lambda _resources: opts, DATA_CPUS)
    task = NFPTask(NFPConfig.model_validate(cfg.model_dump(include=set(NFPConfig.model_fields))))
    data = task.check(max(cfg.workers, 1))
    ident = identity(cfg)
    rec = check_resumable(cfg.out, "nfp", ident)
    if rec is not None and rec.get("status") == "complete":
        return rec, False
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        resources, opts = driver.start(stack, cfg.workers, cfg.address, lambda _resources: opts, DATA_CPUS)
        driver.lock(stack, cfg.out)
        begin_run(cfg.out, "nfp", ident, data, cfg.seed, cfg.workers, device,
                  extra={"options": cfg.model_dump(mode="json", include=set(RUN_KEYS))})  # fmt: skip
        update = stack.enter_context(driver.progress("nfp", cfg.steps, describe_validation, quiet))
        config = task.cfg.model_dump(mode="json")
        rec = driver.finish(cfg.out, task, cfg.steps, t0,
                            lambda: driver.run_task(TASK_REF, config, cfg.out, opts, resources, device, update))
    return rec, True
