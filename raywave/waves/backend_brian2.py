"""Brian2 backend: the reference integrator, on runtime targets (numpy, cython) and cpp_standalone.

Built from `equations.brian2_equations()` with units from `params.py`; the lattice coupling is a Synapses
object with the summed variable `I_ACh`. Chunks are reproducible: each chunk reseeds Brian2's generator from
(seed, first step), so a resumed run draws the same noise as an uninterrupted one with the same chunking.
cpp_standalone compiles one binary for a chunk of frames and re-runs it per chunk with the state and the
chunk's seed passed as `run_args` (no recompilation).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from raywave.errors import RaywaveError
from raywave.waves.config import SimulationConfig
from raywave.waves.equations import COUPLING, STATE_UNITS, STATE_VARIABLES, brian2_equations
from raywave.waves.lattice import neighbour_pairs

State = dict[str, np.ndarray]


def _unit_table(b2) -> dict[str, object]:
    return {
        "pF": b2.pF, "nS": b2.nS, "mV": b2.mV, "ms": b2.ms, "pA": b2.pA, "nM": 1.0, "1": 1.0,
        "nM/pA": 1.0 / b2.pA, "nM^-4": 1.0, "pA*ms^0.5": b2.pA * b2.ms**0.5, "1/ms": 1.0 / b2.ms,
        "1/mV": 1.0 / b2.mV,
    }  # fmt: skip


def brian2_namespace(cfg: SimulationConfig) -> dict[str, object]:
    """Model parameters as Brian2 quantities, from the unit column of `SACParameters`."""
    import brian2 as b2

    units = _unit_table(b2)
    ns: dict[str, object] = {}
    for name, field in type(cfg.params).model_fields.items():
        unit = (field.json_schema_extra or {})["unit"]
        ns[name] = getattr(cfg.params, name) * units[unit]
    return ns


def chunk_seed(seed: int, step0: int) -> int:
    """Brian2 seed of the chunk starting at absolute step `step0`."""
    return int(np.random.SeedSequence([seed, step0]).generate_state(1)[0] % (2**31 - 1))


def _to_brian(var: str, values: np.ndarray):
    import brian2 as b2

    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    return flat * b2.mV if STATE_UNITS[var] == "volt" else flat


def _from_brian(var: str, values) -> np.ndarray:
    import brian2 as b2

    return np.asarray(values / b2.mV if STATE_UNITS[var] == "volt" else values, dtype=np.float64)


class Brian2Backend:
    """Integrates a `SimulationConfig` with Brian2 in chunks of frames. Brian2's device is process-global:
    use one cpp_standalone backend at a time and `close()` it (or use it as a context manager)."""

    name = "brian2"

    def __init__(self, cfg: SimulationConfig, build_dir: str | Path | None = None):
        try:
            import brian2  # noqa: F401
        except ImportError as exc:  # pragma: no cover - brian2 is a dependency
            raise RaywaveError(f"the brian2 backend needs brian2 ({exc}); reinstall with `make setup`") from None
        self.cfg = cfg
        self.target = cfg.brian2_target
        self.noise = cfg.params.sigma > 0
        self.pairs = neighbour_pairs(cfg.height, cfg.width, cfg.neighbours, cfg.boundary)
        self._tmp = None
        if build_dir is None and self.target == "cpp_standalone":
            self._tmp = tempfile.TemporaryDirectory(prefix="raywave-brian2-")
            build_dir = self._tmp.name
        self.build_dir = Path(build_dir) if build_dir else None
        self._standalone = None  # (frames, objects) of the compiled standalone program
        self.last_run_seconds = 0.0  # wall time of the last chunk's simulation loop (excl. compilation)

    # --- network construction ---
    def _build(self, n_frames: int, record: list[str], initial: State | None):
        import brian2 as b2

        cfg = self.cfg
        ns = brian2_namespace(cfg)
        group = b2.NeuronGroup(
            cfg.n_cells,
            brian2_equations(noise=self.noise) + ("\nrng_seed : 1 (shared, constant)" if initial is None else ""),
            method="euler",
            namespace=ns,
            dt=cfg.dt_ms * b2.ms,
            name="sac",
        )
        if initial is not None:
            for var in STATE_VARIABLES:
                setattr(group, var, _to_brian(var, initial[var]))
        mon = b2.StateMonitor(group, record, record=True, dt=cfg.frame_interval_ms * b2.ms, when="start",
                              name="frames")  # fmt: skip
        duration = n_frames * cfg.frame_interval_ms * b2.ms
        src, tar = self.pairs
        if not len(src):  # a lattice without neighbours (1x1): no coupling, I_ACh stays 0
            return b2.Network(group, mon), group, mon, duration
        syn = b2.Synapses(group, group, f"I_ACh_post = {COUPLING} : amp (summed)", namespace=ns,
                          dt=cfg.dt_ms * b2.ms, name="ach")  # fmt: skip
        syn.connect(i=src, j=tar)
        return b2.Network(group, syn, mon), group, mon, duration

    def _frames(self, mon, group, record: list[str], n_frames: int) -> tuple[dict[str, np.ndarray], State]:
        cfg = self.cfg
        shape = (cfg.height, cfg.width)
        out = {}
        for var in record:
            traces = _from_brian(var, getattr(mon, var))  # (cells, n_frames): states at chunk start + k*frame
            stack = np.concatenate([traces[:, 1:n_frames], _from_brian(var, getattr(group, var)[:])[:, None]], 1)
            out[var] = stack.T.reshape((n_frames, *shape)).astype(np.float32)
        state = {v: _from_brian(v, getattr(group, v)[:]).reshape(shape) for v in STATE_VARIABLES}
        return out, state

    # --- running ---
    def run_frames(
        self, state: State, step0: int, n_frames: int, record: list[str], progress: Callable[[int], None] | None = None
    ) -> tuple[dict[str, np.ndarray], State]:
        if self.target == "cpp_standalone":
            out, new_state = self._run_standalone(state, step0, n_frames, record)
        else:
            out, new_state = self._run_runtime(state, step0, n_frames, record)
        if progress is not None:
            progress(n_frames)
        return out, new_state

    def _run_runtime(self, state: State, step0: int, n_frames: int, record: list[str]):
        import time

        import brian2 as b2

        b2.set_device("runtime")  # Brian2's device is process-global: never inherit a standalone one
        b2.prefs.codegen.target = self.target
        b2.seed(chunk_seed(self.cfg.seed, step0))
        net, group, mon, duration = self._build(n_frames, record, state)
        t0 = time.perf_counter()
        net.run(duration, namespace={})
        self.last_run_seconds = time.perf_counter() - t0
        return self._frames(mon, group, record, n_frames)

    def _run_standalone(self, state: State, step0: int, n_frames: int, record: list[str]):
        import brian2 as b2

        chunk = self.cfg.frames_per_chunk
        if n_frames > chunk:
            raise ValueError("cpp_standalone chunks are at most checkpoint_every_s long")
        if self._standalone is None:
            self._standalone = self._compile_standalone(chunk, record)
        net, group, mon = self._standalone
        args = {getattr(group, v): _to_brian(v, state[v]) for v in STATE_VARIABLES}
        args[group.rng_seed] = float(chunk_seed(self.cfg.seed, step0))
        b2.device.run(run_args=args, with_output=False)
        self.last_run_seconds = float(b2.device._last_run_time)
        out, new_state = self._frames(mon, group, record, chunk)
        # A shorter last chunk runs the whole compiled chunk; only its first n_frames are kept, and the
        # end state then belongs to the longer run (it is the last chunk: nothing continues from it).
        return {v: a[:n_frames] for v, a in out.items()}, new_state

    def _compile_standalone(self, n_frames: int, record: list[str]):
        import brian2 as b2
        from brian2.devices import all_devices

        all_devices["cpp_standalone"].reinit()  # a fresh project: earlier builds in this process are forgotten
        b2.set_device("cpp_standalone", directory=str(self.build_dir), build_on_run=False, with_output=False)
        b2.prefs.devices.cpp_standalone.openmp_threads = 0  # one thread: the reference baseline
        net, group, mon, duration = self._build(n_frames, record, initial=None)
        b2.device.apply_run_args()
        seed_array = b2.device.get_array_name(group.variables["rng_seed"])
        b2.device.insert_code("main", f"brian::_random_generators[0].seed((unsigned long) brian::{seed_array}[0]);")
        net.run(duration, namespace={})
        b2.device.build(run=False, directory=str(self.build_dir), with_output=False)
        return net, group, mon

    def __enter__(self) -> Brian2Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.target == "cpp_standalone" and self._standalone is not None:
            import brian2 as b2
            from brian2.devices import all_devices

            all_devices["cpp_standalone"].reinit()
            b2.set_device("runtime")
            self._standalone = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
