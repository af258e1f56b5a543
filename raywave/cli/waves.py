"""`raywave waves ...`: simulate, analyze, snapshot, movie, scan-ga, params."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from raywave.cli.progress import frame_progress, sweep_progress
from raywave.config import load_config, save_model
from raywave.errors import ConfigError, RaywaveError
from raywave.io import check_output
from raywave.waves.config import SimulationConfig

app = typer.Typer(
    help="Stage-II retinal waves: simulate the SAC lattice, analyse waves, draw them.", no_args_is_help=True
)
console = Console()

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file of SimulationConfig fields (see `waves params`).")
OutOpt = typer.Option(Path("runs/waves"), "--out", "-o", help="run directory (created; re-run to resume)")


def _parse_param(text: str) -> tuple[str, float]:
    if "=" not in text:
        raise ConfigError(f"--param {text!r}: write NAME=VALUE, e.g. --param gsAHP=4.6")
    name, value = text.split("=", 1)
    try:
        return name.strip(), float(value)
    except ValueError:
        raise ConfigError(f"--param {text!r}: {value!r} is not a number") from None


def _positive(option: str, value: float | None) -> None:
    """A CLI-only number (not a config field) must be finite and > 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{option} must be a finite number > 0 (got {value})")


def resolve_config(config: Path | None, overrides: dict[str, Any], params: list[str] | None) -> SimulationConfig:
    """YAML file, then CLI options, then --param NAME=VALUE, validated together (raywave.config.load_config)."""
    overrides = dict(overrides)
    for text in params or []:
        name, value = _parse_param(text)
        overrides[f"params.{name}"] = value
    return load_config(SimulationConfig, config, overrides)


