"""Run a sweep of simulations on Ray actors into a retinal-wave dataset (the orchestration layer; Ray lives here).

Each actor runs one simulation at a time through `raywave.data.generate.generate_one`. An actor that dies is
restarted by Ray and its call retried (`max_retries`); the retry resumes the simulation from its checkpoint.
A driver that is interrupted leaves committed simulations in place; re-running the sweep skips them.
Simulations write parquet themselves (pyarrow), so no Ray Data tasks wait for CPUs the actors hold.
One driver per dataset: the driver holds the dataset's writer lock (raywave.lock) for the whole sweep; for
object-store datasets the lock lives in the local scratch directory (one driver per dataset per machine).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raywave.data.rw_dataset import DATASET_FORMAT, RWDataset
from raywave.data.sweep_config import SimSpec, SweepConfig, expand
from raywave.errors import RaywaveError
from raywave.io import check_output
from raywave.lock import exclusive, is_lock_file
from raywave.storage import Location, exists, list_dir, makedirs, read_json, resolve, write_bytes, write_json


class SimWorker:
    """A Ray actor body: runs simulations one at a time; `status()` answers while one runs."""

    def __init__(self, dataset_uri: str, scratch: str, threads: int, compute_stats: bool):
        import torch

        torch.set_num_threads(threads)
        self.loc = resolve(dataset_uri)
        self.scratch, self.compute_stats = scratch, compute_stats
        self.current: str | None = None
        self.done, self.total = 0, 0

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def run(self, spec: SimSpec) -> dict[str, Any]:
        from raywave.data.generate import generate_one

        self.current, self.done, self.total = spec.sim_id, 0, 0
        try:
            out = generate_one(spec, self.loc, self.scratch, self._progress, self.compute_stats)
        finally:
            self.current = None
        return {"status": out["status"], "sim_id": spec.sim_id, "attempts": out["manifest"]["generation"]["attempts"]}

    def status(self) -> tuple[str | None, int, int, int]:
        return self.current, self.done, self.total, os.getpid()


@dataclass
class SweepReport:
    dataset: str
    generated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_scratch(loc: Location) -> str:
    """Where in-progress runs live: inside a local dataset, or a per-dataset cache dir for remote storage."""
    if loc.is_local:
        return str(Path(loc.path) / "_scratch")
    import hashlib

    key = hashlib.sha256(loc.uri.encode()).hexdigest()[:12]
    return str(Path(os.environ.get("RAYWAVE_SCRATCH", Path.home() / ".cache" / "raywave" / "scratch")) / key)


def prepare_dataset(loc: Location, sweep: SweepConfig, specs: list[SimSpec]) -> None:
    """Create or extend the dataset's top-level files (never touching committed simulations)."""
    import yaml

    info = None
    if exists(loc, "dataset.json"):
        info = read_json(loc, "dataset.json")
        if info.get("format") != DATASET_FORMAT:
            raise RaywaveError(f"{loc.uri} holds a dataset of format {info.get('format')!r}, not {DATASET_FORMAT}")
    elif [n for n in list_dir(loc, "") if not is_lock_file(n)]:
        raise RaywaveError(f"{loc.uri!r} exists and is not a raywave wave dataset; choose an empty or new --out")
    makedirs(loc)
    sims = list((info or {}).get("simulations", []))
    sims += [s.sim_id for s in specs if s.sim_id not in sims]
    sweeps = list((info or {}).get("sweeps", []))
    if sweep.fingerprint() not in sweeps:
        sweeps.append(sweep.fingerprint())
    write_bytes(loc, f"sweeps/{sweep.fingerprint()}.yaml", yaml.safe_dump(sweep.model_dump(mode="json")).encode())
    write_json(loc, "dataset.json", {"format": DATASET_FORMAT, "status": "incomplete", "simulations": sims,
                                     "sweeps": sweeps})  # fmt: skip


def finish_dataset(loc: Location) -> dict[str, Any]:
    info = read_json(loc, "dataset.json")
    committed = set(RWDataset(loc).committed_ids())
    info["status"] = "complete" if all(s in committed for s in info["simulations"]) else "incomplete"
    info["n_committed"] = sum(s in committed for s in info["simulations"])
    write_json(loc, "dataset.json", info)
    return info


