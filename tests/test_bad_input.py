"""The bad-input catalogue (issue 11): hostile inputs per command family, each one clear line and exit status 2,
no traceback, and nothing written anywhere in the workspace. Cases run in-process through `raywave.cli.main`
(the same code as the `raywave` entry point); a few run the real entry point in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from raywave.cli import main
from raywave.lock import exclusive
from raywave.waves.config import SimulationConfig
from raywave.waves.simulate import simulate
from raywave.waves.store import RunStore

from .conftest import ROOT

TINY = {"height": 4, "width": 4, "dt_ms": 1.0, "duration_s": 0.4, "checkpoint_every_s": 0.2, "compile": "off",
        "storage_dtype": "float32"}  # fmt: skip
TINY_ARGS = ["--size", "4", "--dt-ms", "1", "--duration-s", "0.4", "--checkpoint-every-s", "0.2", "--compile", "off",
             "-q"]  # fmt: skip
NODE = {"name": "A", "pattern": ["stride", [1, 1]]}
EDGE = {"src": "A", "tar": "A", "alpha": 1, "offsets": [[[0, 0], 1.0]]}
SPEC = {"nodes": [NODE], "edges": [EDGE], "input_units": ["A"], "output_units": ["A"]}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace of hostile files, a finished tiny run, broken copies of it, and a one-simulation dataset."""
    from raywave.data.generate import import_movie
    from raywave.storage import resolve

    ws = tmp_path_factory.mktemp("bad-input")
    (ws / "afile").write_text("a file, not a directory")
    (ws / "nonutf.yaml").write_bytes(b"height: \xff\xfe\n")
    (ws / "list.yaml").write_text("- height: 4\n")
    sweep = {"base": TINY, "grid": {"params.gA": [0.02]}}
    (ws / "sweep.yaml").write_text(json.dumps(sweep))
    (ws / "sweep-empty-grid.yaml").write_text(json.dumps(dict(sweep, grid={})))
    for name, spec in {"nodes5": dict(SPEC, nodes=5), "no-nodes": dict(SPEC, nodes=[]),
                       "stride0": dict(SPEC, nodes=[dict(NODE, pattern=["stride", [0, 1]])]),
                       "stride-text": dict(SPEC, nodes=[dict(NODE, pattern=["stride", "x"])]),
                       "no-edges": dict(SPEC, edges=[])}.items():  # fmt: skip
        (ws / f"spec-{name}.json").write_text(json.dumps(spec))
    (ws / "spec-notjson.json").write_bytes(b"\xff{")

    simulate(SimulationConfig(**TINY), ws / "run-ok")
    shutil.copytree(ws / "run-ok", ws / "run-corrupt")
    chunk = ws / "run-corrupt" / "frames" / "C_000000.npy"
    raw = np.load(chunk)
    np.save(chunk, np.zeros_like(raw))  # same size and shape, other values: only the sha256 can tell
    shutil.copytree(ws / "run-ok", ws / "run-failed")
    man = json.loads((ws / "run-failed" / "manifest.json").read_text())
    (ws / "run-failed" / "manifest.json").write_text(json.dumps(dict(man, status="failed", error="blew up")))
    RunStore(ws / "run-empty").start(SimulationConfig(**TINY), backend="torch")  # killed before its first chunk

    movie = np.random.default_rng(0).uniform(0, 400, (12, 8, 8)).astype(np.float32)
    import_movie(resolve(ws / "dataset"), "sim-test", movie, 0.1)
    shutil.copytree(ws / "dataset", ws / "dataset-truncated")
    frames = ws / "dataset-truncated" / "simulations" / "sim-test" / "frames.parquet"
    frames.write_bytes(frames.read_bytes()[:-100])
    return ws


def snapshot(root: Path) -> dict[str, int]:
    """Every path under `root`, with the modification time of files (a directory's own mtime moves when the
    output check's write probe is created and removed in it, which leaves nothing behind)."""
    return {str(p.relative_to(root)): 0 if p.is_dir() else p.stat().st_mtime_ns for p in root.rglob("*")}


def run_main(args: list[str], capsys) -> tuple[int, str]:
    try:
        main(args)
        rc = 0
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr().err