@app.command()
def simulate(
    config: Path = ConfigOpt,
    out: Path = OutOpt,
    backend: str = typer.Option(None, help="torch (fast; CPU or CUDA) or brian2 (reference)"),
    brian2_target: str = typer.Option(None, help="numpy, cython or cpp_standalone (brian2 backend)"),
    device: str = typer.Option(None, help="torch device: auto, cpu, cuda, cuda:N"),
    precision: str = typer.Option(None, help="torch precision: float32 or float64"),
    compile: str = typer.Option(
        None, "--compile", help="step path: auto (native C++ kernel on the CPU), native, on (torch.compile), off"
    ),
    threads: int = typer.Option(None, help="CPU threads for torch and the native kernel"),
    size: int = typer.Option(None, help="square lattice side (sets height and width)"),
    height: int = typer.Option(None, help="lattice rows"),
    width: int = typer.Option(None, help="lattice columns"),
    neighbours: int = typer.Option(None, help="4 or 8 neighbours"),
    boundary: str = typer.Option(None, help="zero_flux or periodic"),
    dt_ms: float = typer.Option(None, help="integration step (ms)"),
    frame_interval_ms: float = typer.Option(None, help="time between frames (ms), a multiple of dt"),
    duration_s: float = typer.Option(None, help="recorded duration (s)"),
    transient_s: float = typer.Option(None, help="discarded initial transient (s)"),
    seed: int = typer.Option(None, help="seed of initial state and noise"),
    record: list[str] = typer.Option(None, help="extra recorded variable (V, n, S, R, A); calcium always"),
    storage_dtype: str = typer.Option(None, help="float32, float16 or uint8 (scale recorded)"),
    checkpoint_every_s: float = typer.Option(None, help="checkpoint interval (simulated s)"),
    ga: float = typer.Option(None, "--ga", help="ACh coupling gA (nS), the control parameter"),
    param: list[str] = typer.Option(None, "--param", "-p", help="any model parameter, NAME=VALUE (repeatable)"),
    overwrite: bool = typer.Option(False, help="replace an existing run in --out"),
    save_config: Path = typer.Option(None, help="write the resolved config to this YAML file and exit"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Simulate a SAC lattice; frames go to OUT/frames, checkpoints let a killed run resume exactly."""
    overrides = {
        "backend": backend, "brian2_target": brian2_target, "device": device, "precision": precision,
        "compile": compile, "threads": threads, "height": height or size, "width": width or size,
        "neighbours": neighbours, "boundary": boundary, "dt_ms": dt_ms, "frame_interval_ms": frame_interval_ms,
        "duration_s": duration_s, "transient_s": transient_s, "seed": seed, "record": record or None,
        "storage_dtype": storage_dtype, "checkpoint_every_s": checkpoint_every_s, "params.gA": ga,
    }  # fmt: skip
    cfg = resolve_config(config, overrides, param)
    if save_config:
        check_output(save_config, kind="file", option="--save-config")
        save_model(cfg, save_config)
        console.print(f"wrote {save_config}")
        return
    from raywave.waves.simulate import simulate as run_simulation

    with frame_progress(f"{cfg.backend} {cfg.height}x{cfg.width}", quiet) as update:
        store = run_simulation(cfg, out, overwrite=overwrite, progress=update)
    man = store.manifest()
    rate = man.get("cell_steps_per_second")
    rate_txt = f", {rate:.3g} cell-steps/s" if rate else ""
    console.print(f"[green]done[/]: {man['n_frames']} frames of {cfg.height}x{cfg.width} in {out}{rate_txt}")


@app.command()
def generate(
    config: Path = typer.Option(..., "--config", "-c", help="sweep YAML: base, grid, cases, seeds, workers"),
    out: str = typer.Option("runs/rw-dataset", "--out", "-o", help="dataset path or URI (s3://, gs://, file://)"),
    address: str = typer.Option(None, help="Ray cluster address (default: RAY_ADDRESS, else an embedded Ray)"),
    workers: int = typer.Option(None, help="concurrent simulations (overrides the sweep file)"),
    num_cpus: int = typer.Option(None, help="CPUs of the embedded Ray (default: all)"),
    scratch: str = typer.Option(None, help="local directory for in-progress runs (default: OUT/_scratch)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Run a sweep of simulations on Ray actors into a parquet dataset; re-run to finish an interrupted one."""
    from raywave.data.sweep_config import load_sweep
    from raywave.data.sweep_runner import run_sweep

    sweep, specs = load_sweep(config, workers=workers)
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus must be >= 1 (got {num_cpus}); omit it to use every CPU")
    n = len(specs)  # run_sweep checks --out and --scratch before anything is written
    with sweep_progress(n, quiet) as update:
        report = run_sweep(sweep, out, address=address, scratch=scratch, num_cpus=num_cpus, progress=update)
    console.print(
        f"[green]dataset {report.dataset}[/]: {len(report.generated)} generated, {len(report.skipped)} already there"
        f", {len(report.failed)} failed in {report.wall_s:.1f} s"
        + (f"; resumed from an earlier attempt: {len(report.retried)}" if report.retried else ""),
        soft_wrap=True,
    )
    if report.failed:
        first = next(iter(report.failed.items()))
        raise RaywaveError(
            f"{len(report.failed)} of {n} simulations failed (first: {first[0]}: {first[1]}); "
            "fix the cause and re-run the same command to generate the rest"
        )


@app.command()
def analyze(
    run: Path = typer.Argument(..., help="run directory written by `waves simulate`"),
    threshold_nm: float = typer.Option(None, "--threshold-nm", help="calcium activity threshold (nM), default 180"),
    show: bool = typer.Option(True, help="print the main statistics"),
) -> None:
    """Wave statistics: events (size, duration, speed), intervals, bursts, power-law fit -> RUN/analysis."""
    from raywave.waves.report import analyze_run

    _positive("--threshold-nm", threshold_nm)
    check_output(run / "analysis", kind="dir", option="RUN")
    paths = analyze_run(run, threshold_nm)
    stats = json.loads(paths["stats"].read_text())
    if show:
        t = Table(title=f"waves in {run}", show_header=True)
        t.add_column("statistic")
        t.add_column("value", justify="right")
        t.add_row("events", str(stats["n_events"]))
        t.add_row("fraction of cells bursting", f"{stats['fraction_cells_bursting']:.3f}")
        for key, label in [
            ("event_size_cells", "event size (cells), median"),
            ("event_duration_s", "event duration (s), median"),
            ("event_speed_um_per_s", "event speed (um/s), median"),
            ("burst_duration_s", "single-cell burst (s), median"),
            ("inter_burst_interval_s", "inter-burst interval (s), median"),
            ("inter_event_interval_per_location_s", "inter-event interval per location (s), median"),
        ]:
            t.add_row(label, f"{stats[key]['median']:.3g}")
        pl = stats["size_power_law"]
        t.add_row("size power law alpha (xmin)", f"{pl['alpha']:.3g} ({pl['xmin']:g})")
        console.print(t)
    for name, p in paths.items():
        console.print(f"  {name}: {p}")


@app.command()
def snapshot(
    run: Path = typer.Argument(..., help="run directory, or a dataset's simulation (DATASET/simulations/ID)"),
    every_s: float = typer.Option(15.0, help="seconds between snapshots"),
    out: Path = typer.Option(None, help="PNG path (default RUN/figures/snapshots.png)"),
) -> None:
    """Calcium snapshots every EVERY_S seconds (blue low -> red high), the poster's Figure 1."""
    from raywave.viz.waves import save_snapshots

    _positive("--every-s", every_s)
    out = check_output(out or Path(run) / "figures" / "snapshots.png", kind="file")
    path = save_snapshots(*_calcium_and_times(run), out, every_s)
    console.print(f"wrote {path}")


@app.command()
def movie(
    run: Path = typer.Argument(..., help="run directory, or a dataset's simulation (DATASET/simulations/ID)"),
    fmt: str = typer.Option("gif", "--format", help="gif or mp4 (mp4 needs ffmpeg)"),
    fps: int = typer.Option(20, help="frames per second of the movie"),
    stride: int = typer.Option(1, help="use every STRIDE-th frame"),
    out: Path = typer.Option(None, help="output path (default RUN/figures/movie.<format>)"),
) -> None:
    """A movie of the calcium frames."""
    from raywave.viz.waves import save_movie

    if fps < 1 or stride < 1:
        raise ConfigError("--fps and --stride must be >= 1")
    if fmt not in ("gif", "mp4"):
        raise ConfigError(f"--format {fmt!r} is not supported; choose gif or mp4")
    out = check_output(out or Path(run) / "figures" / f"movie.{fmt}", kind="file")
    path = save_movie(*_calcium_and_times(run), out, fps, stride)
    console.print(f"wrote {path}")


def _calcium_and_times(run: Path):
    """(calcium frames, times) of a `waves simulate` run, or of one simulation of a wave dataset
    (DATASET/simulations/<id>, as written by `waves generate`)."""
    run = Path(run)
    if (run / "manifest.json").is_file() and (run.parent.parent / "dataset.json").is_file():
        from raywave.data.rw_dataset import RWDataset

        sim = RWDataset(str(run.parent.parent)).simulation(run.name)
        return sim.calcium(), sim.times()
    from raywave.waves.store import RunStore

    store = RunStore(run)
    return store.frames("C"), store.times()


@app.command("scan-ga")
def scan_ga(
    ga_values: str = typer.Option("0,0.01,0.02,0.03,0.05,0.1", "--ga", help="comma-separated gA values (nS)"),
    config: Path = ConfigOpt,
    out: Path = typer.Option(Path("runs/scan-ga"), "--out", "-o", help="directory of the scan's runs"),
    size: int = typer.Option(None, help="square lattice side"),
    duration_s: float = typer.Option(None, help="recorded duration per run (s)"),
    transient_s: float = typer.Option(None, help="discarded transient per run (s)"),
    seed: int = typer.Option(None, help="seed"),
    backend: str = typer.Option(None, help="torch or brian2"),
    param: list[str] = typer.Option(None, "--param", "-p", help="model parameter NAME=VALUE (repeatable)"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Sweep gA locally: synchronised events at high gA, propagating partial waves at lower gA."""
    from raywave.waves.scan import scan_ga as run_scan

    try:
        values = [float(x) for x in ga_values.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--ga {ga_values!r}: give comma-separated numbers, e.g. 0,0.03,0.1") from None
    if not values or any(not (math.isfinite(v) and v >= 0) for v in values):
        raise ConfigError("--ga needs at least one value, all finite and >= 0")
    overrides = {"height": size, "width": size, "duration_s": duration_s, "transient_s": transient_s,
                 "seed": seed, "backend": backend}  # fmt: skip
    base = resolve_config(config, overrides, param)
    check_output(out, kind="dir")
    with frame_progress("scan", quiet) as update:
        rows, fig = run_scan(base, values, out, progress=lambda name, d, t: update(d, t))
    t = Table(title="gA scan")
    for col in ("gA", "n_events", "mean_event_size_fraction", "p90_event_size_fraction", "fraction_cells_bursting"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(*(f"{r[c]:.3g}" for c in ("gA", "n_events", "mean_event_size_fraction",
                                             "p90_event_size_fraction", "fraction_cells_bursting")))  # fmt: skip
    console.print(t)
    console.print(f"wrote {fig} and {Path(out) / 'scan.json'}")


@app.command()
def params() -> None:
    """The SAC model's parameters: defaults, units, provenance."""
    from raywave.waves.params import parameter_table

    t = Table(title="SAC model parameters (override with --param NAME=VALUE or `params:` in YAML)")
    for col in ("name", "default", "unit", "description", "provenance"):
        t.add_column(col)
    for row in parameter_table():
        t.add_row(*row.values())
    console.print(t)
