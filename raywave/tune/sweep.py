"""Ray Tune sweeps: the only module of raywave.tune that imports Ray.

`run_transfer(sweep_file, out, address)`: check the sweep file and the cluster (one line, exit 2, nothing
written), pretrain every `nfp:` setting once (named by fingerprint in the NFP store; a complete run is reused),
write one `trials/<key>/params.json` per trial, then one Tune trial per OFE training run. A trial runs
`raywave.train.ofe_run.train_run` (the code path of `raywave ofe train`) into `trials/<key>/run` and reports every new
validation row of its metrics to Tune (for ASHA on `val_epe`, time = step). A re-run of the same command
restores the Tune experiment (`Tuner.can_restore` / `Tuner.restore`): finished trials stay finished, unfinished
ones continue from their run's last checkpoint. `run_nfp` is the same over `raywave nfp pretrain` runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from raywave.errors import ConfigError, RaywaveError
from raywave.io import check_shared_path, write_json_atomic, write_text_atomic
from raywave.runtime import ray_session
from raywave.tune.spec import NFPSweep, Resources, TransferSweep, TrialSpec, nfp_settings, nfp_trials, transfer_trials

POLL_S = 1.0
METRICS = {"transfer": ("val_epe", "val_1px", "val_3px", "val_5px", "val_epe_ratio"),
           "nfp": ("val_mse", "val_baseline_mse", "val_ratio")}  # fmt: skip
SCHED_METRIC = {"transfer": "val_epe", "nfp": "val_ratio"}


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------- the trial (worker)


def _read_params(tdir: Path) -> dict:
    return json.loads((tdir / "params.json").read_text())


def _update_params(tdir: Path, **fields: Any) -> None:
    write_json_atomic(tdir / "params.json", {**_read_params(tdir), **fields})


def _train_target(kind: str, config: dict, out: str):
    """A callable that trains the run (or resumes it, or returns at once when it is complete)."""
    if kind == "transfer":
        from raywave.config import build
        from raywave.ofe.config import OFETrainConfig
        from raywave.train.ofe_run import train_run

        cfg = build(OFETrainConfig, {**config, "out": out}, what="trial config")
        return lambda: train_run(cfg, quiet=True, log=lambda _line: None)
    from raywave.train.nfp_run import PretrainConfig, pretrain_run

    cfg = PretrainConfig.model_validate({**config, "out": out})
    return lambda: pretrain_run(cfg, quiet=True)


def trial_fn(config: dict) -> None:
    """One Tune trial: train its run in a thread and report each new validation row to Tune as it lands."""
    from ray import tune

    from raywave.train.metrics import read_metrics

    tdir = Path(config["root"]) / "trials" / config["trial"]
    params = _read_params(tdir)
    kind = config["kind"]
    run_dir = str(tdir / "run")
    _update_params(tdir, status="running", tune_trial_id=tune.get_context().get_trial_id(), started=now())
    t0, error = time.time(), []

    def target() -> None:
        try:
            _train_target(kind, params["config"], run_dir)()
        except BaseException as exc:  # noqa: BLE001 - handed to the trial's thread below
            error.append(exc)

    worker = threading.Thread(target=target, name="raywave-trial", daemon=True)
    worker.start()
    reported = -1
    keys = METRICS[kind]
    while True:
        alive = worker.is_alive()
        for row in read_metrics(run_dir):
            if row["step"] > reported and row.get(keys[0]) is not None:
                tune.report({"step": row["step"], "stage": row.get("stage", 0), "samples": row.get("samples", 0),
                             **{k: row[k] for k in keys if row.get(k) is not None}})  # fmt: skip
                reported = row["step"]
        if not alive:
            break
        worker.join(POLL_S)
    wall = (params.get("wall_s") or 0.0) + time.time() - t0
    if error:
        _update_params(tdir, status="failed", error=f"{type(error[0]).__name__}: {error[0]}"[:500], wall_s=wall)
        raise error[0]
    _update_params(tdir, status="complete", stopped_early=False, finished=now(), wall_s=wall)


# ------------------------------------------------------------------------------------------- the driver


def _scheduler(asha, kind: str, max_t: int):
    from ray.tune.schedulers import ASHAScheduler

    class KeepBaseline(ASHAScheduler):
        """ASHA that never stops the scratch baseline (its results still count for the cut-offs)."""

        def on_trial_result(self, tune_controller, trial, result):
            action = super().on_trial_result(tune_controller, trial, result)
            return self.CONTINUE if str(trial.config.get("trial", "")).startswith("scratch-") else action

    return KeepBaseline(time_attr="step", metric=SCHED_METRIC[kind], mode="min", max_t=asha.max_t or max_t,
                        grace_period=asha.grace_period, reduction_factor=asha.reduction_factor)  # fmt: skip


def check_cluster(res: Resources, cluster: dict, run_cfg: dict) -> dict:
    """The trial's resource request; one line if the cluster cannot hold one trial."""
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    workers = int(run_cfg.get("workers", 1))
    if res.cpus > cpus or res.gpus > gpus:
        raise RaywaveError(f"one trial asks for {res.cpus:g} CPUs and {res.gpus:g} GPUs but the cluster has "
                           f"{cpus:g} CPUs and {gpus:g} GPUs; lower resources.cpus / resources.gpus or use a larger "
                           "cluster")  # fmt: skip
    if workers > 0:
        per = float(run_cfg.get("cpus_per_worker") or 1.0)
        if workers * per > cpus:
            raise RaywaveError(f"one trial starts {workers} training workers x {per:g} CPUs but the cluster has "
                               f"{cpus:g} CPUs; lower base.workers or base.cpus_per_worker")  # fmt: skip
        return {"cpu": 0.01}  # Tune over Train: the trial only drives its TorchTrainer
    return {"cpu": res.cpus, "gpu": res.gpus}


