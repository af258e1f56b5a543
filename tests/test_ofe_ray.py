"""`raywave ofe train` on Ray Train (issue 12): DDP exactness for RAFT-small, a SIGKILLed worker (restart from
the last checkpoint, continuous steps, the numbers of an uninterrupted run), a SIGKILLed driver (the same command
resumes), and (slow) the 2-worker two-stage run that ends below 0.7x the zero-flow EPE."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from raywave.data.synthetic_flow import write_chairs
from raywave.ofe.config import load_config
from raywave.ofe.train import OFETask
from raywave.train.metrics import read_metrics
from raywave.train.ofe_run import train_run

from .conftest import ROOT
from .test_ofe_train import tiny_config, tiny_stage


@pytest.fixture(scope="module")
def chairs(tmp_path_factory) -> Path:
    return write_chairs(tmp_path_factory.mktemp("chairs"), n_pairs=6, h=128, w=160, val_every=3)


def test_ddp_one_step_is_exact_for_raft_small(ray_local, tmp_path, chairs):
    """One AdamW step on 2 workers (half a batch each) against one process on the whole batch.

    AdamW's first step moves each element by lr0 * g / (|g| + eps), i.e. by lr0 times the SIGN of its gradient:
    an element whose gradient is at float-noise level (the full-batch gradient and the mean of the per-sample
    gradients differ by as much as the gradient itself, in one process already) may step either way. So: every
    element with a clear gradient agrees to 1e-5, and the others differ by at most one step each way."""
    from raywave.train.checkpoints import RunCheckpoints
    from raywave.train.exactness import compare_one_step, gradients

    cfg = load_config(None, {"variant": "small", "workers": 2, "stages": [tiny_stage(steps=1, batch=2, iters=3)]})
    task_config = {"ofe": cfg.model_dump(mode="json"), "roots": {"chairs": str(chairs)}, "nfp": None}
    diff = compare_one_step("raywave.ofe.train:OFETask", task_config, tmp_path, ray_local.cluster_resources())
    assert diff["params_moved"] == diff["params"], diff
    single = RunCheckpoints(str(tmp_path / "single")).load()[0]["model"]
    ddp = RunCheckpoints(str(tmp_path / "ddp")).load()[0]["model"]
    task = OFETask(task_config)
    full = gradients(task, [next(task.batches(0, 0, 0, 1))])
    halves = gradients(task, [next(task.batches(0, 0, rank, 2)) for rank in (0, 1)])
    lr0 = cfg.stages[0].lr / 25  # OneCycleLR's first learning rate (div_factor 25)
    clear_elements = 0
    for k, g in full.items():
        clear = g.abs() > 10 * (g - halves[k]).abs().max()
        d = (single[k] - ddp[k]).abs()
        assert d[clear].max().item() < 1e-5 if clear.any() else True, k
        assert d.max().item() <= 2 * lr0 * 1.01, k
        clear_elements += int(clear.sum())
    assert clear_elements > 0.5 * sum(g.numel() for g in full.values()), clear_elements


def _run_in_thread(cfg) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def go():
        try:
            result["rec"] = train_run(cfg, quiet=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            result["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    return thread, result


def _last_step(run: Path) -> int:
    try:
        return json.loads((run / "checkpoints" / "last.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def fault_config(out: Path, chairs: Path):
    stages = [tiny_stage(steps=3, iters=2), tiny_stage(steps=3, iters=2, lr=1e-4, crop=[128, 160], augment=True)]
    return tiny_config(out, chairs, workers=2, max_failures=2, stages=stages, checkpoint_every=2)


@pytest.mark.slow
def test_killed_worker_restarts_from_its_checkpoint_with_the_same_numbers(ray_local, tmp_path, chairs):
    ref = train_run(fault_config(tmp_path / "ref", chairs), quiet=True)
    assert ref["status"] == "complete"
    run = tmp_path / "killed"
    thread, result = _run_in_thread(fault_config(run, chairs))
    killed, deadline = None, time.time() + 600
    while killed is None and thread.is_alive() and time.time() < deadline:
        try:  # rank 0's pid is in progress.json; kill it once a checkpoint exists and before the run ends
            info = json.loads((run / "progress.json").read_text())
        except (OSError, ValueError):
            info = {}
        if _last_step(run) >= 2 and info.get("pid") and info.get("step", 0) < 6:
            killed = info["pid"]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    thread.join(900)
    assert killed is not None, "no worker was caught mid-run"
    assert "error" not in result, result.get("error")
    assert result["rec"]["status"] == "complete"
    a, b = read_metrics(tmp_path / "ref"), read_metrics(run)
    assert [r["step"] for r in b] == list(range(1, 7))  # continuous, nothing repeated or lost
    for ra, rb in zip(a, b, strict=True):
        for k in ("train_loss", "lr", "samples", "val_epe"):
            va, vb = ra.get(k), rb.get(k)
            assert (va is None) == (vb is None) and (va is None or va == pytest.approx(vb, rel=1e-6)), (k, ra, rb)


@pytest.mark.slow
def test_killed_driver_resumes_and_a_finished_run_trains_nothing(tmp_path, chairs):
    cfg = tmp_path / "run.yaml"
    out = tmp_path / "run"
    stages = [tiny_stage(steps=4, iters=2), tiny_stage(steps=2, iters=2, lr=1e-4)]
    cfg.write_text(json.dumps({"variant": "small", "chairs_root": str(chairs), "workers": 2, "stages": stages,
                               "checkpoint_every": 1, "log_every": 1}))  # fmt: skip
    cmd = [sys.executable, "-m", "raywave", "ofe", "train", "-c", str(cfg), "--out", str(out), "--quiet"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while _last_step(out) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = _last_step(out)
    assert 2 <= stopped_at < 6
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 7))
    rec = json.loads((out / "run.json").read_text())
    assert rec["status"] == "complete" and len(rec["attempts"]) == 2
    third = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and "nothing to train" in third.stdout + third.stderr, third.stderr[-2000:]
    assert read_metrics(out) == rows and len(json.loads((out / "run.json").read_text())["attempts"]) == 2


@pytest.mark.slow
def test_two_workers_two_stages_beat_zero_flow(tmp_path):
    """Acceptance 2 (OFE): examples/ofe-small.yaml, RAFT-small on synthetic Chairs, 2 workers, two stages."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "raywave", "ofe", "train", "-c", "examples/ofe-small.yaml",
                           "--workers", "2", "--out", str(out), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          timeout=3600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = json.loads((out / "run.json").read_text())["summary"]["final"]
    assert final["stage"] == 1 and final["val_epe"] < 0.7 * final["val_zero_epe"], final
