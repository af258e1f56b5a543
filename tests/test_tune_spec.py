"""Sweep files: expansion into trials, and bad sweep files refused with one line (exit 2) before Tune starts,
with nothing written. The ASHA wrapper never stops the scratch baseline."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from raywave.cli import main
from raywave.errors import ConfigError
from raywave.tune.spec import TransferSweep, set_path
from raywave.tune.sweep import check_only

STAGE = {"name": "chairs", "steps": 4, "batch": 2, "crop": [128, 128], "iters": 2, "val_iters": 2, "val_every": 2,
         "val_pairs": 1, "augment": False}  # fmt: skip


def sweep_doc(dataset: str) -> dict:
    return {
        "name": "t",
        "base": {"variant": "small", "workers": 0, "threads": 1, "checkpoint_every": 2, "log_every": 1,
                 "synthetic_chairs": {"pairs": 6, "height": 128, "width": 160, "val_every": 3}, "stages": [STAGE]},
        "strategies": ["scratch", "finetune", "freeze_encoder"],
        "nfp": {"small-i4": {"dataset": dataset, "variant": "small", "iters": 4, "corr_levels": 2, "steps": 4,
                             "batch": 2, "val_every": 2, "checkpoint_every": 2, "workers": 0}},
        "seeds": 3,
        "resources": {"cpus": 1},
        "max_concurrent_trials": 2,
    }  # fmt: skip


def write(tmp_path: Path, doc: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_expansion(tmp_path):
    doc = sweep_doc("/nowhere")
    doc["data_fraction"] = [0.5, 1.0]
    doc["grid"] = {"stages.0.lr": [1e-4, 4e-4]}
    trials = check_only("transfer", write(tmp_path, doc))
    # scratch has no NFP setting; the others one each: 3 strategies x 2 fractions x 2 lr x 3 seeds
    assert len(trials) == 3 * 2 * 2 * 3 == len({t.key for t in trials})
    t = next(t for t in trials if t.params["strategy"] == "finetune")
    assert t.config["nfp"].endswith("nfp-store/nfp-" + t.config["nfp"].rsplit("nfp-", 1)[1])
    assert {tr.config["stages"][0]["lr"] for tr in trials} == {1e-4, 4e-4}
    assert all(tr.config["nfp"] is None for tr in trials if tr.params["strategy"] == "scratch")
    # the same sweep file expands to the same keys (a resume finds its trials)
    assert [x.key for x in check_only("transfer", write(tmp_path, doc, "again.yaml"))] == [x.key for x in trials]


def test_set_path_into_lists():
    data = {"stages": ["chairs", {"name": "sintel", "lr": 1.0}]}
    set_path(data, "stages.0.steps", 5)
    set_path(data, "stages.1.lr", 2.0)
    assert data == {"stages": [{"name": "chairs", "steps": 5}, {"name": "sintel", "lr": 2.0}]}
    with pytest.raises(ConfigError, match="not an index"):
        set_path(data, "stages.7.lr", 1)


def bad_docs(dataset: str) -> list[tuple[str, dict, str]]:
    base = sweep_doc(dataset)
    cases = []

    def case(label, edit, message):
        d = copy.deepcopy(base)
        edit(d)
        cases.append((label, d, message))

    case("unknown strategy", lambda d: d.update(strategies=["scratch", "freeze_all"]), "unknown transfer strategy")
    case("unknown top-level key", lambda d: d.update(stratgies=["scratch"]), "stratgies")
    case("unknown base key", lambda d: d["base"].update(learning_rate=1), "learning_rate")
    case("unknown grid key", lambda d: d.update(grid={"stages.0.lrr": [1]}), "lrr")
    case("empty grid values", lambda d: d.update(grid={"stages.0.lr": []}), "has no values")
    case("no strategies", lambda d: d.update(strategies=[]), "strategies")
    case("one seed with intervals", lambda d: d.update(seeds=[0]), "at least 2 seeds")
    case("nfp variant", lambda d: d["nfp"]["small-i4"].update(variant="basic"), "pretrains the basic encoder")
    case("strategy needs nfp", lambda d: d.update(nfp={}), "add an `nfp:` section")
    case("seed in grid", lambda d: d.update(grid={"seed": [1, 2]}), "seeds:")
    case("missing dataset", lambda d: d["nfp"]["small-i4"].update(dataset=str(Path(dataset).parent / "nope")),
         "nope")  # fmt: skip
    return cases


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from tests.train_helpers import wave_dataset

    return wave_dataset(tmp_path_factory.mktemp("waves") / "ds", side=16, frames=24, sims=4, ppc=2)


def run_main(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


def test_bad_sweep_files_one_line_exit_2_nothing_written(tmp_path, dataset, capsys):
    for label, doc, message in bad_docs(dataset):
        out = tmp_path / "out" / label.replace(" ", "-")
        path = write(tmp_path, doc, f"{label.replace(' ', '-')}.yaml")
        code, err = run_main(["sweep", "transfer", "--config", str(path), "--out", str(out)], capsys)
        assert code == 2, (label, err)
        assert len(err.strip().splitlines()) == 1 and message in err, (label, err)
        assert not out.exists() and not (tmp_path / "out" / "nfp-store").exists(), label


def test_trial_larger_than_cluster(tmp_path, dataset, ray_local, capsys):
    doc = sweep_doc(dataset)
    doc["resources"] = {"cpus": 64}
    out = tmp_path / "out" / "s"
    code, err = run_main(["sweep", "transfer", "--config", str(write(tmp_path, doc)), "--out", str(out)], capsys)
    assert code == 2 and "one trial asks for 64 CPUs" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    doc["resources"] = {"cpus": 1}
    doc["base"]["workers"] = 3
    doc["base"]["stages"] = [dict(STAGE, batch=3)]
    code, err = run_main(["sweep", "transfer", "--config", str(write(tmp_path, doc)), "--out", str(out)], capsys)
    assert code == 2 and "3 training workers" in err, err
    assert not (tmp_path / "out").exists()


def test_nfp_sweep_file(tmp_path, dataset, capsys):
    doc = {"base": {"dataset": dataset, "variant": "small", "corr_levels": 2, "steps": 4, "batch": 2,
                    "val_every": 2, "workers": 0}, "grid": {"iters": [4, 8]}, "seeds": 2}  # fmt: skip
    trials = check_only("nfp", write(tmp_path, doc))
    assert sorted(t.key for t in trials) == ["iters4-s0", "iters4-s1", "iters8-s0", "iters8-s1"]
    assert {t.params["overrides"]["iters"] for t in trials} == {4, 8}
    doc["grid"] = {"iters": [4, 6]}
    out = tmp_path / "o"
    code, err = run_main(["sweep", "nfp", "--config", str(write(tmp_path, doc)), "--out", str(out)], capsys)
    assert code == 2 and "iters" in err and not out.exists()


def test_asha_never_stops_scratch():
    pytest.importorskip("ray")
    from ray.tune.schedulers import TrialScheduler

    from raywave.tune.spec import Asha
    from raywave.tune.sweep import _scheduler

    class FakeTrial:
        def __init__(self, key: str):
            self.trial_id, self.config = key, {"trial": key}

    sched = _scheduler(Asha(grace_period=1, reduction_factor=2), "transfer", max_t=8)
    trials = [FakeTrial(k) for k in ("finetune-a-s0", "finetune-a-s1", "scratch-none-s0", "scratch-none-s1")]
    for t in trials:
        sched.on_trial_add(None, t)
    actions = {}
    # scratch is the worst at every milestone; the finetune trials are better
    for step in (1, 2, 4, 8):
        for t, epe in zip(trials, (1.0, 1.1, 9.0, 9.5), strict=True):
            actions[(t.trial_id, step)] = sched.on_trial_result(None, t, {"step": step, "val_epe": epe})
    assert all(a == TrialScheduler.CONTINUE for (k, _), a in actions.items() if k.startswith("scratch"))
    # the same scores from non-scratch trials are stopped (ASHA is active)
    plain = _scheduler(Asha(grace_period=1, reduction_factor=2), "transfer", max_t=8)
    others = [FakeTrial(k) for k in ("finetune-a-s0", "finetune-a-s1", "freeze-b-s0", "freeze-b-s1")]
    for t in others:
        plain.on_trial_add(None, t)
    stops = [plain.on_trial_result(None, t, {"step": 2, "val_epe": e}) for t, e in zip(others, (1.0, 1.1, 9.0, 9.5),
                                                                                          strict=True)]  # fmt: skip
    assert TrialScheduler.STOP in stops


def test_sweep_model_defaults():
    s = TransferSweep.model_validate({"strategies": ["scratch"], "seeds": 2})
    assert s.seeds == [0, 1] and s.data_fraction == [1.0] and s.asha is None and s.intervals
