"""Initial state of the lattice (shared by both backends, so their trajectories can be compared)."""

from __future__ import annotations

import numpy as np

from raywave.waves.equations import STATE_VARIABLES
from raywave.waves.params import SACParameters


def initial_state(height: int, width: int, params: SACParameters, seed: int) -> dict[str, np.ndarray]:
    """V = -70 +- 5 mV (uniform), n = 0, C = C0/alphaC, S ~ U(0, 0.3), R ~ U(0, 0.7), A = 0 (float64).

    Every cell starts excitable, so the first ~25 s are a transient (discard with `transient_s`).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5AC]))
    shape = (height, width)
    state = {
        "V": rng.uniform(-75.0, -65.0, shape),
        "n": np.zeros(shape),
        "C": np.full(shape, params.C0 / params.alphaC),
        "S": rng.uniform(0.0, 0.3, shape),
        "R": rng.uniform(0.0, 0.7, shape),
        "A": np.zeros(shape),
    }
    assert tuple(state) == STATE_VARIABLES
    return state
