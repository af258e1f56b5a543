"""NFP pretraining as a task of the loop core (plain torch; the Ray Data hooks import Ray only when called).

The training stream is the index's training triplets, epoch after epoch, each epoch permuted by (seed, epoch);
global step i takes stream positions [i*B, (i+1)*B) and rank r of W workers the r-th slice of B/W of them, so
the batches of step i are a function of (seed, i) (`batches`). Under Ray Train the same stream comes from
`raywave.data.ray_pipelines.triplet_dataset` split over the workers by Ray Data (`ray_datasets` on the driver,
`shard_batches` in each worker): the same triplets per epoch, though which worker gets which is up to Ray Data.

Validation (`evaluate`, every `val_every` steps) runs on the index's validation split (up to `val_max`
triplets, no augmentation): MSE of the prediction, the repeat-I2 baseline MSE(I2, I3) on the same triplets,
their ratio, and the MSE (and baseline) per dt variant.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from raywave.config import StrictModel
from raywave.errors import ConfigError, RaywaveError
from raywave.train.loop import StageConfig


class NFPConfig(StrictModel):
    """Everything that decides an NFP pretraining run's numbers (workers and resources are not in here)."""

    dataset: str = Field(..., description="wave dataset (path or URI) written by `raywave waves generate`")
    triplets: str = Field("default", description="name of the triplet index (`raywave data triplets --name`)")
    variant: Literal["basic", "small"] = Field("small", description="RAFT encoder variant")
    iters: Literal[4, 8] = Field(4, description="ConvGRU iterations")
    corr_levels: int | None = Field(None, ge=1, le=4, description="correlation pyramid levels (None: 4)")
    steps: int = Field(1000, ge=1, description="optimizer steps")
    batch: int = Field(8, ge=1, description="global batch (split evenly over the workers)")
    lr: float = Field(4e-4, gt=0, description="peak learning rate (OneCycle)")
    weight_decay: float = Field(1e-4, ge=0)
    warmup: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    val_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    val_max: int = Field(256, ge=1, description="at most this many validation triplets")
    seed: int = Field(0, ge=0, description="model initialisation and data order")
    baseline_init: bool = Field(True, description="start at the repeat-I2 prediction (zeroed output layers)")
    targets: list[float] = Field(
        default_factory=lambda: [0.95, 0.9, 0.8, 0.7],
        description="val_ratio (MSE / repeat-I2 MSE) targets for the efficiency summary",
    )


