"""The native CPU path of the torch backend: `sac_kernel.cpp`, built by `raywave.native`, run on torch tensors.

One call advances the lattice many steps (a whole frame interval) with OpenMP over rows; the state stays in
cache between steps. The formulas, constants (`backend_torch.step_constants`) and the counter-based noise are
those of the torch step, so trajectories agree with it: float64 to rounding (glibc's libm, vectorised through
libmvec where it exists), float32 within its stated tolerance (tests/test_waves_native.py).
`python -m raywave.waves.backend_native` builds it ahead of use (`make setup` does).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

from raywave.native import DEFAULT_FLAGS, Build, NativeUnavailable, load

SOURCE = Path(__file__).with_name("sac_kernel.cpp")
NAME = "raywave-sac"
N_CONSTANTS = 31  # len(backend_torch.CONSTANTS); the library checks its own count at load

_P = ctypes.c_void_p
_ARGS = [_P] * 9 + [ctypes.c_int] * 4 + [ctypes.c_uint32, ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
_loaded: tuple[ctypes.CDLL, Build] | None = None


def library(cache: str | Path | None = None) -> tuple[ctypes.CDLL, Build]:
    """The kernel library (built on first use, then from the cache); raises NativeUnavailable with the cause."""
    global _loaded
    if _loaded is not None and cache is None:
        return _loaded
    if not SOURCE.exists():  # a wheel built without package data
        raise NativeUnavailable(f"{SOURCE.name} is not installed next to {Path(__file__).name}")
    try:  # float64 through glibc's vector math library (libmvec) where there is one
        lib, b = load(SOURCE, NAME, flags=(*DEFAULT_FLAGS, "-DRW_LIBMVEC"), libs=("-lmvec", "-lm"), cache=cache)
    except NativeUnavailable as e:
        if "no C++ compiler" in str(e):
            raise
        lib, b = load(SOURCE, NAME, cache=cache)  # scalar libm
    for fn in (lib.rw_sac_run_f32, lib.rw_sac_run_f64):
        fn.argtypes, fn.restype = _ARGS, ctypes.c_int
    lib.rw_sac_consts.restype = ctypes.c_int
    lib.rw_peak_flops.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_double]
    lib.rw_peak_flops.restype = ctypes.c_double
    if lib.rw_sac_consts() != N_CONSTANTS:
        raise NativeUnavailable(f"{b.path} expects {lib.rw_sac_consts()} constants, not {N_CONSTANTS}; delete it")
    if cache is None:
        _loaded = (lib, b)
    return lib, b


def supported(height: int, width: int, boundary: str) -> str | None:
    """None if the kernel handles this lattice, else why not (periodic 1-wide lattices go to the torch path)."""
    if boundary == "periodic" and min(height, width) < 2:
        return "a periodic lattice 1 cell wide (a cell would neighbour itself)"
    return None


class NativeStepper:
    """Advances the 7 state tensors (V, n, C, S, R, A, hA; contiguous, CPU, one dtype) in place."""

    def __init__(self, cfg, consts, cells, seed_key: int, threads: int):
        import torch

        self.lib, self.build = library()
        self.cfg = cfg
        self.consts = consts.contiguous()
        self.cells = cells.contiguous()
        self.seed_key = seed_key & 0xFFFFFFFF
        self.threads = threads
        self._run = self.lib.rw_sac_run_f64 if consts.dtype == torch.float64 else self.lib.rw_sac_run_f32

    def advance(self, ts, step0: int, n_steps: int) -> None:
        cfg = self.cfg
        for t in ts:
            if not t.is_contiguous() or t.dtype != self.consts.dtype or t.device.type != "cpu":
                raise ValueError("native kernel: state tensors must be contiguous CPU tensors of the constants' dtype")
        ptrs = [t.data_ptr() for t in ts] + [self.cells.data_ptr(), self.consts.data_ptr()]
        periodic = int(cfg.boundary == "periodic")
        rc = self._run(*ptrs, cfg.height, cfg.width, cfg.neighbours, periodic, self.seed_key, step0, n_steps,
                       self.threads)  # fmt: skip
        if rc != 0:
            raise RuntimeError(f"native SAC kernel refused the call (code {rc}) for {cfg.height}x{cfg.width}")


def peak_flops(threads: int, double: bool = False, seconds: float = 0.2) -> float:
    """Measured fused-multiply-add rate of this machine (flop/s, 2 per FMA lane) on `threads` threads."""
    import time

    lib, _ = library()
    iters = 1 << 16
    while True:
        t0 = time.perf_counter()
        flops = lib.rw_peak_flops(iters, threads, int(double), 0.999)
        dt = time.perf_counter() - t0
        if dt >= seconds or iters >= 1 << 34:
            return flops / dt
        iters *= 2


def main() -> int:
    """Build (or find) the kernel: `python -m raywave.waves.backend_native` (run by `make setup`)."""
    try:
        _, b = library()
    except NativeUnavailable as e:
        print(f"raywave: native SAC kernel not built ({e}); the torch path will be used", file=sys.stderr)
        return 0
    how = f"built in {b.seconds:.1f} s" if b.built else "already built"
    print(f"raywave: native SAC kernel {how}: {b.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
