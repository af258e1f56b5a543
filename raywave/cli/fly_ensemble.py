"""`raywave fly ensemble ...`: 50-model fly-network ensembles on Ray Train (flyvis layout R/flow/0000/000/...)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from raywave.io import check_shared_path

app = typer.Typer(help="Fly-network ensembles: train on Ray Train (K models per pass), validate, view.",
                  no_args_is_help=True)  # fmt: skip
console = Console()
ROOT_HELP = ("root directory (on a cluster: a path on a file system every node mounts, not a URI); the ensemble "
             "lives in ROOT/NAME/000, 001, ...")  # fmt: skip
ROOT_WRITES = "an ensemble keeps per-model checkpoint folders under a file lock, which object storage cannot hold"
ROOT_EXAMPLE = "/data/raywave/fly"


def _table(rows: list[dict], title: str) -> Table:
    t = Table(title=title)
    for col in ("rank", "model", "seed", "status", "iteration", "best val EPE"):
        t.add_column(col, justify="right")
    for i, r in enumerate(rows):
        epe = r.get("best_val_epe")
        status = r["status"] + (f" at {r['diverged_at']}" if r.get("diverged_at") else "")
        t.add_row(str(i + 1), r["model"], str(r["seed"]), status, str(r["iteration"]),
                  "-" if epe is None else f"{epe:.4f}")  # fmt: skip
    return t


@app.command()
def train(
    name: str = typer.Option(..., "--name", help="ensemble name, e.g. flow/0000"),
    models: int = typer.Option(50, "--models", help="number of models (model j has seed config.seed + j)"),
    workers: int = typer.Option(1, "--workers", help="Ray Train workers (one per GPU on a cluster)"),
    per_pass: int = typer.Option(1, "--models-per-pass", help="models trained together in one network pass"),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs per worker (0: CPU workers)"),
    config: Path = typer.Option(None, "--config", "-c", help="YAML of FlyTrainConfig fields (as train-one)"),
    root: Path = typer.Option(Path("runs/fly"), "--root", help=ROOT_HELP),
    restart_diverged: bool = typer.Option(False, help="retrain diverged models from their last good checkpoint"),
    max_failures: int = typer.Option(2, help="worker failures Ray Train recovers from (resuming checkpoints)"),
    address: str = typer.Option(None, help="Ray cluster address (default: RAY_ADDRESS or an embedded Ray)"),
) -> None:
    """Train (or resume: re-run the same command) an ensemble; finished models train nothing."""
    check_shared_path(root, "--root", ROOT_WRITES, ROOT_EXAMPLE)
    from raywave.fly.train import load_config
    from raywave.train import fly_ensemble

    cfg = load_config(str(config) if config else None, {})
    summary = fly_ensemble.train(cfg, root, name, models, workers, per_pass, gpus_per_worker, restart_diverged,
                                 max_failures, address)  # fmt: skip
    console.print(_table(summary["status"], f"ensemble {name}"))
    diverged = [r["model"] for r in summary["status"] if r["status"] == "diverged"]
    if diverged:
        console.print(f"diverged: {', '.join(diverged)} (re-run with --restart-diverged to retrain them)")


@app.command()
def validate(
    name: str = typer.Argument(..., help="ensemble name, e.g. flow/0000"),
    root: Path = typer.Option(Path("runs/fly"), "--root", help=ROOT_HELP),
    address: str = typer.Option(None, help="Ray cluster address (default: RAY_ADDRESS or an embedded Ray)"),
) -> None:
    """Validation EPE of every checkpoint of every model (Ray tasks); best checkpoint per model; sorted table."""
    check_shared_path(root, "--root", ROOT_WRITES, ROOT_EXAMPLE)
    from raywave.train import fly_ensemble

    rows = fly_ensemble.validate(root, name, address)
    console.print(_table(rows, f"ensemble {name}, sorted by task error"))


@app.command()
def view(
    name: str = typer.Argument(..., help="ensemble name, e.g. flow/0000"),
    root: Path = typer.Option(Path("runs/fly"), "--root", help=ROOT_HELP),
    out: Path = typer.Option(None, "--out", "-o", help="directory for the view (default ROOT/NAME/view)"),
    cell_types: str = typer.Option("T4c,T5c,Mi1,Tm3", help="comma-separated cell types whose responses to plot"),
) -> None:
    """Task-error histogram, sorted model table (CSV), responses to a clip, DSI and polar tuning of T4/T5."""
    check_shared_path(root, "--root", ROOT_WRITES, ROOT_EXAMPLE)
    if out is not None:
        check_shared_path(out, "--out", "the view is written through the file system", f"{ROOT_EXAMPLE}/view")
    from raywave.fly.ensemble_view import view as run_view

    types = [t.strip() for t in cell_types.split(",") if t.strip()]
    res = run_view(root, name, out, types)
    console.print(_table(res["rows"], f"ensemble {name}, sorted by task error"))
    if res["diverged"]:
        console.print("diverged: " + ", ".join(f"{r['model']} (at {r.get('diverged_at')})" for r in res["diverged"]))
    console.print("wrote " + ", ".join(str(p) for p in res["written"].values()))
