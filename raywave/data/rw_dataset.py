"""The retinal-wave dataset on storage: one parquet file and one manifest per simulation.

    DATASET/dataset.json                         the sweep: simulation ids, status (complete/incomplete)
    DATASET/sweeps/<fingerprint>.yaml            every sweep config applied to this dataset
    DATASET/simulations/<sim_id>/frames.parquet  one row per frame: sim_id, frame, time_s, calcium[H, W]
    DATASET/simulations/<sim_id>/manifest.json   parameters, seed, backend, code version, frame scale,
                                                 sha256 and row count of frames.parquet, wave statistics
    DATASET/triplets/<name>/                     triplet indexes (see raywave.data.triplets)

`calcium` is Arrow's native fixed-shape tensor (`arrow.fixed_shape_tensor`), so plain pyarrow reads it back as
an (n, H, W) array; values are stored as in the run (float32, float16 or uint8) and calcium in nM is
`offset + scale * stored` with offset and scale in the manifest and in the parquet metadata.

A simulation exists once its manifest exists: the parquet file is moved into place first, the manifest last,
both atomically. Readers only ever look at simulations with a manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raywave.errors import RaywaveError
from raywave.storage import Location, atomic_output, exists, list_dir, read_json, resolve

DATASET_FORMAT = "raywave.rw-dataset/1"
FRAMES = "frames.parquet"
MANIFEST = "manifest.json"
ROW_GROUP_FRAMES = 100


def sim_dir(sim_id: str) -> str:
    return f"simulations/{sim_id}"


def frames_schema(shape: tuple[int, int], dtype: np.dtype, meta: dict[str, Any]) -> pa.Schema:
    tensor = pa.fixed_shape_tensor(pa.from_numpy_dtype(np.dtype(dtype)), list(shape))
    return pa.schema(
        [("sim_id", pa.string()), ("frame", pa.int32()), ("time_s", pa.float64()), ("calcium", tensor)],
        metadata={b"raywave": json.dumps(meta).encode()},
    )


def frames_table(sim_id: str, first: int, times: np.ndarray, frames: np.ndarray, schema: pa.Schema) -> pa.Table:
    n = len(frames)
    return pa.Table.from_arrays(
        [
            pa.array([sim_id] * n, pa.string()),
            pa.array(np.arange(first, first + n, dtype=np.int32)),
            pa.array(np.asarray(times, np.float64)),
            pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(frames)),
        ],
        schema=schema,
    )


def write_frames(
    loc: Location,
    sim_id: str,
    chunks: Iterator[tuple[int, np.ndarray, np.ndarray]],
    shape: tuple[int, int],
    dtype: np.dtype,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Stream (first_frame, times, frames) chunks into DATASET/simulations/<id>/frames.parquet, atomically.

    Returns the file entry for the manifest: path, rows, bytes, sha256.
    """
    rel = f"{sim_dir(sim_id)}/{FRAMES}"
    schema = frames_schema(shape, dtype, meta)
    rows = 0
    with atomic_output(loc, rel) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd", filesystem=loc.fs) as writer:
            for first, times, frames in chunks:
                writer.write_table(frames_table(sim_id, first, times, frames, schema), ROW_GROUP_FRAMES)
                rows += len(frames)
        digest, size = sha256_of(loc, tmp)
    return {"file": rel, "rows": rows, "bytes": size, "sha256": digest}


def sha256_of(loc: Location, path: str) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file on `loc`'s file system."""
    h, size = hashlib.sha256(), 0
    with loc.fs.open_input_stream(path) as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


