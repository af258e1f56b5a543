"""The fly's optic-flow task data: MPI-Sintel (official layout) rendered through the box eye, cached atomically.

Each scene's frames (`training/final`, greyscale / 255) and flow (`training/flow` .flo, divided by the frame
height) are centre-cropped to 70 % of their width and cut into overlapping vertical windows (3 × 417 px, starts
0, 149, 298 for Sintel's 1024-px frames), each rendered onto the 721 columns: 69 samples from 23 scenes. Frame k
is paired with the flow from frame k to k+1, so a scene of n frames gives n-1 rendered frames. The renderings are
cached per scene as .npz (written to a temp file and renamed); augmentations and resampling are applied per
sample afterwards.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from raywave.data.flow_datasets import scene_split, sintel_scenes
from raywave.data.flow_io import read_flo, read_image
from raywave.errors import RaywaveError
from raywave.fly import augment as aug
from raywave.fly.eye import BoxEye
from raywave.io import save_npz_atomic

TRAIN_SCENES = ["alley_1", "alley_2", "ambush_4", "ambush_5", "ambush_6", "ambush_7", "bamboo_2", "bandage_2",
                "cave_2", "market_5", "market_6", "shaman_2", "shaman_3", "sleeping_1", "sleeping_2", "temple_2",
                "temple_3"]  # fmt: skip
VAL_SCENES = ["ambush_2", "bamboo_1", "bandage_1", "cave_4", "market_2", "mountain_1"]
SINTEL_FPS = 24.0
RENDER_VERSION = 1  # bump when the rendering changes, so caches are rebuilt


@dataclass(frozen=True)
class RenderConfig:
    dstype: str = "final"
    crop_fraction: float = 0.7
    splits: int = 3
    window: int = 417
    extent: int = 15
    kernel: int = 13


def windows(width: int, cfg: RenderConfig) -> list[tuple[int, int]]:
    """(x0, x1) pixel ranges of the vertical windows in a frame of `width` px."""
    crop = int(width * cfg.crop_fraction)
    if crop < cfg.window:
        raise RaywaveError(
            f"frames {width} px wide give a {crop}-px centre crop, narrower than the {cfg.window}-px "
            "window; use wider frames or a larger --crop-fraction"
        )
    left = (width - crop) // 2
    step = (crop - cfg.window) // (cfg.splits - 1) if cfg.splits > 1 else 0
    return [(left + k * step, left + k * step + cfg.window) for k in range(cfg.splits)]


def split_scenes(root: str | Path, dstype: str = "final", val: int = 1, seed: int = 0) -> tuple[list, list]:
    """(train, val) scenes: the published 17/6 split when the root holds the official scenes, else a held-out draw."""
    scenes = sintel_scenes(root, dstype)
    if set(TRAIN_SCENES + VAL_SCENES) <= set(scenes):
        return list(TRAIN_SCENES), list(VAL_SCENES)
    return scene_split(scenes, val, seed)


def _grey(path: Path) -> np.ndarray:
    return np.asarray(Image.fromarray(read_image(path)).convert("L"), dtype=np.float32) / 255


def render_scene(root: Path, scene: str, cfg: RenderConfig) -> list[dict[str, np.ndarray]]:
    """Render one scene: a dict of lum (n-1, columns), flow (n-1, columns, 2) per window."""
    frames = sorted((root / "training" / cfg.dstype / scene).glob("frame_*.png"))
    if len(frames) < 2:
        raise RaywaveError(f"Sintel scene {scene} in {root} has {len(frames)} frames; at least 2 are needed")
    eye = BoxEye(cfg.extent, cfg.kernel)
    lum, flow = [], []
    for f in frames[:-1]:
        flo = root / "training" / "flow" / scene / f"{f.stem}.flo"
        if not flo.exists():
            raise RaywaveError(f"{flo} is missing: every frame but a scene's last needs its .flo")
        lum.append(_grey(f))
        flow.append(read_flo(flo) / lum[-1].shape[0])
    lum_t, flow_t = torch.from_numpy(np.stack(lum)), torch.from_numpy(np.stack(flow))
    out = []
    for x0, x1 in windows(lum_t.shape[-1], cfg):
        out.append({"lum": eye.luminance(lum_t[..., x0:x1]).numpy(),
                    "flow": eye.flow(flow_t[:, :, x0:x1]).numpy()})  # fmt: skip
    return out


class RenderCache:
    """Per-scene renderings under `cache/<key>/`, key = root, render config and version; atomic writes."""

    def __init__(self, root: str | Path, cache: str | Path, cfg: RenderConfig):
        self.root, self.cfg = Path(root).resolve(), cfg
        key = json.dumps({"root": str(self.root), **asdict(cfg), "version": RENDER_VERSION}, sort_keys=True)
        self.dir = Path(cache) / hashlib.sha256(key.encode()).hexdigest()[:16]

    def get(self, scene: str) -> list[dict[str, np.ndarray]]:
        path = self.dir / f"{scene}.npz"
        if path.exists():
            try:
                with np.load(path) as z:
                    return [{"lum": z[f"lum{k}"], "flow": z[f"flow{k}"]} for k in range(self.cfg.splits)]
            except (OSError, ValueError, KeyError):
                path.unlink()  # a damaged cache entry is rebuilt
        parts = render_scene(self.root, scene, self.cfg)
        save_npz_atomic(path, **{f"{k}{i}": p[k] for i, p in enumerate(parts) for k in ("lum", "flow")})
        return parts


class FlySintel:
    """Samples (scene, window) of rendered Sintel: `sample(i, epoch)` -> lum (T, columns), flow (T, columns, 2).

    With `augment`, a random `n_frames` window and the published augmentations, drawn from (seed, epoch, i);
    without, the first `n_frames` frames as they are. Frames are resampled from 24 fps to steps of `dt`.
    """

    def __init__(
        self,
        root: str | Path,
        scenes: list[str],
        cache: str | Path,
        n_frames: int = 19,
        dt: float = 0.02,
        augment: aug.AugmentConfig | None = None,
        seed: int = 0,
        cfg: RenderConfig | None = None,
    ):
        self.cfg = cfg or RenderConfig()
        if n_frames < 1 or dt <= 0:
            raise RaywaveError(f"n_frames must be >= 1 and dt > 0 (got {n_frames}, {dt})")
        self.cache = RenderCache(root, cache, self.cfg)
        available = sintel_scenes(root, self.cfg.dstype)
        missing = [s for s in scenes if s not in available]
        if missing:
            raise RaywaveError(f"Sintel scenes {missing} are not in {root}; available: {available}")
        self.items = [(s, k) for s in scenes for k in range(self.cfg.splits)]
        self.n_frames, self.dt, self.augment, self.seed = n_frames, dt, augment, seed

    def __len__(self) -> int:
        return len(self.items)

    def render_all(self, progress=None) -> None:
        for scene in dict.fromkeys(s for s, _ in self.items):
            self.cache.get(scene)
            if progress:
                progress(scene)

    def sample(self, i: int, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        scene, split = self.items[i]
        part = self.cache.get(scene)[split]
        lum, flow = torch.from_numpy(part["lum"]), torch.from_numpy(part["flow"])
        rng = np.random.default_rng([self.seed, epoch, i])
        n = min(self.n_frames, lum.shape[0])
        start = int(rng.integers(0, lum.shape[0] - n + 1)) if self.augment else 0
        lum, flow = aug.resample(lum[start : start + n], flow[start : start + n], SINTEL_FPS, self.dt)
        if self.augment:
            lum, flow = aug.augment(lum, flow, aug.sample_params(rng, self.augment), self.augment)
        return lum.float(), flow.float()

    def order(self, epoch: int, shuffle: bool = True) -> np.ndarray:
        """Sample order of an epoch (a permutation drawn from (seed, epoch), or as listed)."""
        return np.random.default_rng([self.seed, epoch, 7]).permutation(len(self)) if shuffle else np.arange(len(self))

    def batch(self, indices, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(lum (B, T, columns), flow (B, T, columns, 2)) of the given samples, cut to the shortest."""
        samples = [self.sample(int(i), epoch) for i in indices]
        steps = min(s[0].shape[0] for s in samples)
        return torch.stack([s[0][:steps] for s in samples]), torch.stack([s[1][:steps] for s in samples])

    def batches(self, batch_size: int, epoch: int, shuffle: bool = True):
        """Batches of one epoch; every sample is seen once."""
        order = self.order(epoch, shuffle)
        for k in range(0, len(order), batch_size):
            yield self.batch(order[k : k + batch_size], epoch)