# (case id, argv with {ws} for the workspace, fragment of the one error line)
CASES = [
    # --- waves simulate: config values, config files, output locations, click usage errors
    ("sim-non-utf8-config", "waves simulate --config {ws}/nonutf.yaml", "not UTF-8"),
    ("sim-config-not-mapping", "waves simulate --config {ws}/list.yaml", "must hold a mapping"),
    ("sim-config-missing", "waves simulate --config {ws}/nope.yaml", "does not exist"),
    ("sim-config-is-dir", "waves simulate --config {ws}", "is a directory"),
    ("sim-duration-inf", "waves simulate --duration-s inf", "duration_s: must be a finite number"),
    ("sim-param-inf", "waves simulate --param gA=inf", "params.gA: must be a finite number"),
    ("sim-param-nan", "waves simulate --param gsAHP=nan", "params.gsAHP: must be a finite number"),
    ("sim-param-unknown", "waves simulate --param gFOO=1", "unknown parameter"),
    ("sim-dt-negative", "waves simulate --dt-ms -0.1", "dt_ms"),
    ("sim-huge-duration", "waves simulate --duration-s 1e308", "whole multiple"),
    ("sim-threads-0", "waves simulate --threads 0", "threads"),
    ("sim-save-config-under-file", "waves simulate --save-config {ws}/afile/c.yaml", "not writable"),
    ("sim-save-config-is-dir", "waves simulate --save-config {ws}", "is a directory"),
    ("sim-out-is-file", "waves simulate --out {ws}/afile", "is a file"),
    ("sim-out-under-file", "waves simulate --out {ws}/afile/run", "not writable"),
    ("sim-out-foreign-dir", "waves simulate --out {ws} --size 4", "exists and is not a raywave run"),
    ("sim-out-uri", "waves simulate --out foo://x", "looks like a URI"),
    ("sim-out-s3", "waves simulate --out s3://bucket/run", "looks like a URI"),
    ("sim-size-not-int", "waves simulate --size abc", "Invalid value for '--size'"),
    ("sim-missing-value", "waves simulate --out", "requires an argument"),
    ("unknown-command", "waves simulat", "No such command"),
    # --- waves generate
    ("gen-workers-0", "waves generate -c {ws}/sweep.yaml --workers 0 -o {ws}/ds -q", "workers"),
    ("gen-num-cpus-negative", "waves generate -c {ws}/sweep.yaml --num-cpus -1 -o {ws}/ds -q", "--num-cpus"),
    ("gen-bad-scheme", "waves generate -c {ws}/sweep.yaml -o foo://x -q", "cannot open storage"),
    ("gen-out-is-file", "waves generate -c {ws}/sweep.yaml -o {ws}/afile -q", "is a file"),
    ("gen-empty-grid", "waves generate -c {ws}/sweep-empty-grid.yaml -o {ws}/ds -q", "grid is empty"),
    ("gen-out-foreign-dir", "waves generate -c {ws}/sweep.yaml -o {ws}/run-ok -q", "not a raywave wave dataset"),
    ("gen-non-utf8", "waves generate -c {ws}/nonutf.yaml -o {ws}/ds -q", "not UTF-8"),
    # --- waves analyze / snapshot / movie: what they read is verified first
    ("analyze-no-frames", "waves analyze {ws}/run-empty", "no frames yet"),
    ("movie-no-frames", "waves movie {ws}/run-empty", "no frames yet"),
    ("analyze-corrupt-chunk", "waves analyze {ws}/run-corrupt", "sha256"),
    ("snapshot-corrupt-chunk", "waves snapshot {ws}/run-corrupt", "sha256"),
    ("movie-corrupt-chunk", "waves movie {ws}/run-corrupt", "sha256"),
    ("analyze-failed-run", "waves analyze {ws}/run-failed", "failed: blew up"),
    ("analyze-not-a-run", "waves analyze {ws}", "not a raywave run"),
    ("analyze-threshold-nan", "waves analyze {ws}/run-ok --threshold-nm nan", "finite"),
    ("snapshot-every-inf", "waves snapshot {ws}/run-ok --every-s inf", "finite"),
    ("snapshot-out-under-file", "waves snapshot {ws}/run-ok --out {ws}/afile/s.png", "not writable"),
    ("movie-out-is-dir", "waves movie {ws}/run-ok --out {ws}", "is a directory"),
    ("movie-format", "waves movie {ws}/run-ok --format avi", "not supported"),
    ("scan-ga-inf", "waves scan-ga --ga 0,inf --out {ws}/scan", "finite"),
    # --- data triplets / describe
    ("triplets-empty-range", "data triplets {ws}/dataset --min-active 0.9 --max-active 0.1", "min_fraction"),
    ("triplets-name-dotdot", "data triplets {ws}/dataset --name ..", "not a valid name"),
    ("triplets-name-separator", "data triplets {ws}/dataset --name a/b", "not a valid name"),
    ("triplets-non-utf8", "data triplets {ws}/dataset --config {ws}/nonutf.yaml", "not UTF-8"),
    ("triplets-not-a-dataset", "data triplets {ws}/nothing", "not a raywave wave dataset"),
    ("describe-out-is-file", "data describe {ws}/dataset --out {ws}/afile", "is a file"),
    ("describe-truncated", "data describe {ws}/dataset-truncated --out {ws}/card", "bytes"),
    # --- ofe
    ("synth-out-is-file", "ofe synth --out {ws}/afile", "is a file"),
    ("synth-out-under-file", "ofe synth --out {ws}/afile/tree", "not writable"),
    ("synth-layout", "ofe synth --out {ws}/tree --layout kitti", "chairs or sintel"),
    # --- fly: output locations and malformed connectome specs
    ("fly-simulate-out-is-file", "fly simulate --out {ws}/afile", "is a file"),
    ("fly-render-out-is-file", "fly render --out {ws}/afile", "is a file"),
    ("fly-train-out-is-file", "fly train-one --out {ws}/afile", "is a file"),
    ("fly-train-non-utf8", "fly train-one --out {ws}/train --config {ws}/nonutf.yaml", "not UTF-8"),
    ("fly-train-inf", "fly train-one --out {ws}/train --config {ws}/list.yaml", "must hold a mapping"),
    ("spec-nodes-5", "fly connectome --connectome {ws}/spec-nodes5.json", "'nodes' must be a non-empty list"),
    ("spec-no-nodes", "fly connectome --connectome {ws}/spec-no-nodes.json", "'nodes' must be a non-empty list"),
    ("spec-no-edges", "fly connectome --connectome {ws}/spec-no-edges.json", "'edges' must be a non-empty list"),
    ("spec-stride-0", "fly connectome --connectome {ws}/spec-stride0.json", "two integers >= 1"),
    ("spec-stride-text", "fly connectome --connectome {ws}/spec-stride-text.json", "two integers >= 1"),
    ("spec-not-json", "fly connectome --connectome {ws}/spec-notjson.json", "not valid UTF-8 JSON"),
    ("fly-simulate-bad-spec", "fly simulate --out {ws}/fsim --connectome {ws}/spec-stride0.json", "stride"),
    # --- a URI where a command needs a file system every node mounts (typer's Path would make `s3://b/x` a local
    # folder `s3:/b/x`): refused before anything starts, the URI shown as typed
    ("sweep-transfer-out-s3", "sweep transfer -c {ws}/sweep.yaml --out s3://bucket/t", "'s3://bucket/t' is a URI"),
    ("sweep-nfp-out-gs", "sweep nfp -c {ws}/sweep.yaml -o gs://bucket/sweeps/n", "'gs://bucket/sweeps/n' is a URI"),
    ("sweep-analyze-uri", "sweep analyze s3://bucket/sweeps/t", "SWEEP 's3://bucket/sweeps/t' is a URI"),
    ("sweep-analyze-out-uri", "sweep analyze {ws} --out s3://bucket/report", "--out 's3://bucket/report' is a URI"),
    ("ensemble-train-root-s3", "fly ensemble train --name flow/0000 --root s3://bucket/fly", "e.g. /data/raywave/fly"),
    ("ensemble-validate-root-gs", "fly ensemble validate flow/0000 --root gs://b/fly", "'gs://b/fly' is a URI"),
    ("ensemble-view-root-file", "fly ensemble view flow/0000 --root file:///tmp/fly", "'file:///tmp/fly' is a URI"),
    ("ensemble-view-out-uri", "fly ensemble view flow/0000 --root {ws} -o s3://bucket/v", "'s3://bucket/v' is a URI"),
    ("ofe-nfp-uri", "ofe train --strategy finetune --nfp s3://b/nfp --variant small --workers 0 --out {ws}/ofe-x",
     "--nfp 's3://b/nfp' is a URI"),
    ("demo-out-uri", "demo --out s3://bucket/demo", "--out 's3://bucket/demo' is a URI"),
]


