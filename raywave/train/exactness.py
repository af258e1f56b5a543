"""DDP exactness: one optimizer step on N Ray Train workers, each on 1/N of a batch, against one process on the
whole batch. Both go through the real code paths (`ray_train.fit` with the task's own `batches` split, and
`local.train_local`), so the comparison covers the wrapper, DDP's gradient averaging and the loop core.

    from raywave.train.exactness import compare_one_step
    diff = compare_one_step("raywave.train.nfp:NFPTask", cfg_dict, tmp_dir, resources, workers=2)
    assert diff["max_abs_diff"] < 1e-5

The task config must make one stage of exactly 1 step (`steps: 1` for NFP) and a batch divisible by `workers`;
a task whose loss is a mean over its rank's samples and whose model has no batch-coupled layers (BatchNorm in
train mode) gives the same gradients either way.

AdamW's first step moves each element by lr0 * g / (|g| + eps), about lr0 times the SIGN of its gradient, so an
element whose gradient is at float-noise level (where the whole-batch gradient and the mean of the half-batch
gradients differ by as much as the gradient itself, in one process already: see `gradients`) may step either
way. Tests therefore hold elements with a clear gradient to 1e-5 and the rest to one step each way.
"""

from __future__ import annotations

from pathlib import Path

import torch

from raywave.train.checkpoints import RunCheckpoints
from raywave.train.local import train_local
from raywave.train.ray_train import FitOptions, fit, make_task


def gradients(task, batches: list) -> dict[str, torch.Tensor]:
    """Mean over `batches` of the loss gradients of a fresh model (e.g. the whole batch, or its halves)."""
    model = task.build_model("cpu")
    model.train()
    total: dict[str, torch.Tensor] = {}
    for batch in batches:
        model.zero_grad()
        loss, _ = task.train_step(model, batch, None)
        loss.backward()
        for k, p in model.named_parameters():
            if p.grad is not None:
                total[k] = total.get(k, 0) + p.grad / len(batches)
    return total


def compare_one_step(task_ref: str, task_config: dict, root: str | Path, resources: dict, workers: int = 2,
                     seed: int = 0) -> dict:  # fmt: skip
    """{"max_abs_diff", "max_rel_diff", "params"} between the N-worker and the single-process step."""
    root = Path(root)
    task = make_task(task_ref, task_config)
    stages = task.stages()
    if len(stages) != 1 or stages[0].steps != 1:
        raise ValueError("the exactness check needs a task config of one stage with steps == 1")
    from raywave.train.loop import Context

    torch.set_num_threads(1)
    train_local(task, str(root / "single"), Context(seed=seed), tensorboard=False)
    fit(task_ref, task_config, str(root / "ddp"), FitOptions(workers=workers, ray_data=False, seed=seed,
                                                             max_failures=0), resources)  # fmt: skip
    a = RunCheckpoints(str(root / "single")).load()[0]["model"]
    b = RunCheckpoints(str(root / "ddp")).load()[0]["model"]
    init = make_task(task_ref, task_config).build_model("cpu").state_dict()
    diffs, rel, moved = 0.0, 0.0, 0
    for k, v in a.items():
        if not v.is_floating_point():
            continue
        d = (v - b[k]).abs().max().item() if v.numel() else 0.0
        diffs = max(diffs, d)
        step = (v - init[k]).abs().max().item() if v.numel() else 0.0
        moved += step > 0
        rel = max(rel, d / step) if step > 0 else rel
    return {"max_abs_diff": diffs, "max_rel_diff": rel, "params": len(a), "params_moved": moved}