@dataclass
class Simulation:
    """A committed simulation of a dataset (its manifest, and where its frames are)."""

    loc: Location
    manifest: dict[str, Any]

    @property
    def sim_id(self) -> str:
        return self.manifest["sim_id"]

    @property
    def frames_path(self) -> str:
        return self.loc.join(self.manifest["frames"]["file"])

    @property
    def n_frames(self) -> int:
        return self.manifest["frames"]["rows"]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.manifest["shape"])  # type: ignore[return-value]

    @property
    def frame_interval_s(self) -> float:
        return self.manifest["config"]["frame_interval_ms"] / 1000.0

    def check_size(self) -> None:
        """The cheap check every read makes: the frames file exists with the byte size the manifest records
        (a truncated or replaced file); `verify()` is the full sha256 check (`data describe --verify`)."""
        import pyarrow.fs as pafs

        expected = self.manifest["frames"].get("bytes")
        info = self.loc.fs.get_file_info(self.frames_path)
        fix = f"delete {sim_dir(self.sim_id)} and re-run `raywave waves generate` to rebuild it"
        if info.type == pafs.FileType.NotFound:
            raise RaywaveError(f"{self.loc.uri}/{self.manifest['frames']['file']} is missing; {fix}")
        if expected is not None and info.size != expected:
            raise RaywaveError(
                f"{self.loc.uri}/{self.manifest['frames']['file']} is truncated or corrupt: {info.size} bytes, its "
                f"manifest says {expected}; {fix}"
            )

    def stored(self) -> np.ndarray:
        """Frames as stored (n, H, W) in the storage dtype; a corrupt or truncated file is one clear error."""
        self.check_size()
        try:
            table = pq.read_table(self.frames_path, columns=["calcium"], filesystem=self.loc.fs)
            arr = table.column("calcium").combine_chunks()
            data = arr.to_numpy_ndarray() if len(arr) else np.zeros((0, *self.shape), self.manifest["dtype"])
        except (OSError, pa.ArrowException) as exc:
            raise RaywaveError(
                f"{self.loc.uri}/{self.manifest['frames']['file']} is unreadable or corrupt ({exc}); "
                f"delete {sim_dir(self.sim_id)} and re-run `raywave waves generate` to rebuild it"
            ) from None
        if data.shape != (self.n_frames, *self.shape):
            raise RaywaveError(
                f"{self.frames_path} holds {data.shape}, manifest says {(self.n_frames, *self.shape)}; "
                f"delete {sim_dir(self.sim_id)} and re-run `raywave waves generate`"
            )
        return data

    def times(self) -> np.ndarray:
        """Frame times (s, simulation clock) as stored next to the frames."""
        self.check_size()
        table = pq.read_table(self.frames_path, columns=["time_s"], filesystem=self.loc.fs)
        return table.column("time_s").to_numpy()

    def calcium(self) -> np.ndarray:
        """Calcium (nM) as float32 (n, H, W)."""
        offset, scale = self.manifest["calcium_offset"], self.manifest["calcium_scale"]
        return (offset + scale * self.stored().astype(np.float32)).astype(np.float32)

    def verify(self) -> None:
        """Check the frames file's checksum against the manifest."""
        try:
            digest, _ = sha256_of(self.loc, self.frames_path)
        except OSError as exc:
            raise RaywaveError(f"{self.frames_path} is missing ({exc})") from None
        if digest != self.manifest["frames"]["sha256"]:
            raise RaywaveError(
                f"{self.frames_path} is corrupt (checksum mismatch); delete {sim_dir(self.sim_id)} and re-run "
                "`raywave waves generate`"
            )


class RWDataset:
    """Read access to a retinal-wave dataset (local path or URI)."""

    def __init__(self, root: str | Location):
        self.loc = root if isinstance(root, Location) else resolve(root)

    def info(self) -> dict[str, Any]:
        try:
            return read_json(self.loc, "dataset.json")
        except FileNotFoundError:
            raise RaywaveError(
                f"{self.loc.uri!r} is not a raywave wave dataset (no dataset.json); "
                "create one with `raywave waves generate --config SWEEP.yaml --out PATH`"
            ) from None

    def committed_ids(self) -> list[str]:
        return [s for s in list_dir(self.loc, "simulations") if exists(self.loc, f"{sim_dir(s)}/{MANIFEST}")]

    def simulation(self, sim_id: str) -> Simulation:
        try:
            man = read_json(self.loc, f"{sim_dir(sim_id)}/{MANIFEST}")
        except FileNotFoundError:
            raise RaywaveError(f"simulation {sim_id} is not in {self.loc.uri} (not generated yet?)") from None
        return Simulation(self.loc, man)

    def simulations(self) -> list[Simulation]:
        """Committed simulations, in the order of the sweep (then any others by id)."""
        info = self.info()
        committed = set(self.committed_ids())
        order = [s for s in info.get("simulations", []) if s in committed]
        order += sorted(committed - set(order))
        return [self.simulation(s) for s in order]
