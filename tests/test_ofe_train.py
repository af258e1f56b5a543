"""`raywave ofe train` without Ray (workers: 0, the same loop core the Ray Train workers run): stage presets and
config errors, the nested data fraction, batches as a function of (seed, stage, step), resume with identical
numbers, a finished run, the five transfer strategies through two stages, and bad input before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raywave.data.synthetic_flow import write_chairs
from raywave.errors import RaywaveError
from raywave.models.nfp import NFP
from raywave.models.transfer import STRATEGIES
from raywave.ofe.config import PRESETS, load_config
from raywave.ofe.data import StageBatches, fraction_subset, stage_datasets
from raywave.train.metrics import read_metrics
from raywave.train.ofe_run import train_run

TINY = {"pairs": 6, "height": 128, "width": 160, "val_every": 3}


def tiny_stage(**kw) -> dict:
    return {"name": "chairs", "steps": 2, "batch": 2, "crop": [128, 128], "iters": 2, "val_iters": 2,
            "val_every": 2, "val_pairs": 1, "augment": False, **kw}  # fmt: skip


def tiny_config(out: Path, chairs: Path | None = None, **kw):
    data = {"variant": "small", "stages": [tiny_stage(), tiny_stage(lr=1e-4, crop=[128, 160], augment=True)],
            "checkpoint_every": 1, "log_every": 1, "workers": 0, "out": str(out), **kw}  # fmt: skip
    if chairs is not None:
        data["chairs_root"] = str(chairs)
    else:
        data["synthetic_chairs"] = TINY
    return load_config(None, data)


@pytest.fixture(scope="module")
def chairs(tmp_path_factory) -> Path:
    return write_chairs(tmp_path_factory.mktemp("chairs"), n_pairs=6, h=128, w=160, val_every=3)


def test_presets_and_config_errors():
    cfg = load_config(None, {"stages": "chairs,sintel"})
    c, s = cfg.stages
    assert (c.steps, c.batch, c.lr, c.crop, c.weight_decay, c.gamma) == (100_000, 10, 4e-4, [368, 496], 1e-4, 0.8)
    assert (s.batch, s.lr, s.crop, s.weight_decay, s.gamma) == (6, 1.25e-4, [368, 768], 1e-5, 0.85)
    assert load_config(None, {"stages": [{"name": "sintel", "steps": 5}]}).stages[0].lr == PRESETS["sintel"]["lr"]
    bad = [({"stages": "chairs,kitti"}, "unknown stage 'kitti'"), ({"strategy": "freeze_all"}, "unknown transfer"),
           ({"stages": [{"name": "chairs", "crop": [120, 496]}]}, "under 128 px"),
           ({"data_fraction": 0}, "data_fraction"), ({"data_fraction": 1.5}, "data_fraction"),
           ({"strategy": "finetune"}, "--nfp"), ({"workers": 3}, "does not split evenly")]  # fmt: skip
    for overrides, words in bad:
        with pytest.raises(RaywaveError, match=words):
            load_config(None, overrides)


def test_fraction_subsets_are_nested_and_seeded():
    quarter, half = fraction_subset(1000, 0.25, 7), fraction_subset(1000, 0.5, 7)
    assert len(quarter) == 250 and len(half) == 500 and set(quarter) <= set(half)
    assert fraction_subset(1000, 1.0, 7) == list(range(1000))
    assert fraction_subset(1000, 0.25, 8) != quarter and fraction_subset(1000, 0.25, 7) == quarter


def test_batches_are_a_function_of_seed_stage_and_step(chairs):
    cfg = tiny_config(Path("unused"), chairs)
    st = cfg.stages[1]  # augmented
    train, _ = stage_datasets(cfg, st, chairs)
    a, b = StageBatches(train, st, 1, 0, 1.0), StageBatches(train, st, 1, 0, 1.0)
    late = b.batch(5)  # out of order: no state carried from earlier steps
    assert all(torch.equal(late[k], a.batch(5)[k]) for k in late)
    halves = [a.batch(5, rank, 2) for rank in (0, 1)]
    assert all(torch.equal(torch.cat([h[k] for h in halves]), late[k]) for k in late)
    assert not torch.equal(a.batch(4)["img1"], late["img1"])
    assert not torch.equal(StageBatches(train, st, 1, 1, 1.0).batch(5)["img1"], late["img1"])  # another seed


def test_resume_gives_the_numbers_of_an_uninterrupted_run(tmp_path, chairs):
    whole = train_run(tiny_config(tmp_path / "whole", chairs), quiet=True)
    assert whole["status"] == "complete"
    part = tmp_path / "part"
    rec = train_run(tiny_config(part, chairs), quiet=True, stop_after=3)
    assert rec["status"] == "running" and read_metrics(part)[-1]["step"] == 3
    before = sorted(p.name for p in (part / "checkpoints").iterdir())
    with pytest.raises(RaywaveError, match="another config .*seed"):  # a changed config is refused, nothing written
        train_run(tiny_config(part, chairs, seed=1), quiet=True)
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == before
    assert train_run(tiny_config(part, chairs), quiet=True)["status"] == "complete"
    a, b = read_metrics(tmp_path / "whole"), read_metrics(part)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        for k in ("train_loss", "lr", "samples", "stage", "val_epe", "val_zero_epe"):
            assert ra.get(k) == rb.get(k), (k, ra, rb)
    # the summary names the stage presets' data and the efficiency targets; a finished run trains nothing
    rec = json.loads((part / "run.json").read_text())
    assert rec["summary"]["efficiency"][0]["metric"] == "val_epe" and rec["data"]["stage0"]["train_pairs"] == 4
    again = train_run(tiny_config(part, chairs), quiet=True)
    assert again["status"] == "complete" and len(again["attempts"]) == len(rec["attempts"])
    assert read_metrics(part) == b
    from raywave.ofe.evaluate import load_raft  # `ofe evaluate -k RUN`: the run's best checkpoint, its variant

    best_dir = json.loads((part / "checkpoints" / "best.json").read_text())["dir"]
    best = torch.load(part / "checkpoints" / best_dir / "model.pt", weights_only=False)["model"]
    model = load_raft(part, "basic")
    assert model.variant == "small" and all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def nfp_checkpoint(path: Path, variant: str) -> Path:
    """A "pretrained" NFP checkpoint in the training layer's model.pt format (weights unlike a fresh RAFT's)."""
    gen = torch.Generator().manual_seed(5)
    nfp = NFP(variant, iters=2)
    with torch.no_grad():
        for p in nfp.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
        for name, b in nfp.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen))
    path.mkdir(parents=True)
    torch.save({"model": nfp.state_dict(), "task": "nfp", "meta": {"variant": variant}, "step": 1, "stage": 0},
               path / "model.pt")  # fmt: skip
    return path


@pytest.fixture(scope="module")
def nfp_run(tmp_path_factory) -> Path:
    """An NFP run of RAFT basic's encoders made by `raywave nfp pretrain`'s own code (2 steps on wave triplets)."""
    from raywave.bench.train import blob_movie
    from raywave.data.generate import import_movie
    from raywave.data.triplets import TripletConfig, build_index
    from raywave.storage import resolve
    from raywave.train.nfp_run import load, pretrain_run

    root = tmp_path_factory.mktemp("nfp")
    ds, out = root / "ds", root / "run"
    for i in range(3):  # three moving-blob "wave" movies (the triplet index holds out at least one)
        import_movie(resolve(str(ds)), f"sim-{i:04d}", blob_movie(24, 16, np.cos(2 * i), np.sin(2 * i), i), 0.1)
    build_index(str(ds), TripletConfig.model_validate({"dt_s": [0.1], "activity": {"min_fraction": 0.0},
                                                       "val_fraction": 0.3, "pixels_per_cell": 2}))  # fmt: skip
    cfg = load(None, {"dataset": str(ds), "out": str(out), "variant": "basic", "corr_levels": 2,
                      "workers": 0, "steps": 2, "batch": 2, "val_every": 2, "checkpoint_every": 2,
                      "val_max": 2})  # fmt: skip
    rec, _ = pretrain_run(cfg, quiet=True)
    assert rec["status"] == "complete"
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategies_hold_through_two_stages(tmp_path, chairs, nfp_run, strategy):
    nfp = nfp_run if strategy != "scratch" else None
    out = tmp_path / "run"
    stages = [tiny_stage(steps=1, iters=1, val_iters=1), tiny_stage(steps=1, iters=1, val_iters=1, lr=1e-3)]
    cfg = tiny_config(out, chairs, variant="basic", strategy=strategy, nfp=str(nfp) if nfp else None, stages=stages)
    rec = train_run(cfg, quiet=True)
    assert rec["status"] == "complete"
    t = rec["transfer"]
    final = torch.load(out / "checkpoints" / "step-00000002" / "model.pt", weights_only=False)["model"]
    if strategy == "scratch":
        assert t["copied"] == [] and t["frozen"] == [] and t["bn_eval"] == []
        return
    from raywave.train.checkpoints import resolve_checkpoint

    source = torch.load(resolve_checkpoint(str(nfp)), weights_only=False)["model"]
    assert rec["nfp_checkpoint"] == str(Path(resolve_checkpoint(str(nfp))).resolve())
    assert t["copied"] == sorted(k for k in final if k.startswith(("fnet.", "cnet.")))
    expect_frozen = {"finetune": 0, "freeze_encoder": 1, "freeze_encoder_bn": 1, "freeze_bn": 1}[strategy]
    assert bool(t["frozen"]) == bool(expect_frozen)
    assert bool(t["bn_eval"]) == (strategy in ("freeze_bn", "freeze_encoder_bn"))
    for name in t["frozen"]:  # bit-identical to the NFP after two stages
        assert torch.equal(final[name], source[name]), name
    for layer in t["bn_eval"]:
        for buf in ("running_mean", "running_var"):
            assert torch.equal(final[f"{layer}.{buf}"], source[f"{layer}.{buf}"]), layer
    # trained copies (RAFT basic's downsample.1 is norm3 under a second name: state_dict lists both)
    trained = [k for k in t["copied"] if k not in t["frozen"] and k.endswith("weight") and "downsample.1" not in k]
    assert trained == [] or any(not torch.equal(final[k], source[k]) for k in trained)
    assert not torch.equal(final["update_block.flow_head.conv2.weight"], source["update_block.flow_head.conv2.weight"])


def test_bad_input_before_anything_is_written(tmp_path, chairs):
    nfp_small = nfp_checkpoint(tmp_path / "nfp-small", "small")
    raft_ckpt = tmp_path / "raft.pt"
    from raywave.models.raft import RAFT

    torch.save({"model": RAFT("small").state_dict(), "task": "ofe", "meta": {"variant": "small"}}, raft_ckpt)
    out = tmp_path / "never"
    cases = [
        (dict(variant="basic", strategy="finetune", nfp=str(nfp_small)), "small encoder but --variant is basic"),
        (dict(strategy="finetune", nfp=str(raft_ckpt)), "not an NFP checkpoint"),
        (dict(strategy="finetune", nfp=str(tmp_path / "missing")), "neither a run directory"),
        (dict(stages=[tiny_stage(crop=[136, 128])]), "larger than the 128x160 frames"),
        (dict(chairs_root=str(tmp_path / "nowhere")), "does not exist"),
    ]
    for overrides, words in cases:
        kw = dict(overrides)
        root = None if "chairs_root" in kw else chairs
        cfg = tiny_config(out, root, **kw)
        with pytest.raises(RaywaveError, match=words):
            train_run(cfg, quiet=True)
        assert not out.exists(), overrides
    with pytest.raises(RaywaveError, match="larger than the 128x160 synthetic frames"):
        train_run(tiny_config(out, None, stages=[tiny_stage(crop=[128, 168])]), quiet=True)
    assert not out.exists()


def test_cli_bad_input_is_one_line_exit_2(cli, tmp_path):
    out = tmp_path / "run"
    for args, words in [(("--strategy", "nope"), "unknown transfer strategy 'nope'"),
                        (("--stages", "chairs,kitti"), "unknown stage 'kitti'"),
                        (("--data-fraction", "1.5"), "data_fraction")]:  # fmt: skip
        res = cli("ofe", "train", "--out", str(out), *args)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1 and words in lines[0], res.stderr
    assert not out.exists()


def test_correlation_stays_fp32_under_autocast_and_bf16_trains(tmp_path, chairs, monkeypatch):
    from raywave.models import raft as raft_module
    from raywave.models.raft import RAFT

    seen = []

    class Recording(raft_module.CorrBlock):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            seen.append(self.corr_pyramid[0].dtype)

    monkeypatch.setattr(raft_module, "CorrBlock", Recording)
    x = torch.rand(1, 3, 128, 128) * 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        RAFT("small")(x, x, iters=1)
    assert seen == [torch.float32]
    monkeypatch.undo()
    rec = train_run(tiny_config(tmp_path / "bf16", chairs, precision="bf16",
                                stages=[tiny_stage(steps=1, iters=1, val_iters=1)]), quiet=True)  # fmt: skip
    final = rec["summary"]["final"]
    assert rec["status"] == "complete" and 0 < final["val_epe"] < float("inf")


def test_more_workers_than_cpus_is_refused_before_ray_starts(tmp_path, chairs, monkeypatch):
    import os

    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    had_ray = ray.is_initialized()  # a session of this test process (another test's) is used, and checked, instead
    n = int(ray.cluster_resources().get("CPU", 1) if had_ray else os.cpu_count() or 1) + 2
    out = tmp_path / "run"
    cfg = tiny_config(out, chairs, workers=n, stages=[tiny_stage(batch=n)])
    with pytest.raises(RaywaveError, match="more than the cluster's"):
        train_run(cfg, quiet=True)
    assert not out.exists() and ray.is_initialized() == had_ray
