"""`raywave fly ...`: the connectome-constrained fly visual-system network and its optic-flow task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from raywave.errors import ConfigError
from raywave.io import check_output

app = typer.Typer(help="Fly visual-system network: connectome, simulation, eye rendering, training.",
                  no_args_is_help=True)  # fmt: skip
console = Console()
app.add_typer(__import__("raywave.cli.fly_ensemble", fromlist=["app"]).app, name="ensemble")
CONNECTOME_HELP = "connectome spec JSON in the flyvis format (default: the published one, from the flyvis wheel)"


@app.command()
def connectome(
    spec: Path = typer.Option(None, "--connectome", help=CONNECTOME_HELP),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Fetch (once, cached) and compile the connectome; print its sizes and provenance."""
    from raywave.fly.connectome import load

    c = load(spec)
    summary = {**c.summary(), "provenance": c.provenance}
    if as_json:
        print(json.dumps(summary))
        return
    t = Table(title="compiled connectome")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    for k, v in c.summary().items():
        t.add_row(k.replace("_", " "), f"{v:,}")
    console.print(t)
    console.print(f"source: {c.provenance.get('source')} (licence: {c.provenance.get('licence')})")


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", "-o", help="directory for responses.npz and responses.png"),
    spec: Path = typer.Option(None, "--connectome", help=CONNECTOME_HELP),
    checkpoint: Path = typer.Option(None, help="a trained model's checkpoint (default: initial parameters)"),
    seed: int = typer.Option(0, help="parameter seed of an untrained model"),
    angle: float = typer.Option(0.0, help="direction of the moving edge (degrees, counter-clockwise from +x)"),
    speed: float = typer.Option(13.0, help="edge speed in isotropic px per frame (13 = one column)"),
    frames: int = typer.Option(24, help="stimulus frames (24 fps)"),
    dt: float = typer.Option(0.02, help="integration step (s)"),
    initial: str = typer.Option("steady", help="initial state: steady (grey), fade or rest"),
    cell_types: str = typer.Option("T4c,T5c,Mi1,Tm3,L1,L2", help="comma-separated cell types to plot"),
) -> None:
    """Simulate the network's response to a moving ON edge; save all voltages and plot central cells."""
    import numpy as np
    import torch

    from raywave.fly.augment import n_resampled, resample
    from raywave.fly.connectome import load
    from raywave.fly.eye import BoxEye
    from raywave.fly.network import FlyNetwork
    from raywave.fly.stimuli import moving_edge
    from raywave.fly.train import load_model
    from raywave.io import save_npz_atomic
    from raywave.viz.fly import plot_responses

    if frames < 2 or not (math.isfinite(dt) and dt > 0):
        raise ConfigError("--frames must be >= 2 and --dt a finite number > 0")
    if not (math.isfinite(angle) and math.isfinite(speed)):
        raise ConfigError("--angle and --speed must be finite numbers")
    check_output(out, kind="dir")
    if checkpoint:
        net, _, _ = load_model(checkpoint, str(spec) if spec else None)
    else:
        net = FlyNetwork(load(spec), seed)
    types = [t.strip() for t in cell_types.split(",") if t.strip()]
    for t in types:
        net.connectome.type_index(t)  # unknown types fail before the simulation
    img, _ = moving_edge(angle, speed, frames)
    lum = BoxEye().luminance(torch.from_numpy(img))
    lum, _ = resample(lum, None, 24.0, dt)
    v = net.simulate(lum[None], dt, initial=initial)[0]
    t_s = np.arange(n_resampled(frames, 24.0, dt)) * dt
    central = {t: net.responses(v, t, central=True).numpy() for t in types}
    save_npz_atomic(
        out / "responses.npz",
        voltages=v.numpy().astype(np.float32),
        time_s=t_s,
        stimulus=lum.numpy(),
        node_type=net.connectome.node_type,
        types=np.array(net.connectome.types),
    )
    png = plot_responses(t_s, central, out / "responses.png", title=f"moving ON edge, {angle:g}°")
    console.print(f"simulated {v.shape[0]} steps of {v.shape[1]:,} neurons; wrote {out / 'responses.npz'} and {png}")


