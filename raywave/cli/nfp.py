"""`raywave nfp pretrain`: next-frame-prediction pretraining on a wave dataset's triplets, on Ray Train. The
driver (checks, Ray, resume, run.json) is `raywave.train.nfp_run`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from raywave.train.nfp_run import load, pretrain_run

app = typer.Typer(help="Next-frame-prediction (NFP) pretraining on retinal-wave triplets.", no_args_is_help=True)
console = Console(stderr=True)


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
