"""`raywave sweep analyze` on constructed sweep folders: its numbers recomputed from the raw trial metrics by a
plain independent implementation, verdicts on results with known answers, a moved folder, bad input."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raywave.errors import RaywaveError
from raywave.tune.analysis import analyze
from raywave.tune.layout import load_sweep
from raywave.tune.report import write_report

STEPS, VAL_EVERY, BATCH = 60, 10, 4


def epe_curve(steps: np.ndarray, start: float, floor: float, tau: float) -> np.ndarray:
    return floor + (start - floor) * np.exp(-steps / tau)


def write_trial(root: Path, key: str, params: dict, val_epe: dict[int, float], stop_at: int | None = None,
                stages: tuple[str, ...] = ("chairs",)) -> None:  # fmt: skip
    """A trial folder as the sweep writes it: params.json and run/ with run.json and metrics.parquet whose rows
    look like the training loop's (train rows every 5 steps, validation columns on validation rows)."""
    tdir = root / "trials" / key
    (tdir / "run").mkdir(parents=True)
    last = stop_at or STEPS
    per_stage = STEPS // len(stages)
    rows = []
    for step in range(5, last + 1, 5):
        si = min((step - 1) // per_stage, len(stages) - 1)
        row = {"step": step, "stage": si, "stage_name": stages[si], "samples": step * BATCH, "wall_s": 0.5 * step,
               "lr": 1e-4, "train_loss": 1.0 / step}  # fmt: skip
        if step in val_epe:
            e = val_epe[step]
            row.update(val_epe=e, val_1px=max(0.0, 1 - e / 4), val_3px=max(0.0, 1 - e / 8), val_5px=1 - e / 16)
        rows.append(row)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in cols}), tdir / "run" / "metrics.parquet")
    status = "stopped_early" if stop_at else "complete"
    run = {"kind": "ofe", "status": "running" if stop_at else "complete", "data": {"chairs": "synthetic-abc"},
           "code": {"raywave": "0.1.0", "git_commit": "f00", "git_dirty": False}}  # fmt: skip
    (tdir / "run" / "run.json").write_text(json.dumps(run))
    p = {"trial_key": key, **params, "status": status, "stopped_early": bool(stop_at), "wall_s": 0.5 * last}
    (tdir / "params.json").write_text(json.dumps(p))


def make_sweep(root: Path, arms: dict[tuple[str, str | None], float], seeds: int, fractions=(1.0,),
               noise: float = 0.05, rng_seed: int = 0, stopped: dict[str, int] | None = None,
               shared_noise: bool = True) -> Path:  # fmt: skip
    """A transfer sweep: each (strategy, nfp) arm's EPE curve ends near its floor + the given offset; the seed's
    noise is shared between arms on the same seed when `shared_noise` (a paired design)."""
    rng = np.random.default_rng(rng_seed)
    steps = np.arange(VAL_EVERY, STEPS + 1, VAL_EVERY)
    seed_noise = {(s, f): rng.normal(0, noise) for s in range(seeds) for f in fractions}
    for (strategy, nfp), offset in arms.items():
        for f in fractions:
            for s in range(seeds):
                eps = seed_noise[(s, f)] if shared_noise else rng.normal(0, noise)
                curve = epe_curve(steps, 8.0, 1.5 + offset + 0.5 * (1 - f), 15.0) + eps
                key = f"{strategy}-{nfp or 'none'}-f{f:g}-s{s}"
                params = {"strategy": strategy, "nfp": nfp, "seed": s, "data_fraction": f, "overrides": {}}
                write_trial(root, key, params, dict(zip(steps.tolist(), curve.tolist(), strict=True)),
                            (stopped or {}).get(key))  # fmt: skip
    (root / "sweep.json").write_text(json.dumps({"kind": "transfer", "name": root.name, "fingerprint": "abc",
                                                 "nfp": {"small-i4": {"wall_s": 12.0}}}))  # fmt: skip
    (root / "sweep.yaml").write_text("base: {variant: small}\n")
    return root


# ---------------------------------------------------------------- an independent, straightforward reference


def raw_runs(root: Path) -> list[dict]:
    """Every trial: params and its validation rows, read with plain pyarrow / json."""
    runs = []
    for tdir in sorted((root / "trials").iterdir()):
        params = json.loads((tdir / "params.json").read_text())
        rows = [r for r in pq.read_table(tdir / "run" / "metrics.parquet").to_pylist() if r.get("val_epe") is not None]
        runs.append({"params": params, "val": rows})
    return runs


def arm_of(p: dict) -> str:
    return p["strategy"] if p["strategy"] == "scratch" else f"{p['strategy']} [{p['nfp']}]"


