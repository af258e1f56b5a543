"""Fly-network ensembles on disk (plain Python, no Ray): the flyvis layout, the shard of each worker, K models per
pass, status, validation of every checkpoint and the ensemble summary.

    <root>/<name>/ensemble.json        config, number of models, every model's status (written by the driver)
    <root>/<name>/000/ ... /049/       one model each, as `raywave fly train-one` writes it: config.json,
                                       checkpoints/it-*.pt, history.json, best.json, status.json (if diverged),
                                       validation.json (after `validate`)

Model j is trained with seed `config.seed + j`, so it is the same model as `train-one` with that seed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from raywave.errors import RaywaveError
from raywave.fly.train import (
    FlyTrainConfig,
    evaluate,
    final_record,
    latest_checkpoint,
    load_model,
    prepare_data,
    read_status,
    synthetic_root,
    train_models,
)
from raywave.io import write_json_atomic

ENSEMBLE_FILE = "ensemble.json"
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def ensemble_dir(root: str | Path, name: str) -> Path:
    """<root>/<name> for a name like flow/0000 (parts of letters, digits, _ . -; no '..', not absolute)."""
    parts = name.split("/")
    if not name or any(not _PART.match(p) or p in (".", "..") for p in parts):
        raise RaywaveError(f"ensemble name {name!r} is not valid: use parts of letters, digits, _ . - separated by "
                           "'/', e.g. flow/0000")  # fmt: skip
    return Path(root) / Path(*parts)


def model_dir(edir: Path, j: int) -> Path:
    return edir / f"{j:03d}"


def model_config(cfg: FlyTrainConfig, j: int, edir: Path | None = None) -> FlyTrainConfig:
    """Model j's config: seed + j; with `edir`, the default synthetic data and render cache are the ensemble's
    (one copy for all models, written by the driver with `prepare_shared`), not one per model directory."""
    update: dict = {"seed": cfg.seed + j}
    if edir is not None:
        if cfg.sintel_root is None:
            update["sintel_root"] = str(edir / "synthetic-sintel")
        if cfg.cache is None:
            update["cache"] = str(edir / "render-cache")
    return cfg.model_copy(update=update)


def prepare_shared(edir: Path, cfg: FlyTrainConfig) -> None:
    """The ensemble's synthetic data, when it uses the default (once, atomically, before any worker starts)."""
    if cfg.sintel_root is None:
        synthetic_root(edir, cfg.synthetic)


def shard(n_models: int, workers: int, rank: int) -> list[int]:
    """The models worker `rank` trains: j ≡ rank (mod workers)."""
    return list(range(rank, n_models, workers))


def check_request(n_models: int, workers: int, per_pass: int) -> None:
    """Sizes that cannot work, as one line each (before anything starts or is written)."""
    if n_models < 1:
        raise RaywaveError(f"--models must be at least 1 (got {n_models})")
    if workers < 1:
        raise RaywaveError(f"--workers must be at least 1 (got {workers})")
    if workers > n_models:
        raise RaywaveError(f"--workers {workers} is more than the {n_models} models; use at most {n_models}")
    most = len(shard(n_models, workers, 0))
    if per_pass < 1 or per_pass > most:
        raise RaywaveError(f"--models-per-pass {per_pass} must be between 1 and the {most} models a worker has "
                           f"({n_models} models over {workers} workers)")  # fmt: skip


def read_ensemble(edir: Path) -> dict | None:
    path = edir / ENSEMBLE_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise RaywaveError(f"{path} is not valid JSON; restore it or choose another --name") from None


def check_existing(edir: Path, cfg: FlyTrainConfig, n_models: int) -> None:
    """An existing ensemble of that name must have the same config and number of models (read only)."""
    old = read_ensemble(edir)
    if old is None:
        return
    if old.get("config") != cfg.model_dump() or old.get("models") != n_models:
        raise RaywaveError(f"ensemble {edir} exists with a different config or number of models; re-run it with "
                           "the same config, or choose another --name")  # fmt: skip


