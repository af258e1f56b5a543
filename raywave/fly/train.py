"""Train one fly-network model on the optic-flow task: a plain torch loop, resumable, no Ray.

Adam on the network's 734 parameters and the decoder's, a stepwise learning rate (lr_start -> lr_end in
`lr_steps` equal steps), batch 4, the l2norm loss, and for the first `penalty_stop` iterations the activity
penalty on resting potentials: 0.1 · mean((w · (5 - mean central activity))²), with w = 1 below the baseline and
0.1 above, its gradient given to the resting potentials only. Every `checkpoint_every` iterations the model is
evaluated (validation EPE) and a checkpoint is written atomically; `best.json` names the best one.

A run is deterministic given its config: the batches, augmentations and dropout of iteration i depend only on
(seed, i) — dropout from a torch.Generator of its own per iteration, never the global seed — and every
reduction on the training path has a fixed order at any thread count (see `FlyNetwork.per_node`), so a killed
run resumed from its last checkpoint continues bit for bit as if it had not stopped.

The config and data live in `train_config.py`, the run directory (checkpoints, status) in `checkpoints.py`;
their names are re-exported here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from raywave.errors import RaywaveError
from raywave.fly import connectome as fly_connectome
from raywave.fly.checkpoints import (
    check_run_dir,
    final_record,
    latest_checkpoint,
    load_model,
    load_states,
    read_checkpoint,
    read_status,
    resume_point,
    save_atomic,
    stderr_log,
)
from raywave.fly.decoder import FlowDecoder, epe
from raywave.fly.ensemble import FlyEnsemble, central_mean, load_member_optimizer_state, member_optimizer_state
from raywave.fly.kernel import keep_freed_memory
from raywave.fly.network import FlyNetwork
from raywave.fly.sintel import FlySintel
from raywave.fly.train_config import (
    FlyTrainConfig,
    SyntheticData,
    learning_rate,
    load_config,
    prepare_data,
    synthetic_root,
)

__all__ = [  # the training API, with the config and run-directory names re-exported
    "FlyTrainConfig", "SyntheticData", "check_run_dir", "dropout_generator", "evaluate", "evaluate_models",
    "final_record", "latest_checkpoint", "learning_rate", "load_config", "load_model", "load_states", "predict",
    "prepare_data", "read_checkpoint", "read_status", "resume_point", "synthetic_root", "train_models", "train_one",
]  # fmt: skip


def predict(net: FlyNetwork, decoder: FlowDecoder, lum: torch.Tensor, cfg: FlyTrainConfig, generator=None) -> tuple:
    """(flow prediction, voltages) for a batch of luminance (B, T, columns), from the grey steady state;
    `generator` draws the dropout mask in training mode."""
    state = net.steady_state(lum.shape[0], cfg.dt, cfg.t_pre)
    v, maps = net(lum, cfg.dt, state, readout=decoder.readout())
    return decoder.decode(maps, generator), v


@torch.no_grad()
def evaluate(net: FlyNetwork, decoder: FlowDecoder, data: FlySintel, cfg: FlyTrainConfig) -> dict[str, float]:
    """Validation EPE and the zero-flow EPE on the same samples."""
    decoder.eval()
    errs, zero, n = 0.0, 0.0, 0
    for lum, flow in data.batches(cfg.batch_size, epoch=0, shuffle=False):
        lum, flow = lum.to(cfg.device), flow.to(cfg.device)
        pred, _ = predict(net, decoder, lum, cfg)
        errs += float(epe(pred, flow)) * len(lum)
        zero += float(torch.linalg.vector_norm(flow, dim=-1).mean()) * len(lum)
        n += len(lum)
    decoder.train()
    return {"val_epe": errs / n, "zero_flow_epe": zero / n}


def dropout_generator(seed: int, it: int, device: str = "cpu") -> torch.Generator:
    """The generator of iteration `it`'s dropout masks: a function of (seed, it) only."""
    state = np.random.SeedSequence([seed, it, 0xD50]).generate_state(2, np.uint64)
    return torch.Generator(device=device).manual_seed(int(state[0] >> np.uint64(1)))