def plain_iqm(values: list[float]) -> float:
    x = sorted(values)
    k = int(math.floor(0.25 * len(x)))
    kept = x[k : len(x) - k]
    return sum(kept) / len(kept)


def exact_bootstrap(values: list[float], stat) -> tuple[float, float]:
    """The exact bootstrap distribution (all n^n equally likely ordered resamples), its 2.5th-97.5th percentile."""
    x = np.array(values)
    n = len(x)
    idx = np.stack(np.meshgrid(*[np.arange(n)] * n, indexing="ij"), -1).reshape(-1, n)
    draws = np.array([stat(list(row)) for row in x[idx]])
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def close_interval(got: tuple[float, float], ref: tuple[float, float], spread: float) -> bool:
    """Monte-Carlo bounds (4000 resamples) against exact ones, within 12% of the data's range."""
    return abs(got[0] - ref[0]) <= 0.12 * spread + 1e-9 and abs(got[1] - ref[1]) <= 0.12 * spread + 1e-9


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def sweep3(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep") / "sweep-a"
    arms = {("scratch", None): 0.0, ("finetune", "small-i4"): -0.6, ("freeze_encoder", "small-i4"): 0.0}
    return make_sweep(root, arms, seeds=5, fractions=(0.5, 1.0), stopped={"freeze_encoder-small-i4-f0.5-s4": 30})


def test_summary_recomputed_independently(sweep3):
    a = analyze(load_sweep(sweep3), targets=[3.0, 0.5], reps=4000)
    runs = raw_runs(sweep3)
    rows = {(r["arm"], r["condition"], r["measure"]): r for r in a.tables["summary"]}
    checked = 0
    for arm in {arm_of(r["params"]) for r in runs}:
        for f in (0.5, 1.0):
            mine = [r for r in runs if arm_of(r["params"]) == arm and r["params"]["data_fraction"] == f]
            final = [r["val"][-1]["val_epe"] for r in mine]
            best_rows = [min(r["val"], key=lambda v: v["val_epe"]) for r in mine]
            for measure, vals in (("final_val_epe", final), ("best_val_epe", [b["val_epe"] for b in best_rows]),
                                  ("best_val_3px", [b["val_3px"] for b in best_rows])):  # fmt: skip
                row = rows[(arm, f"fraction={f:g}", measure)]
                assert row["n"] == len(vals) == 5
                assert row["mean"] == pytest.approx(sum(vals) / len(vals), rel=1e-12)
                assert row["median"] == pytest.approx(sorted(vals)[2], rel=1e-12)
                assert row["iqm"] == pytest.approx(plain_iqm(vals), rel=1e-12)
                spread = max(vals) - min(vals)
                for name, stat in (("mean", lambda v: sum(v) / len(v)), ("iqm", plain_iqm)):
                    ref = exact_bootstrap(vals, stat)
                    assert close_interval((row[f"{name}_lo"], row[f"{name}_hi"]), ref, spread), (arm, f, name)
                checked += 1
    assert checked == 3 * 2 * 3
    # the stopped trial is counted, with its last validation (step 30)
    row = rows[("freeze_encoder [small-i4]", "fraction=0.5", "final_val_epe")]
    assert row["stopped_early"] == 1
    stopped = next(r for r in runs if r["params"]["trial_key"] == "freeze_encoder-small-i4-f0.5-s4")
    assert stopped["val"][-1]["step"] == 30


def test_stratified_rows_pool_conditions(sweep3):
    a = analyze(load_sweep(sweep3), reps=1000)
    runs = raw_runs(sweep3)
    row = next(r for r in a.tables["summary"] if r["arm"] == "scratch" and r["condition"] == "all conditions"
               and r["measure"] == "final_val_epe")  # fmt: skip
    vals = [r["val"][-1]["val_epe"] for r in runs if r["params"]["strategy"] == "scratch"]
    assert row["n"] == 10 and row["mean"] == pytest.approx(np.mean(vals), rel=1e-12)
    # stratified: every resample keeps 5 runs of each fraction, so the interval is narrower than resampling
    # the 10 runs freely would give (the fractions differ by construction)
    rng = np.random.default_rng(5)
    free_draws = [np.mean(rng.choice(vals, len(vals))) for _ in range(4000)]
    free = np.percentile(free_draws, [2.5, 97.5])
    assert row["mean_hi"] - row["mean_lo"] < free[1] - free[0]


def test_efficiency_and_censoring(sweep3):
    a = analyze(load_sweep(sweep3), targets=[3.0, 0.5], reps=500)
    runs = raw_runs(sweep3)
    for row in a.tables["efficiency"]:
        f = float(row["condition"].split("=")[1])
        mine = [r for r in runs if arm_of(r["params"]) == row["arm"] and r["params"]["data_fraction"] == f]
        firsts = []
        for r in mine:
            hit = next((v for v in r["val"] if v["val_epe"] <= row["target"]), None)
            firsts.append(math.inf if hit is None else hit["step"])
        assert row["reached"] == sum(math.isfinite(x) for x in firsts)
        assert row["censored"] == len(mine) - row["reached"]
        ref = sorted(firsts)[len(firsts) // 2]
        assert row["steps_median"] == ref
        if row["reached"]:
            assert row["samples_median"] == (ref * BATCH if math.isfinite(ref) else math.inf)
    # target 0.5 is below every floor: all censored, median infinite, and said so
    low = [r for r in a.tables["efficiency"] if r["target"] == 0.5]
    assert low and all(r["reached"] == 0 and math.isinf(r["steps_median"]) and r["censored_trials"] for r in low)


def test_paired_recomputed_and_verdicts(sweep3):
    a = analyze(load_sweep(sweep3), reps=4000)
    runs = raw_runs(sweep3)
    final = {(arm_of(r["params"]), r["params"]["data_fraction"], r["params"]["seed"]): r["val"][-1]["val_epe"]
             for r in runs}  # fmt: skip
    rows = [r for r in a.tables["paired"] if r["measure"] == "final_val_epe" and r["condition"] != "all conditions"]
    for row in rows:
        f = float(row["condition"].split("=")[1])
        d = [final[(row["arm"], f, s)] - final[("scratch", f, s)] for s in range(5)]
        assert row["pairs"] == 5 and row["mean_diff"] == pytest.approx(np.mean(d), abs=1e-12)
        x = [final[(row["arm"], f, s)] for s in range(5)]
        y = [final[("scratch", f, s)] for s in range(5)]
        poi = sum((xi < yi) + 0.5 * (xi == yi) for xi, yi in zip(x, y, strict=True)) / 5
        assert row["p_improvement"] == pytest.approx(poi)
        wins, n = sum(di < 0 for di in d), sum(di != 0 for di in d)
        k = min(wins, n - wins)
        p_sign = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
        assert row["sign_test_p"] == pytest.approx(p_sign)
    verdicts = {(r["arm"], r["condition"]): r["verdict"] for r in a.tables["paired"] if r["measure"] == "final_val_epe"}
    assert verdicts[("finetune [small-i4]", "all conditions")] == "helped"
    assert verdicts[("freeze_encoder [small-i4]", "fraction=1")] == "indistinguishable"
    assert any(s.startswith("finetune [small-i4] helped") for s in a.sentences)


@pytest.mark.parametrize("offset,expected", [(-0.5, "helped"), (0.5, "hurt"), (0.0, "indistinguishable")])
def test_verdict_known_answers(tmp_path, offset, expected):
    root = make_sweep(tmp_path / "s", {("scratch", None): 0.0, ("finetune", "n"): offset}, seeds=6)
    a = analyze(load_sweep(root), reps=2000)
    row = next(r for r in a.tables["paired"] if r["measure"] == "final_val_epe")
    assert row["verdict"] == expected
    assert a.sentences[0].startswith(f"finetune [n] {expected if expected != 'indistinguishable' else 'was'}")
    # the same construction with 3 seeds cannot conclude anything (a sign test of 3 pairs never reaches p < 0.05)
    few = analyze(load_sweep(make_sweep(tmp_path / "few", {("scratch", None): 0.0, ("finetune", "n"): offset},
                                        seeds=3)), reps=500)  # fmt: skip
    row = next(r for r in few.tables["paired"] if r["measure"] == "final_val_epe")
    assert row["verdict"] == "indistinguishable" and row["sign_test_p"] == pytest.approx(0.25 if offset else 1.0)


def test_identical_distributions_rarely_called_different(tmp_path):
    """Strategy and scratch drawn independently from the same distribution (unpaired noise): over 20 constructed
    sweeps of 5 seeds the verdict is 'indistinguishable' in nearly all of them."""
    calls = []
    for k in range(20):
        root = make_sweep(tmp_path / f"s{k}", {("scratch", None): 0.0, ("finetune", "n"): 0.0}, seeds=5,
                          noise=0.3, rng_seed=k, shared_noise=False)  # fmt: skip
        a = analyze(load_sweep(root), reps=1000)
        calls.append(next(r for r in a.tables["paired"] if r["measure"] == "final_val_epe")["verdict"])
    assert calls.count("indistinguishable") >= 17, calls


def test_learning_curves_median(sweep3):
    a = analyze(load_sweep(sweep3), reps=500)
    runs = raw_runs(sweep3)
    curve = a.curves[("scratch", "fraction=1")]
    for step, med, n in zip(curve["step"], curve["median"], curve["n"], strict=True):
        vals = [v["val_epe"] for r in runs if arm_of(r["params"]) == "scratch" and r["params"]["data_fraction"] == 1.0
                for v in r["val"] if v["step"] == step]  # fmt: skip
        assert n == len(vals) == 5 and med == pytest.approx(float(np.median(vals)))
    stopped = a.curves[("freeze_encoder [small-i4]", "fraction=0.5")]
    assert list(stopped["n"]) == [5, 5, 5, 4, 4, 4]  # the trial stopped at step 30 drops out afterwards


def test_report_files_and_moved_folder(sweep3, tmp_path):
    """A sweep folder copied elsewhere analyses the same, through the real command line, without importing Ray."""
    import subprocess

    moved = tmp_path / "elsewhere" / "copied-sweep"
    shutil.copytree(sweep3, moved)
    code = ("import sys\nfrom raywave.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('exit', e.code, 'ray imported', 'ray' in sys.modules)")  # fmt: skip
    args = ["sweep", "analyze", str(moved), "--target-epe", "3,2", "--reps", "500"]
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)
    assert res.stdout.strip().splitlines()[-1] == "exit 0 ray imported False", res.stdout + res.stderr
    rep = moved / "report"
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and 'src="http' not in html
    md = (rep / "report.md").read_text()
    assert "helped" in md and "stopped early" in md.lower()
    for name in ("summary", "paired", "efficiency", "generalisation", "learning_curves", "trials"):
        with open(rep / f"{name}.csv") as f:
            assert len(list(csv.DictReader(f))) > 0
    # the same numbers as an analysis of the original folder
    a = analyze(load_sweep(sweep3), targets=[3.0, 2.0], reps=500)
    write_report(a, tmp_path / "orig-report")
    for name in ("summary", "paired", "efficiency"):
        assert (tmp_path / "orig-report" / f"{name}.csv").read_text() == (rep / f"{name}.csv").read_text()


def test_bad_input_one_line(tmp_path, cli):
    res = cli("sweep", "analyze", str(tmp_path / "nope"), "--reps", "500")
    assert res.returncode == 2 and "does not exist" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = cli("sweep", "analyze", str(tmp_path), "--target-epe", "a,b")
    assert res.returncode == 2 and "--target-epe" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(RaywaveError, match="not a sweep folder"):
        load_sweep(tmp_path / "empty")
    (tmp_path / "empty" / "trials").mkdir()
    with pytest.raises(RaywaveError, match="no trials"):
        load_sweep(tmp_path / "empty")


def test_nfp_sweep_compares_iterations(tmp_path):
    """An NFP sweep: arms are the values of `iters`, the metric val_ratio; 8 iterations constructed 0.5% worse
    relative to the baseline than 4 on each of 6 seeds -> 'hurt' with a mean difference of 0.005."""
    root = tmp_path / "nfp-sweep"
    steps = [10, 20, 30]
    for iters, offset in ((4, 0.0), (8, 0.005)):
        for s in range(6):
            tdir = root / "trials" / f"iters{iters}-s{s}"
            (tdir / "run").mkdir(parents=True)
            rows = [{"step": st, "stage": 0, "stage_name": "nfp", "samples": st * 4, "wall_s": st / 10.0,
                     "val_mse": 0.01, "val_baseline_mse": 0.012,
                     "val_ratio": 0.9 - 0.01 * st / 10 + 0.01 * s + offset} for st in steps]  # fmt: skip
            pq.write_table(pa.Table.from_pylist(rows), tdir / "run" / "metrics.parquet")
            (tdir / "params.json").write_text(json.dumps({"seed": s, "overrides": {"iters": iters, "lr": 4e-4},
                                                          "status": "complete"}))  # fmt: skip
    (root / "sweep.json").write_text(json.dumps({"kind": "nfp"}))
    a = analyze(load_sweep(root), reps=500)
    assert a.design.metric == "val_ratio" and a.design.baseline == "iters=4"
    row = next(r for r in a.tables["paired"] if r["measure"] == "final_val_ratio")
    assert row["arm"] == "iters=8" and row["mean_diff"] == pytest.approx(0.005) and row["verdict"] == "hurt"
    final = next(r for r in a.tables["summary"] if r["arm"] == "iters=4" and r["measure"] == "final_val_ratio")
    assert final["mean"] == pytest.approx(np.mean([0.87 + 0.01 * s for s in range(6)]))
    assert "efficiency" not in a.tables
    write_report(a, tmp_path / "rep")
    assert "MSE / repeat-I2 MSE" in (tmp_path / "rep" / "report.md").read_text()
