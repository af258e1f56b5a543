"""Ray Train (one shared embedded Ray, 2 CPUs): DDP is exact for NFP-small, and a SIGKILLed worker restarts from
the last checkpoint with a continuous step count (the Ray Data shard path)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from raywave.train.checkpoints import RunCheckpoints
from raywave.train.metrics import read_metrics
from tests.train_helpers import wave_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return wave_dataset(tmp_path_factory.mktemp("nfp-ray") / "ds")


def test_ddp_one_step_equals_single_process_nfp_small(ray_local, dataset, tmp_path):
    """One AdamW step on 2 Ray Train workers (half a batch each) against one process on the whole batch: every
    element with a clear gradient agrees to 1e-5; noise-level ones (AdamW's sign-like first step, see
    raywave.train.exactness) differ by at most one step each way."""
    from raywave.train.exactness import compare_one_step, gradients
    from raywave.train.nfp import NFPTask

    # baseline_init False: every layer gets a gradient in the first step (zeroed output layers would block it)
    cfg = {"dataset": dataset, "variant": "small", "corr_levels": 2, "steps": 1, "batch": 4, "val_max": 4,
           "lr": 1e-3, "baseline_init": False}  # fmt: skip
    diff = compare_one_step("raywave.train.nfp:NFPTask", cfg, tmp_path, ray_local.cluster_resources(), workers=2)
    assert diff["params_moved"] > 0.9 * diff["params"], diff  # the step moved the weights: not vacuous
    single = RunCheckpoints(str(tmp_path / "single")).load()[0]["model"]
    ddp = RunCheckpoints(str(tmp_path / "ddp")).load()[0]["model"]
    task = NFPTask(cfg)
    full = gradients(task, [next(task.batches(0, 0, 0, 1))])
    halves = gradients(task, [next(task.batches(0, 0, r, 2)) for r in (0, 1)])
    lr0 = cfg["lr"] / 25  # OneCycleLR's first learning rate
    clear_elements = 0
    for k, g in full.items():
        clear = g.abs() > 10 * (g - halves[k]).abs().max()
        d = (single[k] - ddp[k]).abs()
        if clear.any():
            assert d[clear].max().item() < 1e-5, k
        assert d.max().item() <= 2 * lr0 * 1.01, k
        clear_elements += int(clear.sum())
    assert clear_elements > 0.5 * sum(g.numel() for g in full.values()), clear_elements


def _kill_rank0_once(run: Path, after_step: int, killed: list) -> None:
    """SIGKILL the rank-0 Train worker once it reports a step past `after_step` (its pid is in progress.json)."""
    deadline = time.time() + 600
    while time.time() < deadline and not killed:
        try:
            info = json.loads((run / "progress.json").read_text())
        except (OSError, ValueError):
            time.sleep(0.2)
            continue
        if info.get("step", 0) > after_step and info.get("pid"):
            os.kill(info["pid"], signal.SIGKILL)
            killed.append(info)
        time.sleep(0.2)


@pytest.mark.slow  # minutes on 2 CPUs: `make test-slow`
def test_worker_sigkill_restarts_from_last_checkpoint(ray_local, dataset, tmp_path):
    from raywave.train.nfp_run import PretrainConfig, pretrain_run

    run = tmp_path / "run"
    cfg = PretrainConfig(dataset=dataset, corr_levels=2, steps=6, batch=4, val_every=2, checkpoint_every=2,
                         log_every=1, val_max=8, workers=2, max_failures=2, out=str(run))  # fmt: skip
    killed: list = []
    killer = threading.Thread(target=_kill_rank0_once, args=(run, 2, killed), daemon=True)
    killer.start()
    rec, trained = pretrain_run(cfg, quiet=True)
    killer.join(timeout=5)
    assert killed, "the worker was never killed"
    assert trained and rec["status"] == "complete"
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # continuous, nothing duplicated
    assert [r["samples"] for r in rows] == [4, 8, 12, 16, 20, 24]
    assert RunCheckpoints(str(run)).pointer()["step"] == 6
    progress = json.loads((run / "progress.json").read_text())
    assert progress.get("finished")
    assert (run / "ray").is_dir()  # Ray Train's own storage under the run
    rec2, trained2 = pretrain_run(cfg, quiet=True)  # a finished run trains nothing
    assert not trained2 and rec2["status"] == "complete" and len(read_metrics(run)) == 6


@pytest.mark.slow
def test_driver_sigkill_then_rerun_resumes(dataset, tmp_path):
    """The real command in its own process (its own embedded Ray): SIGKILL the driver after the first checkpoint,
    run the same command again: it resumes from that checkpoint and finishes with a continuous step count."""
    import subprocess
    import sys

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "raywave", "nfp", "pretrain", "--dataset", dataset, "--corr-levels", "2",
           "--steps", "8", "--batch", "4", "--val-every", "2", "--checkpoint-every", "2", "--workers", "2",
           "--out", str(run), "--quiet"]  # fmt: skip
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.json"
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and json.loads(last.read_text())["step"] >= 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(last.read_text())["step"]
    assert killed_at < 8
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "complete" and len(rec["attempts"]) == 2
    steps = [r["step"] for r in read_metrics(run)]
    assert steps == sorted(set(steps)) and steps[-1] == 8
    assert RunCheckpoints(str(run)).pointer()["step"] == 8
