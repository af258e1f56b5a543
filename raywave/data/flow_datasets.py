"""FlyingChairs and MPI-Sintel in their official layouts, as plain torch map-style datasets.

An item is a dict of numpy arrays: img1, img2 (H, W, 3) uint8, flow (H, W, 2) float32, valid (H, W) bool, and
for Sintel occluded (H, W) bool where the occlusion masks exist. With an augmentor (raywave.data.flow_augment)
the pair, flow and masks are transformed consistently. `to_tensors` turns an item into RAFT's inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raywave.data.flow_io import check_sample_shapes, read_flo, read_image
from raywave.errors import RaywaveError

CHAIRS_LAYOUT = "data/NNNNN_img1.ppm, data/NNNNN_img2.ppm, data/NNNNN_flow.flo and FlyingChairs_train_val.txt"
SINTEL_LAYOUT = ("training/{clean,final}/<scene>/frame_NNNN.png and training/flow/<scene>/frame_NNNN.flo "
                 "(optionally training/occlusions and training/invalid)")  # fmt: skip


class FlowDataset:
    """Base: a list of samples (paths), optional augmentation, read on access."""

    samples: list[dict[str, Any]]

    def __init__(self, augmentor=None):
        self.augmentor = augmentor
        self.samples = []

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, s: dict[str, Any]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        item = self.read(self.samples[i])
        check_sample_shapes(item, {k: str(v) for k, v in self.samples[i].items()})  # a .flo of another size
        if self.augmentor is not None:
            item = self.augmentor(item, index=i)
        return item


class FlyingChairs(FlowDataset):
    """FlyingChairs (Dosovitskiy et al. 2015): `split` train (1) or val (2) from FlyingChairs_train_val.txt."""

    def __init__(self, root: str | Path, split: str = "train", augmentor=None):
        super().__init__(augmentor)
        root = Path(root)
        data = root / "data" if (root / "data").is_dir() else root
        flows = sorted(data.glob("*_flow.flo"))
        split_file = root / "FlyingChairs_train_val.txt"
        if not flows or not split_file.exists():
            raise RaywaveError(f"{str(root)!r} is not a FlyingChairs root: expected {CHAIRS_LAYOUT}")
        if split not in ("train", "val"):
            raise RaywaveError(f"FlyingChairs split must be train or val, got {split!r}")
        labels = split_file.read_text().split()
        if len(labels) != len(flows):
            raise RaywaveError(f"{split_file} lists {len(labels)} pairs but {data} holds {len(flows)} flows")
        want = "1" if split == "train" else "2"
        for flo, label in zip(flows, labels, strict=True):
            if label == want:
                stem = str(flo)[: -len("_flow.flo")]
                self.samples.append({"img1": f"{stem}_img1.ppm", "img2": f"{stem}_img2.ppm", "flow": str(flo)})

    def read(self, s: dict[str, Any]) -> dict[str, np.ndarray]:
        flow = read_flo(s["flow"])
        return {"img1": read_image(s["img1"]), "img2": read_image(s["img2"]), "flow": flow,
                "valid": np.ones(flow.shape[:2], bool)}  # fmt: skip


def sintel_scenes(root: str | Path, dstype: str = "clean") -> list[str]:
    base = Path(root) / "training" / dstype
    if not base.is_dir() or not (Path(root) / "training" / "flow").is_dir():
        raise RaywaveError(f"{str(root)!r} is not an MPI-Sintel root: expected {SINTEL_LAYOUT}")
    return sorted(p.name for p in base.iterdir() if p.is_dir())


def scene_split(scenes: list[str], val_scenes: list[str] | int = 2, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, val) scenes: the named ones, or `val_scenes` drawn at random, held out whole."""
    if isinstance(val_scenes, int):
        val = sorted(np.random.default_rng(seed).choice(scenes, size=min(val_scenes, len(scenes) - 1),
                                                        replace=False).tolist())  # fmt: skip
    else:
        unknown = sorted(set(val_scenes) - set(scenes))
        if unknown:
            raise RaywaveError(f"unknown Sintel scenes {unknown}; the root has {scenes}")
        val = sorted(val_scenes)
    return [s for s in scenes if s not in val], val


class MpiSintel(FlowDataset):
    """MPI-Sintel training data (Butler et al. 2012): consecutive frame pairs of the given scenes and pass."""

    def __init__(self, root: str | Path, dstype: str = "clean", scenes: list[str] | None = None, augmentor=None):
        super().__init__(augmentor)
        if dstype not in ("clean", "final"):
            raise RaywaveError(f"Sintel pass must be clean or final, got {dstype!r}")
        root = Path(root)
        available = sintel_scenes(root, dstype)
        for scene in scenes if scenes is not None else available:
            if scene not in available:
                raise RaywaveError(f"Sintel scene {scene!r} is not in {root}; available: {available}")
            frames = sorted((root / "training" / dstype / scene).glob("frame_*.png"))
            for f1, f2 in zip(frames[:-1], frames[1:], strict=True):
                name = f1.stem
                sample = {"img1": str(f1), "img2": str(f2), "scene": scene, "frame": name,
                          "flow": str(root / "training" / "flow" / scene / f"{name}.flo")}  # fmt: skip
                for extra in ("occlusions", "invalid"):
                    p = root / "training" / extra / scene / f"{name}.png"
                    if p.exists():
                        sample[extra] = str(p)
                self.samples.append(sample)

    def read(self, s: dict[str, Any]) -> dict[str, np.ndarray]:
        flow = read_flo(s["flow"])
        valid = np.ones(flow.shape[:2], bool)
        if "invalid" in s:
            valid &= read_image(s["invalid"])[..., 0] < 128
        item = {"img1": read_image(s["img1"]), "img2": read_image(s["img2"]), "flow": flow, "valid": valid}
        if "occlusions" in s:
            item["occluded"] = read_image(s["occlusions"])[..., 0] >= 128
        return item


def to_tensors(item: dict[str, np.ndarray]) -> dict:
    """(3, H, W) float images 0-255, (2, H, W) flow, (H, W) valid/occluded, as torch tensors."""
    import torch

    def t(a: np.ndarray):
        return torch.from_numpy(a if a.flags.writeable and a.flags.c_contiguous else np.array(a))

    out = {
        "img1": t(item["img1"]).permute(2, 0, 1).float(),
        "img2": t(item["img2"]).permute(2, 0, 1).float(),
        "flow": t(item["flow"]).permute(2, 0, 1).float(),
        "valid": t(item["valid"]).float(),
    }
    if "occluded" in item:
        out["occluded"] = t(item["occluded"])
    return out
