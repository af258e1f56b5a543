"""The analysis of a sweep: plain numpy/scipy over the trials' metrics tables (no Ray).

Trials are grouped into *arms* (what is compared: a transfer strategy with its NFP setting; in an NFP sweep the
values of one key, e.g. iterations) and *conditions* (everything else that varies except the seed: data
fraction, other keys). Seeds are the runs; conditions are the strata of the stratified bootstrap when an arm is
summarised over several conditions. Lower is better for EPE and the NFP ratio, higher for 1/3/5 px.

Trials stopped early by ASHA enter the final/best tables with their last validation (a pessimistic value for
that trial) and are counted in every row; for the steps to a target they are censored where they stopped.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raywave.tune.layout import Sweep, Trial
from raywave.tune.stats import Estimate, probability_of_improvement, sign_test, stratified_interval, verdict

BASELINE = "scratch"
ALL = "all conditions"


@dataclass
class Design:
    """What the sweep compares: the metric (lower is better), extra metrics, the arm and condition of a trial."""

    kind: str
    metric: str  # column, lower is better
    extras: tuple[str, ...]  # reported at the final / best validation; higher is better
    compare: str = "strategy"
    baseline: str = BASELINE

    def arm(self, t: Trial) -> str:
        if self.kind == "transfer":
            nfp = t.params.get("nfp")
            return str(t.params["strategy"]) + (f" [{nfp}]" if nfp and t.params["strategy"] != BASELINE else "")
        return f"{self.compare}={_fmt(_param(t, self.compare))}"

    def condition(self, t: Trial) -> tuple[tuple[str, Any], ...]:
        skip = {"seed", "strategy", "nfp", self.compare}
        items = {"data_fraction": t.params.get("data_fraction")} if self.kind == "transfer" else {}
        items.update(t.params.get("overrides") or {})
        return tuple(sorted((k, v) for k, v in items.items() if k not in skip and v is not None))


def design_for(sweep: Sweep, compare: str | None = None) -> Design:
    if sweep.kind == "nfp":
        key = compare or "iters"
        values = sorted({_param(t, key) for t in sweep.trials}, key=str)
        return Design("nfp", "val_ratio", (), compare=key, baseline=f"{key}={_fmt(values[0])}")
    return Design("transfer", "val_epe", ("val_1px", "val_3px", "val_5px"))


def _param(t: Trial, key: str) -> Any:
    return t.params.get(key, (t.params.get("overrides") or {}).get(key))


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def condition_label(cond: tuple[tuple[str, Any], ...]) -> str:
    if not cond:
        return "-"
    return ", ".join(f"{'fraction' if k == 'data_fraction' else k}={_fmt(v)}" for k, v in cond)


@dataclass
class Analysis:
    design: Design
    stage: Any
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    curves: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    sentences: list[str] = field(default_factory=list)
    about: dict[str, Any] = field(default_factory=dict)


def final_stage(sweep: Sweep) -> Any:
    """The stage of the last validation of the sweep's longest run (None when runs have no stages)."""
    best: tuple[int, Any] = (-1, None)
    for t in sweep.trials:
        if "stage" in t.metrics and t.metrics["step"].size:
            steps, _ = t.validations("val_epe" if "val_epe" in t.metrics else "val_ratio")
            if steps.size and steps[-1] > best[0]:
                idx = np.flatnonzero(t.metrics["step"] == steps[-1])[-1]
                best = (int(steps[-1]), t.metrics["stage"][idx])
    stage = best[1]
    return str(stage) if isinstance(stage, str) else (None if stage is None else _fmt(stage))


def trial_outcome(t: Trial, d: Design, stage: Any) -> dict[str, float]:
    """Final and best (by the metric) values of one trial within `stage`; nan when it has none."""
    steps, values = t.validations(d.metric, stage)
    out: dict[str, float] = {}
    if not values.size:
        for k in ("final", "best"):
            out[f"{k}_{d.metric}"] = math.nan
            out.update({f"{k}_{e}": math.nan for e in d.extras})
        return out
    ib = int(np.argmin(values))
    for k, i in (("final", len(values) - 1), ("best", ib)):
        out[f"{k}_{d.metric}"] = float(values[i])
        for e in d.extras:
            es, ev = t.validations(e, stage)
            match = ev[es == steps[i]]
            out[f"{k}_{e}"] = float(match[-1]) if match.size else math.nan
    out["best_step"] = float(steps[ib])
    return out


