"""A sweep of simulations: a base SimulationConfig, a grid and/or a list of cases, times seeds.

    base: {height: 48, width: 48, duration_s: 60, transient_s: 10, storage_dtype: uint8}
    grid: {params.gA: [0.02, 0.03], height: [32, 48]}      # cartesian product of dotted keys
    cases: [{params.gA: 0.05, duration_s: 30}]             # extra explicit parameter sets
    seeds: [0, 1, 2]                                        # or an integer n meaning 0..n-1
    workers: 2                                              # concurrent simulations (Ray actors)

Each (parameter set, seed) is one simulation named by the fingerprint of its resolved SimulationConfig, so the
same simulation always lands in the same place and is written exactly once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from raywave.config import StrictModel, build, load_config, set_dotted
from raywave.errors import ConfigError
from raywave.waves.config import SimulationConfig


class SweepConfig(StrictModel):
    """What to simulate and how many simulations run at once."""

    base: dict[str, Any] = Field(default_factory=dict, description="SimulationConfig fields shared by all runs")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values (cartesian product)")
    cases: list[dict[str, Any]] = Field(default_factory=list, description="explicit parameter sets (dotted keys)")
    seeds: list[int] | int = Field(default_factory=lambda: [0], description="seeds, or n for seeds 0..n-1")
    workers: int | None = Field(None, ge=1, description="concurrent simulations (default: one per CPU)")
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs reserved per simulation actor")
    gpus_per_worker: float = Field(0.0, ge=0, description="Ray GPUs per simulation actor (torch on CUDA)")
    max_retries: int = Field(3, ge=0, description="restarts of a simulation actor that dies (Ray retries)")
    analyze: bool = Field(True, description="compute wave statistics into each simulation's manifest")

    @field_validator("grid")
    @classmethod
    def _grid_nonempty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"grid entry {key!r} has no values; give at least one or remove it")
        return v

    @model_validator(mode="after")
    def _no_empty_grid(self) -> SweepConfig:
        if "grid" in self.model_fields_set and not self.grid:
            raise ValueError("grid is empty; give at least one key with values, or remove `grid:` to run the base "
                             "configuration (and any cases) only")  # fmt: skip
        return self

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | int) -> list[int]:
        seeds = list(range(v)) if isinstance(v, int) else list(v)
        if not seeds:
            raise ValueError("no seeds; give a list of seeds or a count >= 1")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {seeds}")
        return seeds

    def fingerprint(self) -> str:
        data = self.model_dump(mode="json", include={"base", "grid", "cases", "seeds"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SimSpec:
    """One simulation of a sweep."""

    sim_id: str
    config: SimulationConfig
    overrides: dict[str, Any]  # what distinguishes it within the sweep (grid/case values and seed)


def sim_id_of(cfg: SimulationConfig) -> str:
    return f"sim-{cfg.fingerprint()}"


def load_sweep(path: str | Path, workers: int | None = None) -> tuple[SweepConfig, list[SimSpec]]:
    """A sweep file (with `workers` from the command line on top) and its simulations, all validated."""
    sweep = load_config(SweepConfig, path, {"workers": workers}, what="sweep")
    return sweep, expand(sweep)


def expand(sweep: SweepConfig) -> list[SimSpec]:
    """Every simulation of the sweep, validated; duplicates and empty sweeps are errors."""
    keys = list(sweep.grid)
    points = [dict(zip(keys, values, strict=True)) for values in itertools.product(*sweep.grid.values())]
    if sweep.cases:
        points = [dict(p, **c) for c in sweep.cases for p in points] if keys else [dict(c) for c in sweep.cases]
    if not points:
        raise ConfigError("sweep is empty: give a non-empty grid or cases")
    specs: list[SimSpec] = []
    seen: dict[str, dict] = {}
    for point in points:
        if "seed" in point:
            raise ConfigError("set seeds with `seeds:`, not inside grid or cases")
        for seed in sweep.seeds:  # type: ignore[union-attr]
            data = json.loads(json.dumps(sweep.base))  # deep copy
            overrides = dict(point, seed=seed)
            for key, value in overrides.items():
                set_dotted(data, key, value)
            cfg = build(SimulationConfig, data, what=f"sweep simulation {overrides}")
            sid = sim_id_of(cfg)
            if sid in seen:
                raise ConfigError(f"sweep repeats a simulation: {overrides} is the same as {seen[sid]}")
            seen[sid] = overrides
            specs.append(SimSpec(sid, cfg, overrides))
    return specs
