"""Configuration of an OFE training run: RAFT trained in stages (the reference's schedule), a transfer strategy,
the data (real FlyingChairs / MPI-Sintel roots, or synthetic flow generated into the run), precision and device.

Every option is a YAML key; the command-line options override the file (`raywave.config`'s one loader). A stage
is given by name (its preset, the reference's `train_standard.sh` settings) or as a mapping whose missing keys
come from the preset of its `name`:

    stages:
      - chairs                       # the preset: 100k steps, batch 10, lr 4e-4, crop 368x496, wd 1e-4, gamma 0.8
      - {name: sintel, steps: 2000}  # the Sintel preset with fewer steps
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from raywave.config import StrictModel
from raywave.config import load_config as load_model_config
from raywave.errors import ConfigError
from raywave.models.transfer import STRATEGIES

STAGE_NAMES = ("chairs", "sintel")

# The reference's stages (princeton-vl/RAFT train_standard.sh and its FlowAugmentor settings per dataset).
PRESETS: dict[str, dict[str, Any]] = {
    "chairs": dict(steps=100_000, batch=10, lr=4e-4, crop=[368, 496], weight_decay=1e-4, gamma=0.8,
                   val_iters=24, min_scale=-0.1, max_scale=1.0),  # fmt: skip
    "sintel": dict(steps=100_000, batch=6, lr=1.25e-4, crop=[368, 768], weight_decay=1e-5, gamma=0.85,
                   val_iters=32, min_scale=-0.2, max_scale=0.6),  # fmt: skip
}


class StageConfig(StrictModel):
    """One training stage: its dataset, schedule, optimiser settings, augmentation and validation set."""

    name: Literal["chairs", "sintel"]
    steps: int = Field(ge=1)
    batch: int = Field(ge=1)  # global batch (split evenly over the workers)
    lr: float = Field(gt=0)
    crop: list[int] = Field(min_length=2, max_length=2)  # [height, width]
    weight_decay: float = Field(ge=0)
    gamma: float = Field(gt=0, le=1)
    iters: int = Field(12, ge=1)  # refinement iterations in training
    val_iters: int = Field(24, ge=1)  # ... in validation
    val_every: int = Field(1000, ge=1)  # validate every this many steps (and at the end of the stage)
    val_pairs: int | None = Field(None, ge=1)  # at most this many validation pairs (None: all)
    augment: bool = True  # RAFT's photometric and spatial augmentations; False: a random crop only
    min_scale: float = -0.1
    max_scale: float = 1.0
    passes: list[Literal["clean", "final"]] = ["clean", "final"]  # sintel: training passes
    val_pass: Literal["clean", "final"] = "clean"  # sintel: validation pass
    val_scenes: int | list[str] = 2  # sintel: scenes held out for validation (a number drawn by seed, or names)
    clip: float = Field(1.0, gt=0)  # gradient-norm clip

    @field_validator("crop")
    @classmethod
    def _crop(cls, v: list[int]) -> list[int]:
        h, w = v
        if h < 128 or w < 128:
            raise ValueError(f"crop {h}x{w} is under 128 px: RAFT's 4-level correlation pyramid needs >= 128x128")
        if h % 8 or w % 8:
            raise ValueError(f"crop {h}x{w} must be a multiple of 8 in both sides")
        return v


class SyntheticChairs(StrictModel):
    """The embedded default for `chairs` stages: synthetic flow written in the FlyingChairs layout."""

    pairs: int = Field(100, ge=2)
    height: int = Field(384, ge=128)
    width: int = Field(512, ge=128)
    val_every: int = Field(5, ge=2)  # every val_every-th pair is a validation pair
    seed: int = 0


class SyntheticSintel(StrictModel):
    """The embedded default for `sintel` stages: synthetic flow written in the MPI-Sintel layout."""

    scenes: int = Field(4, ge=2)
    frames: int = Field(6, ge=2)
    height: int = Field(436, ge=128)
    width: int = Field(1024, ge=128)
    max_shift: float = Field(4.0, ge=0)
    seed: int = 0


class OFETrainConfig(StrictModel):
    strategy: str = "scratch"
    nfp: str | None = None  # NFP run directory or checkpoint (all strategies but scratch)
    variant: Literal["basic", "small"] = "basic"
    stages: list[StageConfig] = Field(default_factory=lambda: default_stages(), min_length=1)
    chairs_root: str | None = None  # None: synthetic data under <run>/data/synthetic-chairs
    sintel_root: str | None = None  # None: synthetic data under <run>/data/synthetic-sintel
    synthetic_chairs: SyntheticChairs = SyntheticChairs()
    synthetic_sintel: SyntheticSintel = SyntheticSintel()
    data_fraction: float = Field(1.0, gt=0, le=1)  # a seeded, nested subset of each stage's training pairs
    seed: int = 0  # initialisation, data order, augmentation and the data-fraction subset
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast (fp16 with a GradScaler); correlation in fp32
    checkpoint_every: int = Field(1000, ge=1)
    log_every: int = Field(10, ge=1)  # a metrics row (mean training loss, lr) every this many steps
    target_epe: list[float] = Field(default_factory=lambda: [5.0, 3.0, 2.0, 1.0])  # training-efficiency targets
    workers: int = Field(1, ge=0)  # Ray Train workers (0: the plain loop in this process, no Ray)
    # run options: not part of a run's identity (a resume may change them)
    out: str | None = None  # run directory (path or URI); the same --out resumes
    device: str = "auto"  # auto (a GPU per worker when the cluster has them), cpu, cuda
    cpus_per_worker: float | None = Field(None, gt=0)
    threads: int = Field(1, ge=1)  # torch threads per worker
    max_failures: int = Field(2, ge=0)  # worker-group restarts from the last checkpoint
    address: str | None = None  # Ray cluster (default: RAY_ADDRESS or an embedded Ray)

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"unknown transfer strategy {v!r}; choose from {', '.join(STRATEGIES)}")
        return v

    @field_validator("stages", mode="before")
    @classmethod
    def _stages(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        if not isinstance(v, list):
            return v
        return [stage(s) if isinstance(s, str) else _stage_mapping(s) for s in v]

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not v.startswith("cuda:"):
            raise ValueError(f"device {v!r}: choose auto, cpu or cuda")
        return v

    @model_validator(mode="after")
    def _check(self) -> OFETrainConfig:
        if self.strategy != "scratch" and not self.nfp:
            raise ValueError(f"strategy {self.strategy!r} copies NFP weights: give --nfp RUN_OR_CHECKPOINT")
        for s in self.stages:
            if s.batch % max(self.workers, 1):
                raise ValueError(f"stage {s.name}: batch {s.batch} does not split evenly over {self.workers} workers")
        if any(t <= 0 for t in self.target_epe):
            raise ValueError("target_epe values must be > 0")
        return self


RUN_KEYS = ("out", "device", "cpus_per_worker", "threads", "max_failures", "address")


def identity(cfg: OFETrainConfig) -> dict:
    """The config a resumed run must match (everything that decides the numbers)."""
    return cfg.model_dump(mode="json", exclude=set(RUN_KEYS))


def stage(name: str, **overrides: Any) -> StageConfig | dict:
    """A stage from the preset of `name` with `overrides`; an unknown name is left for validation to report."""
    if name not in PRESETS:
        raise ConfigError(f"unknown stage {name!r}; choose from {', '.join(STAGE_NAMES)}")
    return {"name": name, **PRESETS[name], **overrides}


def _stage_mapping(s: Any) -> Any:
    """A stage given as a mapping: the preset of its name under the mapping's keys."""
    if isinstance(s, dict) and isinstance(s.get("name"), str):
        return stage(s["name"], **{k: v for k, v in s.items() if k != "name"})
    return s


def default_stages() -> list[StageConfig]:
    return [StageConfig(**stage("chairs")), StageConfig(**stage("sintel"))]


def load_config(path: str | None, overrides: dict[str, Any] | None = None) -> OFETrainConfig:
    """The YAML file (if any) with the command line's non-None options on top, validated (one-line errors)."""
    return load_model_config(OFETrainConfig, path, overrides, what="ofe config")
