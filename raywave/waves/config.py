"""Configuration of one retinal-wave simulation (YAML in/out, validated)."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from raywave.config import StrictModel
from raywave.waves.equations import STATE_VARIABLES
from raywave.waves.params import SACParameters

Backend = Literal["torch", "brian2"]
Brian2Target = Literal["numpy", "cython", "cpp_standalone"]
StorageDtype = Literal["float32", "float16", "uint8"]

#: Default uint8 quantisation ranges (physical units) per recordable variable.
DEFAULT_UINT8_RANGE: dict[str, tuple[float, float]] = {
    "C": (0.0, 600.0),
    "V": (-100.0, 60.0),
    "n": (0.0, 1.0),
    "S": (0.0, 1.0),
    "R": (0.0, 1.0),
    "A": (0.0, 8.0),
}


def _is_multiple(value: float, step: float) -> bool:
    if not math.isfinite(value / step):  # e.g. 1e308 s in ms
        return False
    k = round(value / step)
    return k >= 1 and abs(k * step - value) <= 1e-9 * max(1.0, abs(value))


class SimulationConfig(StrictModel):
    """One simulation: lattice, numerics, recording, storage and model parameters."""

    backend: Backend = Field("torch", description="integrator: torch (fast, CPU/CUDA) or brian2 (reference)")
    brian2_target: Brian2Target = Field("cython", description="Brian2 code-generation target")
    device: str = Field("auto", description="torch device: auto, cpu, cuda, cuda:1, ...")
    precision: Literal["float32", "float64"] = Field("float32", description="torch arithmetic precision")
    compile: Literal["auto", "native", "on", "off"] = Field(
        "auto",
        description="how the torch step runs: native (C++ kernel, CPU), on (torch.compile), off (eager); "
        "auto: native on the CPU, else torch.compile only for runs long enough to repay it",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads (torch) or None for the default")

    height: int = Field(64, ge=1, description="lattice rows (cells)")
    width: int = Field(64, ge=1, description="lattice columns (cells)")
    neighbours: Literal[4, 8] = Field(4, description="4 nearest or 8 surrounding neighbours")
    boundary: Literal["zero_flux", "periodic"] = Field("zero_flux", description="lattice boundary")
    spacing_um: float = Field(25.0, gt=0, description="SAC spacing (um), for speeds in um/s")

    dt_ms: float = Field(0.1, gt=0, description="integration step (ms)")
    frame_interval_ms: float = Field(100.0, gt=0, description="time between recorded frames (ms)")
    duration_s: float = Field(60.0, gt=0, description="recorded duration (s), after the transient")
    transient_s: float = Field(0.0, ge=0, description="simulated, then discarded, before recording (s)")
    seed: int = Field(0, ge=0, lt=2**31, description="seed of initial state and noise")

    record: list[str] = Field(default_factory=lambda: ["C"], description="recorded variables (C always)")
    storage_dtype: StorageDtype = Field("float16", description="on-disk frame dtype")
    uint8_range: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="per-variable (low, high) for uint8 storage"
    )
    checkpoint_every_s: float = Field(10.0, gt=0, description="checkpoint interval (simulated s)")

    params: SACParameters = Field(default_factory=SACParameters)

    @field_validator("record")
    @classmethod
    def _record_known(cls, v: list[str]) -> list[str]:
        unknown = [x for x in v if x not in STATE_VARIABLES]
        if unknown:
            raise ValueError(f"unknown variable(s) {unknown}; choose from {list(STATE_VARIABLES)}")
        return ["C"] + [x for x in dict.fromkeys(v) if x != "C"]

    @field_validator("device")
    @classmethod
    def _device_known(cls, v: str) -> str:
        if v not in ("auto", "cpu") and not v.startswith("cuda") and v != "mps":
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
        return v

    @model_validator(mode="after")
    def _consistent_times(self) -> SimulationConfig:
        if not _is_multiple(self.frame_interval_ms, self.dt_ms):
            raise ValueError(
                f"frame_interval_ms ({self.frame_interval_ms}) must be a whole multiple of dt_ms ({self.dt_ms})"
            )
        for name in ("duration_s", "checkpoint_every_s"):
            value_ms = getattr(self, name) * 1000.0
            if not _is_multiple(value_ms, self.frame_interval_ms):
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be a whole multiple of the frame interval "
                    f"({self.frame_interval_ms} ms)"
                )
        if self.transient_s > 0 and not _is_multiple(self.transient_s * 1000.0, self.frame_interval_ms):
            raise ValueError(
                f"transient_s ({self.transient_s}) must be a whole multiple of the frame interval "
                f"({self.frame_interval_ms} ms)"
            )
        for var, (lo, hi) in self.uint8_range.items():
            if var not in STATE_VARIABLES:
                raise ValueError(f"uint8_range: unknown variable {var!r}")
            if not hi > lo:
                raise ValueError(f"uint8_range[{var}]: high must exceed low")
        return self

    # --- derived quantities (integers, so no floating drift) ---
    @property
    def steps_per_frame(self) -> int:
        return round(self.frame_interval_ms / self.dt_ms)

    @property
    def n_frames(self) -> int:
        return round(self.duration_s * 1000.0 / self.frame_interval_ms)

    @property
    def transient_frames(self) -> int:
        return round(self.transient_s * 1000.0 / self.frame_interval_ms)

    @property
    def frames_per_chunk(self) -> int:
        return round(self.checkpoint_every_s * 1000.0 / self.frame_interval_ms)

    @property
    def n_cells(self) -> int:
        return self.height * self.width

    def quant_range(self, var: str) -> tuple[float, float]:
        return tuple(self.uint8_range.get(var, DEFAULT_UINT8_RANGE[var]))  # type: ignore[return-value]

    def fingerprint(self) -> str:
        """Hash of everything that determines the frames (not threads/compile/device choices)."""
        skip = {"threads", "compile", "checkpoint_every_s"}
        data = self.model_dump(mode="json", exclude=skip)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
