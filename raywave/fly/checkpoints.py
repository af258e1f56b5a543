"""A fly model's run directory: checkpoints (written atomically, read weights-only, a truncated newest one set
aside), the config check before a resume, status.json and the best record.

Checkpoints hold tensors and plain data only and are read with `torch.load(weights_only=True)`: a crafted
pickle given as a checkpoint is refused, never executed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from raywave.errors import RaywaveError
from raywave.fly import connectome as fly_connectome
from raywave.fly.decoder import FlowDecoder
from raywave.fly.network import FlyNetwork
from raywave.fly.train_config import FlyTrainConfig
from raywave.io import atomic_path, write_json_atomic


def save_atomic(obj: Any, path: Path) -> None:
    if path.suffix == ".pt":
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    else:
        write_json_atomic(path, obj)


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("it-*.pt"))
    return ckpts[-1] if ckpts else None


def read_checkpoint(path: Path, device: str = "cpu") -> dict:
    """A fly checkpoint's dict, loaded weights-only (tensors and plain data; no code runs); one line if not."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(ckpt, dict):
            raise TypeError("not a dict")
        FlyTrainConfig.model_validate(ckpt["config"])
        for key in ("network", "decoder", "iteration"):
            ckpt[key]  # noqa: B018 - a missing key is an unreadable checkpoint
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is one clear line
        raise RaywaveError(
            f"{path} is not a readable fly checkpoint ({exc.__class__.__name__}); pick a file from <run>/checkpoints"
        ) from None
    return ckpt


def load_states(net: FlyNetwork, dec: FlowDecoder, ckpt: dict, path: Path | str) -> None:
    """Load a checkpoint's network and decoder; a checkpoint of another connectome is one clear line."""
    saved = (ckpt.get("connectome") or {}).get("spec_sha256")
    ours = net.connectome.provenance.get("spec_sha256")
    try:
        if saved and ours and saved != ours:
            raise RuntimeError("connectome spec differs")
        net.load_state_dict(ckpt["network"])
        dec.load_state_dict(ckpt["decoder"])
    except RuntimeError:
        raise RaywaveError(
            f"{path} was trained on another connectome (spec sha256 {str(saved or 'unknown')[:12]}...) than the "
            f"one given ({str(ours or 'unknown')[:12]}...); pass the connectome it was trained on with --connectome"
        ) from None


def load_model(path: Path, connectome_path: str | None = None, device: str = "cpu") -> tuple:
    """(network, decoder, checkpoint dict) from a fly checkpoint."""
    ckpt = read_checkpoint(path, device)
    cfg = FlyTrainConfig.model_validate(ckpt["config"])
    c = fly_connectome.load(connectome_path or cfg.connectome)
    net = FlyNetwork(c, cfg.seed).to(device)
    dec = FlowDecoder(n_out=len(c.output_types), seed=cfg.seed).to(device)
    load_states(net, dec, ckpt, path)
    return net, dec, ckpt


def resume_point(out: Path, device: str = "cpu", log=None) -> dict | None:
    """The newest readable checkpoint of a run; an unreadable newest one (e.g. truncated by a crash while the
    disk filled) is renamed `*.corrupt` and the previous one is used, saying so."""
    while (last := latest_checkpoint(out)) is not None:
        try:
            return read_checkpoint(last, device)
        except RaywaveError:
            last.rename(last.with_name(last.name + ".corrupt"))
            (log or stderr_log)(f"{last} is unreadable (truncated?); kept as {last.name}.corrupt, resuming from the "
                             "previous checkpoint")  # fmt: skip
    return None


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr)


def check_run_dir(out: Path, cfg: FlyTrainConfig) -> None:
    """A directory whose checkpoints come from another config is refused (read only; nothing is written)."""
    cfg_path = out / "config.json"
    if cfg_path.exists() and latest_checkpoint(out) is not None:
        try:  # validated, so that fields added since (with their defaults) do not count as a difference
            same = FlyTrainConfig.model_validate(json.loads(cfg_path.read_text())).model_dump() == cfg.model_dump()
        except ValueError:
            same = False
        if not same:
            raise RaywaveError(f"{out} holds a run with a different config; resume with the same config or use a "
                               "new --out")  # fmt: skip


def read_status(out: Path) -> dict:
    """A model's status.json ({} when it has none: not diverged)."""
    try:
        return json.loads((out / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def final_record(out: Path) -> dict:
    """best.json of a run, with its status (diverged or not)."""
    best = json.loads((out / "best.json").read_text()) if (out / "best.json").exists() else {}
    status = read_status(out)
    return {**best, **({"status": status["status"], "diverged_at": status["iteration"]} if status else {})}
