"""Vectorised torch backend (CPU and CUDA): a fused Euler-Maruyama step, run one of three ways.

The step is the model of `equations.py`, rewritten with identities that save transcendental functions:
(1 + tanh(x))/2 = sigmoid(2x); with e = exp((V - V3)/(2 V4)): Ninf = e^4/(1 + e^4), Lambda = (e + 1/e)/2;
hA is carried as state so that each cell evaluates it once, not once per neighbour.
`tests/test_model_numerics.py` checks it against `equations.euler_step_reference`.

Paths (`compile`): `native` runs the same step as a hand-written C++/OpenMP kernel (`backend_native.py`, CPU,
a whole frame interval per call, built in ~2 s once per machine and cached); `on` torch.compile's the step
(inductor; ~1 min for each new lattice shape unless its cache has it); `off` runs it eagerly (no wait, slow:
~0.4 ms of dispatch a step). `auto` takes the native kernel on the CPU, and elsewhere (CUDA, or no C++
compiler) compiles only runs long enough to repay the compile wait; it says which path it chose in one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import torch

from raywave.errors import RaywaveError
from raywave.waves.config import SimulationConfig
from raywave.waves.equations import STATE_VARIABLES, noise_std_per_step
from raywave.waves.lattice import neighbour_offsets
from raywave.waves.noise import cell_keys, hash32_int, standard_normal, step_key
from raywave.waves.params import SACParameters

State = dict[str, np.ndarray]

#: Steps above which `compile: auto` torch.compile's the step where the native kernel is not used: eager torch
#: costs ~0.4 ms a step in dispatch alone; compiling costs ~2 s when inductor's on-disk cache has the lattice
#: shape, up to a minute when not, so it pays from ~200,000 steps (20 s simulated at dt 0.1 ms).
AUTO_COMPILE_STEPS = 200_000


#: The native kernel synchronises its threads once per step (~0.5-1 us); below this many cells per thread the
#: wait costs more than the thread saves, so small lattices run on fewer threads unless `threads` is given.
NATIVE_CELLS_PER_THREAD = 1024


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RaywaveError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    return dev


def _offsets(cfg: SimulationConfig) -> tuple[tuple[int, int], ...]:
    offs = neighbour_offsets(cfg.neighbours)
    if cfg.boundary == "periodic":  # drop offsets that wrap a cell onto itself (1-wide lattices)
        offs = tuple(o for o in offs if not (o[0] % cfg.height == 0 and o[1] % cfg.width == 0))
    return offs


#: Constants of the fused step, derived from `SACParameters` and dt (passed as a tensor, so one compiled
#: kernel serves every parameter set of a lattice shape).
CONSTANTS = (
    "V1", "k_m", "V3", "k_e", "gC", "VC", "gA", "VA", "gL", "VL", "gK", "VK", "gsAHP", "Iext", "dt_cm",
    "noise_amp", "dt_taun", "dt_tauc", "alphaC", "C0", "deltaC", "dt_taus", "alphaS", "dt_taur", "alphaR",
    "dt", "inv_tauA", "betaA", "kappaA", "V0", "gammaA",
)  # fmt: skip


def step_constants(cfg: SimulationConfig) -> list[float]:
    """Values of CONSTANTS for `cfg` (float64 arithmetic)."""
    p: SACParameters = cfg.params
    dt = cfg.dt_ms
    derived = {
        "k_m": 2.0 / p.V2, "k_e": 1.0 / (2.0 * p.V4), "dt_cm": dt / p.Cm,
        "noise_amp": noise_std_per_step(p.model_dump(), dt), "dt_taun": dt / p.tauN, "dt_tauc": dt / p.tauC,
        "dt_taus": dt / p.tauS, "dt_taur": dt / p.tauR, "dt": dt, "inv_tauA": 1.0 / p.tauA,
    }  # fmt: skip
    return [derived[name] if name in derived else float(getattr(p, name)) for name in CONSTANTS]


def make_step(cfg: SimulationConfig, noise: bool) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The fused step: (V, n, C, S, R, A, hA, consts, cells, key) -> (V, n, C, S, R, A, hA) one dt later."""
    offsets = _offsets(cfg)
    periodic = cfg.boundary == "periodic"
    H, W = cfg.height, cfg.width
    ix = {name: i for i, name in enumerate(CONSTANTS)}

    def neighbour_sum(h: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(h)
        if periodic:
            for dr, dc in offsets:
                total = total + torch.roll(h, shifts=(-dr, -dc), dims=(-2, -1))
            return total
        hp = torch.nn.functional.pad(h, (1, 1, 1, 1))
        for dr, dc in offsets:
            total = total + hp[..., 1 + dr : 1 + dr + H, 1 + dc : 1 + dc + W]
        return total

    def step(V, n, C, S, R, A, hA, consts, cells, key):
        c = {name: consts[i] for name, i in ix.items()}
        m_inf = torch.sigmoid((V - c["V1"]) * c["k_m"])
        e = torch.exp((V - c["V3"]) * c["k_e"])
        e4 = (e * e) * (e * e)
        n_inf = e4 / (1.0 + e4)
        lam = 0.5 * (e + 1.0 / e)
        i_ca = -c["gC"] * m_inf * (V - c["VC"])
        r2 = R * R
        i_ach = -c["gA"] * neighbour_sum(hA) * (V - c["VA"])
        current = (
            -c["gL"] * (V - c["VL"]) + i_ca - c["gK"] * n * (V - c["VK"])
            - c["gsAHP"] * (r2 * r2) * (V - c["VK"]) + c["Iext"] + i_ach
        )  # fmt: skip
        V_new = V + c["dt_cm"] * current
        if noise:
            V_new = V_new + c["noise_amp"] * standard_normal(cells, key, V.dtype)
        n_new = n_inf + (n - n_inf) * torch.exp(-c["dt_taun"] * lam)
        c2 = C * C
        C_new = C + c["dt_tauc"] * (-c["alphaC"] * C + c["C0"] + c["deltaC"] * i_ca)
        S_new = S + c["dt_taus"] * (c["alphaS"] * (c2 * c2) * (1.0 - S) - S)
        R_new = R + c["dt_taur"] * (c["alphaR"] * S * (1.0 - R) - R)
        A_new = A + c["dt"] * (-A * c["inv_tauA"] + c["betaA"] * torch.sigmoid(c["kappaA"] * (V - c["V0"])))
        a2 = A_new * A_new
        return V_new, n_new, C_new, S_new, R_new, A_new, a2 / (c["gammaA"] + a2)

    return step


def _steps_per_call(steps_per_frame: int) -> int:
    for k in (4, 5, 3, 2):
        if steps_per_frame % k == 0:
            return k
    return 1


_said: set[str] = set()


def _say_once(line: str) -> None:
    """One line on stderr, once per process (a sweep's worker runs many simulations)."""
    if line not in _said:
        _said.add(line)
        print(f"raywave: {line}", file=sys.stderr, flush=True)


def choose_path(cfg: SimulationConfig, device: torch.device, steps: int) -> tuple[str, str]:
    """('native' | 'compiled' | 'eager', the reason in words) for `cfg.compile` on `device`."""
    from raywave.native import NativeUnavailable, find_compiler
    from raywave.waves import backend_native

    if cfg.compile == "on":
        return "compiled", "torch.compile (--compile on)"
    if cfg.compile == "off":
        return "eager", "eager torch (--compile off)"
    if device.type != "cpu":
        why_not = f"the native kernel runs on the CPU, not on {device}"
    else:
        why_not = backend_native.supported(cfg.height, cfg.width, cfg.boundary)
    if why_not is None:
        try:
            _, build = backend_native.library()
        except NativeUnavailable as e:
            why_not = str(e)
        else:
            how = f"built in {build.seconds:.1f} s" if build.built else "cached"
            return "native", f"native C++ kernel ({how}: {build.path.name})"
    if cfg.compile == "native":
        raise RaywaveError(f"--compile native is not available: {why_not}; use --compile auto, on or off")
    if device.type == "cpu" and find_compiler() is None:  # inductor needs a C++ compiler on the CPU as well
        return "eager", f"eager torch ({why_not})"
    if steps >= AUTO_COMPILE_STEPS:
        return "compiled", f"torch.compile: {steps} steps repay its wait ({why_not})"
    return "eager", f"eager torch: {steps} steps < {AUTO_COMPILE_STEPS} do not repay a torch.compile wait ({why_not})"


class TorchBackend:
    """Integrates a `SimulationConfig` in chunks of frames; keeps the compiled step (or native kernel) between
    chunks. `path` says how the step runs: native, compiled or eager (see the module docstring)."""

    name = "torch"

    def __init__(self, cfg: SimulationConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = torch.float64 if cfg.precision == "float64" else torch.float32
        if cfg.threads and self.device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        self.noise = cfg.params.sigma > 0
        self.k = _steps_per_call(cfg.steps_per_frame)
        self.cells = cell_keys(cfg.height, cfg.width, self.device)
        self.consts = torch.tensor(step_constants(cfg), dtype=self.dtype, device=self.device)
        seed = hash32_int(cfg.seed * 2654435761 + 1)
        steps = cfg.steps_per_frame * (cfg.n_frames + cfg.transient_frames)
        self.path, why = choose_path(cfg, self.device, steps)
        if cfg.compile == "auto":
            _say_once(f"waves step on {self.device} ({cfg.precision}): {why}")
        self.compiled = self.path == "compiled"
        if self.path == "native":
            from raywave.waves.backend_native import NativeStepper

            threads = cfg.threads or min(torch.get_num_threads(), max(1, cfg.n_cells // NATIVE_CELLS_PER_THREAD))
            self._native = NativeStepper(cfg, self.consts, self.cells, seed, threads)
            return
        step = make_step(cfg, self.noise)
        seed_key = torch.tensor(seed, dtype=torch.int32, device=self.device)
        k = self.k

        def multi_step(V, n, C, S, R, A, hA, consts, cells, step0):
            for i in range(k):
                key = step_key(seed_key, step0 + i)
                V, n, C, S, R, A, hA = step(V, n, C, S, R, A, hA, consts, cells, key)
            return V, n, C, S, R, A, hA

        self._multi_step = torch.compile(multi_step, dynamic=False, fullgraph=True) if self.compiled else multi_step

    def to_tensors(self, state: State) -> list[torch.Tensor]:
        """The state as tensors of this backend's dtype and device (copies: the caller's arrays stay as they are),
        hA appended."""
        ts = [torch.tensor(np.asarray(state[v]), device=self.device).to(self.dtype) for v in STATE_VARIABLES]
        A = ts[-1]
        ts.append(A * A / (self.cfg.params.gammaA + A * A))
        return ts

    def _advance(self, ts: list[torch.Tensor], step: int) -> list[torch.Tensor]:
        """One frame interval from absolute step `step`."""
        cfg = self.cfg
        if self.path == "native":
            self._native.advance(ts, step, cfg.steps_per_frame)
            return ts
        # the step counter stays on the device: one host-to-device copy per frame, not per call (on CUDA each
        # copy from pageable host memory would wait for the queued kernels)
        step_t = torch.tensor(step, dtype=torch.int32, device=self.device)
        for _ in range(cfg.steps_per_frame // self.k):
            ts = list(self._multi_step(*ts, self.consts, self.cells, step_t))
            step_t = step_t + self.k
        return ts

    def run_frames(
        self, state: State, step0: int, n_frames: int, record: list[str], progress: Callable[[int], None] | None = None
    ) -> tuple[dict[str, np.ndarray], State]:
        """Advance `n_frames` frame intervals from absolute step `step0`; return recorded frames and new state."""
        cfg = self.cfg
        ts = self.to_tensors(state)
        idx = [STATE_VARIABLES.index(v) for v in record]
        frames = torch.empty((len(record), n_frames, cfg.height, cfg.width), dtype=torch.float32, device=self.device)
        with torch.no_grad():
            for f in range(n_frames):
                ts = self._advance(ts, step0 + f * cfg.steps_per_frame)
                for j, i in enumerate(idx):
                    frames[j, f] = ts[i]
                if progress is not None:
                    progress(1)
        out = frames.cpu().numpy()
        new_state = {v: ts[i].to(torch.float64).cpu().numpy() for i, v in enumerate(STATE_VARIABLES)}
        return {v: out[j] for j, v in enumerate(record)}, new_state
