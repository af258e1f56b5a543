"""Train one fly-network model on the optic-flow task: a plain torch loop, resumable, no Ray.

Adam on the network's 734 parameters and the decoder's, a stepwise learning rate (lr_start -> lr_end in
`lr_steps` equal steps), batch 4, the l2norm loss, and for the first `penalty_stop` iterations the activity
penalty on resting potentials: 0.1 · mean((w · (5 - mean central activity))²), with w = 1 below the baseline and
0.1 above, its gradient given to the resting potentials only. Every `checkpoint_every` iterations the model is
evaluated (validation EPE) and a checkpoint is written atomically; `best.json` names the best one.

A run is deterministic given its config: the batches, augmentations and dropout of iteration i depend only on
(seed, i), so a killed run resumed from its last checkpoint continues exactly as if it had not stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator

from raywave.config import StrictModel, build, load_yaml
from raywave.errors import RaywaveError
from raywave.fly import connectome as fly_connectome
from raywave.fly.augment import AugmentConfig
from raywave.fly.decoder import FlowDecoder, epe, l2norm
from raywave.fly.network import FlyNetwork
from raywave.fly.sintel import FlySintel, RenderConfig, split_scenes
from raywave.io import atomic_path, write_json_atomic


class SyntheticData(StrictModel):
    """The embedded default data: synthetic flow written in the MPI-Sintel layout (no download)."""

    scenes: int = Field(4, ge=2)
    frames: int = Field(8, ge=2)
    height: int = Field(436, ge=391)
    width: int = Field(1024, ge=600)
    layers: int | None = Field(None, ge=0)  # moving shapes per scene (None: 2-5 at random)
    max_shift: float = Field(4.0, ge=0)  # px per frame
    seed: int = 0


class FlyTrainConfig(StrictModel):
    sintel_root: str | None = None  # None -> synthetic data under <out>/synthetic-sintel
    synthetic: SyntheticData = SyntheticData()
    connectome: str | None = None  # None -> the published spec from the flyvis wheel
    cache: str | None = None  # rendered-sample cache; None -> <out>/render-cache
    seed: int = 0
    iterations: int = Field(250_000, ge=1)
    batch_size: int = Field(4, ge=1)
    n_frames: int = Field(19, ge=2)
    dt: float = Field(0.02, gt=0)
    t_pre: float = Field(0.5, ge=0)
    lr_start: float = Field(5e-5, gt=0)
    lr_end: float = Field(5e-6, gt=0)
    lr_steps: int = Field(10, ge=1)
    activity_penalty: float = Field(0.1, ge=0)
    activity_baseline: float = 5.0
    below_baseline_weight: float = 1.0
    above_baseline_weight: float = 0.1
    penalty_stop: int = Field(150_000, ge=0)
    checkpoint_every: int = Field(3_600, ge=1)
    val_scenes: int = Field(1, ge=1)  # held-out scenes when the root is not the official Sintel
    augment: bool = True
    splits: int = Field(3, ge=1)
    device: str = "cpu"

    @model_validator(mode="after")
    def _check(self) -> FlyTrainConfig:
        if self.lr_end > self.lr_start:
            raise ValueError("lr_end must not exceed lr_start")
        return self


def load_config(path: str | None, overrides: dict[str, Any]) -> FlyTrainConfig:
    data = load_yaml(path) if path else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return build(FlyTrainConfig, data, "fly train config")


def learning_rate(cfg: FlyTrainConfig, it: int) -> float:
    """Stepwise geometric decay from lr_start to lr_end in lr_steps equal steps over the run."""
    if cfg.lr_steps == 1:
        return cfg.lr_start
    k = min(cfg.lr_steps - 1, it * cfg.lr_steps // cfg.iterations)
    return cfg.lr_start * (cfg.lr_end / cfg.lr_start) ** (k / (cfg.lr_steps - 1))


def activity_penalty(net: FlyNetwork, v: torch.Tensor, cfg: FlyTrainConfig) -> torch.Tensor:
    """Penalty on the temporal mean of central cells (after the first quarter) away from the baseline."""
    mean = v[:, v.shape[1] // 4 :, net.central_index].mean(1)
    gap = cfg.activity_baseline - mean
    w = torch.where(gap > 0, cfg.below_baseline_weight, cfg.above_baseline_weight)
    return cfg.activity_penalty * ((w * gap) ** 2).mean()


def synthetic_root(out: Path, s: SyntheticData) -> Path:
    """The embedded default data under `out` (written once, atomically: a temp tree renamed into place)."""
    root = out / "synthetic-sintel"
    if not (root / "training" / "flow").is_dir():
        from raywave.data.synthetic_flow import write_sintel

        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".synthetic-"))
        try:
            write_sintel(
                tmp,
                scenes=s.scenes,
                frames=s.frames,
                h=s.height,
                w=s.width,
                seed=s.seed,
                n_layers=s.layers,
                max_shift=s.max_shift,
            )
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def prepare_data(cfg: FlyTrainConfig, out: Path) -> tuple[FlySintel, FlySintel]:
    root = Path(cfg.sintel_root) if cfg.sintel_root else synthetic_root(out, cfg.synthetic)
    render = RenderConfig(splits=cfg.splits)
    train_scenes, val_scenes = split_scenes(root, render.dstype, cfg.val_scenes, cfg.seed)
    cache = Path(cfg.cache) if cfg.cache else out / "render-cache"
    aug = AugmentConfig() if cfg.augment else None
    train = FlySintel(root, train_scenes, cache, cfg.n_frames, cfg.dt, aug, cfg.seed, render)
    val = FlySintel(root, val_scenes, cache, cfg.n_frames, cfg.dt, None, cfg.seed, render)
    return train, val


def predict(net: FlyNetwork, decoder: FlowDecoder, lum: torch.Tensor, cfg: FlyTrainConfig) -> tuple:
    """(flow prediction, voltages) for a batch of luminance (B, T, columns), from the grey steady state."""
    state = net.steady_state(lum.shape[0], cfg.dt, cfg.t_pre)
    v = net(lum, cfg.dt, state)
    return decoder(net.output_voltages(v)), v


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


def _save_atomic(obj: Any, path: Path) -> None:
    if path.suffix == ".pt":
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    else:
        write_json_atomic(path, obj)


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("it-*.pt"))
    return ckpts[-1] if ckpts else None


def load_model(path: Path, connectome_path: str | None = None, device: str = "cpu") -> tuple:
    """(network, decoder, checkpoint dict) from a fly checkpoint."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        cfg = FlyTrainConfig.model_validate(ckpt["config"])
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is one clear line
        raise RaywaveError(
            f"{path} is not a readable fly checkpoint ({exc.__class__.__name__}); pick a file from <run>/checkpoints"
        ) from None
    c = fly_connectome.load(connectome_path or cfg.connectome)
    net = FlyNetwork(c, cfg.seed).to(device)
    net.load_state_dict(ckpt["network"])
    dec = FlowDecoder(n_out=len(c.output_types), seed=cfg.seed).to(device)
    dec.load_state_dict(ckpt["decoder"])
    return net, dec, ckpt


