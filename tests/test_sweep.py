"""Sweeps on Ray into a parquet dataset: exact contents, exactly once under faults, clear errors (issue 3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from raywave.config import build
from raywave.data.rw_dataset import RWDataset
from raywave.data.sweep_config import SweepConfig, expand
from raywave.errors import ConfigError
from raywave.waves.simulate import simulate

from .conftest import ROOT

BASE = {"height": 8, "width": 8, "duration_s": 1.0, "checkpoint_every_s": 0.2, "storage_dtype": "uint8",
        "compile": "off"}  # fmt: skip
SWEEP = {"base": BASE, "grid": {"params.gA": [0.02, 0.05]}, "seeds": 4, "workers": 2}  # 8 simulations


def _committed_mtimes(root: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in root.glob("simulations/*/manifest.json")}


def test_expand_grid_cases_seeds():
    sweep = build(SweepConfig, {"base": BASE, "grid": {"params.gA": [0.02, 0.05], "height": [8, 12]},
                                "cases": [{"duration_s": 2.0}], "seeds": [3, 4]})  # fmt: skip
    specs = expand(sweep)
    assert len(specs) == 2 * 2 * 2
    assert len({s.sim_id for s in specs}) == 8
    assert {s.config.seed for s in specs} == {3, 4}
    assert {s.config.duration_s for s in specs} == {2.0}
    assert expand(sweep)[0].sim_id == specs[0].sim_id  # deterministic ids


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"base": BASE, "grid": {"params.gA": []}}, "has no values"),
        ({"base": BASE, "grid": {"params.gAA": [0.1]}}, "unknown parameter"),
        ({"base": BASE, "bogus": 1}, "unknown parameter"),
        ({"base": BASE, "seeds": []}, "no seeds"),
        ({"base": BASE, "grid": {"params.gA": [0.1, 0.1]}}, "repeats a simulation"),
        ({"base": dict(BASE, dt_ms=-1)}, "dt_ms"),
        ({"base": BASE, "grid": {}}, "grid is empty"),
        ({"base": BASE, "workers": 0}, "workers"),
        ({"base": dict(BASE, duration_s=float("inf"))}, "finite"),
    ],
)
def test_bad_sweeps_are_one_line_errors(data, needle, capsys, tmp_path):
    from raywave.cli import main

    with pytest.raises(ConfigError, match=needle):
        expand(build(SweepConfig, data))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "ds"
    with pytest.raises(SystemExit) as exit_:
        main(["waves", "generate", "-c", str(path), "-o", str(out), "-q"])  # in-process: the CLI's own code
    assert exit_.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines
    assert not out.exists()


@pytest.mark.slow  # a SIGKILLed simulation actor mid-sweep: minutes on 2 CPUs (`make test-slow`)
def test_sweep_exact_and_survives_a_killed_worker(ray_local, tmp_path):
    """8 simulations; one actor is SIGKILLed mid-simulation; Ray restarts it and the simulation resumes."""
    from raywave.data.sweep_runner import run_sweep

    sweep = build(SweepConfig, SWEEP)
    specs = expand(sweep)
    out, scratch = tmp_path / "ds", tmp_path / "scratch"
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(report=run_sweep(sweep, out, scratch=str(scratch))))
    thread.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and thread.is_alive():
        for pid_file in scratch.glob("*.pid"):
            run_manifest = scratch / pid_file.stem / "run" / "manifest.json"
            try:
                if run_manifest.exists() and json.loads(run_manifest.read_text())["chunks"]:
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
                    killed = pid_file.stem
                    break
            except (ValueError, FileNotFoundError, ProcessLookupError, json.JSONDecodeError):
                continue
        time.sleep(0.05)
    thread.join(300)
    assert killed is not None, "no simulation was caught mid-run"
    report = result["report"]
    assert not report.failed and report.retried.get(killed, 0) >= 2
    assert sorted(report.generated) == sorted(s.sim_id for s in specs)

    ds = RWDataset(out)
    assert ds.info()["status"] == "complete"
    sims = ds.simulations()
    assert [s.sim_id for s in sims] == [s.sim_id for s in specs]  # each exactly once, in sweep order
    files = sorted(out.glob("simulations/*/*"))
    assert len(files) == 16 and not list(out.rglob("*.tmp"))
    for sim, spec in zip(sims, specs, strict=True):
        sim.verify()
        assert sim.n_frames == spec.config.n_frames == pq.read_metadata(sim.frames_path).num_rows
        assert sim.manifest["seed"] == spec.config.seed and sim.manifest["backend"] == "torch"
        assert sim.manifest["wave_stats"]["frames"] == spec.config.n_frames
    # bit-identical to running the killed simulation alone
    spec = next(s for s in specs if s.sim_id == killed)
    alone = simulate(spec.config, tmp_path / "alone")
    raw = np.concatenate([r for _, r in alone.iter_stored("C")])
    assert np.array_equal(ds.simulation(killed).stored(), raw)
    assert np.array_equal(ds.simulation(killed).calcium(), alone.frames("C"))
    # plain pyarrow reads the tensor column as (n, H, W)
    col = pq.read_table(sims[0].frames_path).column("calcium").combine_chunks()
    assert col.to_numpy_ndarray().shape == (10, 8, 8)


@pytest.mark.slow  # a killed driver and a re-run: minutes on 2 CPUs (`make test-slow`)
def test_interrupted_driver_resumes_without_redoing(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "raywave", "waves", "generate", "-c", str(path), "-o", str(out), "-q"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # Ray's start-up alone can take minutes on a loaded 2-core machine
    while len(_committed_mtimes(out)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 130  # cli.main: "interrupted; re-run the same command to resume"
    before = _committed_mtimes(out)
    assert 2 <= len(before) < 8, "the interrupt came too late to test a resume"
    assert json.loads((out / "dataset.json").read_text())["status"] == "incomplete"
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{8 - len(before)} generated, {len(before)} already there" in " ".join(res.stdout.split())
    after = _committed_mtimes(out)
    assert len(after) == 8 and all(after[k] == v for k, v in before.items())
    assert json.loads((out / "dataset.json").read_text())["status"] == "complete"
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 generated, 8 already there" in " ".join(again.stdout.split())
    assert _committed_mtimes(out) == after


def test_generate_one_to_a_uri_is_idempotent(tmp_path):
    """Storage given as a URI goes through pyarrow.fs; a second call is a no-op that rewrites nothing."""
    from raywave.data.generate import generate_one
    from raywave.data.sweep_runner import prepare_dataset
    from raywave.storage import resolve

    sweep = build(SweepConfig, {"base": dict(BASE, duration_s=0.5), "seeds": [11]})
    (spec,) = expand(sweep)
    loc = resolve(f"file://{tmp_path}/uri-ds")
    prepare_dataset(loc, sweep, [spec])
    first = generate_one(spec, loc, tmp_path / "scratch")
    manifest = tmp_path / "uri-ds" / "simulations" / spec.sim_id / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = generate_one(spec, loc, tmp_path / "scratch")
    assert (first["status"], again["status"]) == ("generated", "skipped")
    assert manifest.stat().st_mtime_ns == stamp and not list((tmp_path / "scratch").iterdir())
    sim = RWDataset(f"file://{tmp_path}/uri-ds").simulation(spec.sim_id)
    sim.verify()
    assert sim.calcium().shape == (5, 8, 8) and sim.manifest["code_version"]["raywave"]