class NFPTask:
    """The loop core's NFP task (see `raywave.train.loop` for the contract)."""

    name = "nfp"
    val_key = "val_mse"

    def __init__(self, config: dict | NFPConfig):
        self.cfg = config if isinstance(config, NFPConfig) else NFPConfig.model_validate(config)
        self.targets = {"val_ratio": list(self.cfg.targets)}
        self._source = None
        self._perms: dict[int, np.ndarray] = {}

    @property
    def source(self):
        if self._source is None:
            from raywave.data.triplets import TripletSource

            self._source = TripletSource(self.cfg.dataset, self.cfg.triplets)
        return self._source

    # --- checks before anything starts -------------------------------------------------------------------------
    def check(self, world: int = 1) -> dict:
        """One-line errors for what cannot work; returns the data identity for run.json."""
        from raywave.data.rw_dataset import RWDataset
        from raywave.train.record import fingerprint

        c = self.cfg
        info = RWDataset(c.dataset).info()  # a missing dataset is one line here
        src = self.source
        n_train, n_val = len(src.rows("train")), len(src.rows("val"))
        if n_train == 0:
            raise RaywaveError(f"triplet index {c.triplets!r} has no training triplets; rebuild it with a looser "
                               "activity filter or more simulations")  # fmt: skip
        if n_val == 0:
            raise RaywaveError(f"triplet index {c.triplets!r} has no validation triplets; rebuild it with "
                               "val_fraction > 0 (e.g. `--config examples/triplets.yaml`)")  # fmt: skip
        if c.batch % world:
            raise ConfigError(f"batch {c.batch} does not split evenly over {world} workers; use a multiple of {world}")
        h, w = src.prep["output_shape"]
        levels = self.corr_levels
        need = 16 * 2 ** (levels - 1)
        if h % 8 or w % 8 or h < need or w < need:
            fits = [lv for lv in (4, 3, 2, 1) if min(h, w) >= 16 * 2 ** (lv - 1)]
            hint = (
                f"use corr_levels {fits[0]}"
                if fits and h % 8 == 0 and w % 8 == 0
                else "use a crop that is a multiple of 8"
            )
            raise ConfigError(f"triplet frames of {h}x{w} px are too small for a {levels}-level correlation pyramid "
                              f"(needs multiples of 8, >= {need} px); {hint}, or rebuild the triplets with a larger "
                              "pixels_per_cell")  # fmt: skip
        sims = sorted(s["sim_id"] for s in src.prep["simulations"])
        ds_id = fingerprint({"simulations": sorted(info.get("simulations", []))})
        return {"dataset": src.ds.loc.uri, "dataset_id": ds_id, "triplets": c.triplets,
                "triplet_fingerprint": fingerprint({"config": src.prep["config"], "sims": sims}),
                "triplet_config": src.prep["config"],
                "triplet_index": {k: src.prep[k] for k in ("n_triplets", "n_val", "output_shape")},
                "train_triplets": n_train, "val_triplets": n_val}  # fmt: skip

    @property
    def corr_levels(self) -> int:
        return self.cfg.corr_levels or 4

    # --- the task contract -------------------------------------------------------------------------------------
    def stages(self) -> list[StageConfig]:
        c = self.cfg
        return [StageConfig(name="nfp", steps=c.steps, batch_size=c.batch, lr=c.lr, weight_decay=c.weight_decay,
                            warmup=c.warmup, grad_clip=c.grad_clip, val_every=c.val_every,
                            checkpoint_every=c.checkpoint_every, log_every=c.log_every)]  # fmt: skip

    def build_model(self, device="cpu") -> torch.nn.Module:
        from raywave.models.nfp import NFP

        with torch.random.fork_rng(devices=[]):  # weights from the run's seed; the global RNG is left as it was
            torch.manual_seed(self.cfg.seed)
            model = NFP(self.cfg.variant, iters=self.cfg.iters, corr_levels=self.corr_levels,
                        baseline_init=self.cfg.baseline_init)  # fmt: skip
        return model.to(device)

    def model_meta(self) -> dict:
        c = self.cfg
        return {"kind": "nfp", "variant": c.variant, "iters": c.iters, "corr_levels": self.corr_levels,
                "frame_shape": list(self.source.prep["output_shape"]), "dataset": c.dataset,
                "triplets": c.triplets}  # fmt: skip

    def stream_rows(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(index rows, epochs) at stream positions start .. start+count-1."""
        base = self.source.rows("train")
        pos = np.arange(start, start + count)
        epochs = pos // len(base)
        rows = np.empty(count, np.int64)
        for e in np.unique(epochs):
            if e not in self._perms:
                if len(self._perms) > 4:
                    self._perms.clear()
                self._perms[e] = np.random.default_rng([self.cfg.seed, int(e)]).permutation(base)
            sel = epochs == e
            rows[sel] = self._perms[e][pos[sel] % len(base)]
        return rows, epochs

    def batches(self, stage: int, start: int, rank: int, world: int):
        b = self.cfg.batch // world
        step = start
        while True:
            rows, epochs = self.stream_rows(step * self.cfg.batch + rank * b, b)
            got = self.source.get(rows, epochs, augment=True)
            yield {"frames": torch.from_numpy(got["frames"]), "dt_s": torch.from_numpy(got["dt_s"])}
            step += 1

    def train_step(self, model, batch, gen: torch.Generator):
        from raywave.models.nfp import nfp_loss

        device = next(model.parameters()).device
        f = batch["frames"].to(device, non_blocking=True)
        pred, _ = model(f[:, 0:1], f[:, 1:2])
        return nfp_loss(pred.float(), f[:, 2:3]), len(f)

    @torch.no_grad()
    def evaluate(self, model, stage: int) -> dict[str, float]:
        rows = self.source.rows("val")[: self.cfg.val_max]
        device = next(model.parameters()).device
        se = base = 0.0
        per_dt: dict[float, list[float]] = {}
        for i in range(0, len(rows), self.cfg.batch):
            got = self.source.get(rows[i : i + self.cfg.batch], 0, augment=False)
            f = torch.from_numpy(got["frames"]).to(device)
            pred, _ = model(f[:, 0:1], f[:, 1:2])
            err = ((pred.float() - f[:, 2:3]) ** 2).mean(dim=(1, 2, 3)).cpu().numpy()
            rep = ((f[:, 1:2] - f[:, 2:3]) ** 2).mean(dim=(1, 2, 3)).cpu().numpy()
            se, base = se + float(err.sum()), base + float(rep.sum())
            for dt, e, r in zip(got["dt_s"], err, rep, strict=True):
                acc = per_dt.setdefault(round(float(dt), 6), [0.0, 0.0, 0])
                acc[0], acc[1], acc[2] = acc[0] + float(e), acc[1] + float(r), acc[2] + 1
        n = len(rows)
        out = {"val_mse": se / n, "val_baseline_mse": base / n, "val_ratio": se / base if base > 0 else float("nan")}
        for dt, (e, r, k) in sorted(per_dt.items()):
            out[f"val_mse_dt{dt:g}"] = e / k
            out[f"val_baseline_mse_dt{dt:g}"] = r / k
        return out

    # --- Ray Data (imports Ray only when called) ---------------------------------------------------------------
    def ray_datasets(self, start_step: int, cpus: float = 0.25) -> dict:
        from raywave.data.ray_pipelines import triplet_dataset

        n = len(self.source.rows("train"))
        first = start_step * self.cfg.batch
        e0 = first // n
        epochs = -(-(self.cfg.steps * self.cfg.batch - e0 * n) // n) + 1  # the rest of the run, one spare epoch
        ds = triplet_dataset(self.cfg.dataset, self.cfg.triplets, "train", epoch=e0, epochs=epochs,
                             batch_size=self.cfg.batch, workers=1, cpus_per_worker=cpus, seed=self.cfg.seed,
                             skip=first - e0 * n)  # fmt: skip
        return {"train": ds}

    def shard_batches(self, shard, stage: int, skip: int = 0, world: int = 1):
        it = shard.iter_torch_batches(batch_size=self.cfg.batch // world, drop_last=True, prefetch_batches=2)
        for k, b in enumerate(it):
            if k >= skip:
                yield {"frames": b["frames"], "dt_s": b["dt_s"]}
