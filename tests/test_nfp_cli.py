"""`raywave nfp pretrain` and `raywave runs` through the real entry point, without Ray (--workers 0 is the plain
loop in-process; resource errors come before Ray starts): bad input is one line and exit 2 with nothing written,
a finished run trains nothing, a changed config is refused, runs list/show/compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raywave.errors import RaywaveError
from tests.train_helpers import wave_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return wave_dataset(tmp_path_factory.mktemp("nfp-cli") / "ds")


def one_line_error(res, *needles: str) -> None:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_input_is_one_line_and_writes_nothing(cli, dataset, tmp_path):
    from raywave.train.nfp_run import load, pretrain_run

    out = tmp_path / "run"
    res = cli("nfp", "pretrain", "--out", str(out), "--dataset", str(tmp_path / "missing"))  # the real entry point
    one_line_error(res, "not a raywave wave dataset")
    cases = [({"triplets": "nope"}, "no triplets 'nope'"),
             ({"corr_levels": None}, "too small for a 4-level correlation pyramid (needs multiples of 8, >= 128 px); "
                                     "use corr_levels 2"),  # 32 px frames
             ({"workers": 64}, "more than the cluster's"),
             ({"batch": 3, "workers": 2}, "does not split evenly"),
             ({"iters": 5}, "iters"),
             ({"stepz": 3}, "stepz: unknown parameter")]  # fmt: skip
    for extra, needle in cases:
        with pytest.raises(RaywaveError) as err:
            pretrain_run(load(None, {"dataset": dataset, "out": str(out), "corr_levels": 2, "workers": 0, **extra}))
        assert needle in str(err.value) and "\n" not in str(err.value)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: {dataset}\nsteps: 3\n")
    with pytest.raises(RaywaveError, match="give --out"):
        load(cfg, {})
    assert not out.exists()


def test_pretrain_in_process_resume_rules_and_runs_views(cli, dataset, tmp_path):
    out = tmp_path / "run"
    args = ["nfp", "pretrain", "--dataset", dataset, "--corr-levels", "2", "--workers", "0", "--steps", "2",
            "--batch", "4", "--val-every", "1", "--out", str(out), "--quiet"]  # fmt: skip
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith(str(out)) and "repeat-I2" in res.stderr
    rec = json.loads((out / "run.json").read_text())
    assert rec["status"] == "complete" and rec["kind"] == "nfp" and rec["data"]["triplets"] == "default"
    assert rec["code"]["raywave"] and rec["config"]["steps"] == 2 and rec["summary"]["steps"] == 2
    assert len(rec["summary"]["efficiency"]) == 4
    for f in ("metrics.parquet", "metrics.csv", "checkpoints/last.json", "checkpoints/best.json"):
        assert (out / f).exists(), f
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    again = cli(*args)
    assert again.returncode == 0 and "nothing to train" in again.stderr
    assert len(json.loads((out / "run.json").read_text())["attempts"]) == 1
    changed = cli(*args[:-1], "--lr", "1e-3", "--quiet")
    one_line_error(changed, "another config", "lr")
    from typer.testing import CliRunner

    from raywave.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["runs", "list", str(tmp_path), "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["steps"] == 2
    shown = runner.invoke(app, ["runs", "show", str(out)])
    assert shown.exit_code == 0 and (out / "learning_curve.png").stat().st_size > 1000
    png = tmp_path / "cmp.png"
    cmp = runner.invoke(app, ["runs", "compare", str(out), str(out), "--out", str(png)])
    assert cmp.exit_code == 0 and png.stat().st_size > 1000
    with pytest.raises(RaywaveError, match="no run.json"):
        runner.invoke(app, ["runs", "show", str(tmp_path / "nope")], catch_exceptions=False)
    assert Path(out / "run.json").exists()