def _row(arm: str, cond: str, measure: str, by: dict[str, Estimate], n_stopped: int) -> dict[str, Any]:
    row: dict[str, Any] = {"arm": arm, "condition": cond, "measure": measure, "n": by["mean"].n,
                           "stopped_early": n_stopped}  # fmt: skip
    for name, est in by.items():
        row.update({name: est.value, f"{name}_lo": est.lo, f"{name}_hi": est.hi})
    return row


def analyze(sweep: Sweep, targets: list[float] | None = None, reps: int = 2000, seed: int = 0,
            stage: Any = None, compare: str | None = None) -> Analysis:  # fmt: skip
    """Every table and curve of the report."""
    d = design_for(sweep, compare)
    stage = final_stage(sweep) if stage is None else stage
    a = Analysis(d, stage)
    usable = [t for t in sweep.trials if t.metrics and t.status != "failed"]
    outcomes = {t.key: trial_outcome(t, d, stage) for t in usable}
    groups: dict[str, dict[tuple, list[Trial]]] = defaultdict(lambda: defaultdict(list))
    for t in usable:
        groups[d.arm(t)][d.condition(t)].append(t)
    a.tables["trials"] = _trial_table(sweep, d, outcomes)
    a.tables["summary"] = _summary(groups, d, outcomes, reps, seed)
    if targets and d.kind == "transfer":
        a.tables["efficiency"] = _efficiency(groups, d, stage, targets, reps, seed)
    if d.kind == "transfer":
        a.tables["generalisation"] = _generalisation(groups, d, outcomes, reps, seed)
    a.tables["paired"], a.sentences = _paired(groups, d, outcomes, reps, seed)
    a.curves = _curves(groups, d, reps, seed)
    a.tables["learning_curves"] = [
        {"arm": arm, "condition": cond, "step": int(s), "n": int(n), "median": m, "median_lo": lo, "median_hi": hi}
        for (arm, cond), c in a.curves.items()
        for s, n, m, lo, hi in zip(c["step"], c["n"], c["median"], c["lo"], c["hi"], strict=True)
    ]
    a.about = about(sweep, d, stage)
    return a


def about(sweep: Sweep, d: Design, stage: Any) -> dict[str, Any]:
    """What the sweep was: its file, code version, data identity, trials by status, compute time."""
    status: dict[str, int] = defaultdict(int)
    for t in sweep.trials:
        status["stopped_early" if t.stopped_early else t.status] += 1
    codes = {json_key(t.run.get("code")) for t in sweep.trials if t.run.get("code")}
    data = {json_key(_without_roots(t.run.get("data"))) for t in sweep.trials if t.run.get("data")}
    trial_s = sum(w for t in sweep.trials if not math.isnan(w := _wall(t)))
    nfp_s = sum(float(v.get("wall_s") or 0) for v in (sweep.info.get("nfp") or {}).values())
    return {"kind": d.kind, "name": sweep.info.get("name", sweep.root.name),
            "fingerprint": sweep.info.get("fingerprint"), "code_version": sweep.info.get("code_version"),
            "trial_code_versions": sorted(codes), "data_identity": sorted(data),
            "created": sweep.info.get("created"), "finished": sweep.info.get("finished"),
            "status": sweep.info.get("status"), "scheduler": sweep.info.get("scheduler"),
            "resources": sweep.info.get("resources"), "nfp": sweep.info.get("nfp") or {},
            "trials": len(sweep.trials), "by_status": dict(status),
            "stopped_early": [t.key for t in sweep.trials if t.stopped_early],
            "failed": [t.key for t in sweep.trials if t.status == "failed"],
            "seeds": sorted({t.params.get("seed") for t in sweep.trials}, key=str),
            "compute_s": {"trials": trial_s, "nfp": nfp_s, "total": trial_s + nfp_s},
            "metric": d.metric, "stage": stage, "config": sweep.config_text}  # fmt: skip


def _without_roots(obj: Any) -> Any:
    """A run's data identity without the per-run paths of data written into each run (synthetic flow)."""
    if isinstance(obj, dict):
        return {k: _without_roots(v) for k, v in obj.items() if not (k == "root" and obj.get("synthetic"))}
    return obj


