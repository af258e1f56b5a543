"""The torch kernel against the single model definition; lattice sums; counter-based noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raywave.waves.backend_torch import TorchBackend, make_step, step_constants
from raywave.waves.config import SimulationConfig
from raywave.waves.equations import STATE_VARIABLES, brian2_equations, euler_step_reference
from raywave.waves.lattice import neighbour_pairs, neighbour_sum_numpy
from raywave.waves.noise import cell_keys, hash32, hash32_int, standard_normal


def _random_state(rng, shape):
    return {
        "V": rng.uniform(-90, 30, shape),
        "n": rng.uniform(0, 1, shape),
        "C": rng.uniform(50, 400, shape),
        "S": rng.uniform(0, 1, shape),
        "R": rng.uniform(0, 1, shape),
        "A": rng.uniform(0, 6, shape),
    }


@pytest.mark.parametrize("neighbours,boundary", [(4, "zero_flux"), (8, "zero_flux"), (4, "periodic"), (8, "periodic")])
def test_torch_step_matches_equation_strings(neighbours, boundary):
    cfg = SimulationConfig(height=6, width=9, neighbours=neighbours, boundary=boundary, precision="float64",
                           params={"sigma": 0.0, "gA": 0.2, "Iext": 3.0})  # fmt: skip
    rng = np.random.default_rng(1)
    state = _random_state(rng, (6, 9))
    p = cfg.params.model_dump()
    hA = state["A"] ** 2 / (p["gammaA"] + state["A"] ** 2)
    ref = euler_step_reference(state, p, neighbour_sum_numpy(hA, neighbours, boundary), cfg.dt_ms)
    step = make_step(cfg, noise=False)
    ts = [torch.tensor(state[v]) for v in STATE_VARIABLES] + [torch.tensor(hA)]
    consts = torch.tensor(step_constants(cfg), dtype=torch.float64)
    out = step(*ts, consts, None, None)
    for i, v in enumerate(STATE_VARIABLES):
        np.testing.assert_allclose(out[i].numpy(), ref[v], rtol=1e-12, atol=1e-12, err_msg=v)


@pytest.mark.parametrize("shape", [(1, 5), (2, 3), (5, 7), (3, 1)])
@pytest.mark.parametrize("neighbours", [4, 8])
@pytest.mark.parametrize("boundary", ["zero_flux", "periodic"])
def test_neighbour_sum_torch_equals_pairs(shape, neighbours, boundary):
    h, w = shape
    only_coupling = {"sigma": 0.0, "gA": 1.0, "gL": 0, "gC": 0, "gK": 0, "gsAHP": 0, "VA": 1.0}
    cfg = SimulationConfig(height=h, width=w, neighbours=neighbours, boundary=boundary, precision="float64",
                           params=only_coupling)  # fmt: skip
    field = np.random.default_rng(0).uniform(0, 1, shape)
    # with every other current off and V = 0, dV = dt/Cm * gA * sum(hA) * VA isolates the neighbour sum
    step = make_step(cfg, noise=False)
    zeros = torch.zeros(shape, dtype=torch.float64)
    consts = torch.tensor(step_constants(cfg), dtype=torch.float64)
    out = step(zeros, zeros, zeros, zeros, zeros, zeros, torch.tensor(field), consts, None, None)
    got = out[0].numpy() * cfg.params.Cm / cfg.dt_ms
    np.testing.assert_allclose(got, neighbour_sum_numpy(field, neighbours, boundary), rtol=1e-12)


def test_zero_flux_pair_count():
    src, tar = neighbour_pairs(7, 5, 4, "zero_flux")
    assert len(src) == 2 * (7 * 4 + 5 * 6)
    src8, _ = neighbour_pairs(7, 5, 8, "zero_flux")
    assert len(src8) == len(src) + 4 * 6 * 4
    assert len(neighbour_pairs(7, 5, 8, "periodic")[0]) == 8 * 35


def test_brian2_equations_parse():
    from brian2 import Equations

    eqs = Equations(brian2_equations(noise=True))
    assert set(STATE_VARIABLES) <= set(eqs.diff_eq_names)


def test_hash_matches_host_version_and_is_a_permutation():
    x = torch.arange(-(2**16), 2**16, dtype=torch.int32)
    got = hash32(x).tolist()
    assert got[:50] == [hash32_int(int(v)) for v in x[:50]]
    assert len(set(got)) == len(got)


def test_standard_normal_moments_and_independence():
    from scipy import stats

    cells = cell_keys(256, 256, "cpu")
    z1 = standard_normal(cells, torch.tensor(hash32_int(11), dtype=torch.int32), torch.float64)
    z2 = standard_normal(cells, torch.tensor(hash32_int(12), dtype=torch.int32), torch.float64)
    for z in (z1, z2):
        assert abs(z.mean().item()) < 5 / 256 and abs(z.std().item() - 1) < 0.02  # 5 standard errors
        assert abs(((z**4).mean() - 3).item()) < 0.2  # Gaussian kurtosis, SE 0.038
        assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3
    assert abs(torch.corrcoef(torch.stack([z1.flatten(), z2.flatten()]))[0, 1].item()) < 0.02
    again = standard_normal(cells, torch.tensor(hash32_int(11), dtype=torch.int32), torch.float64)
    assert torch.equal(z1, again)


def test_noise_increment_variance_matches_sigma():
    """Free voltage diffusion: with every current off, Var(V) grows as (sigma/Cm)^2 t."""
    zero = {k: 0.0 for k in ("gL", "gC", "gK", "gsAHP", "gA")}
    cfg = SimulationConfig(height=32, width=32, duration_s=0.1, frame_interval_ms=10, checkpoint_every_s=0.1,
                           compile="off", precision="float64", params={**zero, "sigma": 5.0})  # fmt: skip
    be = TorchBackend(cfg)
    state = {v: np.zeros((32, 32)) for v in STATE_VARIABLES}
    frames, _ = be.run_frames(state, 0, 2, ["V"])
    t = 20.0  # ms
    expected = (5.0 / 22.0) ** 2 * t
    assert abs(frames["V"][-1].var() / expected - 1) < 0.12
