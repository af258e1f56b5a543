"""Sweep files and their expansion into trials, checked before anything starts (plain Python, no Ray).

A transfer sweep (`raywave sweep transfer`):

    name: transfer-small
    base: {variant: small, workers: 0, stages: [{name: chairs, steps: 40, batch: 2, crop: [128, 128]}]}
    strategies: [scratch, finetune, freeze_encoder]          # transfer strategies (scratch = the baseline)
    nfp:                                                     # NFP settings, each pretrained once (by fingerprint)
      small-i4: {dataset: runs/rw-dataset, variant: small, iters: 4, steps: 100, workers: 0}
    nfp_store: runs/nfp-store                                # where pretrained NFP runs live, shared by sweeps
    seeds: 3                                                 # or a list
    data_fraction: [1.0]                                     # the generalisation-efficiency axis
    grid: {stages.0.lr: [2e-4, 4e-4]}                        # any other `ofe train` key (dotted; list indices)
    resources: {cpus: 1, gpus: 0}                            # per trial
    max_concurrent_trials: 2
    asha: {grace_period: 20, reduction_factor: 2}            # optional early stopping on val EPE (not scratch)

An NFP sweep (`raywave sweep nfp`) has `base` (any `nfp pretrain` key), `grid`, `seeds`, `resources`,
`max_concurrent_trials`, `asha` (on val_ratio) and `compare` (the key whose values are compared, default iters).
Each (strategy x NFP setting x data fraction x grid point x seed) is one trial, named by a key made of its
parameters, so a resumed sweep finds every trial where it was.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from raywave.config import StrictModel, build
from raywave.errors import ConfigError

RESERVED = {"strategy": "strategies:", "nfp": "nfp: (settings by name)", "seed": "seeds:",
            "data_fraction": "data_fraction:", "out": "--out of the sweep",
            "address": "--address of the sweep"}  # fmt: skip


class Resources(StrictModel):
    """What one trial reserves. With `workers: 0` in the run config the trial trains in its own process on
    these CPUs/GPUs; with workers >= 1 it starts Ray Train workers (Tune over Train) and itself holds 0.01 CPU."""

    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)


class Asha(StrictModel):
    """ASHA early stopping (time = global training step); the scratch baseline is never stopped."""

    grace_period: int = Field(1, ge=1, description="steps before a trial can be stopped")
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = Field(None, ge=1, description="default: the runs' total steps")


class SweepCommon(StrictModel):
    name: str | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] | int = 3
    resources: Resources = Resources()
    max_concurrent_trials: int | None = Field(None, ge=1)
    asha: Asha | None = None
    intervals: bool = Field(True, description="the report gives intervals over seeds (needs >= 2 seeds)")
    target_epe: list[float] = Field(default_factory=lambda: [5.0, 3.0, 2.0])

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid entry {key!r} has no values; give a non-empty list or remove it")
            if key in RESERVED:
                raise ValueError(f"set {key!r} with {RESERVED[key]}, not in grid")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | int) -> list[int]:
        seeds = list(range(v)) if isinstance(v, int) else list(v)
        if not seeds:
            raise ValueError("no seeds; give a count >= 1 or a list")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {seeds}")
        return seeds

    def check_seeds(self) -> None:
        if self.intervals and len(self.seeds) < 2:  # type: ignore[arg-type]
            raise ConfigError(f"intervals over seeds need at least 2 seeds (got {self.seeds}); give seeds: 3 or "
                              "set intervals: false")  # fmt: skip

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


class TransferSweep(SweepCommon):
    strategies: list[str] = Field(min_length=1)
    nfp: dict[str, dict[str, Any]] = Field(default_factory=dict)
    nfp_store: str | None = None  # default: nfp-store next to the sweep folder
    data_fraction: list[float] = Field(default_factory=lambda: [1.0], min_length=1)

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, v: list[str]) -> list[str]:
        from raywave.models.transfer import STRATEGIES

        for s in v:
            if s not in STRATEGIES:
                raise ValueError(f"unknown transfer strategy {s!r}; choose from {', '.join(STRATEGIES)}")
        if len(set(v)) != len(v):
            raise ValueError(f"strategies repeat: {v}")
        return v


class NFPSweep(SweepCommon):
    compare: str = "iters"


@dataclass
class NFPSetting:
    """One NFP pretraining setting of a transfer sweep: its config and where its run lives."""

    name: str
    fingerprint: str
    run: str
    config: Any  # raywave.train.nfp_run.PretrainConfig


@dataclass
class TrialSpec:
    key: str
    params: dict[str, Any]  # strategy / nfp / seed / data_fraction / overrides (what the analysis groups by)
    config: dict[str, Any] = field(default_factory=dict)  # the run's full config (out filled in by the trial)


def set_path(data: dict[str, Any], key: str, value: Any) -> None:
    """`a.b.c = value` in nested mappings; a numeric part indexes a list (`stages.0.lr`), and a stage given
    by name becomes the mapping {name: ...} so that one of its keys can be set."""
    node: Any = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"cannot set {key!r}: {part!r} is not an index of a list of {len(node)}")
            idx = int(part)
            if last:
                node[idx] = value
                return
            if isinstance(node[idx], str):
                node[idx] = {"name": node[idx]}
            node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
                return
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"cannot set {key!r}: {'.'.join(parts[:i])!r} is not a mapping or list")


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def _short(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _key(*parts: str, overrides: dict[str, Any]) -> str:
    tag = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:6] if overrides else ""
    return "-".join(p for p in (*parts[:-1], f"g{tag}" if tag else "", parts[-1]) if p)


def _base_keys(base: dict[str, Any], what: str, reserved: tuple[str, ...] = tuple(RESERVED)) -> None:
    for key in base:
        if key in reserved:
            raise ConfigError(f"{what}: set {key!r} with {RESERVED[key]}, not in base")


def nfp_settings(sweep: TransferSweep, store: str) -> dict[str, NFPSetting]:
    """Each `nfp:` setting validated as an `nfp pretrain` config, named by its fingerprint in the store."""
    from raywave.train.nfp_run import PretrainConfig
    from raywave.train.nfp_run import identity as nfp_identity
    from raywave.train.record import fingerprint

    out = {}
    variant = sweep.base.get("variant", "basic")
    for name, data in sweep.nfp.items():
        if "out" in data:
            raise ConfigError(f"nfp setting {name!r}: no `out:` (runs are named by fingerprint in nfp_store)")
        cfg = build(PretrainConfig, {**data, "out": "x"}, what=f"nfp setting {name!r}")
        if cfg.variant != variant:
            raise ConfigError(f"nfp setting {name!r} pretrains the {cfg.variant} encoder but the OFE base variant "
                              f"is {variant}; set variant: {variant} in the setting or change base.variant",
                              )  # fmt: skip
        fp = fingerprint(nfp_identity(cfg))
        run = str(Path(store) / f"nfp-{fp}")
        out[name] = NFPSetting(name, fp, run, cfg.model_copy(update={"out": run}))
    return out


def transfer_trials(sweep: TransferSweep, nfp: dict[str, NFPSetting]) -> list[TrialSpec]:
    """Every trial, its OFE config validated (one line on the first bad one)."""
    from raywave.ofe.config import OFETrainConfig

    _base_keys(sweep.base, "sweep")
    sweep.check_seeds()
    needs_nfp = [s for s in sweep.strategies if s != "scratch"]
    if needs_nfp and not nfp:
        raise ConfigError(f"strategies {', '.join(needs_nfp)} copy NFP weights: add an `nfp:` section with at "
                          "least one pretraining setting")  # fmt: skip
    trials, seen = [], set()
    for strategy in sweep.strategies:
        for nfp_name in ([None] if strategy == "scratch" else list(nfp)):
            for fraction in sweep.data_fraction:
                for point in grid_points(sweep.grid):
                    for seed in sweep.seeds:  # type: ignore[union-attr]
                        data = json.loads(json.dumps(sweep.base))
                        for k, v in point.items():
                            set_path(data, k, v)
                        data.update(strategy=strategy, seed=seed, data_fraction=fraction,
                                    nfp=nfp[nfp_name].run if nfp_name else None)  # fmt: skip
                        what = f"trial {strategy} nfp={nfp_name} fraction={fraction:g} {point} seed={seed}"
                        cfg = build(OFETrainConfig, data, what=what)
                        key = _key(strategy, nfp_name or "none", f"f{_short(fraction)}", f"s{seed}", overrides=point)
                        if key in seen:
                            raise ConfigError(f"the sweep repeats a trial ({what}); remove the duplicate values")
                        seen.add(key)
                        params = {"strategy": strategy, "nfp": nfp_name, "seed": seed, "data_fraction": fraction,
                                  "overrides": point}  # fmt: skip
                        trials.append(TrialSpec(key, params, cfg.model_dump(mode="json")))
    return trials


def nfp_trials(sweep: NFPSweep) -> list[TrialSpec]:
    """Every trial of an NFP sweep, its `nfp pretrain` config validated."""
    from raywave.train.nfp_run import PretrainConfig

    _base_keys(sweep.base, "sweep", ("seed", "out", "address"))
    sweep.check_seeds()
    trials = []
    for point in grid_points(sweep.grid):
        for seed in sweep.seeds:  # type: ignore[union-attr]
            data = json.loads(json.dumps(sweep.base))
            for k, v in point.items():
                set_path(data, k, v)
            data.update(seed=seed, out="x")
            cfg = build(PretrainConfig, data, what=f"trial {point} seed={seed}")
            parts = [f"{k.split('.')[-1]}{_short(v)}" for k, v in point.items()] or ["base"]
            key = "-".join([*parts, f"s{seed}"]).replace("/", "_")
            over = {**point, sweep.compare: getattr(cfg, sweep.compare, point.get(sweep.compare))}
            trials.append(TrialSpec(key, {"seed": seed, "overrides": over}, cfg.model_dump(mode="json")))
    if len({t.key for t in trials}) != len(trials):
        raise ConfigError("the sweep repeats a trial; remove the duplicate grid values")
    return trials