def _load(model, path: Path):
    from raywave.config import load_config

    return load_config(model, path, what="sweep file")


def _check_out(out: Path, fingerprint: str) -> bool:
    """True when `out` holds this sweep already (resume); one line if it holds another one."""
    from raywave.io import check_output

    check_output(out, "dir", "--out")
    info = out / "sweep.json"
    if not info.exists():
        if out.exists() and any(out.iterdir()):
            raise RaywaveError(f"{out} exists and is not a sweep folder; choose another --out")
        return False
    held = json.loads(info.read_text()).get("fingerprint")
    if held != fingerprint:
        raise RaywaveError(f"{out} holds another sweep (fingerprint {held}); use a new --out or the same sweep file")
    return True


def _write_start(out: Path, kind: str, sweep, trials: list[TrialSpec], resources: dict, extra: dict) -> None:
    from raywave.config import dump_yaml
    from raywave.provenance import code_version

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sweep.yaml", dump_yaml(sweep))
    for t in trials:
        tdir = out / "trials" / t.key
        if not (tdir / "params.json").exists():
            tdir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(tdir / "params.json", {"trial_key": t.key, **t.params, "status": "pending",
                                                     "stopped_early": False, "config": t.config})  # fmt: skip
    info_path = out / "sweep.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {"created": now()}
    info.update(kind=kind, name=sweep.name or out.name, fingerprint=sweep.fingerprint(), code_version=code_version(),
                status="running", resources={k: float(v) for k, v in resources.items() if k in ("CPU", "GPU")},
                scheduler=sweep.asha.model_dump() if sweep.asha else None, trials=len(trials), **extra)  # fmt: skip
    write_json_atomic(info_path, info)


def pretrain_settings(settings: dict, log) -> dict[str, dict]:
    """Pretrain each NFP setting once (a complete run in the store is reused as it is)."""
    from raywave.train.nfp_run import pretrain_run

    done = {}
    for name, s in settings.items():
        log(f"NFP setting {name}: {s.run}")
        t0 = time.time()
        rec, trained = pretrain_run(s.config, quiet=False)
        if rec.get("status") != "complete":
            raise RaywaveError(f"NFP pretraining of setting {name!r} did not finish ({s.run}); re-run to resume")
        final = ((rec.get("summary") or {}).get("final") or {}).get("val_ratio")
        done[name] = {"fingerprint": s.fingerprint, "run": s.run, "status": "complete", "trained_now": trained,
                      "wall_s": rec.get("wall_s"), "val_ratio": final,
                      "seconds_this_call": time.time() - t0}  # fmt: skip
        log(f"  {'pretrained' if trained else 'reused'}; final val MSE / repeat-I2 = {final}")
    return done


def run_transfer(sweep_file: Path, out: Path | None, address: str | None, log=print, analyze: bool = True) -> Path:
    sweep = _load(TransferSweep, sweep_file)
    out = Path(out or Path("runs") / f"sweep-{sweep.name or sweep_file.stem}").absolute()
    store = sweep.nfp_store or str(out.parent / "nfp-store")
    check_shared_path(store, "nfp_store", "the sweep's trials read the NFP runs there through the file system",
                      "/data/raywave/nfp-store")  # fmt: skip
    settings = nfp_settings(sweep, str(Path(store).absolute()))
    trials = transfer_trials(sweep, settings)
    return _run("transfer", sweep, trials, out, address, log, analyze, settings)


def run_nfp(sweep_file: Path, out: Path | None, address: str | None, log=print, analyze: bool = True) -> Path:
    sweep = _load(NFPSweep, sweep_file)
    out = Path(out or Path("runs") / f"sweep-{sweep.name or sweep_file.stem}").absolute()
    trials = nfp_trials(sweep)
    return _run("nfp", sweep, trials, out, address, log, analyze, {})