def finished(edir: Path, cfg: FlyTrainConfig, j: int, restart_diverged: bool = False) -> bool:
    """Model j needs no training: its last checkpoint is the final iteration, or it diverged (unless restarted)."""
    out = model_dir(edir, j)
    if read_status(out).get("status") == "diverged" and not restart_diverged:
        return True
    last = latest_checkpoint(out)
    return last is not None and int(last.stem.split("-")[1]) >= cfg.iterations


def train_shard(edir: Path, cfg: FlyTrainConfig, models: list[int], per_pass: int, restart_diverged: bool = False,
                faults: dict[int, int] | None = None, log=None) -> None:  # fmt: skip
    """Train a worker's models `per_pass` at a time (resuming each from its checkpoints; finished ones skipped)."""
    todo = [j for j in models if not finished(edir, cfg, j, restart_diverged)]
    for j in todo:
        if restart_diverged:
            (model_dir(edir, j) / "status.json").unlink(missing_ok=True)
    for s in range(0, len(todo), per_pass):
        group = todo[s : s + per_pass]
        train_models([model_config(cfg, j, edir) for j in group], [model_dir(edir, j) for j in group], log=log,
                     faults=faults)  # fmt: skip


def model_status(edir: Path, cfg: FlyTrainConfig, j: int) -> dict:
    out = model_dir(edir, j)
    rec = final_record(out) if out.exists() else {}
    last = latest_checkpoint(out) if out.exists() else None
    iteration = int(last.stem.split("-")[1]) if last else 0
    status = rec.get("status") or ("done" if iteration >= cfg.iterations else "training" if iteration else "pending")
    row = {"model": f"{j:03d}", "seed": cfg.seed + j, "status": status, "iteration": iteration,
           "best_val_epe": rec.get("val_epe"), "best_checkpoint": rec.get("checkpoint")}  # fmt: skip
    if "diverged_at" in rec:
        row["diverged_at"] = rec["diverged_at"]
    val = out / "validation.json"
    if val.exists():
        v = json.loads(val.read_text())
        row["best_val_epe"], row["best_checkpoint"] = v["best"]["val_epe"], v["best"]["checkpoint"]
    return row


def write_summary(edir: Path, cfg: FlyTrainConfig, n_models: int) -> dict:
    """ensemble.json: the config and every model's status."""
    summary = {"config": cfg.model_dump(), "models": n_models,
               "status": [model_status(edir, cfg, j) for j in range(n_models)]}  # fmt: skip
    write_json_atomic(edir / ENSEMBLE_FILE, summary)
    return summary


def load_summary(root: str | Path, name: str) -> tuple[Path, FlyTrainConfig, dict]:
    edir = ensemble_dir(root, name)
    data = read_ensemble(edir)
    if data is None:
        raise RaywaveError(f"no ensemble {name!r} under {root} ({edir / ENSEMBLE_FILE} is missing); train it first "
                           "with `raywave fly ensemble train`")  # fmt: skip
    return edir, FlyTrainConfig.model_validate(data["config"]), data


def validate_checkpoint(ckpt: str, model_out: str) -> dict:
    """Validation EPE of one checkpoint on its model's validation samples (a Ray task body; plain torch)."""
    torch.set_num_threads(1)
    net, dec, saved = load_model(Path(ckpt))
    cfg = FlyTrainConfig.model_validate(saved["config"])
    _, val = prepare_data(cfg, Path(model_out))
    return {"checkpoint": str(Path(ckpt).relative_to(model_out)), "iteration": saved["iteration"],
            **evaluate(net, dec, val, cfg)}  # fmt: skip


def record_validation(model_out: Path, rows: list[dict]) -> dict:
    rows = sorted(rows, key=lambda r: r["iteration"])
    best = min(rows, key=lambda r: r["val_epe"])
    data = {"checkpoints": rows, "best": best}
    write_json_atomic(model_out / "validation.json", data)
    return data


def sorted_table(summary: dict) -> list[dict]:
    """Models sorted by task error (best validation EPE; models without one last)."""
    return sorted(summary["status"], key=lambda r: (r["best_val_epe"] is None, r["best_val_epe"] or np.inf))
