"""`raywave ofe ...`: optical-flow data and evaluation (synthetic trees, checkpoint evaluation)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from raywave.errors import ConfigError
from raywave.io import check_output

app = typer.Typer(help="Optical flow: synthetic datasets, RAFT evaluation.", no_args_is_help=True)
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
    checkpoint: Path = typer.Option(..., "--checkpoint", "-k", help="official RAFT .pth or a raywave checkpoint"),
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
    out = check_output(out or Path(checkpoint).parent / f"eval-{dataset}", kind="dir")
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
