"""The driver of `raywave ofe train` (orchestration; Ray is imported here, lazily): check every input (one
line, exit 2, nothing written, no worker started), then train (or resume, or report a finished run) on Ray
Train through `raywave.train.ray_train.fit`, or in this process with `workers: 0`. run.json records the
config, the data, the transfer (copied keys, frozen parameters, BatchNorm layers held in eval) and the summary
(final and best validation, training efficiency)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from raywave.errors import ConfigError
from raywave.io import check_output
from raywave.ofe.config import OFETrainConfig, identity, load_config
from raywave.ofe.data import data_roots
from raywave.ofe.prepare import check_data, check_nfp, data_identity, resolve_device, transfer_record, write_data
from raywave.storage import resolve
from raywave.train import driver
from raywave.train.ray_train import FitOptions, make_task

TASK_REF = "raywave.ofe.train:OFETask"
DATA_CPUS = 0.0  # the OFE task reads its batches in the workers (no Ray Data actor)


def load(config: Path | None, overrides: dict) -> OFETrainConfig:
    cfg = load_config(str(config) if config else None, overrides)
    if not cfg.out:
        raise ConfigError("give --out RUN (or `out:` in the config): the run directory")
    return cfg


def describe_validation(val: dict) -> str:
    if "val_epe" not in val:
        return ""
    return f"val EPE {val['val_epe']:.3f} ({val['val_epe_ratio']:.2f}x zero flow)"


def train_run(cfg: OFETrainConfig, quiet: bool = False, log: Callable[[str], None] = print,
              stop_after: int | None = None) -> dict:  # fmt: skip
    """Check everything, then train, resume, or return a finished run's record untouched."""
    from raywave.train.record import begin_run, check_resumable

    check_output(cfg.out, "dir", "--out", uri_ok=True)
    check_data(cfg)
    if not resolve(cfg.out).is_local and None in data_roots(cfg).values():
        raise ConfigError("synthetic flow data is written into the run, which needs a local (or shared-filesystem) "
                          "--out; give --chairs-root/--sintel-root for a URI --out")  # fmt: skip
    nfp_path, nfp_sha, report = check_nfp(cfg)
    ident = {**identity(cfg), "nfp_sha256": nfp_sha}
    rec = check_resumable(cfg.out, "ofe", ident)
    if rec is not None and rec.get("status") == "complete":
        log(f"{cfg.out} is complete ({(rec.get('summary') or {}).get('steps')} steps); nothing to train")
        return rec
    total = sum(s.steps for s in cfg.stages)
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        resources, opts = driver.start(stack, cfg.workers, cfg.address,
                                       lambda res: _fit_options(cfg, res, stop_after), DATA_CPUS)  # fmt: skip
        driver.lock(stack, cfg.out)
        device = resolve_device(cfg.device, resources)
        roots = write_data(cfg, cfg.out)
        begin_run(cfg.out, "ofe", ident, data_identity(cfg, roots), cfg.seed, cfg.workers, device,
                  extra={"options": cfg.model_dump(mode="json"), "transfer": transfer_record(report),
                         "nfp_checkpoint": nfp_path})  # fmt: skip
        _log_transfer(report, log)
        task_config = {"ofe": cfg.model_dump(mode="json"), "roots": roots, "nfp": nfp_path}
        update = stack.enter_context(driver.progress("ofe", total, describe_validation, quiet))
        return driver.finish(cfg.out, make_task(TASK_REF, task_config), total, t0,
                             lambda: driver.run_task(TASK_REF, task_config, cfg.out, opts, resources, device, update))


def _log_transfer(report, log: Callable[[str], None]) -> None:
    log(f"transfer {report.summary()}")
    for what, names in (("copied", report.copied), ("frozen", report.frozen),
                        ("BatchNorm held in eval", report.bn_eval)):  # fmt: skip
        if names:
            more = f" ... (all {len(names)} in run.json)" if len(names) > 8 else ""
            log(f"  {what}: {', '.join(names[:8])}{more}")


def _fit_options(cfg: OFETrainConfig, resources: dict, stop_after: int | None) -> FitOptions:
    """Fit options for these resources (a GPU per worker when the device resolves to cuda)."""
    gpus = 1.0 if cfg.workers > 0 and resolve_device(cfg.device, resources) == "cuda" else 0.0
    return FitOptions(workers=cfg.workers, cpus_per_worker=cfg.cpus_per_worker, gpus_per_worker=gpus,
                      max_failures=cfg.max_failures, threads=cfg.threads, ray_data=False, precision=cfg.precision,
                      seed=cfg.seed, stop_after=stop_after)  # fmt: skip
