"""Run one simulation to a RunStore: chunked, checkpointed, resumable and idempotent, one writer at a time.

A chunk whose frames or state hold a non-finite value is never stored: the run is marked failed (never
complete) and the error names the parameter set, so a blown-up integration cannot pass for a result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from raywave.errors import RaywaveError
from raywave.io import check_output
from raywave.lock import exclusive
from raywave.waves.config import SimulationConfig
from raywave.waves.params import SACParameters
from raywave.waves.state import initial_state
from raywave.waves.store import Chunk, RunStore


def make_backend(cfg: SimulationConfig):
    """The integrator named by `cfg.backend`."""
    if cfg.backend == "torch":
        from raywave.waves.backend_torch import TorchBackend

        return TorchBackend(cfg)
    from raywave.waves.backend_brian2 import Brian2Backend

    return Brian2Backend(cfg)


def plan_chunks(cfg: SimulationConfig) -> list[Chunk]:
    """Chunks of `frames_per_chunk` frame intervals over transient + recording (transient frames dropped)."""
    total = cfg.transient_frames + cfg.n_frames
    chunks, start = [], 0
    while start < total:
        stop = min(start + cfg.frames_per_chunk, total)
        rec_first = max(start, cfg.transient_frames)
        chunks.append(
            Chunk(
                index=len(chunks),
                first_frame=max(0, rec_first - cfg.transient_frames),
                n_frames=max(0, stop - rec_first),
                end_step=stop * cfg.steps_per_frame,
            )
        )
        start = stop
    return chunks


def simulate(
    cfg: SimulationConfig,
    out: str | Path,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RunStore:
    """Simulate `cfg` into `out`; re-running continues an interrupted run and skips a finished one.

    `progress(done, total)` is called with frame-interval counts (transient included). A second process
    simulating into the same `out` is refused (raywave.lock) while this one runs.
    """
    check_output(out, kind="dir")
    with exclusive(out, "run directory"):
        return _simulate_locked(cfg, Path(out), overwrite, progress)


def parameter_set(cfg: SimulationConfig) -> str:
    """The values that identify a simulation in messages: non-default model parameters, seed, dt, lattice."""
    defaults = SACParameters()
    changed = [f"{k}={v:g}" for k, v in cfg.params.model_dump().items() if v != getattr(defaults, k)]
    return ", ".join([*changed, f"seed={cfg.seed}", f"dt_ms={cfg.dt_ms:g}", f"lattice={cfg.height}x{cfg.width}"])


def check_finite(cfg: SimulationConfig, frames: dict[str, np.ndarray], state: dict, t_end_s: float) -> str | None:
    """None if every recorded value and the state are finite; else the one-line reason the run failed."""
    bad = [v for v, f in frames.items() if not np.isfinite(f).all()]
    bad += [v for v, x in state.items() if v not in bad and not np.isfinite(np.asarray(x)).all()]
    if not bad:
        return None
    return (
        f"the simulation produced non-finite values ({', '.join(bad)}) by t = {t_end_s:g} s with {parameter_set(cfg)}; "
        "the integration blew up: choose smaller parameter values or a smaller dt_ms, and simulate into a new --out"
    )


def _simulate_locked(
    cfg: SimulationConfig, out: Path, overwrite: bool, progress: Callable[[int, int], None] | None
) -> RunStore:
    store = RunStore(out)
    store.check_target(cfg, overwrite)  # a foreign or different run is refused before the backend is built
    backend = make_backend(cfg)
    man = store.start(cfg, backend=backend.name, overwrite=overwrite)
    chunks = plan_chunks(cfg)
    total = cfg.transient_frames + cfg.n_frames
    if man["status"] == "complete":
        if progress:
            progress(total, total)
        return store
    if man["status"] == "failed":
        raise RaywaveError(f"{man.get('error', 'this run failed earlier')} (recorded in run {str(out)!r})")
    resumed = store.load_checkpoint(man)
    if resumed is None:
        state, step = initial_state(cfg.height, cfg.width, cfg.params, cfg.seed), 0
    else:
        state, step = resumed
    done = step // cfg.steps_per_frame
    if progress:
        progress(done, total)
    try:
        for chunk in chunks:
            if chunk.end_step <= step:
                continue
            n_intervals = (chunk.end_step - step) // cfg.steps_per_frame

            def tick(k: int) -> None:
                nonlocal done
                done += k
                if progress:
                    progress(done, total)

            t0 = time.perf_counter()
            frames, state = backend.run_frames(state, step, n_intervals, cfg.record, progress=tick)
            wall = time.perf_counter() - t0
            reason = check_finite(cfg, frames, state, chunk.end_step * cfg.dt_ms / 1000.0)
            if reason:
                store.fail(man, reason)
                raise RaywaveError(reason)
            kept = {v: f[n_intervals - chunk.n_frames :] for v, f in frames.items()}
            man = store.append_chunk(man, chunk, kept, state, wall)
            step = chunk.end_step
    finally:
        close = getattr(backend, "close", None)
        if close:
            close()
    cell_steps = cfg.n_cells * man["simulated_steps"]
    extra = {"cell_steps_per_second": cell_steps / man["wall_seconds"] if man["wall_seconds"] else None}
    if cfg.backend == "torch":
        extra["torch"] = {"device": str(backend.device), "compiled": backend.compiled, "precision": cfg.precision}
    else:
        extra["brian2_target"] = cfg.brian2_target
    store.finish(man, extra)
    return store
