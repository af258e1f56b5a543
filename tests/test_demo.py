"""`raywave demo --tiny`: every stage of the pipeline through the real commands, the index page, and resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from raywave.demo import run_demo, stages, write_configs
from tests.conftest import ROOT


def test_demo_plan_names_real_commands(tmp_path):
    """Every stage's command parses with the real CLI (`--help` of its sub-command), and the NFP stage pretrains
    exactly the setting the transfer sweep will look for (so the sweep reuses it instead of training again)."""
    from raywave.config import build, load_yaml
    from raywave.tune.spec import TransferSweep, nfp_settings

    configs = write_configs(tmp_path, tiny=True)
    plan = stages(tmp_path, True, configs)
    assert [s.name for s in plan][:3] == ["waves", "triplets", "card"]
    assert {"transfer", "report", "fly-train", "fly-view"} <= {s.name for s in plan}
    sweep = load_yaml(configs["sweep"])
    (setting,) = nfp_settings(build(TransferSweep, sweep), sweep["nfp_store"]).values()
    assert load_yaml(configs["nfp-small-i4"]) == setting.config.model_dump(mode="json")
    assert setting.config.dataset == str(tmp_path.absolute() / "rw-dataset")


def in_process(args: tuple[str, ...]) -> int:
    """Run `raywave ARGS` in this process (the CLI's own entry point: one-line errors, exit codes), so that every
    stage shares the suite's embedded Ray instead of starting its own."""
    from raywave.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def test_tiny_demo_every_stage_in_process(tmp_path, ray_local):
    """The reduced demo of the default suite: every stage's real command at the tiny sizes, run in this process
    on the suite's Ray (the slow test below runs the same demo as a user does, a process per stage, and
    interrupts it). Checks the index page links real figures of every stage, the report, and that the sweep
    reused the NFP stage's run."""
    import torch

    threads, env = torch.get_num_threads(), dict(os.environ)  # commands may set both: restored for later tests
    out = tmp_path / "demo"
    said: list[str] = []
    try:
        index = run_demo(out, tiny=True, say=said.append, runner=in_process)
    finally:
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(env)
    page = index.read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert images and all((out / src).is_file() for src in images)
    for folder in ("rw-dataset/card", "figures/snapshots", "figures/movie", "nfp-store", "sweep/report", "fly-view"):
        assert any(src.startswith(folder) for src in images), folder
    assert (out / "sweep" / "report" / "report.html").is_file() and "sweep/report/report.html" in page
    (nfp_run,) = (out / "nfp-store").iterdir()
    assert len(json.loads((nfp_run / "run.json").read_text())["attempts"]) == 1
    runs = list((out / "sweep" / "trials").glob("*/run/run.json"))
    assert len(runs) == 6 and all(json.loads(r.read_text())["status"] == "complete" for r in runs)
    ensemble = json.loads((out / "fly" / "demo" / "0000" / "ensemble.json").read_text())
    assert [m["status"] for m in ensemble["status"]] == ["done"] * 4


@pytest.mark.slow
def test_tiny_demo_end_to_end_interrupted_and_resumed(tmp_path):
    """Ctrl-C (SIGINT to the demo's process group, as a terminal sends it) while the transfer sweep runs: the
    demo exits 130 without marking the stage done; the same command then finishes every stage, the sweep
    restored (every trial's run complete) and the NFP run trained once."""
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "raywave", "demo", "--tiny", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 2400
    while not list((out / "sweep" / "trials").glob("*/run/run.json")) and proc.poll() is None:
        assert time.monotonic() < deadline, "the transfer sweep did not start"
        time.sleep(1)
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    time.sleep(5)
    os.killpg(proc.pid, signal.SIGINT)
    interrupted = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, interrupted[-3000:]
    assert not (out / ".stages" / "transfer.json").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    index = out / "index.html"
    assert str(index.resolve()) in again.stdout.replace("\n", "")
    page = index.read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert images and all((out / src).is_file() for src in images)
    assert (out / "sweep" / "report" / "report.html").is_file() and "sweep/report/report.html" in page
    assert any("fly-view" in src for src in images)
    for stage in stages(out, True, write_configs(out, True)):
        assert json.loads((out / ".stages" / f"{stage.name}.json").read_text())["args"] == list(stage.args)
    runs = list((out / "sweep" / "trials").glob("*/run/run.json"))
    assert len(runs) == 6 and all(json.loads(r.read_text())["status"] == "complete" for r in runs)
    # the sweep reused the NFP run of the demo's NFP stage: one attempt, trained once
    (nfp_run,) = (out / "nfp-store").iterdir()
    assert len(json.loads((nfp_run / "run.json").read_text())["attempts"]) == 1
    said: list[str] = []
    run_demo(out, tiny=True, say=said.append)  # a finished demo runs nothing again
    assert all("done earlier, skipped" in line for line in said)
