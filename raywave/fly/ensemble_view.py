"""The ensemble view (plain torch/numpy): sorted model table, task-error histogram, responses of every model to
a clip and to moving ON/OFF edges, direction selectivity of T4a-d / T5a-d per model, polar tuning plots.
All models are simulated in one network pass (`FlyEnsemble`)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from raywave.errors import RaywaveError
from raywave.fly import connectome as fly_connectome
from raywave.fly import ensemble_run as er
from raywave.fly import tuning
from raywave.fly.decoder import FlowDecoder
from raywave.fly.ensemble import FlyEnsemble
from raywave.fly.network import FlyNetwork
from raywave.fly.train import load_states, prepare_data, read_checkpoint
from raywave.io import atomic_path, write_json_atomic

TABLE_FIELDS = ["rank", "model", "seed", "status", "iteration", "diverged_at", "best_val_epe", "best_checkpoint"]


def load_best(edir: Path, cfg, rows: list[dict]) -> tuple[FlyEnsemble, list[dict]]:
    """The best checkpoint of every model that has one, as one ensemble (in the order of `rows`)."""
    c = fly_connectome.load(cfg.connectome)
    rows = [r for r in rows if r.get("best_checkpoint") and r["status"] != "diverged"]
    if not rows:
        raise RaywaveError(f"no model of {edir} has a checkpoint yet; train (and validate) it first")
    template = FlyNetwork(c, rows[0]["seed"])
    ens = FlyEnsemble(c, [r["seed"] for r in rows], template)
    for j, r in enumerate(rows):
        path = edir / r["model"] / r["best_checkpoint"]
        ckpt = read_checkpoint(path)
        load_states(template, FlowDecoder(n_out=len(c.output_types)), ckpt, path)
        ens.load_member(j, ckpt["network"])
    return ens, rows


def write_table(rows: list[dict], path: Path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TABLE_FIELDS, extrasaction="ignore")
        w.writeheader()
        for i, r in enumerate(rows):
            w.writerow({**r, "rank": i + 1})
    return path


def check_types(c, cell_types: list[str]) -> None:
    for t in cell_types:
        c.type_index(t)  # one line naming the unknown type and the known ones


def view(root: str | Path, name: str, out: Path | None = None, cell_types: list[str] | None = None,
         dt: float = 0.02) -> dict:  # fmt: skip
    """Write the view of ensemble `name` into `out` (default <ensemble>/view); returns what was written."""
    from raywave.viz.fly_ensemble import plot_ensemble_responses, plot_task_error_histogram

    edir, cfg, data = er.load_summary(Path(root), name)
    cell_types = cell_types or ["T4c", "T5c", "Mi1", "Tm3"]
    c = fly_connectome.load(cfg.connectome)
    check_types(c, cell_types)
    summary = er.write_summary(edir, cfg, data["models"])
    rows = er.sorted_table(summary)
    out = out or edir / "view"
    written = {"table": write_table(rows, out / "models.csv")}
    scored = [r for r in rows if r["best_val_epe"] is not None and r["status"] != "diverged"]
    if scored:
        written["histogram"] = plot_task_error_histogram(np.array([r["best_val_epe"] for r in scored]),
                                                         out / "task_error_histogram.png")  # fmt: skip
    ens, used = load_best(edir, cfg, scored)
    errors = np.array([r["best_val_epe"] for r in used])
    # responses to a validation clip of the first model's data (the same clip for every model)
    _, val = prepare_data(er.model_config(cfg, int(used[0]["model"]), edir), edir / used[0]["model"])
    lum, _ = val.sample(0)
    with torch.no_grad():
        x = lum[None, None].expand(ens.n_models, 1, *lum.shape).contiguous()
        v = ens.by_model(ens(x, dt, ens.steady_state(1, dt, cfg.t_pre)))[:, 0]  # (K, T, N)
    traces = {t: v[..., c.central_node(t)].numpy() for t in cell_types}
    t_s = np.arange(lum.shape[0]) * dt
    written["responses"] = plot_ensemble_responses(t_s, traces, errors, out / "responses.png",
                                                   title=f"central cells, {val.items[0][0]}")  # fmt: skip
    written.update(_direction_selectivity(ens, c, used, errors, out, dt, cfg.t_pre))
    write_json_atomic(out / "view.json", {k: str(v) for k, v in written.items()})
    return {"written": written, "rows": rows, "diverged": [r for r in rows if r["status"] == "diverged"]}


def _direction_selectivity(ens, c, rows, errors, out: Path, dt: float, t_pre: float) -> dict:
    """DSI and preferred direction of T4a-d (ON edges) and T5a-d (OFF edges) per model; polar plots and CSV."""
    from raywave.viz.fly_ensemble import plot_tuning

    peaks, dsi, pd = {}, {}, {}
    for types, on in ((tuning.T4, True), (tuning.T5, False)):
        types = [t for t in types if t in c.types]
        if not types:
            continue
        res = tuning.edge_tuning(ens, types, on, dt, t_pre=t_pre)
        for t in types:
            peaks[t] = res[t]
            dsi[t], pd[t] = tuning.direction_selectivity(res[t])
    if not peaks:
        return {}
    path = out / "dsi.csv"
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "seed", "task_error", "cell_type", "dsi", "preferred_direction_deg"])
        for t in peaks:
            for k, r in enumerate(rows):
                w.writerow([r["model"], r["seed"], r["best_val_epe"], t, f"{dsi[t][k]:.6f}", f"{pd[t][k]:.2f}"])
    png = plot_tuning(tuning.ANGLES, peaks, errors, out / "tuning.png", dsi)
    return {"dsi": path, "tuning": png}
