"""Kill-and-resume gives exactly the frames of an uninterrupted run (acceptance 4); re-runs are idempotent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from raywave.waves.config import SimulationConfig
from raywave.waves.simulate import simulate
from raywave.waves.store import RunStore

from .conftest import LATTICE, ROOT

ARGS = ["--size", str(LATTICE), "--duration-s", "8", "--transient-s", "1", "--checkpoint-every-s", "1",
        "--storage-dtype", "float32", "--compile", "on", "--seed", "7", "--ga", "0.05", "-q"]  # fmt: skip


def test_kill_and_resume_is_exact(tmp_path, cli):
    full = tmp_path / "full"
    assert cli("waves", "simulate", "--out", str(full), *ARGS).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "raywave", "waves", "simulate", "--out", str(killed), *ARGS],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    manifest = killed / "manifest.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if manifest.exists():
            try:
                if len(json.loads(manifest.read_text())["chunks"]) >= 3:
                    break
            except json.JSONDecodeError:  # pragma: no cover - writes are atomic; never partial
                pytest.fail("manifest was read half-written")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = json.loads(manifest.read_text())
    assert partial["status"] == "running" and len(partial["chunks"]) < 9
    res = cli("waves", "simulate", "--out", str(killed), *ARGS)
    assert res.returncode == 0, res.stderr
    a, b = RunStore(full), RunStore(killed)
    assert b.manifest()["status"] == "complete"
    assert np.array_equal(a.frames("C"), b.frames("C", verify=True))
    assert [c["index"] for c in b.manifest()["chunks"]] == list(range(9))


def test_brian2_interrupted_run_resumes_exactly(tmp_path):
    cfg = SimulationConfig(backend="brian2", brian2_target="cython", height=6, width=6, duration_s=3,
                           checkpoint_every_s=1, storage_dtype="float32", seed=2, params={"gA": 0.1})  # fmt: skip

    def interrupt_in_second_chunk(done, total):
        if done >= 20:  # Brian2 reports a chunk's frames once it has run, before the chunk is committed
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, tmp_path / "b", progress=interrupt_in_second_chunk)
    assert len(RunStore(tmp_path / "b").manifest()["chunks"]) == 1
    simulate(cfg, tmp_path / "b")
    simulate(cfg, tmp_path / "a")
    assert np.array_equal(RunStore(tmp_path / "a").frames(), RunStore(tmp_path / "b").frames())


def test_rerun_of_finished_run_is_a_no_op(tmp_path):
    cfg = SimulationConfig(height=4, width=4, duration_s=0.3, checkpoint_every_s=0.1, compile="off")
    simulate(cfg, tmp_path / "r")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("*") if p.is_file()}
    simulate(cfg, tmp_path / "r")
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("*") if p.is_file()}
    assert before == after


def test_different_config_in_same_dir_is_refused(tmp_path):
    from raywave.errors import RaywaveError

    cfg = SimulationConfig(height=4, width=4, duration_s=0.2, checkpoint_every_s=0.1, compile="off")
    simulate(cfg, tmp_path / "r")
    with pytest.raises(RaywaveError, match="different configuration"):
        simulate(cfg.model_copy(update={"seed": 1}), tmp_path / "r")


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_storage_dtypes_round_trip(tmp_path, dtype):
    base = dict(height=5, width=5, duration_s=0.5, checkpoint_every_s=0.2, compile="off", seed=1, record=["V"])
    exact = simulate(SimulationConfig(**base, storage_dtype="float32"), tmp_path / "f32")
    small = simulate(SimulationConfig(**base, storage_dtype=dtype), tmp_path / dtype)
    for var, (lo, hi) in (("C", (0, 600)), ("V", (-100, 60))):
        x, y = exact.frames(var), small.frames(var)
        tol = (hi - lo) / 255 / 2 + 1e-4 if dtype == "uint8" else np.abs(x).max() * 2**-11
        assert np.abs(x - y).max() <= tol
        assert small.frames(var).dtype == np.float32
    man = small.manifest()
    assert man["variables"]["C"]["dtype"] == dtype and man["n_frames"] == 5
    assert np.allclose(small.times(), 0.1 * np.arange(1, 6))


def test_run_killed_before_its_first_manifest_resumes(tmp_path):
    """Killed between writing config.yaml and the first manifest: the same command starts it, not refuses it."""
    from raywave.config import save_model

    cfg = SimulationConfig(height=4, width=4, dt_ms=1.0, duration_s=0.2, checkpoint_every_s=0.1, compile="off")
    (tmp_path / "r").mkdir()
    save_model(cfg, tmp_path / "r" / "config.yaml")
    assert simulate(cfg, tmp_path / "r").manifest()["status"] == "complete"
