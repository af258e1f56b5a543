"""(I1, I2, I3) triplets from a wave dataset: normalisation, activity filtering, augmentation (no Ray here).

A triplet is frames (t, t + k, t + 2k) of one simulation, with k = dt / frame interval. Building an index
(`build_index`) decides which triplets exist: every frame from t to t + 2k must pass the activity filter, so a
triplet never straddles two simulations or a filtered-out gap. The index and the normalisation it used are
stored under DATASET/triplets/<name>/ (index.parquet, then prep.json as the commit point).

`TripletSource` turns index rows into arrays (B, 3, h, w) float32, with augmentations drawn per triplet from
(seed, epoch, row); `TripletDataset` is a plain torch Dataset over it, and `raywave.data.ray_pipelines` runs the
same code in Ray Data.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from raywave.config import StrictModel
from raywave.data.rw_dataset import RWDataset, Simulation
from raywave.errors import ConfigError, RaywaveError
from raywave.storage import Location, atomic_output, exists, read_json, resolve, write_json

INDEX = "index.parquet"
PREP = "prep.json"


class ActivityFilter(StrictModel):
    """Keep frames whose fraction of active cells (calcium >= threshold) lies in [min_fraction, max_fraction]."""

    threshold_nM: float = Field(180.0, gt=0, description="a cell is active at or above this calcium (nM)")
    min_fraction: float = Field(0.01, ge=0, le=1, description="least fraction of active cells to keep a frame")
    max_fraction: float = Field(1.0, ge=0, le=1, description="largest fraction of active cells to keep a frame")
    window_frames: int = Field(1, ge=1, description="average the fraction over this many frames (centred)")

    @field_validator("max_fraction")
    @classmethod
    def _not_below_min(cls, v: float, info) -> float:  # an empty range would build an empty index silently
        low = info.data.get("min_fraction")
        if low is not None and v < low:
            raise ValueError(f"must be at least min_fraction ({low}), or no frame can pass the filter")
        return v


class Normalization(StrictModel):
    """Calcium -> network input: (c - low) / (high - low), or (c - mean) / std for zscore."""

    mode: Literal["global", "per_simulation"] = Field("global", description="one scale for all, or one per run")
    method: Literal["minmax", "percentile", "zscore"] = Field("percentile", description="how low/high are chosen")


class Augment(StrictModel):
    """Geometric augmentations, applied identically to the three frames of a triplet."""

    rot90: bool = Field(True, description="random multiple of 90 degrees (180 only, for non-square output)")
    hflip: bool = Field(True, description="random left-right flip")
    vflip: bool = Field(True, description="random up-down flip")
    crop: int | None = Field(None, ge=8, description="random square crop of this side (None: whole frame)")


class TripletConfig(StrictModel):
    """How triplets are made from a wave dataset."""

    dt_s: list[float] = Field(default_factory=lambda: [0.1], description="frame gaps I1->I2->I3 (s)")
    stride_frames: int = Field(1, ge=1, description="frames between the starts of consecutive triplets")
    activity: ActivityFilter = Field(default_factory=ActivityFilter)
    normalization: Normalization = Field(default_factory=Normalization)
    augment: Augment = Field(default_factory=Augment)
    pixels_per_cell: int = Field(1, ge=1, le=64, description="output pixels per lattice cell (RAFT needs >= 128 px)")
    resample: Literal["nearest", "bilinear"] = Field("nearest", description="how frames are scaled to pixels")
    val_fraction: float = Field(0.0, ge=0, lt=1, description="fraction of simulations held out for validation")
    seed: int = Field(0, ge=0, description="seed of augmentations and shuffling")

    @field_validator("dt_s")
    @classmethod
    def _dts(cls, v: list[float]) -> list[float]:
        if not v or any(x <= 0 for x in v):
            raise ValueError("give at least one dt_s, all > 0")
        return sorted(set(v))


# --- pure functions -------------------------------------------------------------------------------------------
def active_fraction(calcium: np.ndarray, threshold_nM: float) -> np.ndarray:
    """Fraction of cells at or above the threshold, per frame."""
    return (calcium.reshape(len(calcium), -1) >= threshold_nM).mean(axis=1)


def keep_mask(calcium: np.ndarray, f: ActivityFilter) -> np.ndarray:
    frac = active_fraction(calcium, f.threshold_nM)
    if f.window_frames > 1 and len(frac):
        frac = np.convolve(frac, np.ones(f.window_frames) / f.window_frames, mode="same")
    return (frac >= f.min_fraction) & (frac <= f.max_fraction)


def frame_step(dt_s: float, frame_interval_s: float, where: str) -> int:
    k = round(dt_s / frame_interval_s)
    if k < 1 or abs(k * frame_interval_s - dt_s) > 1e-9 * max(1.0, dt_s):
        raise ConfigError(
            f"dt_s {dt_s} is not a whole multiple of the frame interval {frame_interval_s} s of {where}; "
            "choose dt_s among multiples of the frame interval"
        )
    return k


def triplet_starts(keep: np.ndarray, k: int, stride: int) -> np.ndarray:
    """Starts t with frames t..t+2k all kept (so no triplet crosses a filtered-out gap)."""
    n = len(keep)
    if n < 2 * k + 1:
        return np.zeros(0, np.int64)
    bad = np.concatenate([[0], np.cumsum(~keep)])  # bad[j] = number of dropped frames before j
    starts = np.arange(0, n - 2 * k, stride)
    return starts[bad[starts + 2 * k + 1] - bad[starts] == 0]


def augment_ops(aug: Augment, seed: int, epoch: int, row: int, shape: tuple[int, int]) -> dict[str, int]:
    """The augmentation of one triplet, a pure function of (seed, epoch, row): crop origin, rotation, flips."""
    rng = np.random.default_rng([seed, epoch, row])
    h, w = shape
    side = aug.crop
    top = int(rng.integers(0, h - side + 1)) if side else 0
    left = int(rng.integers(0, w - side + 1)) if side else 0
    square = side is not None or h == w
    k = int(rng.integers(0, 4)) if aug.rot90 else 0
    if not square:
        k = 2 * (k % 2)
    return {"top": top, "left": left, "k": k, "hflip": int(aug.hflip and rng.random() < 0.5),
            "vflip": int(aug.vflip and rng.random() < 0.5)}  # fmt: skip


def apply_ops(frames: np.ndarray, ops: dict[str, int], crop: int | None) -> np.ndarray:
    """Apply one augmentation to frames (..., H, W): crop, then rotate by k*90 degrees, then flips."""
    if crop:
        frames = frames[..., ops["top"] : ops["top"] + crop, ops["left"] : ops["left"] + crop]
    if ops["k"]:
        frames = np.rot90(frames, ops["k"], axes=(-2, -1))
    if ops["hflip"]:
        frames = frames[..., :, ::-1]
    if ops["vflip"]:
        frames = frames[..., ::-1, :]
    return frames


def _bilinear_matrix(n: int, scale: int) -> np.ndarray:
    """(n * scale, n) weights of bilinear upsampling by `scale`, half-pixel centres (torch's align_corners=False)."""
    src = np.maximum((np.arange(n * scale) + 0.5) / scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w1 = (src - i0).astype(np.float32)
    m = np.zeros((n * scale, n), np.float32)
    np.add.at(m, (np.arange(n * scale), i0), 1 - w1)
    np.add.at(m, (np.arange(n * scale), i1), w1)
    return m


def scale_frames(frames: np.ndarray, scale: int, mode: str = "nearest") -> np.ndarray:
    """Frames (..., H, W) -> (..., H*scale, W*scale): each cell as a scale x scale block (nearest), or bilinear
    with half-pixel centres (equal to torch.nn.functional.interpolate(..., mode="bilinear"))."""
    if scale == 1:
        return frames
    if mode == "nearest":
        return np.repeat(np.repeat(frames, scale, axis=-2), scale, axis=-1)
    mh, mw = _bilinear_matrix(frames.shape[-2], scale), _bilinear_matrix(frames.shape[-1], scale)
    return np.einsum("ih,...hw,jw->...ij", mh, frames.astype(np.float32, copy=False), mw, optimize=True)


# --- normalisation --------------------------------------------------------------------------------------------
def _bounds(stats: list[dict], counts: list[int], method: str) -> tuple[float, float]:
    """(low, high) such that normalised = (c - low) / (high - low); zscore gives (mean - 0, mean + std)."""
    if method == "minmax":
        return min(s["min"] for s in stats), max(s["max"] for s in stats)
    if method == "percentile":
        return min(s["p1"] for s in stats), max(s["p99"] for s in stats)
    n = np.asarray(counts, float)
    mean = float(np.sum(n * [s["mean"] for s in stats]) / n.sum())  # pooled mean and variance, exact
    var = float(np.sum(n * [s["std"] ** 2 + s["mean"] ** 2 for s in stats]) / n.sum() - mean**2)
    return mean, mean + max(var, 1e-12) ** 0.5


def normalisers(sims: list[Simulation], norm: Normalization) -> dict[str, dict[str, float]]:
    """Per simulation, (a, b) such that network input = a + b * stored value; plus low/high for the record."""
    out = {}
    groups = [[s] for s in sims] if norm.mode == "per_simulation" else [sims]
    for group in groups:
        lo, hi = _bounds([s.manifest["calcium_stats"] for s in group], [s.n_frames for s in group], norm.method)
        if not hi > lo:
            hi = lo + 1.0  # a constant movie: avoid dividing by zero
        for s in group:
            off, sc = s.manifest["calcium_offset"], s.manifest["calcium_scale"]
            out[s.sim_id] = {"a": (off - lo) / (hi - lo), "b": sc / (hi - lo), "low": lo, "high": hi}
    return out


def val_simulations(sim_ids: list[str], fraction: float) -> set[str]:
    """The simulations held out for validation: round(fraction * n) of them, at least one and at most n - 1
    when fraction > 0 and there are two or more (so neither split is ever empty), chosen by a hash of their ids
    (the same simulations give the same split whatever order they are listed in)."""
    if fraction <= 0 or len(sim_ids) < 2:
        return set()
    n_val = min(max(round(fraction * len(sim_ids)), 1), len(sim_ids) - 1)
    return set(sorted(sim_ids, key=lambda s: (zlib.crc32(s.encode()), s))[:n_val])


# --- the index on storage -------------------------------------------------------------------------------------
def build_index(dataset: str | Location, cfg: TripletConfig, name: str = "default", overwrite: bool = False,
                progress=None) -> dict[str, Any]:  # fmt: skip
    """Compute and store the triplet index `name`; an identical existing one is kept as it is."""
    ds = RWDataset(dataset)
    ds.info()
    rel = f"triplets/{name}"
    cfg_json = cfg.model_dump(mode="json")
    if exists(ds.loc, f"{rel}/{PREP}"):
        prep = read_json(ds.loc, f"{rel}/{PREP}")
        if TripletConfig.model_validate(prep["config"]).model_dump(mode="json") == cfg_json and not overwrite:
            return prep
        if not overwrite:
            raise RaywaveError(f"triplets {name!r} exist with another config; use --name NEW or --overwrite")
    sims = ds.simulations()
    if not sims:
        raise RaywaveError(f"{ds.loc.uri} has no finished simulations; run `raywave waves generate` first")
    steps = {(s.sim_id, dt): frame_step(dt, s.frame_interval_s, s.sim_id) for s in sims for dt in cfg.dt_s}
    if cfg.augment.crop:
        small = [s for s in sims if min(s.shape) < cfg.augment.crop]
        if small:
            raise ConfigError(f"augment.crop {cfg.augment.crop} exceeds the {small[0].shape} frames of "
                              f"{small[0].sim_id}; choose a crop <= the smallest frame side")  # fmt: skip
    shapes = {tuple(s.shape) for s in sims}
    if not cfg.augment.crop and len(shapes) > 1:
        raise ConfigError(f"simulations have different frame shapes {sorted(shapes)}; set augment.crop")
    norms = normalisers(sims, cfg.normalization)
    cols: dict[str, list] = {"sim_index": [], "t0": [], "step": [], "dt_s": [], "val": []}
    per_sim = []
    held_out = val_simulations([s.sim_id for s in sims], cfg.val_fraction)
    for i, sim in enumerate(sims):
        keep = keep_mask(sim.calcium(), cfg.activity)
        n_sim = 0
        for dt in cfg.dt_s:
            k = steps[(sim.sim_id, dt)]
            starts = triplet_starts(keep, k, cfg.stride_frames)
            cols["sim_index"].append(np.full(len(starts), i, np.int32))
            cols["t0"].append(starts.astype(np.int32))
            cols["step"].append(np.full(len(starts), k, np.int32))
            cols["dt_s"].append(np.full(len(starts), dt))
            cols["val"].append(np.full(len(starts), sim.sim_id in held_out))
            n_sim += len(starts)
        val = sim.sim_id in held_out
        per_sim.append({"sim_id": sim.sim_id, "frames": sim.n_frames, "frames_kept": int(keep.sum()),
                        "triplets": n_sim, "val": val, **norms[sim.sim_id]})  # fmt: skip
        if progress:
            progress(i + 1, len(sims))
    table = pa.table({k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()})
    with atomic_output(ds.loc, f"{rel}/{INDEX}") as tmp:
        pq.write_table(table, tmp, filesystem=ds.loc.fs)
    prep = {
        "format": "raywave.triplets/1",
        "name": name,
        "config": cfg_json,
        "simulations": per_sim,
        "n_triplets": table.num_rows,
        "n_val": int(np.sum(table.column("val").to_numpy())),
        "output_shape": [cfg.pixels_per_cell * x for x in ([cfg.augment.crop] * 2 if cfg.augment.crop
                                                            else list(next(iter(shapes))))],
        "pixels_per_cell": cfg.pixels_per_cell,
        "resample": cfg.resample,
    }
    write_json(ds.loc, f"{rel}/{PREP}", prep)  # the commit point
    return prep


class TripletSource:
    """Index rows -> normalised, augmented triplet arrays. Caches simulations' stored frames (LRU)."""

    def __init__(self, dataset: str, name: str = "default", cache_sims: int = 8):
        self.ds = RWDataset(resolve(dataset))
        rel = f"triplets/{name}"
        try:
            self.prep = read_json(self.ds.loc, f"{rel}/{PREP}")
        except FileNotFoundError:
            raise RaywaveError(
                f"no triplets {name!r} in {self.ds.loc.uri}; build them with `raywave data triplets {self.ds.loc.uri}`"
            ) from None
        self.cfg = TripletConfig.model_validate(self.prep["config"])
        try:
            self.index = pq.read_table(self.ds.loc.join(rel, INDEX), filesystem=self.ds.loc.fs)
        except (OSError, pa.ArrowException) as exc:
            raise RaywaveError(
                f"{self.ds.loc.uri}/{rel}/{INDEX} is unreadable ({exc}); rebuild it with --overwrite"
            ) from None
        self.sims = self.prep["simulations"]
        self._cols = {c: self.index.column(c).to_numpy(zero_copy_only=False) for c in self.index.column_names}
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cache_sims = cache_sims

    def rows(self, split: str = "train") -> np.ndarray:
        """Index rows of a split: 'train', 'val' or 'all'."""
        val = self._cols["val"].astype(bool)
        sel = {"all": np.ones_like(val), "train": ~val, "val": val}[split]
        return np.flatnonzero(sel)

    def stored(self, sim_index: int) -> np.ndarray:
        if sim_index in self._cache:
            self._cache.move_to_end(sim_index)
            return self._cache[sim_index]
        frames = self.ds.simulation(self.sims[sim_index]["sim_id"]).stored()
        self._cache[sim_index] = frames
        while len(self._cache) > self.cache_sims:
            self._cache.popitem(last=False)
        return frames

    def get(self, rows: np.ndarray, epoch: int | np.ndarray = 0, augment: bool = True) -> dict[str, np.ndarray]:
        """{"frames": (B, 3, h, w) float32, "dt_s": (B,), "row": (B,)} for index rows `rows` (augmented as in
        `epoch`, one for all rows or one per row)."""
        sim_i, t0, step = (self._cols[c][rows] for c in ("sim_index", "t0", "step"))
        epochs = np.broadcast_to(np.asarray(epoch, np.int64), (len(rows),))
        out = None
        crop = self.cfg.augment.crop
        aug = self.cfg.augment if augment else Augment(rot90=False, hflip=False, vflip=False, crop=crop)
        for j, (si, t, k, row, ep) in enumerate(zip(sim_i, t0, step, rows, epochs, strict=True)):
            raw = self.stored(int(si))[[t, t + k, t + 2 * k]]
            ops = augment_ops(aug, self.cfg.seed, int(ep), int(row), raw.shape[-2:])
            if not augment:
                ops.update(top=(raw.shape[-2] - (aug.crop or 0)) // 2, left=(raw.shape[-1] - (aug.crop or 0)) // 2)
            norm = self.sims[int(si)]
            trip = scale_frames(apply_ops(raw, ops, aug.crop), self.cfg.pixels_per_cell, self.cfg.resample)
            if out is None:
                out = np.empty((len(rows), 3, *trip.shape[-2:]), np.float32)
            np.multiply(trip, np.float32(norm["b"]), out=out[j], casting="unsafe")
            out[j] += np.float32(norm["a"])
        if out is None:
            h, w = self.prep["output_shape"]
            out = np.zeros((0, 3, h, w), np.float32)
        return {"frames": out, "dt_s": self._cols["dt_s"][rows].astype(np.float32),
                "row": np.asarray(rows, np.int64)}  # fmt: skip


class TripletDataset:
    """A plain torch map-style Dataset of triplets. `ds[i]` is one triplet; `ds[rows]` or `ds[(epoch, rows)]`
    a batch (use `loader()` for batched loading without per-item collation)."""

    def __init__(self, dataset: str, name: str = "default", split: str = "train", augment: bool = True,
                 epoch: int = 0):  # fmt: skip
        self.dataset, self.name, self.split, self.augment, self.epoch = dataset, name, split, augment, epoch
        self._source: TripletSource | None = None
        self._rows = self.source.rows(split)

    @property
    def source(self) -> TripletSource:
        if self._source is None:  # opened lazily, so each DataLoader worker opens its own
            self._source = TripletSource(self.dataset, self.name)
        return self._source

    def __getstate__(self):
        return dict(self.__dict__, _source=None)

    def __len__(self) -> int:
        return len(self._rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i):
        import torch

        epoch = self.epoch
        if isinstance(i, tuple):
            epoch, i = i
        batch = self.source.get(self._rows[np.atleast_1d(i)], epoch, self.augment)
        out = {k: torch.from_numpy(v) for k, v in batch.items()}
        return out if isinstance(i, list | np.ndarray) else {k: v[0] for k, v in out.items()}

    def batches(self, batch_size: int, shuffle: bool = True, epochs: int = 1, seed: int | None = None):
        """(epoch, positions) per batch, for epochs self.epoch ... self.epoch + epochs - 1."""
        seed = self.source.cfg.seed if seed is None else seed
        for e in range(self.epoch, self.epoch + epochs):
            order = np.random.default_rng([seed, e]).permutation(len(self)) if shuffle else np.arange(len(self))
            for i in range(0, len(order), batch_size):
                yield e, order[i : i + batch_size]

    def loader(self, batch_size: int = 64, shuffle: bool = True, num_workers: int = 0, epochs: int = 1,
               seed: int | None = None):  # fmt: skip
        """A torch DataLoader over `epochs` epochs, yielding ready batches (one dataset call per batch)."""
        from torch.utils.data import DataLoader

        return DataLoader(self, sampler=list(self.batches(batch_size, shuffle, epochs, seed)), batch_size=None,
                          num_workers=num_workers)  # fmt: skip
