"""Ray Data views of a wave dataset: all frames as rows, and triplet batches for Ray Train.

The triplet pipeline runs the same `TripletSource` as the plain torch Dataset, inside a pool of Ray Data actors
(each keeps the simulations it has read in memory), so both paths give identical triplets for the same
(seed, epoch, row).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def frames_dataset(dataset: str):
    """A Ray Dataset with one row per frame (sim_id, frame, time_s, calcium[H, W]) of every simulation.

    Simulations of different lattice sizes have different tensor shapes: read those separately
    (`raywave.data.rw_dataset.RWDataset(...).simulations()` lists them with their shapes)."""
    import ray

    from raywave.data.rw_dataset import RWDataset
    from raywave.errors import RaywaveError

    ds = RWDataset(dataset)
    sims = ds.simulations()
    shapes = {s.shape for s in sims}
    if len(shapes) > 1:
        raise RaywaveError(f"{ds.loc.uri} mixes frame shapes {sorted(shapes)}; read one shape at a time")
    return ray.data.read_parquet([s.frames_path for s in sims], filesystem=ds.loc.fs)


class _TripletMaker:
    """Ray Data actor: index rows -> triplet arrays."""

    def __init__(self, dataset: str, name: str, augment: bool):
        from raywave.data.triplets import TripletSource

        self.source = TripletSource(dataset, name)
        self.augment = augment

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.source.get(batch["row"], batch["epoch"], self.augment)
        return {"frames": out["frames"], "dt_s": out["dt_s"], "row": out["row"]}


def triplet_dataset(
    dataset: str,
    name: str = "default",
    split: str = "train",
    epoch: int = 0,
    epochs: int = 1,
    augment: bool = True,
    shuffle: bool = True,
    batch_size: int = 64,
    workers: int = 2,
    cpus_per_worker: float = 0.5,
    seed: int | None = None,
    skip: int = 0,
) -> Any:
    """A Ray Dataset of triplets ({"frames": (3, h, w) float32, "dt_s", "row"}) for `iter_torch_batches` or
    Ray Train (`datasets={"train": ...}`), covering `epochs` epochs from `epoch` in one stream (less its first
    `skip` triplets, for a resumed run). Shuffling is a function of (seed, epoch) (seed: the index's unless
    given) and augmentation of (index seed, epoch, row), the same as in `TripletDataset`."""
    import pyarrow as pa
    import ray

    from raywave.data.triplets import TripletSource

    source = TripletSource(dataset, name)
    base = source.rows(split)
    rows, eps = [], []
    seed = source.cfg.seed if seed is None else seed
    for e in range(epoch, epoch + epochs):
        rows.append(np.random.default_rng([seed, e]).permutation(base) if shuffle else base)
        eps.append(np.full(len(base), e, np.int64))
    rows_a, eps_a = np.concatenate(rows)[skip:], np.concatenate(eps)[skip:]
    block = 4 * batch_size
    tables = [pa.table({"row": rows_a[i : i + block], "epoch": eps_a[i : i + block]})
              for i in range(0, len(rows_a), block)]  # fmt: skip
    tables = tables or [pa.table({"row": np.zeros(0, np.int64), "epoch": np.zeros(0, np.int64)})]
    return ray.data.from_arrow(tables).map_batches(
        _TripletMaker,
        fn_constructor_kwargs={"dataset": dataset, "name": name, "augment": augment},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
    )
