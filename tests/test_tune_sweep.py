"""`raywave sweep transfer` end to end on the embedded Ray (RAFT-small, synthetic flow, NFP pretraining
included): the report's numbers against the raw trial metrics, a re-run that trains nothing, and a driver killed
with SIGKILL mid-sweep that resumes with every trial exactly once and NFP pretraining not repeated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.test_report_analysis import arm_of, raw_runs
from tests.test_tune_spec import sweep_doc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from tests.train_helpers import wave_dataset

    return wave_dataset(tmp_path_factory.mktemp("waves") / "ds", side=16, frames=24, sims=4, ppc=2)


def sweep_cmd(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "raywave", "sweep", "transfer", "--config", str(config), "--out", str(out)]


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run_sweep(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a sweep command; again (up to 5 times) when Ray itself did not come up on an overloaded machine."""
    for _ in range(5):
        res = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=timeout)
        if "Ray did not start" not in res.stderr:
            break
        time.sleep(10)
    return res


def statuses(out: Path) -> dict[str, str]:
    return {p.parent.name: json.loads(p.read_text())["status"] for p in (out / "trials").glob("*/params.json")}


def attempts(run: Path) -> int:
    return len(json.loads((run / "run.json").read_text())["attempts"])


def check_complete_once(out: Path, n_trials: int) -> None:
    """Every trial exactly once (in Tune's experiment and on disk), complete, with no step logged twice."""
    from ray.tune import ExperimentAnalysis

    keys = [t.config["trial"] for t in ExperimentAnalysis(str(out / "tune")).trials]
    assert len(keys) == len(set(keys)) == n_trials
    assert set(statuses(out).values()) == {"complete"} and len(statuses(out)) == n_trials
    for tdir in (out / "trials").iterdir():
        steps = pq.read_table(tdir / "run" / "metrics.parquet").column("step").to_pylist()
        assert steps == sorted(set(steps)), tdir.name


def test_scratch_only_in_process(tmp_path, ray_local):
    """The Tune wiring on the session's Ray: 2 scratch trials of 2 steps, each validation reported, the report."""
    from raywave.tune.sweep import run_transfer

    doc = sweep_doc("/unused")
    doc.update(strategies=["scratch"], seeds=2, nfp={})
    doc["base"]["stages"] = [dict(doc["base"]["stages"][0], steps=2, val_every=1)]
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(doc))
    out = run_transfer(config, tmp_path / "sweeps" / "s", None, log=lambda _s: None)
    check_complete_once(out, 2)
    from ray.tune import ExperimentAnalysis

    for trial in ExperimentAnalysis(str(out / "tune")).trials:
        assert trial.last_result["step"] == 2 and trial.last_result["training_iteration"] == 2  # one per validation
    assert (out / "report" / "report.html").exists() and not (tmp_path / "sweeps" / "nfp-store").exists()


