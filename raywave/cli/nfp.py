"""`raywave nfp pretrain`: next-frame-prediction pretraining on a wave dataset's triplets, on Ray Train."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Literal

import typer
from pydantic import Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from raywave.config import build, load_yaml
from raywave.errors import ConfigError, RaywaveError
from raywave.train.nfp import NFPConfig

app = typer.Typer(help="Next-frame-prediction (NFP) pretraining on retinal-wave triplets.", no_args_is_help=True)
console = Console(stderr=True)

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


@contextlib.contextmanager
def train_progress(total: int, quiet: bool = False):
    """Yield `update(info)`: step/total, loss, last validation, ETA."""
    if quiet:
        yield lambda info: None
        return
    with Progress(TextColumn("[bold]nfp"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:  # fmt: skip
        task = bar.add_task("nfp", total=total, info="starting workers")

        def update(info: dict) -> None:
            parts = [f"loss {info['loss']:.4g}" if info.get("loss") is not None else ""]
            val = info.get("last_val") or {}
            if "val_mse" in val:
                parts.append(f"val {val['val_mse']:.4g} ({val['val_ratio']:.3f}x repeat-I2)")
            bar.update(task, completed=info.get("step", 0), info=" ".join(p for p in parts if p))

        yield update


def load(config: Path | None, overrides: dict) -> PretrainConfig:
    data = load_yaml(config) if config else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = build(PretrainConfig, data, what=f"config {str(config)!r}" if config else "nfp config")
    if not cfg.out:
        raise ConfigError("give --out RUN (or `out:` in the config): the run directory")
    return cfg


def pretrain_run(cfg: PretrainConfig, quiet: bool = False, stop_after: int | None = None) -> tuple[dict, bool]:
    """Check everything, then train (or resume); (run.json's record, False if the run was already complete)."""
    from raywave.io import check_output
    from raywave.lock import exclusive
    from raywave.runtime import ray_session
    from raywave.storage import resolve
    from raywave.train.local import train_local
    from raywave.train.loop import Context
    from raywave.train.metrics import read_metrics, summary
    from raywave.train.nfp import NFPTask
    from raywave.train.ray_train import FitOptions, check_resources, fit
    from raywave.train.record import begin_run, check_resumable, end_run

    check_output(cfg.out, "dir", "--out", uri_ok=True)
    device = "cuda" if cfg.gpus_per_worker > 0 else "cpu"
    opts = FitOptions(workers=cfg.workers, cpus_per_worker=cfg.cpus_per_worker, gpus_per_worker=cfg.gpus_per_worker,
                      max_failures=cfg.max_failures, threads=cfg.threads, precision=cfg.precision, seed=cfg.seed,
                      stop_after=stop_after)  # fmt: skip
    embedded = not (cfg.address or os.environ.get("RAY_ADDRESS"))
    if cfg.workers > 0 and embedded:  # the embedded Ray will have this machine's CPUs and GPUs: check first
        import torch

        check_resources({"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}, opts, 0.25)
    task = NFPTask(NFPConfig.model_validate(cfg.model_dump(include=set(NFPConfig.model_fields))))
    data = task.check(max(cfg.workers, 1))
    ident = identity(cfg)
    rec = check_resumable(cfg.out, "nfp", ident)
    if rec is not None and rec.get("status") == "complete":
        return rec, False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch on a loaded box; inherited by local Ray workers
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        resources = None
        if cfg.workers > 0:
            try:
                resources = stack.enter_context(ray_session(address=cfg.address))
            except RaywaveError:
                raise
            except Exception as exc:  # noqa: BLE001 - ray.init raises plain Exceptions (a node start timeout)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise RaywaveError(f"Ray did not start ({first}); nothing was written, re-run the command") from None
            check_resources(resources, opts, 0.25)
        if resolve(cfg.out).is_local:  # one writer per run directory
            stack.enter_context(exclusive(resolve(cfg.out).path, "training run"))
        begin_run(cfg.out, "nfp", ident, data, cfg.seed, cfg.workers, device,
                  extra={"options": cfg.model_dump(mode="json", include=set(RUN_KEYS))})  # fmt: skip
        update = stack.enter_context(train_progress(cfg.steps, quiet))
        try:
            if cfg.workers == 0:
                import torch

                torch.set_num_threads(cfg.threads)
                dev = torch.device(device)
                ctx = Context(device=dev, seed=cfg.seed, precision=cfg.precision, stop_after=stop_after)
                train_local(task, cfg.out, ctx, progress=update)
            else:
                fit("raywave.train.nfp:NFPTask", task.cfg.model_dump(mode="json"), cfg.out, opts, resources, update)
        except BaseException as exc:
            end_run(cfg.out, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
    rows = read_metrics(cfg.out)
    done = bool(rows) and rows[-1]["step"] >= cfg.steps
    rec = end_run(cfg.out, "complete" if done else "running", summary(rows, task.val_key, task.targets),
                  wall_s=time.time() - t0)  # fmt: skip
    return rec, True


@app.command()
def pretrain(
    config: Path = typer.Option(None, "--config", "-c", help="YAML with any of these options as keys"),
    dataset: str = typer.Option(None, help="wave dataset (path or URI) from `raywave waves generate`"),
    triplets: str = typer.Option(None, help="triplet index name (`raywave data triplets --name`; default: default)"),
    variant: str = typer.Option(None, help="RAFT encoder variant: basic or small (default small)"),
    iters: int = typer.Option(None, help="ConvGRU iterations: 4 or 8 (default 4)"),
    corr_levels: int = typer.Option(None, help="correlation pyramid levels 1-4 (default 4; fewer for small frames)"),
    workers: int = typer.Option(None, help="Ray Train workers (default 1; 0 = plain loop in this process)"),
    steps: int = typer.Option(None, help="optimizer steps (default 1000)"),
    batch: int = typer.Option(None, help="global batch size (default 8), split over the workers"),
    lr: float = typer.Option(None, help="peak learning rate (default 4e-4), OneCycle with 5% warm-up"),
    weight_decay: float = typer.Option(None, help="AdamW weight decay (default 1e-4)"),
    val_every: int = typer.Option(None, help="validate every this many steps (default 100)"),
    checkpoint_every: int = typer.Option(None, help="checkpoint every this many steps (default 100)"),
    seed: int = typer.Option(None, help="seed of initialisation and data order (default 0)"),
    cpus_per_worker: float = typer.Option(None, help="Ray CPUs per worker (default: a fair share)"),
    gpus_per_worker: float = typer.Option(None, help="GPUs per worker (default 0: CPU)"),
    max_failures: int = typer.Option(None, help="restarts of a failed worker group (default 2)"),
    threads: int = typer.Option(None, help="torch threads per worker (default 1)"),
    precision: str = typer.Option(None, help="fp32, bf16 or fp16 (default fp32)"),
    address: str = typer.Option(None, help="Ray cluster address (default RAY_ADDRESS or an embedded Ray)"),
    out: str = typer.Option(None, help="run directory (path or URI); the same --out resumes"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Train the NFP model (RAFT parts) to predict I3 from I1, I2; validation against the repeat-I2 baseline."""
    overrides = {k: v for k, v in locals().items() if k not in ("config", "quiet")}
    cfg = load(config, overrides)
    rec, trained = pretrain_run(cfg, quiet)
    s = rec.get("summary") or {}
    final = s.get("final") or {}
    if not trained:
        console.print(f"{cfg.out} is complete ({s.get('steps')} steps); nothing to train", highlight=False)
    if final:
        console.print(f"validation MSE {final['val_mse']:.4g} vs repeat-I2 {final['val_baseline_mse']:.4g} "
                      f"(ratio {final['val_ratio']:.3f}) at step {final['step']}", highlight=False)  # fmt: skip
    typer.echo(cfg.out)
