"""Direction selectivity recovers known answers from constructed responses."""

from __future__ import annotations

import numpy as np
import pytest

from raywave.fly.tuning import ANGLES, direction_selectivity, peak_responses


def _traces(preferred: float, dsi: float, angles=ANGLES, rest: float = -0.3, steps: int = 30) -> np.ndarray:
    """Voltage traces (directions, T): rest, then a bump whose height is b + a cos(θ - θp), a / 2b = dsi."""
    b = 1.0
    a = 2 * dsi * b
    heights = b + a * np.cos(np.radians(angles - preferred))
    bump = np.exp(-0.5 * ((np.arange(steps) - 15) / 3.0) ** 2)
    return rest + heights[:, None] * bump[None, :]


@pytest.mark.parametrize("preferred,dsi", [(0.0, 0.3), (75.0, 0.5), (200.0, 0.1), (330.0, 0.45)])
def test_constructed_tuning_is_recovered(preferred, dsi):
    r = peak_responses(_traces(preferred, dsi), -0.3)
    got_dsi, got_pd = direction_selectivity(r)
    assert got_dsi == pytest.approx(dsi, abs=1e-9)
    assert (got_pd - preferred + 180) % 360 - 180 == pytest.approx(0, abs=1e-9)
    # the same cell seen with every edge moving the opposite way: the opposite preferred direction, same DSI
    flipped_dsi, flipped_pd = direction_selectivity(r, (ANGLES + 180) % 360)
    assert flipped_dsi == pytest.approx(dsi, abs=1e-9)
    assert (flipped_pd - (preferred + 180) + 180) % 360 - 180 == pytest.approx(0, abs=1e-9)


def test_limits_and_batching():
    one = np.zeros(12)
    one[3] = 2.0  # answers one direction only
    dsi, pd = direction_selectivity(one)
    assert dsi == pytest.approx(1.0) and pd == pytest.approx(90.0)
    flat, _ = direction_selectivity(np.full(12, 0.7))
    assert flat == pytest.approx(0.0, abs=1e-12)
    silent, _ = direction_selectivity(np.zeros(12))
    assert silent == 0.0
    # any leading shape: (models, types, directions)
    r = np.stack([[peak_responses(_traces(p, d), -0.3) for p, d in [(0, 0.2), (90, 0.4)]] for _ in range(3)])
    dsi, pd = direction_selectivity(r)
    assert dsi.shape == (3, 2) and np.allclose(dsi, [0.2, 0.4]) and np.allclose(pd, [0, 90])
    # responses below the resting value are rectified to zero
    assert peak_responses(np.full((2, 5), -1.0), -0.5).tolist() == [0.0, 0.0]