class Member:
    """One model of a training pass: its config (its seed), run directory, data and history."""

    def __init__(self, cfg: FlyTrainConfig, out: Path):
        self.cfg, self.out = cfg, Path(out)
        self.train, self.val = prepare_data(cfg, self.out)
        if len(self.train) == 0 or len(self.val) == 0:
            raise RaywaveError("the scene split left no training or no validation scenes; add scenes or change "
                               "val_scenes")  # fmt: skip
        self.history: list[dict] = []
        self.losses: list[float] = []  # training losses since the last checkpoint
        self.eval: dict[str, float] = {}  # validation at the current checkpoint

    def batch(self, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Iteration `it`'s batch: from (seed, it) only, so a model's data is the same alone or in a pass."""
        per_epoch = math.ceil(len(self.train) / self.cfg.batch_size)
        epoch, k = divmod(it, per_epoch)
        return self.train.batch(self.train.order(epoch)[k * self.cfg.batch_size : (k + 1) * self.cfg.batch_size],
                                epoch)  # fmt: skip


class Pass:
    """K models' network, decoder and Adam state as one set of tensors (one network pass per step)."""

    def __init__(self, c, cfg: FlyTrainConfig, seeds: list[int], template: FlyNetwork):
        dtype = getattr(torch, cfg.dtype)
        self.ens = FlyEnsemble(c, seeds, template).to(cfg.device, dtype)
        self.dec = FlowDecoder(n_out=len(c.output_types), seed=list(seeds)).to(cfg.device, dtype)
        self.params = [self.ens.v_rest, self.ens.tau, self.ens.strength, *self.dec.parameters()]
        h = self.dec.hidden
        self.rows = [0, 0, 0, h, h, h, h, 3, 3]  # rows of each tensor per model (0: a (K, ...) tensor)
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr_start)

    def member(self, j: int) -> dict:
        return {"network": self.ens.member_state(j), "decoder": self.dec.member_state(j),
                "optimizer": member_optimizer_state(self.opt, self.params, self.rows, j)}  # fmt: skip

    def load_member(self, j: int, state: dict) -> None:
        self.ens.load_member(j, state["network"])
        self.dec.load_member(j, state["decoder"])
        load_member_optimizer_state(self.opt, self.params, self.rows, j, state["optimizer"])

    def finite(self) -> torch.Tensor:
        """(K,) model j's parameters are all finite."""
        k = self.ens.n_models
        dec = torch.stack([p.detach().reshape(k, -1).isfinite().all(1) for p in self.dec.parameters()]).all(0)
        return self.ens.finite() & dec

    def predict(self, lum: torch.Tensor, cfg: FlyTrainConfig, generators=None) -> tuple:
        """(flow (K, B, T, columns, 2), voltages (B, T, K·N)) for luminance (K, B, T, columns)."""
        state = self.ens.steady_state(lum.shape[1], cfg.dt, cfg.t_pre)
        v, maps = self.ens(lum, cfg.dt, state, readout=self.dec.readout())
        return self.dec.decode(maps, generators).permute(3, 0, 1, 2, 4), v


