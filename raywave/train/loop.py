"""The resumable training-loop core: plain torch, no Ray.

A *task* supplies the model, the data and the loss; the core supplies the rest: AdamW with a OneCycle schedule
(5% linear warm-up, linear decay, as RAFT trains), gradient clipping, optional autocast (bf16/fp16 with a
GradScaler), validation every `val_every` steps, atomic checkpoints every `checkpoint_every` steps and at the end
of every stage (the last and the best kept), metrics rows, and resume. The same `train()` runs in a plain process
(rank 0 of 1) and inside a Ray Train worker (`raywave.train.ray_train` passes the DDP-wrapped model, rank/world
and a checkpoint store that also reports to Ray).

Task contract (duck-typed):
  name: str                          "nfp", "ofe", ... (recorded in model.pt)
  val_key: str                       validation figure that decides "best" (lower is better), e.g. "val_mse"
  targets: dict[str, list[float]]    efficiency targets: metric -> values (first step/sample count reaching each)
  stages() -> list[StageConfig]      one or more stages; the global step runs on across them
  build_model(device) -> nn.Module   a fresh model; freeze parameters HERE (before DDP wraps it)
  batches(stage, start, rank, world) -> Iterator
                                     this rank's share of stage `stage`'s global batches for stage steps start,
                                     start+1, ...: a function of (seed, stage, step) only, so a resumed run sees
                                     the batches an uninterrupted one would
  train_step(model, batch, gen) -> (loss, samples)
                                     forward + loss on this rank's batch (mean over its samples) and its sample
                                     count; `gen` is a torch.Generator seeded from (seed, step, rank)
  evaluate(model, stage) -> dict[str, float]
                                     validation figures (rank 0 only; the unwrapped model, already in eval mode)
  model_meta() -> dict               what model.pt records beside the weights (variant, iters, ...)
Optional: `on_stage_start(model, stage)` (called on every rank when a stage begins, not on resume mid-stage).

Randomness: the core never touches the global RNG. Each step gets `step_generator(seed, step, rank)`, so the
"RNG state" of a run is (seed, step) and it is saved with every checkpoint.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from raywave.config import StrictModel


class StageConfig(StrictModel):
    """One stage of training: its own steps, batch and optimiser settings (the global step runs on)."""

    name: str = "train"
    steps: int = Field(1000, ge=1, description="optimizer steps in this stage")
    batch_size: int = Field(8, ge=1, description="global batch (split evenly over the workers)")
    lr: float = Field(4e-4, gt=0, description="peak learning rate of the OneCycle schedule")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    warmup: float = Field(0.05, ge=0, lt=1, description="fraction of the stage spent warming up (linear)")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    val_every: int = Field(100, ge=1, description="validate every this many steps (and at the stage's end)")
    checkpoint_every: int = Field(100, ge=1, description="checkpoint every this many steps (and at the end)")
    log_every: int = Field(10, ge=1, description="a metrics row (mean train loss, lr) every this many steps")


@dataclass
class Context:
    """Where this copy of the loop runs. Defaults: one plain process on the CPU."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # replaces task.batches(stage, start, rank, world), e.g. with a Ray Data shard
    batches: Callable[[int, int], Iterator[Any]] | None = None
    stop_after: int | None = None  # stop after this many steps of this session (tests of interruption)


@dataclass
class TrainState:
    """Everything besides model and optimiser that a checkpoint restores."""

    step: int = 0  # global optimizer steps done
    stage: int = 0
    stage_step: int = 0
    samples: int = 0
    elapsed_s: float = 0.0  # training wall time before this session
    history: list[dict] = field(default_factory=list)  # metrics rows (train and validation)
    best: dict | None = None  # {"step", "stage", val_key: value}

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def step_generator(seed: int, step: int, rank: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator that is a pure function of (seed, step, rank)."""
    s = int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(s)


def make_optimizer(params, st: StageConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW + OneCycleLR (linear warm-up over `warmup` of the stage, then linear decay), as RAFT's recipe."""
    opt = torch.optim.AdamW(params, lr=st.lr, weight_decay=st.weight_decay, eps=1e-8)
    warm = max(1, round(st.warmup * st.steps))  # the peak lands exactly on step `warm` (>= 1: OneCycle needs it)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=st.lr, total_steps=st.steps + 1, pct_start=(warm + 1) / (st.steps + 1), cycle_momentum=False,
        anneal_strategy="linear",
    )  # fmt: skip
    return opt, sched


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def _mean_over_ranks(value: float, ctx: Context) -> float:
    if ctx.world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / ctx.world
    return value


def _autocast(ctx: Context):
    if ctx.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if ctx.precision == "bf16" else torch.float16
    return torch.autocast(device_type=ctx.device.type, dtype=dtype)


def restore(model: torch.nn.Module, loaded: tuple[dict, dict] | None, device) -> TrainState:
    """Load a checkpoint's weights into `model`; the TrainState it holds (fresh if none)."""
    if loaded is None:
        return TrainState()
    model_obj, train_state = loaded
    unwrap(model).load_state_dict(model_obj["model"])
    return TrainState(**train_state["state"])


