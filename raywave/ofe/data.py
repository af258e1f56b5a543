"""The data of an OFE stage: datasets from real or synthetic roots, the nested data-fraction subset, and the
batches of step i as a function of (seed, stage, i) alone, so a resumed run sees exactly the batches of an
uninterrupted one and every worker can compute its share of the global batch on its own.

Randomness: the training order of each epoch is a `torch.randperm` under a `torch.Generator` seeded from
(seed, stage, epoch); augmentations draw from (seed, stage, position in the stage's sample stream)
(`FlowAugmentor.rng`). No global RNG is read.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from raywave.data.flow_augment import FlowAugmentor
from raywave.data.flow_datasets import FlowDataset, FlyingChairs, MpiSintel, scene_split, sintel_scenes, to_tensors
from raywave.data.flow_io import read_image
from raywave.errors import RaywaveError
from raywave.ofe.config import OFETrainConfig, StageConfig


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence), for a torch.Generator."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def synthetic_root(run_dir: str | Path, name: str, cfg: OFETrainConfig) -> Path:
    """Synthetic flow in the `name` (chairs|sintel) layout under <run>/data, written once, atomically."""
    from raywave.data.synthetic_flow import write_chairs, write_sintel

    root = Path(run_dir) / "data" / f"synthetic-{name}"
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".synthetic-{name}-"))
    try:
        if name == "chairs":
            s = cfg.synthetic_chairs
            write_chairs(tmp, s.pairs, s.height, s.width, s.seed, val_every=s.val_every)
        else:
            t = cfg.synthetic_sintel
            write_sintel(tmp, t.scenes, t.frames, t.height, t.width, t.seed, max_shift=t.max_shift)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def data_roots(cfg: OFETrainConfig) -> dict[str, str | None]:
    """The real root of each stage dataset the config names (None: synthetic)."""
    real = {"chairs": cfg.chairs_root, "sintel": cfg.sintel_root}
    return {s.name: real[s.name] for s in cfg.stages}


def check_roots(cfg: OFETrainConfig) -> None:
    """Every real root given exists (the loaders then check its layout)."""
    for name, root in data_roots(cfg).items():
        if root is not None and not Path(root).is_dir():
            raise RaywaveError(f"--{name}-root {root!r} does not exist; point it at the {name} root or leave it out "
                               "to train on synthetic data")  # fmt: skip


def stage_datasets(cfg: OFETrainConfig, stage: StageConfig, root: str | Path) -> tuple[FlowDataset, FlowDataset]:
    """(training pairs, validation pairs) of a stage, unaugmented (augmentation is applied per batch)."""
    if stage.name == "chairs":
        return FlyingChairs(root, "train"), FlyingChairs(root, "val")
    scenes = sintel_scenes(root, stage.passes[0])
    if len(scenes) < 2:
        raise RaywaveError(f"{root} holds {len(scenes)} Sintel scene(s); a held-out validation scene needs >= 2")
    train_scenes, val_scenes = scene_split(scenes, stage.val_scenes, cfg.seed)
    train = MpiSintel(root, stage.passes[0], train_scenes)
    for p in stage.passes[1:]:
        train.samples += MpiSintel(root, p, train_scenes).samples
    return train, MpiSintel(root, stage.val_pass, val_scenes)


def frame_size(ds: FlowDataset) -> tuple[int, int]:
    h, w = read_image(ds.samples[0]["img1"]).shape[:2]
    return h, w


def check_stage(stage: StageConfig, train: FlowDataset, val: FlowDataset) -> None:
    """Non-empty splits, and a crop that fits inside the frames."""
    if len(train) == 0 or len(val) == 0:
        raise RaywaveError(f"stage {stage.name}: the {'training' if len(train) == 0 else 'validation'} split is "
                           "empty; check the root's split file / scenes")  # fmt: skip
    h, w = frame_size(train)
    ch, cw = stage.crop
    if ch > h or cw > w:
        raise RaywaveError(f"stage {stage.name}: crop {ch}x{cw} is larger than the {h}x{w} frames; lower the "
                           f"stage's crop to at most {h // 8 * 8}x{w // 8 * 8}")  # fmt: skip
    vh, vw = frame_size(val)
    if min(vh, vw) < 128:
        raise RaywaveError(f"stage {stage.name}: validation frames of {vh}x{vw} are under 128 px, too small for RAFT")


def fraction_subset(n: int, fraction: float, seed: int) -> list[int]:
    """The first ceil(fraction * n) of one seeded permutation of range(n), sorted: nested across fractions."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, 0xDA7A)))
    return sorted(perm[: max(1, math.ceil(fraction * n))].tolist())


def epoch_order(n: int, seed: int, stage_index: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, stage_index, epoch)))


def step_positions(step: int, batch: int, rank: int = 0, world: int = 1) -> range:
    """Positions in the stage's sample stream that make up this rank's share of the global batch of `step`."""
    share = batch // world
    start = step * batch + rank * share
    return range(start, start + share)


def augmentor(stage: StageConfig, seed: int, stage_index: int) -> FlowAugmentor:
    if stage.augment:
        return FlowAugmentor(crop_size=tuple(stage.crop), min_scale=stage.min_scale, max_scale=stage.max_scale,
                             seed=seed, epoch=stage_index)  # fmt: skip
    return FlowAugmentor(crop_size=tuple(stage.crop), spatial_prob=0.0, stretch_prob=0.0, do_flip=False,
                         photometric=False, seed=seed, epoch=stage_index)  # fmt: skip


class StageBatches:
    """The batches of one stage: `batch(step, rank, world)` -> this rank's tensors of the global batch."""

    def __init__(self, train: FlowDataset, stage: StageConfig, stage_index: int, seed: int, fraction: float):
        self.train, self.stage, self.stage_index, self.seed = train, stage, stage_index, seed
        self.subset = fraction_subset(len(train), fraction, seed)
        self.aug = augmentor(stage, seed, stage_index)
        self._orders: dict[int, torch.Tensor] = {}

    def index(self, position: int) -> int:
        """The training pair at a position of the stream (epochs of seeded permutations of the subset)."""
        epoch, k = divmod(position, len(self.subset))
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(len(self.subset), self.seed, self.stage_index, epoch)}
        return self.subset[int(self._orders[epoch][k])]

    def batch(self, step: int, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        items = []
        for p in step_positions(step, self.stage.batch, rank, world):
            item = self.train.read(self.train.samples[self.index(p)])
            items.append(to_tensors(self.aug(item, index=p)))
        return {k: torch.stack([it[k] for it in items]) for k in ("img1", "img2", "flow", "valid")}


def view(ds: FlowDataset, indices: list[int]) -> FlowDataset:
    """The same dataset restricted to `indices` (a shallow copy with a shorter sample list)."""
    out = copy.copy(ds)
    out.samples = [ds.samples[i] for i in indices]
    return out