@pytest.mark.slow
def test_small_sweep_one_command(tmp_path, dataset):
    """2 strategies x 2 seeds, 4 steps each: one command, the report, and a re-run that trains nothing."""
    doc = sweep_doc(dataset)
    doc["strategies"], doc["seeds"] = ["scratch", "finetune"], 2
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(doc))
    out = tmp_path / "sweeps" / "s"
    res = run_sweep(sweep_cmd(config, out), 1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    check_complete_once(out, 4)
    info = json.loads((out / "sweep.json").read_text())
    nfp_run = Path(info["nfp"]["small-i4"]["run"])
    assert nfp_run.parent == tmp_path / "sweeps" / "nfp-store" and attempts(nfp_run) == 1
    # the report's paired differences, recomputed from the raw metrics
    runs = raw_runs(out)
    final = {(arm_of(r["params"]), r["params"]["seed"]): r["val"][-1]["val_epe"] for r in runs}
    with open(out / "report" / "paired.csv") as f:
        import csv

        row = next(r for r in csv.DictReader(f) if r["measure"] == "final_val_epe")
    expected = sum(final[("finetune [small-i4]", s)] - final[("scratch", s)] for s in (0, 1)) / 2
    assert float(row["mean_diff"]) == pytest.approx(expected, rel=1e-9)
    assert "report.html" in res.stdout + res.stderr
    # the same command again: nothing is trained (no new attempt in any run), the NFP run is reused
    before = {p.name: attempts(p / "run") for p in (out / "trials").iterdir()}
    res = run_sweep(sweep_cmd(config, out), 1500)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {p.name: attempts(p / "run") for p in (out / "trials").iterdir()} == before
    assert attempts(nfp_run) == 1 and "reused" in res.stdout
    check_complete_once(out, 4)


@pytest.mark.slow
def test_three_strategies_three_seeds_and_sigkill_resume(tmp_path, dataset):
    """Acceptance: 3 strategies x 3 seeds from one command; the driver SIGKILLed mid-way; the same command
    finishes with every trial exactly once and NFP pretraining done once."""
    doc = sweep_doc(dataset)
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(doc))
    out = tmp_path / "sweeps" / "s"
    for _ in range(5):  # (again if Ray itself did not come up on an overloaded machine)
        log = open(tmp_path / "first.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(sweep_cmd(config, out), stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=ROOT,
                                start_new_session=True)  # fmt: skip
        deadline = time.time() + 1500
        while time.time() < deadline and proc.poll() is None:
            st = statuses(out) if (out / "trials").exists() else {}
            if sum(v == "complete" for v in st.values()) >= 2:
                break
            time.sleep(2)
        if proc.poll() is None or "Ray did not start" not in (tmp_path / "first.log").read_text():
            break
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)  # the driver only
    proc.wait()
    done_before = {k for k, v in statuses(out).items() if v == "complete"}
    assert 2 <= len(done_before) < 9
    nfp_run = Path(json.loads((out / "sweep.json").read_text())["nfp"]["small-i4"]["run"])
    time.sleep(5)  # the killed driver's embedded Ray goes down with it
    res = run_sweep(sweep_cmd(config, out), 2400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resuming the sweep" in res.stdout
    check_complete_once(out, 9)
    assert attempts(nfp_run) == 1
    for key in done_before:  # finished trials were not run again
        assert attempts(out / "trials" / key / "run") == 1, key
    assert (out / "report" / "report.html").exists()


@pytest.mark.slow
def test_nfp_sweep_one_command(tmp_path, dataset):
    """`sweep nfp`: 4 vs 8 iterations x 2 seeds, scored by val MSE / repeat-I2 MSE; the report compares them."""
    doc = {"name": "nfp", "base": {"dataset": dataset, "variant": "small", "corr_levels": 2, "steps": 4, "batch": 2,
                                   "val_every": 2, "checkpoint_every": 2, "workers": 0},
           "grid": {"iters": [4, 8]}, "seeds": 2, "resources": {"cpus": 1}, "max_concurrent_trials": 2}  # fmt: skip
    config = tmp_path / "nfp.yaml"
    config.write_text(yaml.safe_dump(doc))
    out = tmp_path / "sweeps" / "n"
    cmd = [sys.executable, "-m", "raywave", "sweep", "nfp", "--config", str(config), "--out", str(out)]
    res = run_sweep(cmd, 1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    check_complete_once(out, 4)
    import csv

    with open(out / "report" / "paired.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["measure"] == "final_val_ratio")
    ratio = {}
    for tdir in (out / "trials").iterdir():
        p = json.loads((tdir / "params.json").read_text())
        rows = [r for r in pq.read_table(tdir / "run" / "metrics.parquet").to_pylist() if r.get("val_ratio")]
        ratio[(p["overrides"]["iters"], p["seed"])] = rows[-1]["val_ratio"]
    assert row["arm"] == "iters=8"
    assert float(row["mean_diff"]) == pytest.approx(sum(ratio[(8, s)] - ratio[(4, s)] for s in (0, 1)) / 2)