def check_writable(loc: Location) -> None:
    try:
        makedirs(loc)
        write_bytes(loc, ".write-test", b"")
        loc.fs.delete_file(loc.join(".write-test"))
    except OSError as exc:
        raise RaywaveError(f"cannot write to {loc.uri!r} ({exc}); choose another --out") from None


def run_sweep(
    sweep: SweepConfig,
    out: str | Path,
    address: str | None = None,
    scratch: str | None = None,
    num_cpus: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> SweepReport:
    """Generate every simulation of `sweep` into `out` exactly once; returns what was done."""
    specs = expand(sweep)  # validates everything before anything is written
    check_output(out, kind="dir", uri_ok=True)
    if scratch:
        check_output(scratch, kind="dir", option="--scratch")
    loc = resolve(out)
    scratch = scratch or default_scratch(loc)
    with exclusive(loc.path if loc.is_local else scratch, "dataset"):
        return _run_locked(sweep, specs, loc, address, scratch, num_cpus, progress)


def _run_locked(
    sweep: SweepConfig, specs: list[SimSpec], loc: Location, address: str | None, scratch: str,
    num_cpus: int | None, progress: Callable[[dict[str, Any]], None] | None,
) -> SweepReport:  # fmt: skip
    import ray

    from raywave.runtime import ray_session

    check_writable(loc)
    prepare_dataset(loc, sweep, specs)
    ds = RWDataset(loc)
    committed = set(ds.committed_ids())
    report = SweepReport(dataset=loc.uri, skipped=[s.sim_id for s in specs if s.sim_id in committed])
    pending = [s for s in specs if s.sim_id not in committed]
    t0 = time.time()
    frames_each = {s.sim_id: s.config.transient_frames + s.config.n_frames for s in specs}
    if pending:
        with ray_session(address, num_cpus=num_cpus) as resources:
            cpus = resources.get("CPU", 1)
            n_workers = sweep.workers or max(1, int(cpus // sweep.cpus_per_worker))
            n_workers = min(n_workers, len(pending))
            threads = max(1, int(sweep.cpus_per_worker))
            actor_cls = ray.remote(SimWorker).options(
                num_cpus=sweep.cpus_per_worker, num_gpus=sweep.gpus_per_worker, max_concurrency=2,
                max_restarts=sweep.max_retries, max_task_retries=sweep.max_retries,
            )  # fmt: skip
            actors = [actor_cls.remote(loc.uri, scratch, threads, sweep.analyze) for _ in range(n_workers)]
            _dispatch(actors, pending, report, frames_each, progress)
            for a in actors:
                ray.kill(a)
    report.wall_s = time.time() - t0
    finish_dataset(loc)
    return report


def _dispatch(actors, pending: list[SimSpec], report: SweepReport, frames_each, progress) -> None:
    """Keep every actor busy with one simulation until all are done; poll actors for progress."""
    import ray

    queue = list(pending)
    running: dict[Any, tuple[Any, SimSpec]] = {}  # ref -> (actor, spec)
    idle = list(actors)
    total_frames = sum(frames_each[s.sim_id] for s in pending)
    finished_frames = 0
    while queue or running:
        while idle and queue:
            actor, spec = idle.pop(), queue.pop(0)
            running[actor.run.remote(spec)] = (actor, spec)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        for ref in ready:
            actor, spec = running.pop(ref)
            idle.append(actor)
            finished_frames += frames_each[spec.sim_id]
            try:
                res = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                report.failed[spec.sim_id] = f"worker died {exc.__class__.__name__} after all retries"
                idle.remove(actor)  # a dead actor gets no more work
                if not idle and not running and queue:
                    raise RaywaveError("every simulation worker died; see the Ray logs, then re-run") from None
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                report.failed[spec.sim_id] = f"{type(cause).__name__}: {cause}"
                continue
            (report.generated if res["status"] == "generated" else report.skipped).append(spec.sim_id)
            if res["attempts"] > 1:
                report.retried[spec.sim_id] = res["attempts"]
        if progress:
            partial = 0
            try:
                statuses = ray.get([a.status.remote() for a, _ in running.values()], timeout=10) if running else []
            except (ray.exceptions.RayError, TimeoutError):
                statuses = []  # an actor is restarting; progress catches up at the next poll
            for current, done, _total, _pid in statuses:
                if current is not None:
                    partial += done
            progress({"frames_done": finished_frames + partial, "frames_total": total_frames,
                      "sims_done": len(report.generated) + len(report.failed), "sims_total": len(pending)})  # fmt: skip