@pytest.mark.parametrize("case,argv,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(ws, tmp_path, monkeypatch, capsys, case, argv, fragment):
    monkeypatch.chdir(tmp_path)  # default outputs (runs/...) would land here, and are checked below
    before, here = snapshot(ws), snapshot(tmp_path)
    rc, err = run_main(argv.format(ws=ws).split(), capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    assert snapshot(ws) == before and snapshot(tmp_path) == here, "something was written"


def test_a_validation_error_that_escapes_is_still_one_line(ws, monkeypatch, capsys):
    """The last resort in cli.main: a pydantic ValidationError raised outside raywave.config.build."""
    import raywave.cli.waves as waves_cli

    def escaping(*_args, **_kwargs):
        return SimulationConfig.model_validate({"height": 0})

    monkeypatch.setattr(waves_cli, "resolve_config", escaping)
    rc, err = run_main(["waves", "simulate", "--out", str(ws / "never")], capsys)
    assert rc == 2 and err.strip().startswith("error: config error: height") and len(err.strip().splitlines()) == 1
    assert not (ws / "never").exists()


def test_non_finite_simulation_fails_and_names_the_parameters(tmp_path, capsys):
    out = tmp_path / "run"
    rc, err = run_main(["waves", "simulate", "--out", str(out), "--param", "gA=1e300", *TINY_ARGS], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "non-finite" in err and "gA=1e+300" in err and "seed=0" in err
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "failed" and man["chunks"] == []  # never complete, no NaN chunk stored
    rc, err = run_main(["waves", "analyze", str(out)], capsys)
    assert rc == 2 and "failed" in err and "non-finite" in err
    rc, err = run_main(["waves", "simulate", "--out", str(out), "--param", "gA=1e300", *TINY_ARGS], capsys)
    assert rc == 2 and "non-finite" in err  # a re-run reports the failure again instead of passing it


def test_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    with exclusive(out, "run directory"):
        rc, err = run_main(["waves", "simulate", "--out", str(out), *TINY_ARGS], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "being written by another process" in err and f"pid {os.getpid()}" in err
    assert not (out / "manifest.json").exists()
    rc, err = run_main(["waves", "simulate", "--out", str(out), *TINY_ARGS], capsys)  # lock released: runs
    assert rc == 0, err and RunStore(out).manifest()["status"] == "complete"


def test_two_processes_one_run_directory(tmp_path, capsys):
    """A second `waves simulate` (another seed) into a directory a live process is writing: refused with one line
    naming the holder; the first finishes, and its run holds exactly the frames of its own seed."""
    args = ["--size", "4", "--dt-ms", "1", "--duration-s", "2", "--checkpoint-every-s", "0.2", "--compile", "off",
            "--storage-dtype", "float32", "-q"]  # fmt: skip
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "raywave", "waves", "simulate", "--out", str(out), "--seed", "1", *args]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        try:
            if json.loads((out / "manifest.json").read_text())["chunks"]:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    assert first.poll() is None, "the first writer finished before the second could try; make its run longer"
    rc, err = run_main(["waves", "simulate", "--out", str(out), "--seed", "2", *args], capsys)
    assert rc == 2 and "being written by another process" in err and f"pid {first.pid}" in err, err
    assert first.wait(timeout=300) == 0, first.stderr.read()
    ref = simulate(SimulationConfig(height=4, width=4, dt_ms=1.0, duration_s=2, checkpoint_every_s=0.2, seed=1,
                                    compile="off", storage_dtype="float32"), tmp_path / "alone")  # fmt: skip
    run = RunStore(out)
    assert run.manifest()["status"] == "complete" and run.config().seed == 1
    assert np.array_equal(run.frames("C", verify=True), ref.frames("C"))


def test_ctrl_c_prints_the_resume_hint_and_exits_130(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "raywave", "waves", "simulate", "--out", str(out), "--size", "4",
                             "--dt-ms", "1", "--duration-s", "3600", "--checkpoint-every-s", "0.2", "--compile", "off",
                             "-q"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "manifest.json").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; re-run the same command to resume" in err and "Traceback" not in err
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"


def test_real_entry_point(ws, cli):
    """The installed entry point behaves as the in-process catalogue (one case: each start costs seconds)."""
    res = cli("waves", "generate", "-c", str(ws / "sweep.yaml"), "--workers", "0", "-o", str(ws / "ds2"), "-q")
    fragment = "workers: Input should be greater than or equal to 1"
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("error:") and fragment in lines[0], res.stderr
    assert not (ws / "ds2").exists()


def test_tampered_connectome_cache_is_refused(tmp_path):
    from raywave.errors import RaywaveError
    from raywave.fly import source

    cached = source.fetch_spec()  # fetched once per machine (and sha256-checked)
    cache = tmp_path / "cache"
    shutil.copytree(cached.parent, cache / "flyvis-1.2.0")
    assert source.fetch_spec(cache) == cache / "flyvis-1.2.0" / source.SPEC_NAME
    spec = cache / "flyvis-1.2.0" / source.SPEC_NAME
    data = bytearray(spec.read_bytes())
    data[1000] ^= 1  # one flipped bit, same size
    spec.write_bytes(bytes(data))
    with pytest.raises(RaywaveError, match="does not match its provenance"):
        source.fetch_spec(cache)
    (cache / "flyvis-1.2.0" / "provenance.json").write_text("{")
    with pytest.raises(RaywaveError, match="unreadable or incomplete"):
        source.fetch_spec(cache)


def test_a_file_system_refusal_is_one_line(ws, monkeypatch, capsys):
    """Disk full or a permission refused mid-run (an OSError naming a file) is the environment, not a bug."""
    import errno

    import raywave.cli.waves as waves_cli

    def refused(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/frames/C_000003.npy")

    monkeypatch.setattr(waves_cli, "resolve_config", refused)
    rc, err = run_main(["waves", "simulate", "--out", str(ws / "never")], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "No space left on device: /data/run/frames/C_000003.npy" in err and "re-run to resume" in err