def _check_data(kind: str, trials: list[TrialSpec], settings: dict) -> None:
    """The data every run needs exists (one line otherwise), before anything starts."""
    from raywave.config import build
    from raywave.train.nfp import NFPConfig, NFPTask

    def check_nfp(cfg: dict) -> None:
        NFPTask(NFPConfig.model_validate({k: v for k, v in cfg.items() if k in NFPConfig.model_fields})).check()

    if kind == "nfp":
        pairs = {(t.config["dataset"], t.config["triplets"]): t.config for t in trials}
        for cfg in pairs.values():
            check_nfp(cfg)
        return
    for s in settings.values():
        check_nfp(s.config.model_dump(mode="json"))
    from raywave.ofe.config import OFETrainConfig
    from raywave.ofe.prepare import check_data

    check_data(build(OFETrainConfig, trials[0].config, what="trial config"))


def _run(kind: str, sweep, trials: list[TrialSpec], out: Path, address, log, analyze: bool, settings: dict) -> Path:
    from ray import tune

    resuming = _check_out(out, sweep.fingerprint())
    _check_data(kind, trials, settings)
    max_t = max(_total_steps(kind, t.config) for t in trials)
    train_workers = int(trials[0].config.get("workers", 0))
    # Tune stopping a Train trial leaks its placement group without the dashboard (ray#54305)
    dashboard = sweep.asha is not None and train_workers > 0
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(ray_session(address=address, dashboard=dashboard))
        per_trial = check_cluster(sweep.resources, cluster, trials[0].config)
        nfp_info = pretrain_settings(settings, log) if settings else {}
        _write_start(out, kind, sweep, trials, cluster, {"nfp": nfp_info} if kind == "transfer" else {})
        trainable = tune.with_resources(trial_fn, per_trial)
        tune_dir = out / "tune"
        if resuming and tune.Tuner.can_restore(str(tune_dir)):
            log(f"resuming the sweep in {out}")
            tuner = tune.Tuner.restore(str(tune_dir), trainable, resume_unfinished=True, resume_errored=True)
        else:
            space = {"trial": tune.grid_search([t.key for t in trials]), "root": str(out), "kind": kind}
            tuner = tune.Tuner(
                trainable, param_space=space,
                tune_config=tune.TuneConfig(max_concurrent_trials=sweep.max_concurrent_trials,
                                            scheduler=_scheduler(sweep.asha, kind, max_t) if sweep.asha else None),
                run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=1,
                                          failure_config=tune.FailureConfig(max_failures=1)),
            )  # fmt: skip
        log(f"{len(trials)} trials -> {out}")
        # Tune's own Ctrl-C handler ends fit() normally, which would look like a finished sweep (exit 0, trials
        # marked stopped early). Without it Ctrl-C is a KeyboardInterrupt like in every other command: exit 130
        # and "re-run to resume"; Tune's experiment state is saved as it goes, so the re-run restores it.
        os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
        results = tuner.fit()
    _finish(out, trials, results)
    if analyze:
        from raywave.tune.analysis import analyze as run_analysis
        from raywave.tune.layout import load_sweep
        from raywave.tune.report import write_report

        a = run_analysis(load_sweep(out), sweep.target_epe if kind == "transfer" else [], reps=2000)
        write_report(a, out / "report")
        for s in a.sentences:
            log(f"- {s}")
        log(f"report: {out / 'report' / 'report.html'}")
    return out


def _total_steps(kind: str, cfg: dict) -> int:
    if kind == "nfp":
        return int(cfg["steps"])
    return sum(int(s["steps"]) for s in cfg["stages"])


def _finish(out: Path, trials: list[TrialSpec], results) -> None:
    """Record how each trial ended: complete (its run is complete), stopped_early (ended without error before
    its run completed: ASHA), failed (an error); and the sweep's status."""
    errors = {r.config.get("trial"): r.error for r in results if r.config}
    failed = 0
    for t in trials:
        tdir = out / "trials" / t.key
        run = tdir / "run" / "run.json"
        complete = run.exists() and json.loads(run.read_text()).get("status") == "complete"
        if complete:
            _update_params(tdir, status="complete", stopped_early=False)
        elif errors.get(t.key) is not None:
            failed += 1
            _update_params(tdir, status="failed", error=str(errors[t.key]).strip().splitlines()[-1][:500])
        elif t.key in errors:
            _update_params(tdir, status="stopped_early", stopped_early=True)
    info = json.loads((out / "sweep.json").read_text())
    info.update(status="complete" if not failed else "failed", finished=now(), failed_trials=failed)
    write_json_atomic(out / "sweep.json", info)
    if failed:
        raise RaywaveError(f"{failed} trial(s) failed (see {out}/trials/*/params.json); re-run the same command "
                           "to retry them")  # fmt: skip


def check_only(kind: str, sweep_file: Path) -> list[TrialSpec]:
    """Expand and validate a sweep file without Ray (tests, --dry-run)."""
    if kind == "transfer":
        sweep = _load(TransferSweep, sweep_file)
        return transfer_trials(sweep, nfp_settings(sweep, sweep.nfp_store or "nfp-store"))
    if kind == "nfp":
        return nfp_trials(_load(NFPSweep, sweep_file))
    raise ConfigError(f"unknown sweep kind {kind!r}")