def json_key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _generalisation(groups, d: Design, outcomes, reps: int, seed: int) -> list[dict[str, Any]]:
    """The final metric against the data fraction, per arm and remaining condition (median and IQM with
    intervals over seeds)."""
    rows = []
    for arm, conds in sorted(groups.items()):
        for cond, ts in sorted(conds.items(), key=str):
            c = dict(cond)
            if "data_fraction" not in c:
                continue
            others = condition_label(tuple((k, v) for k, v in cond if k != "data_fraction"))
            vals = [np.array([outcomes[t.key][f"final_{d.metric}"] for t in ts])]
            row = {"arm": arm, "others": others, "data_fraction": float(c["data_fraction"])}
            for agg in ("median", "iqm"):
                est = stratified_interval(vals, agg, reps, seed)
                row.update({"n": est.n, agg: est.value, f"{agg}_lo": est.lo, f"{agg}_hi": est.hi})
            rows.append(row)
    return rows


def _trial_table(sweep: Sweep, d: Design, outcomes: dict[str, dict]) -> list[dict[str, Any]]:
    rows = []
    for t in sweep.trials:
        o = outcomes.get(t.key, {})
        rows.append({"trial": t.key, "arm": d.arm(t), "condition": condition_label(d.condition(t)),
                     "seed": t.params.get("seed"), "status": t.status, "stopped_early": t.stopped_early,
                     f"final_{d.metric}": o.get(f"final_{d.metric}", math.nan),
                     f"best_{d.metric}": o.get(f"best_{d.metric}", math.nan),
                     "last_step": int(t.metrics["step"][-1]) if t.metrics else None,
                     "wall_s": _wall(t)})  # fmt: skip
    return rows


def _wall(t: Trial) -> float:
    if t.params.get("wall_s") is not None:
        return float(t.params["wall_s"])
    return t.last("wall_s")