def l2norm_models(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(K,) the l2norm loss of every model: pred and target (K, B, ...)."""
    return ((pred - target) ** 2).flatten(2).sum(2).sqrt().mean(1)


def _stack(pairs: list[tuple], device: str, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack every model's batch to (K, B, ...) (cut to the shortest sequence, which equal-length scenes avoid)."""
    steps = min(p[0].shape[1] for p in pairs)
    lum = torch.stack([p[0][:, :steps] for p in pairs]).to(device, dtype)
    return lum, torch.stack([p[1][:, :steps] for p in pairs]).to(device, dtype)


@torch.no_grad()
def evaluate_models(p: Pass, members: list[Member], cfg: FlyTrainConfig) -> list[dict[str, float]]:
    """Validation and zero-flow EPE of every model on its own validation samples, all models in one pass."""
    p.dec.eval()
    n_val = {len(m.val) for m in members}
    if len(n_val) != 1:
        raise RaywaveError("the models' validation sets differ in size; use the same val_scenes for all")
    errs = torch.zeros(len(members), dtype=torch.float64)
    zero = torch.zeros_like(errs)
    n = 0
    iters = [m.val.batches(cfg.batch_size, epoch=0, shuffle=False) for m in members]
    for batches in zip(*iters, strict=True):
        lum, flow = _stack(list(batches), cfg.device, getattr(torch, cfg.dtype))
        pred, _ = p.predict(lum, cfg)
        b = lum.shape[1]
        errs += torch.linalg.vector_norm(pred - flow, dim=-1).flatten(1).mean(1).double().cpu() * b
        zero += torch.linalg.vector_norm(flow, dim=-1).flatten(1).mean(1).double().cpu() * b
        n += b
    p.dec.train()
    return [{"val_epe": float(e / n), "zero_flow_epe": float(z / n)} for e, z in zip(errs, zero, strict=True)]


def _start(members: list[Member], cfg: FlyTrainConfig, log) -> tuple[int, list[dict | None]]:
    """The common iteration the pass resumes from (the oldest of the models' newest readable checkpoints) and
    every model's checkpoint at that iteration (None: start from the initialisation)."""
    latest = [resume_point(m.out, cfg.device, log) for m in members]
    if any(c is None for c in latest):
        return 0, [None] * len(members)
    start = min(c["iteration"] for c in latest)
    ckpts = [c if c["iteration"] == start else read_checkpoint(m.out / "checkpoints" / f"it-{start:08d}.pt",
                                                               cfg.device)
             for m, c in zip(members, latest, strict=True)]  # fmt: skip
    return start, ckpts


def _save_member(p: Pass, j: int, m: Member, it: int, c) -> None:
    record = {"iteration": it, "train_loss": float(np.mean(m.losses)) if m.losses else float("nan"),
              **m.eval}  # fmt: skip
    m.history, m.losses = [*m.history, record], []
    save_atomic({**p.member(j), "iteration": it, "history": m.history, "config": m.cfg.model_dump(),
                  "connectome": c.provenance}, m.out / "checkpoints" / f"it-{it:08d}.pt")  # fmt: skip
    best = min(m.history, key=lambda r: r["val_epe"])
    save_atomic({**best, "checkpoint": f"checkpoints/it-{best['iteration']:08d}.pt"}, m.out / "best.json")
    save_atomic(m.history, m.out / "history.json")


def train_models(cfgs: list[FlyTrainConfig], outs: list, progress=None, stop_after: int | None = None, log=None,
                 faults: dict[int, int] | None = None) -> list[dict]:  # fmt: skip
    """Train (or resume) K models in one network pass per step, model j from cfgs[j] (configs that differ in
    their seed only) into outs[j]; each ends exactly where `train_one(cfgs[j], outs[j])` would.

    Inputs are validated before anything is written. A model whose loss or parameters stop being finite is
    marked diverged (status.json, with the iteration) and leaves the pass; the others go on. `faults` (tests)
    maps a seed to an iteration after which that model's parameters are set to NaN."""
    cfg = cfgs[0]
    if any(k.model_dump(exclude={"seed"}) != cfg.model_dump(exclude={"seed"}) for k in cfgs):
        raise RaywaveError("the models of one pass must share their config except for the seed")
    outs = [Path(o) for o in outs]
    for k, o in zip(cfgs, outs, strict=True):
        check_run_dir(o, k)
    c = fly_connectome.load(cfg.connectome)
    if cfg.device == "cpu":
        keep_freed_memory()  # the same arrays every step: reuse them instead of page-faulting them back in
    if cfg.sintel_root and not Path(cfg.sintel_root).is_dir():
        raise RaywaveError(f"sintel_root {cfg.sintel_root} is not a directory; give the MPI-Sintel root")
    members = [Member(k, o) for k, o in zip(cfgs, outs, strict=True)]
    for m in members:
        m.train.render_all()
        m.val.render_all()
    for m in members:
        (m.out / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_atomic(m.cfg.model_dump(), m.out / "config.json")
    template = FlyNetwork(c, cfg.seed)
    start, ckpts = _start(members, cfg, log)
    p = Pass(c, cfg, [m.cfg.seed for m in members], template)
    for j, (m, ck) in enumerate(zip(members, ckpts, strict=True)):
        if ck is not None:
            load_states(template, FlowDecoder(n_out=len(c.output_types)), ck, m.out)  # checks the connectome
            p.load_member(j, ck)
            m.history = ck["history"]
        (m.out / "status.json").unlink(missing_ok=True)  # (re)trained from its last good checkpoint
    for it in range(start, cfg.iterations):
        losses = _step(p, members, cfg, it)
        for m, loss in zip(members, losses.tolist(), strict=True):
            m.losses.append(loss)
        for seed, at in (faults or {}).items():
            if at == it + 1 and seed in p.ens.seeds:
                with torch.no_grad():
                    p.ens.v_rest[p.ens.seeds.index(seed)] = float("nan")
        ok = (losses.isfinite().cpu() & p.finite().cpu()).tolist()
        if not all(ok):
            members, p = _drop_diverged(p, members, ok, it + 1, c, cfg, template, log)
            if not members:
                break
        if progress:
            progress(it + 1, float(np.mean([m.losses[-1] for m in members])))
        if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iterations:
            for m, e in zip(members, evaluate_models(p, members, cfg), strict=True):
                m.eval = e
            for j, m in enumerate(members):
                _save_member(p, j, m, it + 1, c)
        if stop_after is not None and it + 1 - start >= stop_after:
            break
    return [final_record(o) for o in outs]


def _step(p: Pass, members: list[Member], cfg: FlyTrainConfig, it: int) -> torch.Tensor:
    """One training step of every model of the pass (one network pass); returns the (K,) losses."""
    lum, flow = _stack([m.batch(it) for m in members], cfg.device, getattr(torch, cfg.dtype))
    for group in p.opt.param_groups:
        group["lr"] = learning_rate(cfg, it)
    gens = [dropout_generator(m.cfg.seed, it, cfg.device) for m in members]
    pred, v = p.predict(lum, cfg, gens)
    losses = l2norm_models(pred, flow)
    penalty_grad = None
    if cfg.activity_penalty > 0 and it < cfg.penalty_stop:
        penalty = activity_penalty_models(p.ens, v, cfg)
        penalty_grad = torch.autograd.grad(penalty, p.ens.v_rest, retain_graph=True)[0]
    p.opt.zero_grad()
    losses.sum().backward()  # the models share no parameter: each gets the gradient of its own loss
    if penalty_grad is not None:
        p.ens.v_rest.grad += penalty_grad
    p.opt.step()
    p.ens.clamp_()
    return losses.detach()


def _drop_diverged(p: Pass, members: list, ok: list[bool], it: int, c, cfg, template, log) -> tuple[list, Pass]:
    """Mark the models with non-finite loss or parameters diverged and rebuild the pass from the others."""
    for m, good in zip(members, ok, strict=True):
        if not good:
            save_atomic({"status": "diverged", "iteration": it, "seed": m.cfg.seed,
                          "reason": "loss or parameters not finite"}, m.out / "status.json")  # fmt: skip
            (log or stderr_log)(f"model {m.out} (seed {m.cfg.seed}) diverged at iteration {it}; the others go on")
    keep = [j for j, good in enumerate(ok) if good]
    if not keep:
        return [], p
    new = Pass(c, cfg, [members[j].cfg.seed for j in keep], template)
    for i, j in enumerate(keep):
        new.load_member(i, p.member(j))
    new.dec.norm.num_batches_tracked.copy_(p.dec.norm.num_batches_tracked)
    return [members[j] for j in keep], new


def activity_penalty_models(ens: FlyEnsemble, v: torch.Tensor, cfg: FlyTrainConfig) -> torch.Tensor:
    """Sum over models of `activity_penalty` (each model's penalty depends on its own resting potentials only)."""
    gap = cfg.activity_baseline - central_mean(ens, v, v.shape[1] // 4)
    w = torch.where(gap > 0, cfg.below_baseline_weight, cfg.above_baseline_weight)
    return cfg.activity_penalty * ((w * gap) ** 2).flatten(1).mean(1).sum()


def train_one(cfg: FlyTrainConfig, out: str | Path, progress=None, stop_after: int | None = None, log=None) -> dict:
    """Train (or resume) one model into `out` (a pass of one model); returns its best record."""
    return train_models([cfg], [Path(out)], progress, stop_after, log)[0]
