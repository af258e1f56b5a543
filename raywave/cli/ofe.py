"""`raywave ofe ...`: optical-flow data and evaluation (synthetic trees, checkpoint evaluation)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from raywave.errors import ConfigError
from raywave.io import check_output

app = typer.Typer(help="Optical flow: synthetic datasets, RAFT training in stages, evaluation.", no_args_is_help=True)
console = Console()


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", "-o", help="root of the tree to write"),
    layout: str = typer.Option("chairs", help="chairs (FlyingChairs) or sintel (MPI-Sintel training/)"),
    count: int = typer.Option(20, help="pairs (chairs) or scenes (sintel)"),
    frames: int = typer.Option(5, help="frames per Sintel scene"),
    height: int = typer.Option(384, help="frame height (px)"),
    width: int = typer.Option(512, help="frame width (px)"),
    seed: int = typer.Option(0, help="seed"),
) -> None:
    """Write synthetic flow with exact ground truth in an official layout (textured layers, affine motion)."""
    from raywave.data.synthetic_flow import write_chairs, write_sintel

    if count < 1 or height < 16 or width < 16 or frames < 2:
        raise ConfigError("--count >= 1, --frames >= 2, and frames of at least 16x16 px")
    if layout not in ("chairs", "sintel"):
        raise ConfigError(f"--layout {layout!r}: choose chairs or sintel")
    check_output(out, kind="dir")
    if layout == "chairs":
        write_chairs(out, count, height, width, seed)
    elif layout == "sintel":
        write_sintel(out, count, frames, height, width, seed)
    else:
        raise ConfigError(f"--layout {layout!r}: choose chairs or sintel")
    console.print(f"wrote a {layout} tree of {count} {'pairs' if layout == 'chairs' else 'scenes'} in {out}")


@app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-k", help="official RAFT .pth, a raywave checkpoint, or an "
                                    "`ofe train` run directory (its best checkpoint)"),
    dataset: str = typer.Option("sintel", help="chairs or sintel"),
    root: Path = typer.Option(..., help="dataset root in its official layout"),
    variant: str = typer.Option("basic", help="RAFT variant of the checkpoint: basic or small"),
    split: str = typer.Option("val", help="chairs: train or val"),
    dstype: str = typer.Option("clean", "--pass", help="sintel: clean or final"),
    scenes: str = typer.Option(None, help="sintel: comma-separated scenes (default: all)"),
    iters: int = typer.Option(None, help="refinement iterations (default 24 for chairs, 32 for sintel)"),
    max_samples: int = typer.Option(None, help="evaluate at most this many pairs"),
    out: Path = typer.Option(None, help="directory for metrics.json and panels.png (default: next to checkpoint)"),
) -> None:
    """EPE, 1/3/5 px accuracy and occluded/non-occluded EPE of a RAFT checkpoint; image/GT/prediction panels."""
    from raywave.cli.progress import frame_progress
    from raywave.data.flow_datasets import FlyingChairs, MpiSintel
    from raywave.io import write_json_atomic
    from raywave.ofe.evaluate import evaluate as run_eval
    from raywave.ofe.evaluate import load_raft
    from raywave.viz.flow import save_flow_panels

    if dataset == "chairs":
        ds = FlyingChairs(root, split)
    elif dataset == "sintel":
        ds = MpiSintel(root, dstype, scenes=scenes.split(",") if scenes else None)
    else:
        raise ConfigError(f"--dataset {dataset!r}: choose chairs or sintel")
    iters = iters or (24 if dataset == "chairs" else 32)
    if iters < 1:
        raise ConfigError("--iters must be >= 1")
    run_dir = Path(checkpoint).is_dir() and (Path(checkpoint) / "checkpoints").is_dir()
    beside = Path(checkpoint) if run_dir else Path(checkpoint).parent  # a run's evaluations go inside the run
    out = check_output(out or beside / f"eval-{dataset}", kind="dir")
    model = load_raft(checkpoint, variant)
    with frame_progress(f"evaluate {dataset}", quiet=False) as update:
        metrics, rows = run_eval(model, ds, iters, max_samples, progress=update)
    metrics.update(checkpoint=str(checkpoint), dataset=dataset, root=str(root), iters=iters, pairs=len(ds)
                   if max_samples is None else min(max_samples, len(ds)))  # fmt: skip
    write_json_atomic(out / "metrics.json", metrics)
    panels = save_flow_panels(rows, out / "panels.png")
    t = Table(title=f"{dataset} ({metrics['pairs']} pairs, {iters} iterations)")
    for k in ("epe", "1px", "3px", "5px", "noc_epe", "occ_epe"):
        if k in metrics:
            t.add_column(k, justify="right")
    t.add_row(*(f"{metrics[k]:.3f}" for k in ("epe", "1px", "3px", "5px", "noc_epe", "occ_epe") if k in metrics))
    console.print(t)
    console.print(f"wrote {out / 'metrics.json'} and {panels}")


@app.command()
def train(
    config: Path = typer.Option(None, "--config", "-c", help="YAML: these options as keys, and stages"),
    strategy: str = typer.Option(None, help="scratch, finetune, freeze_encoder_bn, freeze_encoder or freeze_bn"),
    nfp: str = typer.Option(None, help="NFP run directory or checkpoint (`raywave nfp pretrain`) to transfer from"),
    variant: str = typer.Option(None, help="RAFT variant: basic or small (default basic)"),
    stages: str = typer.Option(None, help="stages with the reference's presets (default chairs,sintel)"),
    chairs_root: str = typer.Option(None, help="FlyingChairs root (default: synthetic data)"),
    sintel_root: str = typer.Option(None, help="MPI-Sintel root (default: synthetic data)"),
    data_fraction: float = typer.Option(None, help="a seeded, nested subset of the pairs (0, 1]"),
    seed: int = typer.Option(None, help="seed of initialisation, data order, augmentation and subset (default 0)"),
    workers: int = typer.Option(None, help="Ray Train workers (default 1; 0 = plain loop in this process)"),
    precision: str = typer.Option(None, help="fp32, bf16 or fp16 autocast (default fp32; correlation stays fp32)"),
    device: str = typer.Option(None, help="auto, cpu or cuda (default auto: a GPU per worker when there are GPUs)"),
    checkpoint_every: int = typer.Option(None, help="checkpoint every N steps (default 1000)"),
    target_epe: str = typer.Option(None, help="comma-separated target EPEs of the training-efficiency summary"),
    cpus_per_worker: float = typer.Option(None, help="Ray CPUs per worker (default: a fair share)"),
    threads: int = typer.Option(None, help="torch threads per worker (default 1)"),
    max_failures: int = typer.Option(None, help="worker-group restarts (default 2)"),
    address: str = typer.Option(None, help="Ray cluster address (default RAY_ADDRESS or an embedded Ray)"),
    out: str = typer.Option(None, help="run directory (path or URI); the same --out resumes"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Train RAFT in stages (chairs -> sintel) under a transfer strategy; resumable, on Ray Train."""
    overrides = {k: v for k, v in locals().items() if k not in ("config", "quiet")}
    from raywave.train.ofe_run import load, train_run

    if target_epe is not None:
        overrides["target_epe"] = _floats(target_epe, "--target-epe")
    cfg = load(config, overrides)
    rec = train_run(cfg, quiet=quiet, log=lambda msg: console.print(msg, highlight=False))
    _print_summary(rec)
    typer.echo(cfg.out)


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text!r}: give comma-separated numbers, e.g. 5,3,2") from None


def _print_summary(rec: dict) -> None:
    s = rec.get("summary") or {}
    final = s.get("final") or {}
    if final:
        console.print(f"validation EPE {final['val_epe']:.3f} (zero flow {final['val_zero_epe']:.3f}, ratio "
                      f"{final['val_epe_ratio']:.3f}) at step {final['step']}", highlight=False)  # fmt: skip
    eff = [e for e in s.get("efficiency", []) if e.get("metric") == "val_epe"]
    if eff:
        t = Table(title="training efficiency: first validation at or below each target EPE")
        for col in ("target EPE", "step", "samples"):
            t.add_column(col, justify="right")
        for e in eff:
            cells = (str(e[k]) if e[k] is not None else "not reached" for k in ("step", "samples"))
            t.add_row(f"{e['target']:g}", *cells)
        console.print(t)
