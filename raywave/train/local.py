"""The loop core in this process, without Ray: the plain baseline and the fast path for tests (no Ray import)."""

from __future__ import annotations

from raywave.train.checkpoints import RunCheckpoints
from raywave.train.loop import Context, TrainState, train
from raywave.train.metrics import MetricsLog


def train_local(task, run_dir: str, ctx: Context | None = None, progress=None, tensorboard: bool = True) -> TrainState:
    """Run (or resume) `task` in this process into `run_dir` (checkpoints, metrics) as rank 0 of 1."""
    ctx = ctx or Context()
    model = task.build_model(ctx.device)
    log = MetricsLog(run_dir, tensorboard=tensorboard)
    try:
        return train(task, model, ctx, RunCheckpoints(run_dir), log, progress)
    finally:
        log.close()