def _summary(groups, d: Design, outcomes, reps: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    measures = [f"{k}_{m}" for k in ("final", "best") for m in (d.metric, *d.extras)]
    for arm, conds in sorted(groups.items()):
        blocks = [(condition_label(c), [ts]) for c, ts in sorted(conds.items(), key=str)]
        if len(conds) > 1:
            blocks.append((ALL, [ts for _, ts in sorted(conds.items(), key=str)]))
        for label, strata_trials in blocks:
            n_stopped = sum(t.stopped_early for ts in strata_trials for t in ts)
            for m in measures:
                strata = [np.array([outcomes[t.key][m] for t in ts]) for ts in strata_trials]
                by = {agg: stratified_interval(strata, agg, reps, seed) for agg in ("mean", "median", "iqm")}
                rows.append(_row(arm, label, m, by, n_stopped))
    return rows


def first_reach(t: Trial, column: str, stage: Any, target: float) -> tuple[float, float, bool]:
    """(step, samples, reached) at the first validation in `stage` with column <= target; when never reached,
    the trial's last step and samples (censored there)."""
    steps, values = t.validations(column, stage)
    hit = np.flatnonzero(values <= target)
    step = int(steps[hit[0]]) if hit.size else int(t.metrics["step"][-1])
    samples = math.nan
    if "samples" in t.metrics:
        idx = np.flatnonzero(t.metrics["step"] == step)
        samples = float(t.metrics["samples"][idx[-1]]) if idx.size else math.nan
    return float(step), samples, bool(hit.size)


def _efficiency(groups, d: Design, stage, targets: list[float], reps: int, seed: int) -> list[dict[str, Any]]:
    """Median steps / samples to reach each target with intervals. A run that never reaches the target counts as
    +infinity (it has not reached it within its budget): the median is then conservative, and an interval
    bound that depends on such runs is reported as censored (inf)."""
    rows = []
    for arm, conds in sorted(groups.items()):
        for cond, ts in sorted(conds.items(), key=str):
            for target in targets:
                hits = [first_reach(t, d.metric, stage, target) for t in ts]
                reached = [h[2] for h in hits]
                row = {"arm": arm, "condition": condition_label(cond), "target": target, "n": len(ts),
                       "reached": int(sum(reached)), "censored": int(len(ts) - sum(reached)),
                       "censored_trials": " ".join(t.key for t, r in zip(ts, reached, strict=True) if not r),
                       }  # fmt: skip
                for j, what in ((0, "steps"), (1, "samples")):
                    est = _censored_median(np.array([h[j] for h in hits]), np.array(reached), reps, seed)
                    row.update({f"{what}_median": est.value, f"{what}_lo": est.lo, f"{what}_hi": est.hi})
                rows.append(row)
    return rows


def _censored_median(values: np.ndarray, reached: np.ndarray, reps: int, seed: int) -> Estimate:
    if not values.size or np.all(np.isnan(values)):
        return Estimate(math.nan, math.nan, math.nan, 0)
    ceiling = float(np.nanmax(values))
    sentinel = 4.0 * ceiling + 1.0  # any median touching it is > ceiling (even the mean of two middle values)
    est = stratified_interval([np.where(reached, values, sentinel)], "median", reps, seed)

    def unsentinel(x: float) -> float:
        return math.inf if x > ceiling else x

    return Estimate(unsentinel(est.value), unsentinel(est.lo), unsentinel(est.hi), est.n)


def _paired(groups, d: Design, outcomes, reps: int, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Each arm against the baseline arm on the same seed and condition: mean difference (arm - baseline) of the
    final and best metric, probability of improvement, verdict; one sentence per arm over all conditions."""
    base = groups.get(d.baseline, {})
    rows, sentences = [], []
    for arm, conds in sorted(groups.items()):
        if arm == d.baseline:
            continue
        for m in (f"final_{d.metric}", f"best_{d.metric}"):
            strata: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
            for cond, ts in sorted(conds.items(), key=str):
                by_seed = {t.seed: outcomes[t.key][m] for t in base.get(cond, [])}
                mine = {t.seed: outcomes[t.key][m] for t in ts}
                common = sorted(set(by_seed) & set(mine))
                x, y = np.array([mine[s] for s in common]), np.array([by_seed[s] for s in common])
                strata.append((condition_label(cond), x, y, x - y))
            blocks = [(lab, [(x, y, df)]) for lab, x, y, df in strata]
            if len(strata) > 1:
                blocks.append((ALL, [(x, y, df) for _, x, y, df in strata]))
            for label, parts in blocks:
                diff = stratified_interval([df for _, _, df in parts], "mean", reps, seed)
                poi = probability_of_improvement([(x, y) for x, y, _ in parts], reps, seed)
                p_sign = sign_test([df for _, _, df in parts])
                v = verdict(diff, poi, p_sign)
                rows.append({"arm": arm, "condition": label, "measure": m, "pairs": diff.n, "mean_diff": diff.value,
                             "mean_diff_lo": diff.lo, "mean_diff_hi": diff.hi, "p_improvement": poi.value,
                             "p_improvement_lo": poi.lo, "p_improvement_hi": poi.hi, "sign_test_p": p_sign,
                             "verdict": v})  # fmt: skip
                if m.startswith("final") and label == (ALL if len(strata) > 1 else strata[0][0]):
                    sentences.append(_sentence(arm, d, label, diff, poi, p_sign, v))
    return rows, sentences


def _sentence(arm: str, d: Design, label: str, diff: Estimate, poi: Estimate, p_sign: float, v: str) -> str:
    what = "final validation EPE" if d.metric == "val_epe" else "final validation MSE / repeat-I2 MSE"
    where = "" if label in ("-", ALL) else f" at {label}"
    if diff.n == 0:
        return f"{arm}: no seeds paired with {d.baseline}{where}, so no comparison."
    change = "lower" if diff.value < 0 else "higher"
    return (f"{arm} {v if v != 'indistinguishable' else 'was indistinguishable from ' + d.baseline}"
            f"{'' if v == 'indistinguishable' else ' compared with ' + d.baseline}{where}: {what} "
            f"{abs(diff.value):.3g} {change} on average (95% CI of the difference {diff.lo:.3g} to {diff.hi:.3g}),"
            f" P(better than {d.baseline}) = {poi.value:.2f} ({poi.lo:.2f}-{poi.hi:.2f}), sign test p = {p_sign:.2g},"
            f" {diff.n} paired runs.")


def _curves(groups, d: Design, reps: int, seed: int) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Per arm and condition, the metric at every validation step: median over seeds and the bootstrap 95%
    interval of that median (seeds stopped early drop out of later steps; `n` says how many remain)."""
    out = {}
    for arm, conds in sorted(groups.items()):
        for cond, ts in sorted(conds.items(), key=str):
            series = [dict(zip(*t.validations(d.metric), strict=True)) for t in ts]
            steps = sorted({s for ser in series for s in ser})
            cols = {k: [] for k in ("n", "median", "lo", "hi")}
            for s in steps:
                vals = np.array([ser[s] for ser in series if s in ser])
                est = stratified_interval([vals], "median", reps, seed)
                for k, v in (("n", vals.size), ("median", est.value), ("lo", est.lo), ("hi", est.hi)):
                    cols[k].append(v)
            out[(arm, condition_label(cond))] = {"step": np.array(steps), **{k: np.array(v) for k, v in cols.items()}}
    return out
