"""The fly training config and its data: the typed config (one loader, one-line errors), the learning-rate
schedule, and the training and validation sets (MPI-Sintel, or synthetic flow written in its layout)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from raywave.config import StrictModel
from raywave.config import load_config as load_config_file
from raywave.fly.augment import AugmentConfig
from raywave.fly.sintel import FlySintel, RenderConfig, split_scenes


class SyntheticData(StrictModel):
    """The embedded default data: synthetic flow written in the MPI-Sintel layout (no download)."""

    scenes: int = Field(4, ge=2)
    frames: int = Field(8, ge=2)
    height: int = Field(436, ge=391)
    width: int = Field(1024, ge=600)
    layers: int | None = Field(None, ge=0)  # moving shapes per scene (None: 2-5 at random)
    max_shift: float = Field(4.0, ge=0)  # px per frame
    seed: int = 0


class FlyTrainConfig(StrictModel):
    sintel_root: str | None = None  # None -> synthetic data under <out>/synthetic-sintel
    synthetic: SyntheticData = SyntheticData()
    connectome: str | None = None  # None -> the published spec from the flyvis wheel
    cache: str | None = None  # rendered-sample cache; None -> <out>/render-cache
    seed: int = 0
    iterations: int = Field(250_000, ge=1)
    batch_size: int = Field(4, ge=1)
    n_frames: int = Field(19, ge=2)
    dt: float = Field(0.02, gt=0)
    t_pre: float = Field(0.5, ge=0)
    lr_start: float = Field(5e-5, gt=0)
    lr_end: float = Field(5e-6, gt=0)
    lr_steps: int = Field(10, ge=1)
    activity_penalty: float = Field(0.1, ge=0)
    activity_baseline: float = 5.0
    below_baseline_weight: float = 1.0
    above_baseline_weight: float = 0.1
    penalty_stop: int = Field(150_000, ge=0)
    checkpoint_every: int = Field(3_600, ge=1)
    val_scenes: int = Field(1, ge=1)  # held-out scenes when the root is not the official Sintel
    augment: bool = True
    splits: int = Field(3, ge=1)
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"

    @model_validator(mode="after")
    def _check(self) -> FlyTrainConfig:
        if self.lr_end > self.lr_start:
            raise ValueError("lr_end must not exceed lr_start")
        return self


def load_config(path: str | None, overrides: dict[str, Any]) -> FlyTrainConfig:
    """The fly training config through the project's one config loader (one-line errors)."""
    return load_config_file(FlyTrainConfig, path, overrides, what="fly train config")


def learning_rate(cfg: FlyTrainConfig, it: int) -> float:
    """Stepwise geometric decay from lr_start to lr_end in lr_steps equal steps over the run."""
    if cfg.lr_steps == 1:
        return cfg.lr_start
    k = min(cfg.lr_steps - 1, it * cfg.lr_steps // cfg.iterations)
    return cfg.lr_start * (cfg.lr_end / cfg.lr_start) ** (k / (cfg.lr_steps - 1))


def synthetic_root(out: Path, s: SyntheticData) -> Path:
    """The embedded default data under `out` (written once, atomically: a temp tree renamed into place)."""
    root = out / "synthetic-sintel"
    if not (root / "training" / "flow").is_dir():
        from raywave.data.synthetic_flow import write_sintel

        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".synthetic-"))
        try:
            write_sintel(
                tmp,
                scenes=s.scenes,
                frames=s.frames,
                h=s.height,
                w=s.width,
                seed=s.seed,
                n_layers=s.layers,
                max_shift=s.max_shift,
            )
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def prepare_data(cfg: FlyTrainConfig, out: Path) -> tuple[FlySintel, FlySintel]:
    root = Path(cfg.sintel_root) if cfg.sintel_root else synthetic_root(out, cfg.synthetic)
    render = RenderConfig(splits=cfg.splits)
    train_scenes, val_scenes = split_scenes(root, render.dstype, cfg.val_scenes, cfg.seed)
    cache = Path(cfg.cache) if cfg.cache else out / "render-cache"
    aug = AugmentConfig() if cfg.augment else None
    train = FlySintel(root, train_scenes, cache, cfg.n_frames, cfg.dt, aug, cfg.seed, render)
    val = FlySintel(root, val_scenes, cache, cfg.n_frames, cfg.dt, None, cfg.seed, render)
    return train, val