@app.command()
def render(
    sintel_root: Path = typer.Option(None, help="MPI-Sintel root (official layout); default: synthetic data"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for the render cache and a preview"),
    splits: int = typer.Option(3, help="vertical windows per frame"),
    scenes: int = typer.Option(4, help="synthetic data: scenes (when no --sintel-root)"),
    frames: int = typer.Option(8, help="synthetic data: frames per scene"),
) -> None:
    """Render Sintel scenes onto the 721 hex columns (cached, atomic) and save a preview of one sample."""
    from raywave.cli.progress import frame_progress
    from raywave.fly.sintel import FlySintel, RenderConfig
    from raywave.fly.train import SyntheticData, synthetic_root
    from raywave.viz.fly import plot_sample

    if splits < 1 or scenes < 2 or frames < 2:
        raise ConfigError("--splits must be >= 1, --scenes >= 2 and --frames >= 2")
    check_output(out, kind="dir")
    root = sintel_root or synthetic_root(out, SyntheticData(scenes=scenes, frames=frames))
    from raywave.data.flow_datasets import sintel_scenes

    cfg = RenderConfig(splits=splits)
    ds = FlySintel(root, sintel_scenes(root, cfg.dstype), out / "render-cache", cfg=cfg)
    names = list(dict.fromkeys(s for s, _ in ds.items))
    with frame_progress("render scenes") as update:
        done = []
        ds.render_all(lambda scene: (done.append(scene), update(len(done), len(names))))
    lum, flow = ds.sample(0)
    png = plot_sample(lum.numpy(), flow.numpy(), out / "sample.png", title=f"{ds.items[0][0]} window 0")
    console.print(f"rendered {len(names)} scenes ({len(ds)} samples) into {ds.cache.dir}; preview {png}")


@app.command("train-one")
def train_one(
    out: Path = typer.Option(..., "--out", "-o", help="run directory (re-run the same command to resume)"),
    config: Path = typer.Option(None, "--config", "-c", help="YAML of FlyTrainConfig fields"),
    sintel_root: Path = typer.Option(None, help="MPI-Sintel root (official layout); default: synthetic data"),
    iterations: int = typer.Option(None, help="training iterations (default 250,000)"),
    seed: int = typer.Option(None, help="model seed (parameters, data order, augmentation)"),
    checkpoint_every: int = typer.Option(None, help="iterations between checkpoints with validation EPE"),
    device: str = typer.Option(None, help="cpu or cuda"),
) -> None:
    """Train one model end to end (Adam, stepwise lr, activity penalty, checkpoints, best by validation EPE)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from raywave.config import load_config
    from raywave.fly.train import FlyTrainConfig
    from raywave.fly.train import train_one as run
    from raywave.lock import exclusive

    cfg = load_config(FlyTrainConfig, config, {
        "sintel_root": str(sintel_root) if sintel_root else None, "iterations": iterations, "seed": seed,
        "checkpoint_every": checkpoint_every, "device": device}, what="fly train config")  # fmt: skip
    check_output(out, kind="dir")
    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TimeRemainingColumn())  # fmt: skip
    with exclusive(out, "training run"), Progress(*columns) as bar:
        task = bar.add_task("train", total=cfg.iterations, loss="-")
        best = run(cfg, out, progress=lambda it, loss: bar.update(task, completed=it, loss=f"{loss:.3g}"))
    console.print(
        f"best checkpoint {best.get('checkpoint')}: validation EPE {best.get('val_epe', float('nan')):.4f} "
        f"(zero flow {best.get('zero_flow_epe', float('nan')):.4f}); history in {out / 'history.json'}"
    )


@app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-k", help="a fly checkpoint (<run>/checkpoints/it-*.pt)"),
    sintel_root: Path = typer.Option(None, help="evaluate on this Sintel root (default: the run's data)"),
    out: Path = typer.Option(None, help="directory for metrics.json and flow.png (default: next to the run)"),
) -> None:
    """Validation EPE (and zero-flow EPE) of a checkpoint; a picture of predicted vs true flow."""
    import torch

    from raywave.fly.train import FlyTrainConfig, load_model, predict, prepare_data
    from raywave.fly.train import evaluate as run_eval
    from raywave.io import write_json_atomic
    from raywave.viz.fly import plot_prediction

    if not checkpoint.is_file():
        raise ConfigError(f"checkpoint {checkpoint} does not exist; pick a file from <run>/checkpoints")
    if out is not None:
        check_output(out, kind="dir")
    net, dec, ckpt = load_model(checkpoint)
    cfg = FlyTrainConfig.model_validate(ckpt["config"])
    if sintel_root:
        cfg = cfg.model_copy(update={"sintel_root": str(sintel_root)})
    run_dir = checkpoint.parent.parent
    out = out or run_dir / f"eval-{checkpoint.stem}"
    _, val = prepare_data(cfg, run_dir)
    metrics = {**run_eval(net, dec, val, cfg), "checkpoint": str(checkpoint), "iteration": ckpt["iteration"],
               "samples": len(val)}  # fmt: skip
    write_json_atomic(out / "metrics.json", metrics)
    lum, flow = val.sample(0)
    with torch.no_grad():
        dec.eval()
        pred, _ = predict(net, dec, lum[None], cfg)
    png = plot_prediction(flow.numpy(), pred[0].numpy(), out / "flow.png")
    console.print(
        f"validation EPE {metrics['val_epe']:.4f} (zero flow {metrics['zero_flow_epe']:.4f}) on "
        f"{len(val)} samples; wrote {out / 'metrics.json'} and {png}"
    )
