"""K fly models in one network pass: each model equals the same model trained alone; divergence stays local."""

from __future__ import annotations

import json

import pytest
import torch

from raywave.data.synthetic_flow import write_sintel
from raywave.fly.decoder import FlowDecoder
from raywave.fly.ensemble import FlyEnsemble
from raywave.fly.network import FlyNetwork
from raywave.fly.train import FlyTrainConfig, read_checkpoint, train_models, train_one


@pytest.fixture(scope="module")
def small_flow(tmp_path_factory):
    """Six small Sintel-layout scenes (4 frames each), rendered once into a shared cache."""
    root = tmp_path_factory.mktemp("ens-sintel")
    write_sintel(root / "data", scenes=6, frames=4, h=436, w=1024, seed=2, n_layers=1, max_shift=8.0)
    return root


def _cfg(root, seed: int, **kw) -> FlyTrainConfig:
    base = {"sintel_root": str(root / "data"), "cache": str(root / "cache"), "iterations": 20,
            "checkpoint_every": 10, "n_frames": 3, "t_pre": 0.04, "batch_size": 1, "splits": 1, "val_scenes": 2,
            "lr_start": 1e-2, "lr_end": 1e-3, "lr_steps": 2, "penalty_stop": 10, "augment": True,
            "dtype": "float64", "seed": seed}  # fmt: skip
    return FlyTrainConfig(**{**base, **kw})


@pytest.mark.parametrize("seeds", [(3, 5), (3, 5, 9)])
def test_ensemble_member_equals_single_network(fly_connectome, seeds):
    """One pass of K models: voltages, decoder output and every gradient equal the single models' (float64); K = 3
    through the decoder's readout map written by the integration."""
    nets = [FlyNetwork(fly_connectome, s).double() for s in seeds]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # different, random parameters per model (some tau below dt)
        for n in nets:
            n.v_rest.normal_(0.5, 0.3, generator=g)
            n.tau.uniform_(0.01, 0.1, generator=g)
            n.strength.mul_(3 * torch.rand(n.strength.shape, generator=g, dtype=torch.float64))
    k = len(seeds)
    ens = FlyEnsemble(fly_connectome, list(seeds), nets[0]).double()
    for j, n in enumerate(nets):
        ens.load_member(j, n.state_dict())
    dec = FlowDecoder(34, seed=list(seeds)).double()
    with torch.no_grad():
        dec.conv2.weight.normal_(0, 0.1, generator=g)
    x = torch.rand(k, 2, 6, 721, generator=g, dtype=torch.float64)
    gens = [torch.Generator().manual_seed(7 + j) for j in range(k)]
    if k == 2:
        v = ens(x, 0.02, ens.steady_state(2, 0.02, 0.06))
        out = dec(ens.output_voltages(v), gens)
    else:
        v, maps = ens(x, 0.02, ens.steady_state(2, 0.02, 0.06), readout=dec.readout())
        out = dec.decode(maps, gens)
    ((out**2).sum() + 0.01 * v.sum()).backward()
    for j, n in enumerate(nets):
        single = FlowDecoder(34, seed=seeds[j]).double()
        single.load_state_dict(dec.member_state(j))
        y = n(x[j], 0.02, n.steady_state(2, 0.02, 0.06))
        o = single(n.output_voltages(y), torch.Generator().manual_seed(7 + j))
        ((o**2).sum() + 0.01 * y.sum()).backward()
        torch.testing.assert_close(ens.by_model(v)[j], y, rtol=1e-12, atol=0)
        torch.testing.assert_close(out[..., j, :], o, rtol=1e-12, atol=1e-15)
        for name in ("v_rest", "tau", "strength"):
            torch.testing.assert_close(getattr(ens, name).grad[j], getattr(n, name).grad, rtol=1e-10, atol=0)
        # conv1's bias gradient is zero up to rounding (the batch norm removes its mean): absolute tolerance
        # relative to the decoder's largest gradient
        scale = max(float(p.grad.abs().max()) for p in single.parameters())
        for (name, p1), p2 in zip(single.named_parameters(), dec.parameters(), strict=True):
            rows = 3 if name.startswith("conv2") else 8
            assert float(p1.grad.abs().max()) > 0, name
            torch.testing.assert_close(p2.grad[j * rows : (j + 1) * rows], p1.grad, rtol=1e-10, atol=1e-13 * scale)


@pytest.mark.slow  # minutes on 2 CPUs: `make test-slow`
def test_four_models_in_one_pass_equal_four_single_runs(small_flow, tmp_path, fly_connectome):
    """Acceptance: K = 4 models for 20 iterations (augmentations, dropout, activity penalty, lr step, a
    checkpoint in between) end with each model's parameters equal to train_one's with the same seed."""
    seeds = [0, 1, 2, 3]
    cfgs = [_cfg(small_flow, s) for s in seeds]
    train_models(cfgs, [tmp_path / "ens" / f"{s:03d}" for s in seeds])
    last = "checkpoints/it-00000020.pt"
    starts = []
    for s, cfg in zip(seeds, cfgs, strict=True):
        train_one(cfg, tmp_path / f"single-{s}")
        a = read_checkpoint(tmp_path / "ens" / f"{s:03d}" / last)
        b = read_checkpoint(tmp_path / f"single-{s}" / last)
        for key in ("network", "decoder"):
            for name, value in b[key].items():
                torch.testing.assert_close(a[key][name], value, rtol=1e-5, atol=1e-9, msg=f"seed {s} {key}.{name}")
        assert [h["iteration"] for h in a["history"]] == [10, 20]
        for ha, hb in zip(a["history"], b["history"], strict=True):
            assert ha == pytest.approx(hb, rel=1e-5)
        starts.append(FlyNetwork(fly_connectome, s).v_rest.detach())
        moved = (a["network"]["v_rest"] - starts[-1].double()).abs().max()
        assert float(moved) > 1e-3  # the models trained
    assert not torch.equal(starts[0], starts[1])  # and started from different parameters


@pytest.mark.slow  # minutes on 2 CPUs: `make test-slow`
def test_nan_in_one_model_stops_that_model_only(small_flow, tmp_path):
    seeds = [0, 1, 2]
    cfgs = [_cfg(small_flow, s, iterations=6, checkpoint_every=3) for s in seeds]  # float64
    outs = [tmp_path / f"{s:03d}" for s in seeds]
    records = train_models(cfgs, outs, faults={1: 4})
    assert records[1]["status"] == "diverged" and records[1]["diverged_at"] == 4
    assert json.loads((outs[1] / "status.json").read_text())["iteration"] == 4
    assert [h["iteration"] for h in json.loads((outs[1] / "history.json").read_text())] == [3]
    for j in (0, 2):
        assert "status" not in records[j]
        assert [h["iteration"] for h in json.loads((outs[j] / "history.json").read_text())] == [3, 6]
    # the survivors are unaffected: model 2 alone ends where it did in the pass (which shrank from 3 to 2)
    train_one(cfgs[2], tmp_path / "alone")
    a = read_checkpoint(outs[2] / "checkpoints" / "it-00000006.pt")
    b = read_checkpoint(tmp_path / "alone" / "checkpoints" / "it-00000006.pt")
    for name, value in b["network"].items():
        torch.testing.assert_close(a["network"][name], value, rtol=1e-5, atol=1e-9)
