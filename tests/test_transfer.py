"""Transfer strategies (acceptance 4): after optimizer steps, frozen tensors and BN statistics are bit-identical
where the strategy freezes them and change where it does not; freezing survives train()/eval() switches."""

from __future__ import annotations

import pytest
import torch

from raywave.errors import RaywaveError
from raywave.models.nfp import NFP
from raywave.models.raft import RAFT, sequence_loss
from raywave.models.transfer import STRATEGIES, apply_strategy


def _nfp_state(variant: str) -> dict:
    torch.manual_seed(123)
    nfp = NFP(variant, iters=2)
    with torch.no_grad():  # a "pre-trained" NFP: weights unlike a fresh RAFT's, BN statistics non-trivial
        for p in nfp.parameters():
            p.add_(0.01 * torch.randn_like(p))
        for name, b in nfp.named_buffers():
            if name.endswith("running_mean"):
                b.normal_()
    return nfp.state_dict()


def _train_steps(model: RAFT, steps: int = 2) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)  # frozen ones included on purpose
    g = torch.Generator().manual_seed(0)
    img1, img2 = torch.rand(2, 3, 128, 128, generator=g) * 255, torch.rand(2, 3, 128, 128, generator=g) * 255
    gt = torch.randn(2, 2, 128, 128, generator=g)
    for _ in range(steps):
        model.eval()
        model.train()  # RAFT's own freeze_bn() would be undone here
        opt.zero_grad()
        loss, _ = sequence_loss(model(img1, img2, iters=2), gt, torch.ones(2, 128, 128))
        loss.backward()
        opt.step()


def _snapshot(model: RAFT) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_freezes_exactly_what_it_says(strategy):
    nfp = _nfp_state("basic")
    torch.manual_seed(7)
    model = RAFT("basic")
    report = apply_strategy(model, strategy, nfp)
    before = _snapshot(model)
    enc = [k for k in before if k.startswith(("fnet.", "cnet."))]
    if strategy == "scratch":
        assert not report.copied
    else:
        assert sorted(report.copied) == sorted(enc)
        assert all(torch.equal(before[k], nfp[k]) for k in enc)
    _train_steps(model)
    after = _snapshot(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    bn = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    stats = {k for k in before if k.rsplit(".", 1)[0] in bn and "running" in k}
    affine = {k for k in before if k.rsplit(".", 1)[0] in bn and k.endswith((".weight", ".bias"))}
    params = {k for k, _ in model.named_parameters()}
    encoder_params = {k for k in params if k.startswith(("fnet.", "cnet."))}
    frozen = {
        "scratch": set(),
        "finetune": set(),
        "freeze_encoder_bn": encoder_params | stats,
        "freeze_encoder": encoder_params,
        "freeze_bn": affine | stats,
    }[strategy]
    assert stats and affine
    assert not (changed & frozen), sorted(changed & frozen)[:3]
    assert (params | stats) - frozen <= changed, sorted(((params | stats) - frozen) - changed)[:3]
    assert set(report.frozen) == frozen & params


def test_raft_small_reports_its_noops():
    nfp = _nfp_state("small")
    rep = apply_strategy(RAFT("small"), "freeze_bn", nfp)
    assert any("no-op" in n for n in rep.notes) and not rep.frozen and not rep.bn_eval
    rep = apply_strategy(RAFT("small"), "freeze_encoder_bn", nfp)
    assert any("same as freeze_encoder" in n for n in rep.notes) and rep.frozen


def test_transfer_fails_loudly():
    with pytest.raises(RaywaveError, match="unknown transfer strategy"):
        apply_strategy(RAFT("small"), "freeze_everything", {})
    with pytest.raises(RaywaveError, match="no encoder weights"):
        apply_strategy(RAFT("basic"), "finetune", _nfp_state("small"))
    with pytest.raises(RaywaveError, match="no encoder weights"):
        apply_strategy(RAFT("small"), "finetune", {"decoder.conv1.weight": torch.zeros(1)})
    with pytest.raises(RaywaveError, match="needs an NFP checkpoint"):
        apply_strategy(RAFT("small"), "finetune", None)
