"""`raywave data ...`: triplet indexes and dataset cards for retinal-wave datasets."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from raywave.config import load_config
from raywave.errors import ConfigError
from raywave.io import check_name, check_output
from raywave.lock import exclusive

app = typer.Typer(help="Retinal-wave datasets: triplets for NFP, dataset cards.", no_args_is_help=True)
console = Console()


def _dataset_lock(dataset: str | Path):
    """The writer lock of a local dataset (raywave.lock); object stores have none (see sweep_runner)."""
    from raywave.data.rw_dataset import RWDataset
    from raywave.storage import resolve

    RWDataset(dataset).info()  # not a dataset: one line, and no directory made by the lock
    loc = resolve(dataset)
    return exclusive(loc.path, "dataset", option="DATASET") if loc.is_local else contextlib.nullcontext()


@app.command()
def triplets(
    dataset: str = typer.Argument(..., help="dataset path or URI written by `waves generate`"),
    config: Path = typer.Option(None, "--config", "-c", help="YAML of TripletConfig fields"),
    name: str = typer.Option("default", help="name of this triplet index (several can coexist)"),
    dt_s: str = typer.Option(None, "--dt-s", help="comma-separated frame gaps in s, e.g. 0.1,0.5,1.0"),
    crop: int = typer.Option(None, help="random square crop side"),
    min_active: float = typer.Option(None, help="least fraction of active cells to keep a frame"),
    max_active: float = typer.Option(None, help="largest fraction of active cells to keep a frame"),
    normalization: str = typer.Option(None, help="global or per_simulation"),
    overwrite: bool = typer.Option(False, help="replace an index of this name built with another config"),
) -> None:
    """Build the (I1, I2, I3) triplet index: normalisation, activity filter, dt variants, augmentation."""
    from raywave.data.triplets import TripletConfig, build_index

    dts = None
    if dt_s is not None:
        try:
            dts = [float(x) for x in dt_s.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--dt-s {dt_s!r}: give comma-separated seconds, e.g. 0.1,0.5") from None
    overrides = {"dt_s": dts, "augment.crop": crop, "activity.min_fraction": min_active,
                 "activity.max_fraction": max_active, "normalization.mode": normalization}  # fmt: skip
    cfg = load_config(TripletConfig, config, overrides, what="triplet config")
    check_name(name, "--name")
    check_output(dataset, kind="dir", option="DATASET", uri_ok=True)
    with _dataset_lock(dataset), console.status("reading simulations"):
        prep = build_index(dataset, cfg, name, overwrite)
    t = Table(title=f"triplets {name!r}")
    for col in ("simulation", "frames", "kept", "triplets", "split", "low", "high"):
        t.add_column(col, justify="right")
    for s in prep["simulations"]:
        t.add_row(s["sim_id"], str(s["frames"]), str(s["frames_kept"]), str(s["triplets"]),
                  "val" if s["val"] else "train", f"{s['low']:.4g}", f"{s['high']:.4g}")  # fmt: skip
    console.print(t)
    console.print(f"[green]{prep['n_triplets']} triplets[/] ({prep['n_val']} val) of {prep['output_shape']} "
                  f"at dt {cfg.dt_s} s", soft_wrap=True)  # fmt: skip


@app.command()
def describe(
    dataset: str = typer.Argument(..., help="dataset path or URI"),
    out: Path = typer.Option(None, help="directory for card.json and plots (default DATASET/card, or ./card)"),
    threshold_nm: float = typer.Option(180.0, "--threshold-nm", help="calcium (nM) at which a cell is active"),
    examples: int = typer.Option(4, help="example triplets to draw"),
    verify: bool = typer.Option(False, help="check every frames file against its manifest checksum"),
    as_json: bool = typer.Option(False, "--json", help="print the card as one JSON object"),
) -> None:
    """A dataset card: simulations, parameters, frames, activity distribution, example triplets."""
    from raywave.storage import resolve

    if not (threshold_nm > 0 and threshold_nm < float("inf")):
        raise ConfigError(f"--threshold-nm must be a finite number > 0 (got {threshold_nm})")
    loc = resolve(dataset)
    inside = out is None and loc.is_local
    out = check_output(out or (Path(loc.path) / "card" if loc.is_local else Path("card")), kind="dir")
    if not inside:
        from raywave.data.rw_dataset import RWDataset

        RWDataset(dataset).info()
    with _dataset_lock(dataset) if inside else contextlib.nullcontext():
        _describe(dataset, out, threshold_nm, examples, verify, as_json)


def _describe(dataset: str, out: Path, threshold_nm: float, examples: int, verify: bool, as_json: bool) -> None:
    from raywave.data.card import describe as make_card
    from raywave.io import write_json_atomic
    from raywave.viz.dataset import save_activity, save_triplets

    card = make_card(dataset, threshold_nm, verify=verify)
    per_sim = card.pop("_activity_per_sim")
    figures = {"activity": save_activity(per_sim, [r["sim_id"] for r in card["simulations"]], threshold_nm,
                                         out / "activity.png")}  # fmt: skip
    if card["triplets"] and examples > 0:
        from raywave.data.triplets import TripletSource

        src = TripletSource(dataset, card["triplets"][0]["name"])
        rows = src.rows("all")
        pick = rows[np.linspace(0, len(rows) - 1, min(examples, len(rows))).astype(int)] if len(rows) else rows
        batch = src.get(pick, augment=False)
        caps = [f"{src.sims[src._cols['sim_index'][r]]['sim_id']}\nt0={src._cols['t0'][r]} dt={src._cols['dt_s'][r]:g}s"
                for r in pick]  # fmt: skip
        figures["triplets"] = save_triplets(batch["frames"], caps, out / "triplets.png")
    card["figures"] = {k: str(v) for k, v in figures.items()}
    write_json_atomic(out / "card.json", card)
    if as_json:
        print(json.dumps(card, default=str))
        return
    console.print(f"[bold]{card['dataset']}[/] ({card['status']}): {card['simulations_committed']} of "
                  f"{card['simulations_listed']} simulations, {card['frames']} frames, shapes {card['shapes']}, "
                  f"{card['bytes'] / 2**20:.1f} MiB", soft_wrap=True)  # fmt: skip
    t = Table(title="simulations")
    for col in ("simulation", "values", "shape", "frames", "dtype", "events", "active (mean)", "frames active"):
        t.add_column(col)
    for r in card["simulations"]:
        values = ", ".join(f"{k.removeprefix('params.')}={v}" for k, v in r["values"].items())
        shape = "x".join(map(str, r["shape"]))
        active, frames_active = f"{r['active_fraction_mean']:.3f}", f"{r['frames_with_activity']:.2f}"
        t.add_row(r["sim_id"], values, shape, str(r["frames"]), r["dtype"], str(r["n_events"]), active, frames_active)
    console.print(t)
    a = card["activity"]
    console.print(f"activity: mean fraction of active cells {a['mean']:.3f}; frames with any activity "
                  f"{a['frames_with_activity']:.2f}")  # fmt: skip
    for tr in card["triplets"]:
        console.print(f"triplets {tr['name']!r}: {tr['n_triplets']} ({tr['n_val']} val), dt {tr['dt_s']} s, "
                      f"shape {tr['output_shape']}, normalisation {tr['normalization']}", soft_wrap=True)  # fmt: skip
    for k, v in figures.items():
        console.print(f"  {k}: {v}")
    console.print(f"  card: {out / 'card.json'}")
