"""On-disk layout of one simulation run: chunked frames, checkpoints and a manifest, all written atomically.

    <run>/config.yaml                 the resolved SimulationConfig (a resume must match its fingerprint)
    <run>/manifest.json               status, frame scale per variable, chunk list with sha256, timings
    <run>/frames/<var>_<chunk>.npy    (frames, H, W) in the storage dtype; value = offset + scale * stored
    <run>/checkpoints/state_<chunk>.npz  full state after chunk <chunk> (only the latest is kept)
    <run>/.raywave.lock               the writer lock (raywave.lock): one writer per run

A chunk's frames are written before its checkpoint, and the manifest last: the manifest is the authority,
so a run killed at any point resumes from the last chunk the manifest lists. Readers check every chunk they
read against the manifest (shape, dtype, sha256) and refuse a failed run or one without frames yet.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raywave import __version__
from raywave.config import load_model, save_model
from raywave.errors import RaywaveError
from raywave.io import save_npy_atomic, save_npz_atomic, sha256_file, write_json_atomic
from raywave.lock import is_lock_file
from raywave.waves.config import SimulationConfig
from raywave.waves.equations import STATE_VARIABLES

MANIFEST = "manifest.json"
CONFIG = "config.yaml"


def encode(values: np.ndarray, dtype: str, lo: float, hi: float) -> tuple[np.ndarray, int]:
    """Physical float values -> storage dtype; returns (encoded, number of clipped values for uint8)."""
    if dtype == "float32":
        return values.astype(np.float32), 0
    if dtype == "float16":
        return values.astype(np.float16), 0
    scaled = (values - lo) * (255.0 / (hi - lo))
    clipped = int(np.count_nonzero((scaled < -0.5) | (scaled > 255.5)))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8), clipped


def scale_of(dtype: str, lo: float, hi: float) -> tuple[float, float]:
    """(offset, scale) such that value = offset + scale * stored."""
    return (lo, (hi - lo) / 255.0) if dtype == "uint8" else (0.0, 1.0)


@dataclass
class Chunk:
    index: int
    first_frame: int  # index into the recorded frames
    n_frames: int
    end_step: int  # absolute integration step at the chunk's end


class RunStore:
    """A run directory: create, resume, append chunks, read frames back."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # --- paths ---
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def frame_path(self, var: str, chunk: int) -> Path:
        return self.root / "frames" / f"{var}_{chunk:06d}.npy"

    def checkpoint_path(self, chunk: int) -> Path:
        return self.root / "checkpoints" / f"state_{chunk:06d}.npz"

    # --- manifest ---
    def exists(self) -> bool:
        return self.manifest_path.exists()

    def manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise RaywaveError(
                f"{str(self.root)!r} is not a raywave run (no {MANIFEST}); run `raywave waves simulate` first"
            ) from None
        except (json.JSONDecodeError, OSError) as exc:
            raise RaywaveError(f"{self.manifest_path} is unreadable or corrupt ({exc})") from None

    def config(self) -> SimulationConfig:
        return load_model(SimulationConfig, self.root / CONFIG)

    def check_target(self, cfg: SimulationConfig, overwrite: bool = False) -> dict | None:
        """Refuse a directory that holds something else, before any work; the manifest of a run to resume."""
        if self.exists():
            if overwrite:
                return None
            man = self.manifest()
            if man.get("fingerprint") != cfg.fingerprint():
                raise RaywaveError(
                    f"{str(self.root)!r} holds a run with a different configuration; "
                    "use another --out, or --overwrite to replace it"
                )
            return man
        if self.root.exists() and self._foreign_entries():  # never delete what is not a raywave run
            raise RaywaveError(f"{str(self.root)!r} exists and is not a raywave run; choose an empty --out")
        return None

    def start(self, cfg: SimulationConfig, backend: str, overwrite: bool = False) -> dict:
        """Begin a new run or return the manifest of the matching one to resume."""
        man = self.check_target(cfg, overwrite)
        if man is not None:
            return man
        if self.exists():  # --overwrite
            self._clear()
        self.root.mkdir(parents=True, exist_ok=True)
        save_model(cfg, self.root / CONFIG)
        variables = {}
        for var in cfg.record:
            lo, hi = cfg.quant_range(var)
            offset, scale = scale_of(cfg.storage_dtype, lo, hi)
            variables[var] = {"dtype": cfg.storage_dtype, "offset": offset, "scale": scale, "clipped": 0}
        man = {
            "format": "raywave.waves.run/1",
            "raywave_version": __version__,
            "fingerprint": cfg.fingerprint(),
            "backend": backend,
            "status": "running",
            "shape": [cfg.height, cfg.width],
            "frame_interval_ms": cfg.frame_interval_ms,
            "first_frame_time_s": cfg.transient_s + cfg.frame_interval_ms / 1000.0,
            "n_frames_total": cfg.n_frames,
            "n_frames": 0,
            "variables": variables,
            "chunks": [],
            "simulated_steps": 0,
            "wall_seconds": 0.0,
        }
        write_json_atomic(self.manifest_path, man)
        return man

    def _foreign_entries(self) -> list[str]:
        """Entries other than the lock and a config.yaml left by a run killed before its first manifest."""
        return [p.name for p in self.root.iterdir() if not is_lock_file(p.name) and p.name != CONFIG]

    def _clear(self) -> None:
        """Remove the run's contents (for --overwrite), keeping the writer lock the caller holds."""
        for p in self.root.iterdir():
            if is_lock_file(p.name):
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()

    def fail(self, man: dict, reason: str) -> dict:
        """Mark the run failed (never complete): readers refuse it, a re-run reports `reason` again."""
        man = dict(man, status="failed", error=reason)
        write_json_atomic(self.manifest_path, man)
        return man

    def append_chunk(self, man: dict, chunk: Chunk, frames: dict[str, np.ndarray], state: dict, wall: float) -> dict:
        """Write a chunk's frames, then its checkpoint, then the manifest (the commit point)."""
        files = {}
        if chunk.n_frames:
            for var, meta in man["variables"].items():
                cfg_lo = meta["offset"]
                cfg_hi = meta["offset"] + 255.0 * meta["scale"]
                data, clipped = encode(frames[var], meta["dtype"], cfg_lo, cfg_hi)
                path = self.frame_path(var, chunk.index)
                save_npy_atomic(path, data)
                meta["clipped"] += clipped
                files[var] = {"file": str(path.relative_to(self.root)), "sha256": sha256_file(path)}
        save_npz_atomic(
            self.checkpoint_path(chunk.index),
            step=np.int64(chunk.end_step),
            **{v: np.asarray(state[v], dtype=np.float64) for v in STATE_VARIABLES},
        )
        man = dict(man)
        man["chunks"] = [c for c in man["chunks"] if c["index"] < chunk.index] + [
            {"index": chunk.index, "first_frame": chunk.first_frame, "n_frames": chunk.n_frames,
             "end_step": chunk.end_step, "files": files}
        ]  # fmt: skip
        man["n_frames"] = chunk.first_frame + chunk.n_frames
        man["simulated_steps"] = chunk.end_step
        man["wall_seconds"] = man["wall_seconds"] + wall
        write_json_atomic(self.manifest_path, man)
        for old in (self.root / "checkpoints").glob("state_*.npz"):
            if old != self.checkpoint_path(chunk.index):
                old.unlink(missing_ok=True)
        return man

    def finish(self, man: dict, extra: dict) -> dict:
        man = dict(man, status="complete", **extra)
        write_json_atomic(self.manifest_path, man)
        return man

    def load_checkpoint(self, man: dict) -> tuple[dict[str, np.ndarray], int] | None:
        if not man["chunks"]:
            return None
        last = man["chunks"][-1]
        path = self.checkpoint_path(last["index"])
        try:
            with np.load(path) as z:
                state = {v: z[v] for v in STATE_VARIABLES}
                step = int(z["step"])
        except (OSError, KeyError, ValueError) as exc:
            raise RaywaveError(f"checkpoint {path} is missing or corrupt ({exc}); re-run with --overwrite") from None
        if step != last["end_step"]:
            raise RaywaveError(f"checkpoint {path} does not match the manifest; re-run with --overwrite")
        return state, step

    # --- reading ---
    def readable_manifest(self) -> dict:
        """The manifest of a run that has frames to read; a failed or frameless run is one clear error."""
        man = self.manifest()
        if man.get("status") == "failed":
            raise RaywaveError(f"run {str(self.root)!r} failed: {man.get('error', 'see its manifest')}")
        if not man.get("n_frames"):
            raise RaywaveError(
                f"run {str(self.root)!r} has no frames yet (it stopped before its first checkpoint); "
                f"re-run the same `raywave waves simulate --out {self.root}` command to continue it"
            )
        return man

    def frames(self, var: str = "C", verify: bool = True) -> np.ndarray:
        """All recorded frames of `var` in physical units, float32 (n_frames, H, W), each chunk checked against
        the manifest (shape and dtype always; sha256 when `verify`, the default: hashing costs ~1 s per GB)."""
        man = self.readable_manifest()
        if var not in man["variables"]:
            raise RaywaveError(f"variable {var!r} was not recorded in {self.root}; recorded: {list(man['variables'])}")
        meta = man["variables"][var]
        parts = [raw for _, raw in self.iter_stored(var, verify, man)]
        h, w = man["shape"]
        if not parts:
            return np.zeros((0, h, w), np.float32)
        raw = np.concatenate(parts, axis=0)
        return (meta["offset"] + meta["scale"] * raw.astype(np.float32)).astype(np.float32)

    def iter_stored(self, var: str = "C", verify: bool = False, man: dict | None = None):
        """Yield (first_frame, frames as stored) per chunk, in the storage dtype (no conversion).

        Each chunk must have the shape and dtype the manifest gives; with `verify` its sha256 must match too."""
        man = man or self.manifest()
        h, w = man["shape"]
        dtype = np.dtype(man["variables"][var]["dtype"])
        for c in man["chunks"]:
            if not c["n_frames"]:
                continue
            entry = c["files"][var]
            path = self.root / entry["file"]
            fix = "re-run with --overwrite to simulate it again"
            try:
                if verify and sha256_file(path) != entry["sha256"]:
                    raise RaywaveError(f"{path} is corrupt (its sha256 differs from the manifest's); {fix}")
                raw = np.load(path)
            except (OSError, ValueError, EOFError) as exc:
                raise RaywaveError(f"{path} is missing or corrupt ({type(exc).__name__}); {fix}") from None
            if raw.shape != (c["n_frames"], h, w) or raw.dtype != dtype:
                raise RaywaveError(
                    f"{path} holds {raw.dtype} {raw.shape}, the manifest says {dtype} {(c['n_frames'], h, w)}; {fix}"
                )
            yield c["first_frame"], raw

    def times(self) -> np.ndarray:
        """Time (s) of every recorded frame."""
        man = self.manifest()
        return man["first_frame_time_s"] + np.arange(man["n_frames"]) * man["frame_interval_ms"] / 1000.0