def train_one(cfg: FlyTrainConfig, out: str | Path, progress=None, stop_after: int | None = None) -> dict:
    """Train (or resume) one model into `out`; returns the final record (best checkpoint, EPEs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    cfg_path = out / "config.json"
    if cfg_path.exists() and json.loads(cfg_path.read_text()) != cfg.model_dump():
        raise RaywaveError(f"{out} holds a run with a different config; resume with the same config or use a new --out")
    _save_atomic(cfg.model_dump(), cfg_path)
    train, val = prepare_data(cfg, out)
    if len(train) == 0 or len(val) == 0:
        raise RaywaveError("the scene split left no training or no validation scenes; add scenes or change val_scenes")
    train.render_all()
    val.render_all()
    c = fly_connectome.load(cfg.connectome)
    net = FlyNetwork(c, cfg.seed).to(cfg.device)
    dec = FlowDecoder(n_out=len(c.output_types), seed=cfg.seed).to(cfg.device)
    opt = torch.optim.Adam([*net.parameters(), *dec.parameters()], lr=cfg.lr_start)
    history: list[dict] = []
    start = 0
    last = latest_checkpoint(out)
    if last is not None:
        ckpt = torch.load(last, map_location=cfg.device, weights_only=False)
        net.load_state_dict(ckpt["network"])
        dec.load_state_dict(ckpt["decoder"])
        opt.load_state_dict(ckpt["optimizer"])
        start, history = ckpt["iteration"], ckpt["history"]
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    losses: list[float] = []
    for it in range(start, cfg.iterations):
        epoch, k = divmod(it, per_epoch)
        lum, flow = train.batch(train.order(epoch)[k * cfg.batch_size : (k + 1) * cfg.batch_size], epoch)
        lum, flow = lum.to(cfg.device), flow.to(cfg.device)
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, it)
        torch.manual_seed(hash((cfg.seed, it)) % 2**31)  # dropout of iteration `it`
        pred, v = predict(net, dec, lum, cfg)
        loss = l2norm(pred, flow)
        penalty_grad = None
        if cfg.activity_penalty > 0 and it < cfg.penalty_stop:
            penalty_grad = torch.autograd.grad(activity_penalty(net, v, cfg), net.v_rest, retain_graph=True)[0]
        opt.zero_grad()
        loss.backward()
        if penalty_grad is not None:
            net.v_rest.grad += penalty_grad
        opt.step()
        net.clamp_()
        losses.append(loss.item())
        if progress:
            progress(it + 1, losses[-1])
        if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iterations:
            record = {"iteration": it + 1, "train_loss": float(np.mean(losses)), **evaluate(net, dec, val, cfg)}
            history = [*history, record]
            losses = []
            path = out / "checkpoints" / f"it-{it + 1:08d}.pt"
            _save_atomic({"network": net.state_dict(), "decoder": dec.state_dict(), "optimizer": opt.state_dict(),
                          "iteration": it + 1, "history": history, "config": cfg.model_dump(),
                          "connectome": c.provenance}, path)  # fmt: skip
            best = min(history, key=lambda r: r["val_epe"])
            _save_atomic({**best, "checkpoint": f"checkpoints/it-{best['iteration']:08d}.pt"}, out / "best.json")
            _save_atomic(history, out / "history.json")
        if stop_after is not None and it + 1 - start >= stop_after:
            break
    return json.loads((out / "best.json").read_text()) if (out / "best.json").exists() else {}
