"""The OFE training task in plain torch: RAFT with a transfer strategy, the reference's optimiser and loss, one
training step, validation (EPE, 1/3/5 px through `raywave.ofe.metrics`, and the zero-flow EPE of the same pairs).

No Ray here: the loop core (`raywave.train.loop`) drives these pieces, in one process or on Ray Train workers.

Per stage, as in princeton-vl/RAFT `train.py`: the loop core's AdamW (eps 1e-8) over the trainable parameters and
OneCycleLR (5% linear warm-up, linear decay, no momentum cycling; over steps + 1 where the reference uses
steps + 100), `sequence_loss` with the stage's gamma over `iters` (12) iterations, the gradient norm clipped to
`clip` (1.0). Each stage starts from the previous stage's final weights with a fresh optimiser and schedule; the
strategy's frozen parameters and held BatchNorm layers stay so throughout (the model is built once per process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from raywave.data.flow_datasets import FlowDataset
from raywave.errors import RaywaveError
from raywave.models.checkpoint import model_state, read_checkpoint
from raywave.models.raft import RAFT, sequence_loss
from raywave.models.transfer import TransferReport, apply_strategy
from raywave.ofe.config import OFETrainConfig, StageConfig
from raywave.ofe.data import StageBatches, stage_datasets, view
from raywave.ofe.evaluate import evaluate
from raywave.ofe.metrics import combine, flow_metrics
from raywave.train.loop import StageConfig as LoopStage
from raywave.train.loop import unwrap


def encoder_variant(state: dict[str, torch.Tensor]) -> str | None:
    """basic or small, from the first conv of the feature encoder (64 vs 32 output channels)."""
    w = state.get("fnet.conv1.weight")
    return None if w is None else {64: "basic", 32: "small"}.get(int(w.shape[0]))


def nfp_checkpoint_path(source: str | Path) -> Path:
    """The NFP checkpoint file of a run directory (its best checkpoint), a checkpoint directory, or a file."""
    from raywave.train.checkpoints import resolve_checkpoint  # the run layout belongs to the training layer

    return Path(resolve_checkpoint(str(source), "best"))


def read_nfp(source: str | Path, variant: str) -> dict[str, torch.Tensor]:
    """The NFP state dict of a run or checkpoint; refuses anything that is not an NFP of this encoder variant."""
    path = nfp_checkpoint_path(source)
    obj = read_checkpoint(path, "NFP checkpoint")
    state = model_state(obj)
    kind = obj.get("task") or obj.get("kind")
    if kind not in (None, "nfp") or not any(k.startswith("decoder.") for k in state):
        raise RaywaveError(f"{str(source)!r} is not an NFP checkpoint (it has no next-frame decoder); pass the run "
                           "directory or checkpoint written by `raywave nfp pretrain`")  # fmt: skip
    found = obj.get("variant") or obj.get("meta", {}).get("variant") or encoder_variant(state)
    if found != variant:
        raise RaywaveError(f"the NFP checkpoint {str(source)!r} has the {found} encoder but --variant is {variant}; "
                           f"use --variant {found} or an NFP pretrained with --variant {variant}")  # fmt: skip
    return state


def build_model(cfg: OFETrainConfig, nfp_state: dict | None) -> tuple[RAFT, TransferReport]:
    """A RAFT initialised from cfg.seed (under a forked RNG: the process's global RNG is left as it was), with
    the transfer strategy applied (copied keys, frozen parameters, BatchNorm held in eval)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = RAFT(cfg.variant)
    report = apply_strategy(model, cfg.strategy, nfp_state)
    return model, report


def val_view(val: FlowDataset, stage: StageConfig) -> FlowDataset:
    """The stage's validation pairs: the first `val_pairs` of the split (all when None)."""
    return val if stage.val_pairs is None else view(val, list(range(min(stage.val_pairs, len(val)))))


def zero_flow_metrics(val: FlowDataset) -> dict:
    """The metrics of predicting zero flow on the validation pairs (each stage's baseline)."""
    parts = []
    for s in val.samples:
        item = val.read(s)
        gt = torch.from_numpy(item["flow"]).permute(2, 0, 1)[None]
        parts.append(flow_metrics(torch.zeros_like(gt), gt, torch.from_numpy(item["valid"])[None].float()))
    return combine(parts)


def val_record(metrics: dict, zero: dict) -> dict[str, float]:
    """The validation figures of a metrics row: EPE, 1/3/5 px, zero-flow EPE and the ratio of the two."""
    out = {f"val_{k}": float(metrics[k]) for k in ("epe", "1px", "3px", "5px")}
    out["val_zero_epe"] = float(zero["epe"])
    out["val_epe_ratio"] = out["val_epe"] / out["val_zero_epe"] if out["val_zero_epe"] > 0 else float("nan")
    return out


class OFETask:
    """RAFT optical-flow training in stages, for `raywave.train.loop.train` (see its task contract).

    Built from a plain dict (it travels to the Ray Train workers): {"ofe": OFETrainConfig as JSON, "roots":
    {stage dataset name: root (real, or the synthetic tree the driver wrote)}, "nfp": NFP model.pt or None}."""

    name = "ofe"
    val_key = "val_epe"

    def __init__(self, config: dict):
        self.cfg = OFETrainConfig.model_validate(config["ofe"])
        self.roots, self.nfp = config["roots"], config.get("nfp")
        self.targets = {"val_epe": list(self.cfg.target_epe)}
        self._data: dict[int, tuple[FlowDataset, FlowDataset]] = {}
        self._zero: dict[int, dict] = {}
        self.report: TransferReport | None = None

    def data(self, stage: int) -> tuple[FlowDataset, FlowDataset]:
        """(training, validation) pairs of a stage, opened on first use."""
        if stage not in self._data:
            st = self.cfg.stages[stage]
            self._data[stage] = stage_datasets(self.cfg, st, self.roots[st.name])
        return self._data[stage]

    def stages(self) -> list[LoopStage]:
        c = self.cfg
        return [LoopStage(name=st.name, steps=st.steps, batch_size=st.batch, lr=st.lr, weight_decay=st.weight_decay,
                          warmup=0.05, grad_clip=st.clip, val_every=st.val_every, checkpoint_every=c.checkpoint_every,
                          log_every=min(st.val_every, c.log_every)) for st in c.stages]  # fmt: skip

    def build_model(self, device: torch.device) -> RAFT:
        nfp_state = read_nfp(self.nfp, self.cfg.variant) if self.cfg.strategy != "scratch" else None
        model, self.report = build_model(self.cfg, nfp_state)
        return model.to(device)

    def batches(self, stage: int, start: int, rank: int, world: int) -> Iterator[dict[str, torch.Tensor]]:
        source = StageBatches(self.data(stage)[0], self.cfg.stages[stage], stage, self.cfg.seed,
                              self.cfg.data_fraction)  # fmt: skip
        step = start
        while True:
            yield {**source.batch(step, rank, world), "stage": stage}
            step += 1

    def train_step(self, model: nn.Module, batch: dict[str, torch.Tensor], gen: torch.Generator):
        """RAFT's sequence loss of this rank's share of the batch (RAFT draws no random numbers: `gen` unused)."""
        device = next(unwrap(model).parameters()).device
        st = self.cfg.stages[batch["stage"]]
        b = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "stage"}
        preds = model(b["img1"], b["img2"], iters=st.iters)
        loss, _ = sequence_loss([p.float() for p in preds], b["flow"], b["valid"], gamma=st.gamma)
        return loss, len(b["img1"])

    def evaluate(self, model: nn.Module, stage: int) -> dict[str, float]:
        st = self.cfg.stages[stage]
        val = val_view(self.data(stage)[1], st)
        if stage not in self._zero:
            self._zero[stage] = zero_flow_metrics(val)
        metrics, _ = evaluate(model, val, iters=st.val_iters)
        return val_record(metrics, self._zero[stage])

    def model_meta(self) -> dict:
        return {"variant": self.cfg.variant, "strategy": self.cfg.strategy}
