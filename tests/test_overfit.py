"""Small CPU overfit runs (acceptance 3): RAFT-small on synthetic pairs, NFP on simulated wave triplets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raywave.data.synthetic_flow import ground_truth, make_scene, render
from raywave.models.nfp import NFP, nfp_loss
from raywave.models.raft import RAFT, sequence_loss
from raywave.ofe.metrics import flow_metrics
from raywave.waves.config import SimulationConfig
from raywave.waves.simulate import simulate

from .conftest import LATTICE


@pytest.mark.slow  # 300 RAFT-small steps: minutes on 2 CPUs (`make test-slow`)
def test_raft_small_overfits_synthetic_pairs():
    torch.manual_seed(0)
    imgs1, imgs2, flows = [], [], []
    for seed in range(4):
        layers = make_scene(np.random.default_rng(seed), 128, 128, n_layers=3, max_shift=4.0)
        imgs1.append(render(layers, 128, 128, 0)[0])
        imgs2.append(render(layers, 128, 128, 1)[0])
        flows.append(ground_truth(layers, 128, 128, 0)["flow"])
    i1 = torch.from_numpy(np.stack(imgs1)).permute(0, 3, 1, 2).float()
    i2 = torch.from_numpy(np.stack(imgs2)).permute(0, 3, 1, 2).float()
    gt = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2)
    valid = torch.ones(4, 128, 128)
    zero_epe = flow_metrics(torch.zeros_like(gt), gt)["epe"]
    model = RAFT("small").train()
    opt = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 4e-4, total_steps=300, pct_start=0.05, anneal_strategy="linear")
    for step in range(300):
        b = [(2 * step) % 4, (2 * step + 1) % 4]
        opt.zero_grad()
        loss, _ = sequence_loss(model(i1[b], i2[b], iters=8), gt[b], valid[b])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        _, pred = model(i1, i2, iters=12, test_mode=True)
    epe = flow_metrics(pred, gt)["epe"]
    assert epe < 0.3 * zero_epe, (epe, zero_epe)


def test_nfp_beats_repeating_i2_on_wave_triplets(tmp_path):
    cfg = SimulationConfig(height=LATTICE, width=LATTICE, duration_s=30, transient_s=0, compile="on", seed=3,
                           storage_dtype="float32", checkpoint_every_s=30, params={"gA": 0.03})  # fmt: skip
    calcium = simulate(cfg, tmp_path / "run").frames("C")
    frames = (calcium - calcium.min()) / (calcium.max() - calcium.min())
    frames = np.kron(frames, np.ones((1, 4, 4), np.float32))  # 10x10 cells -> 40x40 px (nearest), NFP's minimum
    active = np.flatnonzero((calcium.reshape(len(calcium), -1) >= 180).mean(1) > 0.05)
    starts = [t for t in active if t + 2 < len(frames)][:: max(1, len(active) // 8)][:8]
    assert len(starts) >= 4, "the simulation has too little activity for the test"
    trip = torch.from_numpy(np.stack([frames[[t, t + 1, t + 2]] for t in starts]))[:, :, None]
    i1, i2, i3 = trip[:, 0], trip[:, 1], trip[:, 2]
    baseline = nfp_loss(i2, i3).item()
    torch.manual_seed(0)
    model = NFP("small", iters=4, corr_levels=2)
    with torch.no_grad():
        assert abs(nfp_loss(model(i1, i2)[0], i3).item() - baseline) < 1e-5 * baseline  # starts at the baseline
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    for _ in range(60):
        opt.zero_grad()
        loss = nfp_loss(model(i1, i2)[0], i3)
        loss.backward()
        opt.step()
    with torch.no_grad():
        mse = nfp_loss(model(i1, i2)[0], i3).item()
    assert mse < 0.7 * baseline, (mse, baseline)
