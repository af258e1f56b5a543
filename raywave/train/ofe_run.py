"""The driver of `raywave ofe train` (orchestration; Ray is imported here, lazily): check every input (one
line, exit 2, nothing written, no worker started), then train (or resume, or report a finished run) on Ray
Train through `raywave.train.ray_train.fit`, or in this process with `workers: 0`. run.json records the
config, the data, the transfer (copied keys, frozen parameters, BatchNorm layers held in eval) and the summary
(final and best validation, training efficiency)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from raywave.errors import ConfigError
from raywave.io import check_output
from raywave.lock import exclusive
from raywave.ofe.config import OFETrainConfig, identity, load_config
from raywave.ofe.data import data_roots
from raywave.ofe.prepare import check_data, check_nfp, data_identity, resolve_device, transfer_record, write_data
from raywave.storage import resolve

TASK_REF = "raywave.ofe.train:OFETask"
DATA_CPUS = 0.0  # the OFE task reads its batches in the workers (no Ray Data actor)


def load(config: Path | None, overrides: dict) -> OFETrainConfig:
    cfg = load_config(str(config) if config else None, overrides)
    if not cfg.out:
        raise ConfigError("give --out RUN (or `out:` in the config): the run directory")
    return cfg


@contextlib.contextmanager
def train_progress(total: int, quiet: bool = False):
    """Yield `update(info)`: stage, step/total, loss, last validation EPE (and its ratio to zero flow), ETA."""
    if quiet:
        yield lambda info: None
        return
    with Progress(TextColumn("[bold]ofe {task.fields[stage]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True)) as bar:  # fmt: skip
        task = bar.add_task("ofe", total=total, info="starting", stage="")

        def update(info: dict) -> None:
            parts = [f"loss {info['loss']:.4g}" if info.get("loss") is not None else ""]
            val = info.get("last_val") or {}
            if "val_epe" in val:
                parts.append(f"val EPE {val['val_epe']:.3f} ({val['val_epe_ratio']:.2f}x zero flow)")
            bar.update(task, completed=info.get("step", 0), info=" ".join(p for p in parts if p),
                       stage=info.get("stage_name", ""))  # fmt: skip

        yield update


def train_run(cfg: OFETrainConfig, quiet: bool = False, log: Callable[[str], None] = print,
              stop_after: int | None = None) -> dict:  # fmt: skip
    """Check everything, then train, resume, or return a finished run's record untouched."""
    from raywave.train.metrics import read_metrics, summary
    from raywave.train.record import begin_run, check_resumable, end_run

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
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch on a loaded box; inherited by local Ray workers
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        resources, opts = None, None
        if cfg.workers > 0:
            resources, opts = _ray(stack, cfg, stop_after)
        if resolve(cfg.out).is_local:
            stack.enter_context(exclusive(resolve(cfg.out).path, "training run"))
        device = resolve_device(cfg.device, resources)
        roots = write_data(cfg, cfg.out)
        data = data_identity(cfg, roots)
        transfer = transfer_record(report)
        begin_run(cfg.out, "ofe", ident, data, cfg.seed, cfg.workers, device,
                  extra={"options": cfg.model_dump(mode="json"), "transfer": transfer,
                         "nfp_checkpoint": nfp_path})  # fmt: skip
        log(f"transfer {report.summary()}")
        for what, names in (("copied", report.copied), ("frozen", report.frozen),
                            ("BatchNorm held in eval", report.bn_eval)):  # fmt: skip
            if names:
                more = f" ... (all {len(names)} in run.json)" if len(names) > 8 else ""
                log(f"  {what}: {', '.join(names[:8])}{more}")
        task_config = {"ofe": cfg.model_dump(mode="json"), "roots": roots, "nfp": nfp_path}
        update = stack.enter_context(train_progress(total, quiet))
        try:
            _train(cfg, task_config, device, resources, opts, update, stop_after)
        except BaseException as exc:
            end_run(cfg.out, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
    from raywave.ofe.train import OFETask

    rows = read_metrics(cfg.out)
    done = bool(rows) and rows[-1]["step"] >= total
    task = OFETask(task_config)
    return end_run(cfg.out, "complete" if done else "running", summary(rows, task.val_key, task.targets),
                   wall_s=time.time() - t0)  # fmt: skip


def _fit_options(cfg: OFETrainConfig, resources: dict, stop_after: int | None):
    """Fit options for these resources; more workers or GPUs than they hold is one line, exit 2."""
    from raywave.train.ray_train import FitOptions, check_resources

    gpus = 1.0 if resolve_device(cfg.device, resources) == "cuda" else 0.0
    opts = FitOptions(workers=cfg.workers, cpus_per_worker=cfg.cpus_per_worker, gpus_per_worker=gpus,
                      max_failures=cfg.max_failures, threads=cfg.threads, ray_data=False, precision=cfg.precision,
                      seed=cfg.seed, stop_after=stop_after)  # fmt: skip
    check_resources(resources, opts, DATA_CPUS)
    return opts


def _ray(stack: contextlib.ExitStack, cfg: OFETrainConfig, stop_after: int | None):
    """The Ray session and the fit options. The embedded Ray will hold this machine's CPUs and GPUs: those are
    checked before it starts; a cluster's resources once attached (still before any worker starts)."""
    import ray
    import torch

    from raywave.runtime import ray_session

    if not (cfg.address or os.environ.get("RAY_ADDRESS") or ray.is_initialized()):
        _fit_options(cfg, {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}, stop_after)
    resources = stack.enter_context(ray_session(address=cfg.address))
    return resources, _fit_options(cfg, resources, stop_after)


def _train(cfg: OFETrainConfig, task_config: dict, device: str, resources, opts, update, stop_after) -> None:
    if cfg.workers == 0:
        import torch

        from raywave.ofe.train import OFETask
        from raywave.train.local import train_local
        from raywave.train.loop import Context

        torch.set_num_threads(cfg.threads)
        ctx = Context(device=torch.device(device), seed=cfg.seed, precision=cfg.precision, stop_after=stop_after)
        train_local(OFETask(task_config), cfg.out, ctx, progress=update)
    else:
        from raywave.train.ray_train import fit

        fit(TASK_REF, task_config, cfg.out, opts, resources, update)
