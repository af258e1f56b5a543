"""Transfer strategies: NFP encoder weights into a stock RAFT, then what trains and how BatchNorm behaves.

strategy           copied from NFP   trainable in OFE                                   BatchNorm
scratch            nothing           everything                                         train mode
finetune           fnet.*, cnet.*    everything                                         train mode
freeze_encoder_bn  fnet.*, cnet.*    all but encoder weights and BN affine parameters   eval (stats frozen)
freeze_encoder     fnet.*, cnet.*    all but encoder conv/norm weights                  stats keep updating
freeze_bn          fnet.*, cnet.*    all but BN affine parameters                       eval (stats frozen)

Unlike RAFT's own `freeze_bn()` (which `model.train()` undoes), BatchNorm layers put in eval mode here stay in
eval mode across `train()`/`eval()` switches. Only RAFT basic's context encoder has BatchNorm: on RAFT-small
`freeze_bn` changes nothing and `freeze_encoder_bn` equals `freeze_encoder`, and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from raywave.errors import RaywaveError
from raywave.models.checkpoint import model_state, read_checkpoint

STRATEGIES = ("scratch", "finetune", "freeze_encoder_bn", "freeze_encoder", "freeze_bn")
ENCODERS = ("fnet.", "cnet.")


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that stays in eval mode (running statistics used, never updated) whatever train() says."""

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)


@dataclass
class TransferReport:
    strategy: str
    copied: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    bn_eval: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        notes = "".join(f"; {n}" for n in self.notes)
        return (f"{self.strategy}: copied {len(self.copied)} tensors, froze {len(self.frozen)} parameters, "
                f"{len(self.bn_eval)} BatchNorm layers held in eval mode{notes}")  # fmt: skip


def load_nfp_state(source: str | Path | dict) -> dict[str, torch.Tensor]:
    """An NFP state dict from a dict, a torch checkpoint file, or a checkpoint directory (model.pt inside)."""
    return model_state(source if isinstance(source, dict) else read_checkpoint(source, "NFP checkpoint"))


def _is_encoder(name: str) -> bool:
    return name.startswith(ENCODERS)


def apply_strategy(raft: nn.Module, strategy: str, nfp_state: str | Path | dict | None = None) -> TransferReport:
    """Apply `strategy` to `raft` in place (copy weights, freeze, hold BN in eval mode) and report what it did."""
    if strategy not in STRATEGIES:
        raise RaywaveError(f"unknown transfer strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    report = TransferReport(strategy)
    if strategy == "scratch":
        return report
    if nfp_state is None:
        raise RaywaveError(f"strategy {strategy!r} needs an NFP checkpoint (--nfp PATH)")
    source = load_nfp_state(nfp_state)
    target = raft.state_dict()
    matched, mismatched = {}, []
    for k, v in source.items():
        if _is_encoder(k) and k in target:
            if tuple(v.shape) == tuple(target[k].shape):
                matched[k] = v
            else:
                mismatched.append(f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}")
    if not matched:
        detail = f" (shape mismatches: {mismatched[:3]})" if mismatched else ""
        raise RaywaveError(f"no encoder weights of the NFP checkpoint match this RAFT-{getattr(raft, 'variant', '?')}"
                           f"{detail}; was the NFP built with the same encoder variant?")  # fmt: skip
    missing = [k for k in target if _is_encoder(k) and k not in matched]
    if missing:
        raise RaywaveError(f"the NFP checkpoint lacks {len(missing)} encoder tensors of RAFT (first: {missing[0]}); "
                           "it was built with another encoder variant")  # fmt: skip
    raft.load_state_dict(matched, strict=False)
    report.copied = sorted(matched)

    bns = {n: m for n, m in raft.named_modules() if isinstance(m, nn.BatchNorm2d)}
    if not bns and strategy in ("freeze_bn", "freeze_encoder_bn"):
        report.notes.append(f"RAFT-{raft.variant} has no BatchNorm: "
                            + ("freeze_bn is a no-op" if strategy == "freeze_bn" else
                               "freeze_encoder_bn is the same as freeze_encoder"))  # fmt: skip
    bn_params = {f"{n}.{p}" for n in bns for p in ("weight", "bias")}
    for name, p in raft.named_parameters():
        freeze = (strategy in ("freeze_encoder_bn", "freeze_encoder") and _is_encoder(name)) or (
            strategy in ("freeze_encoder_bn", "freeze_bn") and name in bn_params
        )
        if freeze:
            p.requires_grad_(False)
            report.frozen.append(name)
    if strategy in ("freeze_encoder_bn", "freeze_bn"):
        for name, m in bns.items():
            m.__class__ = FrozenBatchNorm2d
            m.train(False)
            report.bn_eval.append(name)
    return report