def _checkpoint(task, model, opt, sched, scaler, state: TrainState, ctx: Context) -> tuple[dict, dict]:
    from raywave.train.checkpoints import model_object

    train_state = {"state": state.to_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                   "scaler": scaler.state_dict() if scaler else None,
                   "rng": {"scheme": "step_generator", "seed": ctx.seed, "step": state.step}}  # fmt: skip
    return model_object(task, unwrap(model), state), train_state


def train(task, model: torch.nn.Module, ctx: Context, store, log=None, progress=None) -> TrainState:
    """Run (or resume) every stage of `task` on `model` (built by task.build_model, maybe DDP-wrapped).

    `store` holds checkpoints: `.load() -> (model_obj, train_state) | None` and
    `.commit(metrics, checkpoint=None | (model_obj, train_state), is_best=False)` (called on every rank at the
    same steps; rank 0 passes the checkpoint). `log` (rank 0) is a `MetricsLog`; `progress(info)` a callback."""
    loaded = store.load()
    state = restore(model, loaded, ctx.device)
    stages = task.stages()
    if state.stage < len(stages) and state.stage_step >= stages[state.stage].steps:
        state.stage, state.stage_step = state.stage + 1, 0
    if log is not None:
        log.resume(state.history, state.step)
    t0, done_here = time.perf_counter() - state.elapsed_s, 0
    last_val = next((r for r in reversed(state.history) if task.val_key in r), None)
    while state.stage < len(stages):
        si, st = state.stage, stages[state.stage]
        params = [p for p in model.parameters() if p.requires_grad]
        opt, sched = make_optimizer(params, st)
        scaler = torch.amp.GradScaler(ctx.device.type) if ctx.precision == "fp16" else None
        if loaded is not None and state.stage_step > 0:
            opt.load_state_dict(loaded[1]["optimizer"])
            sched.load_state_dict(loaded[1]["scheduler"])
            if scaler and loaded[1].get("scaler"):
                scaler.load_state_dict(loaded[1]["scaler"])
        elif hasattr(task, "on_stage_start"):
            task.on_stage_start(unwrap(model), si)
        loaded = None
        data = (ctx.batches or (lambda s, k: task.batches(s, k, ctx.rank, ctx.world)))(si, state.stage_step)
        losses: list[float] = []
        model.train()
        while state.stage_step < st.steps:
            batch = next(data)
            gen = step_generator(ctx.seed, state.step, ctx.rank, "cpu")
            with _autocast(ctx):
                loss, n = task.train_step(model, batch, gen)
            opt.zero_grad(set_to_none=True)
            if scaler:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(params, st.grad_clip)
            scaler.step(opt) if scaler else opt.step()
            if scaler:
                scaler.update()
            lr = opt.param_groups[0]["lr"]
            sched.step()
            state.step, state.stage_step, state.samples = (
                state.step + 1,
                state.stage_step + 1,
                state.samples + n * ctx.world,
            )
            losses.append(float(loss.detach()))
            done_here += 1
            end = state.stage_step == st.steps
            row = None
            if state.stage_step % st.log_every == 0 or state.stage_step % st.val_every == 0 or end:
                row = {"step": state.step, "stage": si, "stage_name": st.name, "samples": state.samples,
                       "wall_s": time.perf_counter() - t0, "lr": lr,
                       "train_loss": _mean_over_ranks(float(np.mean(losses)), ctx)}  # fmt: skip
                losses = []
            validate = state.stage_step % st.val_every == 0 or end
            ckpt_due = state.stage_step % st.checkpoint_every == 0 or end
            stopping = ctx.stop_after is not None and done_here >= ctx.stop_after
            is_best = False
            if validate and ctx.rank == 0:
                unwrap(model).eval()
                with torch.no_grad():
                    last_val = task.evaluate(unwrap(model), si)
                row.update(last_val)
                model.train()
                if state.best is None or row[task.val_key] < state.best[task.val_key]:
                    state.best = {"step": state.step, "stage": si, task.val_key: row[task.val_key]}
                    is_best = True
            if row is not None and ctx.rank == 0:
                state.history.append(row)
                if log is not None:
                    log.add(row)
            if validate or ckpt_due:
                state.elapsed_s = time.perf_counter() - t0
                save = ctx.rank == 0 and (ckpt_due or is_best)  # a new best is always saved
                ckpt = _checkpoint(task, model, opt, sched, scaler, state, ctx) if save else None
                store.commit(row or {}, checkpoint=ckpt, is_best=is_best)
                if log is not None:
                    log.flush()
            if progress is not None and ctx.rank == 0:
                progress({"step": state.step, "total": sum(s.steps for s in stages), "stage": si,
                          "stage_name": st.name, "loss": losses[-1] if losses else (row or {}).get("train_loss"),
                          "last_val": last_val, "best": state.best,
                          "elapsed_s": time.perf_counter() - t0, "done_here": done_here})  # fmt: skip
            if stopping:
                return state
        state.stage, state.stage_step = state.stage + 1, 0
    state.elapsed_s = time.perf_counter() - t0
    return state
