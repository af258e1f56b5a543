"""Fly ensembles on the embedded Ray: 2 workers x 2 models per pass, validate, view, divergence, bad input, and
a SIGKILLed worker that resumes to the same parameters as an uninterrupted run. A small connectome (13 types,
the T4/T5 names included) keeps these fast; the equivalence of a pass with single runs is tested on the
published connectome in test_fly_ensemble.py."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch

from raywave.data.synthetic_flow import write_sintel
from raywave.errors import RaywaveError
from raywave.fly import ensemble_run as er
from raywave.fly.ensemble_view import view
from raywave.fly.train import FlyTrainConfig, read_checkpoint
from raywave.train import fly_ensemble

from .conftest import run_cli

T4, T5 = ["T4a", "T4b", "T4c", "T4d"], ["T5a", "T5b", "T5c", "T5d"]


def _toy_spec() -> dict:
    names = ["R1", "L1", "Mi1", "Tm3", *T4, *T5]
    shifts = {"a": [1, 0], "b": [-1, 0], "c": [0, 1], "d": [0, -1]}
    edges = [{"src": "R1", "tar": "L1", "alpha": -1, "offsets": [[[0, 0], 20.0]]},
             {"src": "L1", "tar": "Mi1", "alpha": -1, "offsets": [[[0, 0], 10.0]]},
             {"src": "L1", "tar": "Tm3", "alpha": -1, "offsets": [[[0, 0], 8.0], [[1, 0], 2.0]]}]  # fmt: skip
    for t in T4 + T5:
        pre = "Mi1" if t in T4 else "Tm3"
        edges += [{"src": pre, "tar": t, "alpha": 1, "offsets": [[[0, 0], 5.0], [shifts[t[-1]], 3.0]]},
                  {"src": "R1", "tar": t, "alpha": -1, "offsets": [[shifts[t[-1]], 2.0]]}]  # fmt: skip
    return {"nodes": [{"name": n, "pattern": ["stride", [1, 1]]} for n in names], "edges": edges,
            "input_units": ["R1"], "output_units": T4 + T5}  # fmt: skip


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("fly-ens-ray")
    (root / "toy.json").write_text(json.dumps(_toy_spec()))
    write_sintel(root / "data", scenes=5, frames=4, h=436, w=1024, seed=3, n_layers=1, max_shift=8.0)
    return root


def _cfg(toy, **kw) -> FlyTrainConfig:
    base = {"sintel_root": str(toy / "data"), "cache": str(toy / "cache"), "connectome": str(toy / "toy.json"),
            "iterations": 4, "checkpoint_every": 2, "n_frames": 3, "t_pre": 0.04, "batch_size": 1, "splits": 1,
            "val_scenes": 2, "lr_start": 1e-2, "lr_end": 1e-2, "lr_steps": 1}  # fmt: skip
    return FlyTrainConfig(**{**base, **kw})


@pytest.mark.slow  # minutes on 2 CPUs: `make test-slow`
def test_ensemble_trains_validates_and_views(toy, tmp_path, ray_local):
    """4 models, 2 workers x 2 per pass; model 3 gets a NaN at iteration 3: it alone stops, named everywhere."""
    cfg = _cfg(toy)
    summary = fly_ensemble.train(cfg, tmp_path, "flow/0000", 4, 2, 2, faults={3: 3})
    edir = tmp_path / "flow" / "0000"
    status = {r["model"]: r for r in summary["status"]}
    assert status["003"]["status"] == "diverged" and status["003"]["diverged_at"] == 3
    for m in ("000", "001", "002"):
        assert status[m]["status"] == "done" and status[m]["iteration"] == 4
        d = edir / m
        assert sorted(p.name for p in (d / "checkpoints").glob("*.pt")) == ["it-00000002.pt", "it-00000004.pt"]
        assert [h["iteration"] for h in json.loads((d / "history.json").read_text())] == [2, 4]
        assert (d / "best.json").exists()
        assert read_checkpoint(d / "checkpoints" / "it-00000004.pt")["config"]["seed"] == int(m)
    on_disk = json.loads((edir / "ensemble.json").read_text())
    assert {r["model"]: r["status"] for r in on_disk["status"]}["003"] == "diverged"
    rows = fly_ensemble.validate(tmp_path, "flow/0000")
    epes = [r["best_val_epe"] for r in rows if r["status"] == "done"]
    assert len(epes) == 3 and epes == sorted(epes)
    val = json.loads((edir / "000" / "validation.json").read_text())
    assert [r["iteration"] for r in val["checkpoints"]] == [2, 4]
    res = view(tmp_path, "flow/0000", cell_types=["T4c", "Mi1"])
    for key in ("table", "histogram", "responses", "dsi", "tuning"):
        assert res["written"][key].exists(), key
    assert [r["model"] for r in res["diverged"]] == ["003"]
    table = (edir / "view" / "models.csv").read_text()
    assert "diverged" in table and len(table.strip().splitlines()) == 5
    assert len((edir / "view" / "dsi.csv").read_text().strip().splitlines()) == 1 + 8 * 3
    # the same command again: nothing to train, the summary is unchanged
    again = fly_ensemble.train(cfg, tmp_path, "flow/0000", 4, 2, 2)
    assert [r["status"] for r in again["status"]] == ["done", "done", "done", "diverged"]
    assert [h["iteration"] for h in json.loads((edir / "000" / "history.json").read_text())] == [2, 4]
    # bad input, each one line before anything is written
    with pytest.raises(RaywaveError, match="different config"):
        fly_ensemble.train(_cfg(toy, iterations=6), tmp_path, "flow/0000", 4, 2, 2)
    with pytest.raises(RaywaveError, match="CPUs"):
        fly_ensemble.train(cfg, tmp_path, "flow/0001", 4, 3, 1)
    assert not (tmp_path / "flow" / "0001").exists()
    with pytest.raises(RaywaveError, match="unknown cell type"):
        view(tmp_path, "flow/0000", out=tmp_path / "v2", cell_types=["T4z"])
    assert not (tmp_path / "v2").exists()


def test_ensemble_bookkeeping_without_ray(toy, tmp_path):
    """What each worker and task runs, called directly: shards K per pass, resume skips finished models,
    checkpoint validation, the view (with a diverged model)."""
    cfg = _cfg(toy, iterations=2, checkpoint_every=1)
    edir = er.ensemble_dir(tmp_path, "flow/0000")
    assert er.shard(5, 2, 0) == [0, 2, 4] and er.shard(5, 2, 1) == [1, 3]
    for rank in (0, 1):
        er.train_shard(edir, cfg, er.shard(3, 2, rank), 2, faults={2: 2})
    er.write_summary(edir, cfg, 3)
    stamp = (edir / "000" / "checkpoints" / "it-00000002.pt").stat().st_mtime_ns
    er.train_shard(edir, cfg, [0, 1, 2], 2)  # finished and diverged models train nothing
    assert (edir / "000" / "checkpoints" / "it-00000002.pt").stat().st_mtime_ns == stamp
    for j in (0, 1):
        out = er.model_dir(edir, j)
        rows = [er.validate_checkpoint(str(p), str(out)) for p in sorted((out / "checkpoints").glob("*.pt"))]
        er.record_validation(out, rows)
    table = er.sorted_table(er.write_summary(edir, cfg, 3))
    assert [r["status"] for r in table][-1] == "diverged" and table[-1]["diverged_at"] == 2
    res = view(tmp_path, "flow/0000", cell_types=["T4c"])
    assert set(res["written"]) == {"table", "histogram", "responses", "dsi", "tuning"}
    with pytest.raises(RaywaveError, match="not valid"):
        er.ensemble_dir(tmp_path, "a/../b")


@pytest.mark.parametrize("args,fragment", [
    (["--models", "0"], "--models must be at least 1"),
    (["--models", "4", "--workers", "2", "--models-per-pass", "3"], "--models-per-pass 3"),
    (["--models", "2", "--workers", "3"], "--workers 3 is more than"),
    (["--models", "2", "--name", "../x"], "not valid"),
])  # fmt: skip
def test_ensemble_bad_requests_are_one_line(tmp_path, args, fragment):
    argv = ["fly", "ensemble", "train", "--root", str(tmp_path)]
    res = run_cli(*argv, *(["--name", "flow/0000"] if "--name" not in args else []), *args)
    assert res.returncode == 2 and fragment in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_view_of_unknown_ensemble_is_one_line(tmp_path):
    res = run_cli("fly", "ensemble", "view", "flow/9999", "--root", str(tmp_path))
    assert res.returncode == 2 and "no ensemble" in res.stderr


@pytest.mark.slow
def test_killed_worker_resumes_to_the_uninterrupted_result(toy, tmp_path, ray_local):
    """SIGKILL a Ray Train worker after the first checkpoints: FailureConfig restarts the workers, every model
    resumes from its checkpoint, iterations are continuous and the final parameters equal an uninterrupted run's."""
    cfg = _cfg(toy, iterations=6, checkpoint_every=2)
    pids = tmp_path / "pids"
    edir = tmp_path / "killed" / "e"
    killed: list[int] = []

    def killer():
        deadline = time.time() + 600
        while time.time() < deadline:
            if list(edir.glob("000/checkpoints/it-00000002.pt")) and list(pids.glob("rank-0-*")):
                pid = int(next(iter(pids.glob("rank-0-*"))).read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.2)

    t = threading.Thread(target=killer)
    t.start()
    fly_ensemble.train(cfg, tmp_path / "killed", "e", 4, 2, 2, max_failures=2, pid_dir=str(pids))
    t.join()
    assert killed and len(list(pids.glob("rank-0-*"))) == 2  # rank 0 ran twice: killed, then restarted
    fly_ensemble.train(cfg, tmp_path / "straight", "e", 4, 2, 2)
    for m in ("000", "001", "002", "003"):
        a, b = (tmp_path / r / "e" / m for r in ("killed", "straight"))
        assert [h["iteration"] for h in json.loads((a / "history.json").read_text())] == [2, 4, 6]
        x, y = (read_checkpoint(d / "checkpoints" / "it-00000006.pt") for d in (a, b))
        for key in ("network", "decoder"):
            for name, value in y[key].items():
                assert torch.equal(x[key][name], value), f"{m} {key}.{name}"
