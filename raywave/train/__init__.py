"""Training: one resumable loop core (plain torch) and one Ray Train wrapper around it.

Plain modules (no Ray import, usable and testable in a bare Python session):

- `raywave.train.loop`         the loop core: `Task` (what a task supplies), `StageConfig`, `train(...)`
- `raywave.train.checkpoints`  checkpoint files (model.pt + train_state.pt), `RunCheckpoints` (last and best)
- `raywave.train.metrics`      `MetricsLog` (metrics.parquet + .csv + TensorBoard), training-efficiency summary
- `raywave.train.record`       run.json (config, code version, data identity, status, timings), resume checks
- `raywave.train.nfp`          the NFP pretraining task (`NFPConfig`, `NFPTask`)

Ray (the only modules here that import `ray.train`):

- `raywave.train.ray_train`    `fit(...)`: TorchTrainer + DDP + Ray Data shards + report/get_checkpoint
- `raywave.train.exactness`    DDP-exactness harness (one step on 2 Ray Train workers vs one process)

The contract is written in `raywave/train/loop.py`'s docstring and in /work/notes/train-api.md.
"""
