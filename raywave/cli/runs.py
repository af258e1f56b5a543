"""`raywave runs list|show|compare`: training runs (any directory with a run.json) as tables and curves."""

from __future__ import annotations

import json
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.table import Table

from raywave.errors import RaywaveError

app = typer.Typer(help="Training runs: list them, show one (config, summary, curves), compare several.",
                  no_args_is_help=True)  # fmt: skip
console = Console(width=max(Console().width, 140))
VAL_KEY = {"nfp": "val_mse", "ofe": "val_epe"}


def find_runs(root: Path, depth: int = 4) -> list[Path]:
    """Directories under `root` (itself included) holding a run.json, at most `depth` levels down."""
    if not root.is_dir():
        raise RaywaveError(f"{root} is not a directory; give the folder that holds your runs (default ./runs)")
    found, frontier = [], [root]
    for _ in range(depth + 1):
        nxt = []
        for d in frontier:
            if (d / "run.json").is_file():
                found.append(d)
                continue  # a run's own subfolders are not runs
            nxt += [p for p in sorted(d.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        frontier = nxt
    return found


def load_run(path: Path) -> tuple[dict, list[dict]]:
    from raywave.train.metrics import read_metrics
    from raywave.train.record import read_run

    rec = read_run(str(path))
    if rec is None:
        raise RaywaveError(f"{path} has no run.json; is it a training run's directory (`--out` of a train command)?")
    return rec, read_metrics(str(path))


def val_key(rec: dict, rows: list[dict]) -> str | None:
    key = VAL_KEY.get(rec.get("kind"))
    if key and any(r.get(key) is not None for r in rows):
        return key
    return next((k for r in rows for k in r if k.startswith("val_") and r[k] is not None), None)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


@app.command("list")
def list_runs(
    root: Path = typer.Argument(Path("runs"), help="folder to search for runs (default ./runs)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON list instead of a table"),
) -> None:
    """A table of the runs under ROOT: kind, status, steps, final and best validation, workers, start."""
    out = []
    for path in find_runs(root):
        rec, rows = load_run(path)
        key = val_key(rec, rows)
        vals = [r[key] for r in rows if key and r.get(key) is not None]
        out.append({"run": str(path), "kind": rec.get("kind"), "status": rec.get("status"),
                    "steps": rows[-1]["step"] if rows else 0, "of": (rec.get("config") or {}).get("steps"),
                    "metric": key, "final": vals[-1] if vals else None, "best": min(vals) if vals else None,
                    "workers": rec.get("workers"), "created": rec.get("created")})  # fmt: skip
    if as_json:
        typer.echo(json.dumps(out))
        return
    t = Table(title=f"runs under {root}")
    for col in ("run", "kind", "status", "steps", "metric", "final", "best", "workers", "created"):
        t.add_column(col)
    for r in out:
        t.add_row(r["run"], r["kind"], r["status"], f"{r['steps']}/{_fmt(r['of'])}", _fmt(r["metric"]),
                  _fmt(r["final"]), _fmt(r["best"]), _fmt(r["workers"]), _fmt(r["created"]))  # fmt: skip
    console.print(t)


@app.command()
def show(run: Path = typer.Argument(..., help="run directory"),
         as_json: bool = typer.Option(False, "--json", help="run.json's record as JSON, no plot")) -> None:  # fmt: skip
    """The run's config and summary (final, best, training efficiency), and RUN/learning_curve.png."""
    from raywave.viz.training import learning_curve

    rec, rows = load_run(run)
    if as_json:
        typer.echo(json.dumps(rec))
        return
    commit = (rec.get("code") or {}).get("git_commit")
    console.print(f"[bold]{run}[/]: {rec.get('kind')} run, {rec.get('status')}, {rec.get('workers')} workers on "
                  f"{rec.get('device')}, code {commit}", highlight=False)  # fmt: skip
    console.print(yaml.safe_dump(rec.get("config"), sort_keys=False).rstrip(), highlight=False)
    s = rec.get("summary") or {}
    for name in ("final", "best"):
        r = s.get(name)
        if r:
            figs = ", ".join(f"{k} {_fmt(v)}" for k, v in r.items() if k.startswith("val_") and "_dt" not in k)
            console.print(f"{name} (step {r['step']}, {r['samples']} samples): {figs}", highlight=False)
    eff = s.get("efficiency") or []
    if eff:
        t = Table(title="training efficiency: first validation at or below the target")
        for col in ("metric", "target", "step", "samples"):
            t.add_column(col)
        for e in eff:
            t.add_row(e["metric"], _fmt(e["target"]), _fmt(e["step"]), _fmt(e["samples"]))
        console.print(t)
    key = val_key(rec, rows)
    keys = [k for k in (key, key and key.replace("val_", "val_baseline_")) if k and any(r.get(k) for r in rows)]
    png = learning_curve(rows, keys, run / "learning_curve.png", title=str(run))
    console.print(f"learning curve: {png}", highlight=False)


@app.command()
def compare(runs: list[Path] = typer.Argument(..., help="two or more run directories"),
            metric: str = typer.Option(None, help="validation column to overlay (default: the runs' main one)"),
            x: str = typer.Option("step", help="x axis: step or samples"),
            out: Path = typer.Option(Path("runs-compare.png"), help="where to write the PNG")) -> None:  # fmt: skip
    """Learning curves of several runs overlaid in one PNG, with their final and best values."""
    from raywave.viz.training import overlay

    if x not in ("step", "samples"):
        raise RaywaveError("--x must be step or samples")
    loaded = {str(p): load_run(p) for p in runs}
    key = metric or val_key(*next(iter(loaded.values())))
    if key is None or not any(r.get(key) is not None for _, rows in loaded.values() for r in rows):
        raise RaywaveError(f"no run has the metric {key!r}; pick one with --metric (see `raywave runs show`)")
    t = Table(title=key)
    for col in ("run", "steps", "final", "best"):
        t.add_column(col)
    for name, (_, rows) in loaded.items():
        vals = [r[key] for r in rows if r.get(key) is not None]
        t.add_row(name, _fmt(rows[-1]["step"] if rows else 0), _fmt(vals[-1] if vals else None),
                  _fmt(min(vals) if vals else None))  # fmt: skip
    console.print(t)
    png = overlay({name: rows for name, (_, rows) in loaded.items()}, key, out, x=x)
    console.print(f"curves: {png}", highlight=False)
