"""The training-loop core without Ray: schedules, step generators, resume == uninterrupted, checkpoints (last and
best), metrics rows without duplicates, run records (changed config refused), efficiency summary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raywave.errors import RaywaveError
from raywave.train.checkpoints import RunCheckpoints, resolve_checkpoint
from raywave.train.local import train_local
from raywave.train.loop import Context, StageConfig, make_optimizer, step_generator
from raywave.train.metrics import efficiency, read_metrics, summary
from raywave.train.nfp import NFPTask
from raywave.train.record import begin_run, check_resumable, end_run
from tests.train_helpers import wave_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return wave_dataset(tmp_path_factory.mktemp("nfp") / "ds")


def nfp_cfg(ds, **kw):
    return {"dataset": ds, "corr_levels": 2, "steps": 4, "batch": 4, "val_every": 2, "checkpoint_every": 2,
            "log_every": 1, "val_max": 8, **kw}  # fmt: skip


def test_onecycle_is_linear_warmup_then_linear_decay():
    st = StageConfig(steps=100, lr=1e-3, warmup=0.05)
    opt, sched = make_optimizer([torch.nn.Parameter(torch.zeros(1))], st)
    lrs = []
    for _ in range(st.steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = int(np.argmax(lrs))
    assert lrs[peak] == pytest.approx(1e-3) and peak == 5  # 5% of the steps
    assert lrs[0] == pytest.approx(1e-3 / 25)  # OneCycle's initial lr (max / 25), as in RAFT
    up, down = np.diff(lrs[: peak + 1]), np.diff(lrs[peak:])
    assert np.allclose(up, up[0], rtol=1e-6) and up[0] > 0  # linear warm-up
    assert np.allclose(down, down[0], rtol=1e-6) and down[0] < 0  # linear decay
    assert lrs[-1] < 0.02 * lrs[peak]


def test_step_generator_is_a_function_of_seed_step_rank():
    a = torch.rand(5, generator=step_generator(3, 7, 1))
    assert torch.equal(a, torch.rand(5, generator=step_generator(3, 7, 1)))
    for other in ((3, 8, 1), (4, 7, 1), (3, 7, 0)):
        assert not torch.equal(a, torch.rand(5, generator=step_generator(*other)))
    state = torch.get_rng_state()
    NFPTask({"dataset": "x", "seed": 5}).build_model()  # seeding the model leaves the global RNG alone
    assert torch.equal(state, torch.get_rng_state())


def test_batches_of_a_step_split_over_ranks(dataset):
    task = NFPTask(nfp_cfg(dataset))
    whole = next(task.batches(0, 3, 0, 1))["frames"]
    halves = [next(task.batches(0, 3, r, 2))["frames"] for r in (0, 1)]
    assert torch.equal(whole, torch.cat(halves))
    assert not torch.equal(whole, next(task.batches(0, 2, 0, 1))["frames"])


def test_resume_gives_the_uninterrupted_run(dataset, tmp_path):
    cfg = nfp_cfg(dataset)
    full = train_local(NFPTask(cfg), str(tmp_path / "full"), tensorboard=False)
    part = train_local(NFPTask(cfg), str(tmp_path / "part"), Context(stop_after=3), tensorboard=False)
    assert part.step == 3  # stopped after step 3; the last checkpoint is step 2
    assert RunCheckpoints(str(tmp_path / "part")).pointer()["step"] == 2
    resumed = train_local(NFPTask(cfg), str(tmp_path / "part"), tensorboard=False)
    assert resumed.step == full.step == 4
    a = RunCheckpoints(str(tmp_path / "full")).load()[0]["model"]
    b = RunCheckpoints(str(tmp_path / "part")).load()[0]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = read_metrics(str(tmp_path / "part"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # step 3 of the first attempt is not duplicated
    ref = read_metrics(str(tmp_path / "full"))
    assert [r["val_mse"] for r in rows if r["val_mse"] is not None] == [r["val_mse"] for r in ref if r["val_mse"]]
    again = train_local(NFPTask(cfg), str(tmp_path / "part"), tensorboard=False)  # finished: trains nothing
    assert again.step == 4 and len(read_metrics(str(tmp_path / "part"))) == 4


def test_last_and_best_checkpoints(dataset, tmp_path):
    run = str(tmp_path / "run")
    st = train_local(NFPTask(nfp_cfg(dataset, val_every=1, checkpoint_every=3)), run, tensorboard=False)
    store = RunCheckpoints(run)
    last, best = store.pointer("last"), store.pointer("best")
    assert last["step"] == 4 and best["step"] == st.best["step"]
    vals = [r["val_mse"] for r in read_metrics(run)]
    assert best["val_mse"] == pytest.approx(min(vals))
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.is_dir())
    assert kept == sorted({last["dir"], best["dir"]})
    model = torch.load(resolve_checkpoint(run), weights_only=False)
    assert model["task"] == "nfp" and model["meta"]["corr_levels"] == 2 and model["step"] == best["step"]
    assert not any(k.startswith("module.") for k in model["model"])
    assert resolve_checkpoint(run, "last").endswith(f"{last['dir']}/model.pt")


def test_run_record_refuses_another_config_and_reports_complete(tmp_path):
    run = str(tmp_path / "r")
    cfg = {"a": 1, "b": {"c": 2}}
    begin_run(run, "nfp", cfg, {"dataset": "d"}, 0, 2, "cpu")
    assert check_resumable(run, "nfp", cfg)["status"] == "running"
    with pytest.raises(RaywaveError, match=r"differs in: b\.c"):
        check_resumable(run, "nfp", {"a": 1, "b": {"c": 3}})
    with pytest.raises(RaywaveError, match="holds a 'nfp' run"):
        check_resumable(run, "ofe", cfg)
    end_run(run, "complete", {"steps": 4})
    rec = begin_run(run, "nfp", cfg, {}, 0, 2, "cpu")
    assert rec["status"] == "complete" and len(rec["attempts"]) == 1 and rec["attempts"][0]["end"]


def test_efficiency_first_step_reaching_each_target():
    rows = [{"step": 1, "samples": 8, "val_ratio": 0.97}, {"step": 2, "samples": 16},
            {"step": 3, "samples": 24, "val_ratio": 0.85}, {"step": 4, "samples": 32, "val_ratio": 0.88}]  # fmt: skip
    eff = {e["target"]: e for e in efficiency(rows, {"val_ratio": [0.95, 0.9, 0.5]})}
    assert (eff[0.95]["step"], eff[0.95]["samples"]) == (3, 24)
    assert eff[0.9]["step"] == 3 and eff[0.5]["step"] is None
    s = summary(rows, "val_ratio", {"val_ratio": [0.9]})
    assert s["best"]["step"] == 3 and s["final"]["step"] == 4 and s["steps"] == 4


def test_a_crafted_pickle_as_a_training_checkpoint_does_not_run(tmp_path):
    """Checkpoints are read with weights_only=True: a pickle that would run code is refused, not executed."""
    import pickle

    import torch

    from raywave.train.checkpoints import read_checkpoint_dir

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    d = tmp_path / "ckpt"
    d.mkdir()
    for name in ("model.pt", "train_state.pt"):
        with open(d / name, "wb") as f:
            pickle.dump({"model": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError):
        read_checkpoint_dir(d)
    assert not marker.exists()
    torch.save({"model": {"w": torch.zeros(2)}}, d / "model.pt")
    torch.save({"state": {"step": 3, "history": [{"val": 1.0}]}, "optimizer": {}}, d / "train_state.pt")
    model, state = read_checkpoint_dir(d)
    assert state["state"]["step"] == 3 and model["model"]["w"].shape == (2,)
