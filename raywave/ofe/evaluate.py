"""Evaluate a RAFT checkpoint on a flow dataset: padded inference, EPE / accuracies / occlusion split, panels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raywave.data.flow_datasets import FlowDataset, to_tensors
from raywave.errors import RaywaveError
from raywave.models.checkpoint import model_state, read_checkpoint
from raywave.models.raft import RAFT, load_official
from raywave.ofe.metrics import combine, flow_metrics


class InputPadder:
    """Pad images to multiples of 8 by edge replication (Sintel: centred; otherwise at the bottom), as RAFT."""

    def __init__(self, shape: tuple[int, ...], mode: str = "sintel"):
        ht, wd = shape[-2:]
        ph, pw = (-ht) % 8, (-wd) % 8
        self.pad = (
            [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2] if mode == "sintel" else [pw // 2, pw - pw // 2, 0, ph]
        )

    def pad_(self, *images: torch.Tensor) -> list[torch.Tensor]:
        return [F.pad(x, self.pad, mode="replicate") for x in images]

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        ht, wd = x.shape[-2:]
        c = [self.pad[2], ht - self.pad[3], self.pad[0], wd - self.pad[1]]
        return x[..., c[0] : c[1], c[2] : c[3]]


def load_raft(checkpoint: str | Path, variant: str) -> RAFT:
    """A RAFT with an official release's weights, a raywave checkpoint ({"model": state_dict, ...}), or the best
    checkpoint of an `raywave ofe train` run directory."""
    path = Path(checkpoint)
    if path.is_dir() and (path / "checkpoints").is_dir():
        from raywave.train.checkpoints import resolve_checkpoint

        path = Path(resolve_checkpoint(str(path), "best"))
    obj = read_checkpoint(path)
    if isinstance(obj.get("model"), dict):
        if obj.get("task") not in (None, "ofe"):
            raise RaywaveError(f"{str(checkpoint)!r} is a {obj['task']} checkpoint, not a RAFT one")
        variant = obj.get("variant") or obj.get("meta", {}).get("variant") or variant
    state = model_state(obj)
    model = RAFT(variant)
    load_official(model, state)
    return model.eval()


@torch.no_grad()
def evaluate(model: RAFT, dataset: FlowDataset, iters: int = 24, max_samples: int | None = None, panels: int = 3,
             progress: Callable[[int, int], None] | None = None) -> tuple[dict, list[dict]]:  # fmt: skip
    """Metrics over the dataset (pixel-weighted, combined exactly) and a few rows for `save_flow_panels`."""
    model.eval()
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    if n == 0:
        raise RaywaveError("the dataset split is empty; check the split/scenes")
    parts, rows = [], []
    pick = set(np.linspace(0, n - 1, min(panels, n)).astype(int).tolist())
    for i in range(n):
        item = dataset[i]
        t = to_tensors(item)
        img1, img2 = t["img1"][None], t["img2"][None]
        padder = InputPadder(img1.shape)
        img1, img2 = padder.pad_(img1, img2)
        _, flow = model(img1, img2, iters=iters, test_mode=True)
        flow = padder.unpad(flow)
        occluded = t["occluded"][None] if "occluded" in t else None
        parts.append(flow_metrics(flow, t["flow"][None], t["valid"][None], occluded))
        if i in pick:
            rows.append({"img1": item["img1"], "gt": t["flow"].permute(1, 2, 0).numpy(),
                         "pred": flow[0].permute(1, 2, 0).numpy()})  # fmt: skip
        if progress:
            progress(i + 1, n)
    return combine(parts), rows
