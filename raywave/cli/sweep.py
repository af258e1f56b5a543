"""`raywave sweep ...`: Ray Tune sweeps of transfer strategies and NFP settings, and their analysis."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from raywave.errors import ConfigError
from raywave.io import check_shared_path

app = typer.Typer(help="Ray Tune sweeps (transfer strategies, NFP settings) and their report.", no_args_is_help=True)
console = Console()
EXAMPLE = "/data/raywave/sweeps/transfer"  # where the cluster docs put a sweep (cluster/, jobs/)
SWEEP_WRITES = "a sweep writes trial folders, synthetic flow data and Tune state through the file system"


def _log(line: str) -> None:
    console.print(line, highlight=False, markup=False, soft_wrap=True)


def parse_targets(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--target-epe {text!r}: give comma-separated numbers, e.g. 5,3,2") from None
    if any(v <= 0 for v in values):
        raise ConfigError(f"--target-epe {text!r}: targets must be > 0")
    return values


@app.command()
def analyze(
    sweep: Path = typer.Argument(..., help="the sweep folder (the --out of `sweep transfer` / `sweep nfp`)"),
    target_epe: str = typer.Option("5,3,2", "--target-epe", help="comma-separated EPE targets for efficiency"),
    out: Path = typer.Option(None, "--out", "-o", help="report folder (default SWEEP/report)"),
    reps: int = typer.Option(2000, help="bootstrap resamples per interval"),
    seed: int = typer.Option(0, help="seed of the bootstrap"),
    stage: str = typer.Option(None, help="validation stage to analyse (default: the last stage)"),
    compare: str = typer.Option(None, help="nfp sweeps: the key whose values are compared (default iters)"),
) -> None:
    """Report of a sweep's results (no Ray needed): HTML (figures embedded) + Markdown + a CSV per table."""
    check_shared_path(sweep, "SWEEP", "`sweep analyze` reads the sweep folder through the file system", EXAMPLE)
    if out is not None:
        check_shared_path(out, "--out", "the report is written through the file system", f"{EXAMPLE}/report")
    from raywave.tune.analysis import analyze as run_analysis
    from raywave.tune.layout import load_sweep
    from raywave.tune.report import write_report

    targets = parse_targets(target_epe)
    if reps < 100:
        raise ConfigError(f"--reps {reps}: use at least 100 bootstrap resamples (2000 is the default)")
    data = load_sweep(sweep)
    with console.status(f"analysing {len(data.trials)} trials"):
        analysis = run_analysis(data, targets, reps=reps, seed=seed, stage=stage, compare=compare)
        written = write_report(analysis, out or sweep / "report")
    for sentence in analysis.sentences:
        console.print(f"- {sentence}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"wrote {written['report.html']}, {written['report.md']} and "
                  f"{sum(k.endswith('.csv') for k in written)} CSV tables", highlight=False)  # fmt: skip


@app.command()
def transfer(
    config: Path = typer.Option(..., "--config", "-c", help="the sweep file (see examples/sweep-transfer-small.yaml)"),
    out: Path = typer.Option(None, "--out", "-o", help="sweep folder (default runs/sweep-<name>); re-run to resume"),
    address: str = typer.Option(None, help="Ray cluster address (default RAY_ADDRESS or an embedded Ray)"),
    report: bool = typer.Option(True, help="write the report (sweep analyze) when the sweep ends"),
) -> None:
    """Ray Tune sweep of OFE training runs: strategies x NFP settings x data fractions x grid x seeds, each NFP
    setting pretrained once first; then the report."""
    if out is not None:
        check_shared_path(out, "--out", SWEEP_WRITES, EXAMPLE)
    from raywave.tune.sweep import run_transfer

    path = run_transfer(config, out, address, log=_log, analyze=report)
    console.print(f"sweep folder: {path}", highlight=False)


@app.command()
def nfp(
    config: Path = typer.Option(..., "--config", "-c", help="the sweep file (see examples/sweep-nfp-small.yaml)"),
    out: Path = typer.Option(None, "--out", "-o", help="sweep folder (default runs/sweep-<name>); re-run to resume"),
    address: str = typer.Option(None, help="Ray cluster address (default RAY_ADDRESS or an embedded Ray)"),
    report: bool = typer.Option(True, help="write the report (sweep analyze) when the sweep ends"),
) -> None:
    """Ray Tune sweep of NFP pretraining runs (variant x iterations x triplet index x lr x seeds), scored by
    validation MSE relative to the repeat-I2 baseline; then the report (iterations compared by default)."""
    if out is not None:
        check_shared_path(out, "--out", SWEEP_WRITES, "/data/raywave/sweeps/nfp")
    from raywave.tune.sweep import run_nfp

    path = run_nfp(config, out, address, log=_log, analyze=report)
    console.print(f"sweep folder: {path}", highlight=False)
