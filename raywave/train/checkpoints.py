"""Checkpoint files and the run's own checkpoint directory (plain; no Ray).

A checkpoint is a directory of two files:

    model.pt        {"model": state_dict, "task": "nfp", "meta": {...task.model_meta()}, "step": N, "stage": k}
                    (what `raywave.models.checkpoint.read_checkpoint` / transfer / evaluation read)
    train_state.pt  {"state": TrainState fields (step, stage, stage_step, samples, elapsed_s, history, best),
                     "optimizer", "scheduler", "scaler", "rng": {"seed", "step"}}

`RunCheckpoints(run)` keeps them under RUN/checkpoints/:

    step-00000100/model.pt, train_state.pt     one directory per kept checkpoint
    last.json, best.json                       {"step", "dir", ...metrics}: the commit points

A checkpoint directory is written file by file, then `last.json` (and `best.json` for a new best) is replaced
atomically; directories no pointer names are deleted afterwards. So a reader (or a resume) only ever sees whole
checkpoints, on a local path or a URI (pyarrow file systems, through `raywave.storage`).
"""

from __future__ import annotations

import io
import posixpath
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch

from raywave.errors import RaywaveError
from raywave.storage import Location, exists, list_dir, read_bytes, read_json, resolve, write_bytes, write_json

MODEL = "model.pt"
TRAIN_STATE = "train_state.pt"


def model_object(task, model: torch.nn.Module, state) -> dict[str, Any]:
    """model.pt's content: the weights (never with DDP's `module.` prefix) and what they are."""
    return {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "task": task.name,
            "meta": task.model_meta(), "step": state.step, "stage": state.stage}  # fmt: skip


def _to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def write_checkpoint_dir(directory: str | Path, model_obj: dict, train_state: dict) -> None:
    """Both files into a local directory (e.g. the temporary directory handed to `ray.train.report`)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    torch.save(model_obj, d / MODEL)
    torch.save(train_state, d / TRAIN_STATE)


def read_checkpoint_dir(directory: str | Path) -> tuple[dict, dict]:
    d = Path(directory)
    return (torch.load(d / MODEL, map_location="cpu", weights_only=True),
            torch.load(d / TRAIN_STATE, map_location="cpu", weights_only=True))  # fmt: skip


class RunCheckpoints:
    """The last and the best checkpoint of a run under RUN/checkpoints (local path or URI)."""

    def __init__(self, run: str | Location):
        self.loc = run if isinstance(run, Location) else resolve(run)
        self.rel = "checkpoints"

    def pointer(self, which: str = "last") -> dict | None:
        try:
            return read_json(self.loc, f"{self.rel}/{which}.json")
        except FileNotFoundError:
            return None

    def load(self, which: str = "last") -> tuple[dict, dict] | None:
        ptr = self.pointer(which)
        if ptr is None:
            return None
        d = f"{self.rel}/{ptr['dir']}"
        try:
            return _from_bytes(read_bytes(self.loc, f"{d}/{MODEL}")), _from_bytes(
                read_bytes(self.loc, f"{d}/{TRAIN_STATE}")
            )
        except (OSError, RuntimeError, EOFError) as exc:
            raise RaywaveError(
                f"checkpoint {self.loc.uri}/{d} is unreadable ({exc}); delete it or use a new --out"
            ) from None

    def commit(self, metrics: dict, checkpoint: tuple[dict, dict] | None = None, is_best: bool = False) -> None:
        if checkpoint is None:
            return
        model_obj, train_state = checkpoint
        step = train_state["state"]["step"]
        name = f"step-{step:08d}"
        write_bytes(self.loc, f"{self.rel}/{name}/{MODEL}", _to_bytes(model_obj))
        write_bytes(self.loc, f"{self.rel}/{name}/{TRAIN_STATE}", _to_bytes(train_state))
        numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        ptr = {"step": step, "dir": name, "stage": train_state["state"]["stage"], **numeric}
        if is_best:
            write_json(self.loc, f"{self.rel}/best.json", ptr)
        write_json(self.loc, f"{self.rel}/last.json", ptr)
        self._prune()

    def _prune(self) -> None:
        keep = {p["dir"] for p in (self.pointer("last"), self.pointer("best")) if p}
        for name in list_dir(self.loc, self.rel):
            if name.startswith("step-") and name not in keep:
                self.loc.fs.delete_dir(self.loc.join(self.rel, name))


def resolve_checkpoint(path: str, which: str = "best") -> str:
    """A model.pt path from a run directory (its `which` checkpoint), a checkpoint directory, or a file."""
    loc = resolve(path)
    if exists(loc, f"checkpoints/{which}.json"):
        ptr = read_json(loc, f"checkpoints/{which}.json")
        return posixpath.join(str(path), "checkpoints", ptr["dir"], MODEL)
    if exists(loc, MODEL):
        return posixpath.join(str(path), MODEL)
    if loc.fs.get_file_info(loc.path).type == pafs.FileType.File:
        return str(path)
    raise RaywaveError(f"{path!r} is neither a run directory with checkpoints, a checkpoint directory nor a "
                       "checkpoint file; pass RUN, RUN/checkpoints/step-N or a model.pt")  # fmt: skip
