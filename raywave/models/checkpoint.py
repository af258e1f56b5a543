"""Reading model checkpoints: official releases (a bare state dict, maybe with `module.` keys) or raywave's
({"model": state_dict, "variant": ..., ...}); a missing or corrupt file is one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from raywave.errors import RaywaveError


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """The object saved in `path` (a directory means its model.pt), loaded on the CPU, weights only."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RaywaveError(f"{what} {str(path)!r} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a corrupt file
        raise RaywaveError(f"{what} {str(path)!r} is unreadable or corrupt ({exc})") from None
    if not isinstance(obj, dict):
        raise RaywaveError(f"{what} {str(path)!r} does not hold a state dict")
    return obj


def model_state(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint object, without DataParallel's `module.` prefix."""
    state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    return {k.removeprefix("module."): v for k, v in state.items()}
