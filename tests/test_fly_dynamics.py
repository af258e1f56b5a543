"""The sparse-product dynamics and its hand-written adjoint against a straightforward per-edge implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raywave.fly.network import FlyNetwork


def per_edge_reference(net: FlyNetwork, x: torch.Tensor, v0: torch.Tensor, dt: float) -> torch.Tensor:
    """tau dV/dt = -V + V_rest + sum_e w_e relu(V_src) + x, one gather/scatter over all edges per Euler step."""
    c = net.connectome
    src, tar = torch.from_numpy(c.edge_src), torch.from_numpy(c.edge_tar)
    pair, group = torch.from_numpy(c.edge_type), torch.from_numpy(c.edge_group)
    w = net.sign[pair] * net.n_syn[group] * net.strength[pair]
    node_type = torch.from_numpy(c.node_type)
    tau, v_rest = net.tau[node_type], net.v_rest[node_type]
    photoreceptors = [torch.from_numpy(c.nodes_of(t)) for t in c.input_types]
    v, out = v0, []
    for k in range(x.shape[1]):
        current = torch.zeros_like(v).index_add(1, tar, w * torch.relu(v[:, src]))
        stim = torch.zeros_like(v)
        for idx in photoreceptors:
            stim[:, idx] = x[:, k]
        v = v + dt / torch.clamp(tau, min=dt) * (-v + v_rest + current + stim)
        out.append(v)
    return torch.stack(out, 1)


@pytest.fixture(scope="module")
def random_net(fly_connectome):
    net = FlyNetwork(fly_connectome, seed=3).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random parameters well away from the initialisation, some tau below dt
        net.v_rest.normal_(0.5, 0.3, generator=g)
        net.tau.uniform_(0.01, 0.1, generator=g)
        net.strength.mul_(3 * torch.rand(net.strength.shape, generator=g, dtype=torch.float64))
    return net


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs().max() / b.abs().max()).detach())


def test_voltages_and_gradients_match_per_edge_reference(random_net):
    net, dt, steps = random_net, 0.02, 40
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, steps, 721, generator=g, dtype=torch.float64, requires_grad=True)
    v0 = (
        (net.resting_state(2) + 0.1 * torch.randn(2, net.connectome.n_nodes, generator=g, dtype=torch.float64))
        .detach()
        .requires_grad_()
    )
    y = net(x, dt, v0)
    y_ref = per_edge_reference(net, x, v0, dt)
    assert y.shape == (2, steps, 45_669)
    assert _rel(y, y_ref) < 1e-5 and float((y > 0).double().mean()) > 0.3  # many neurons rectify, many pass
    probe = torch.randn(y.shape, generator=g, dtype=torch.float64)
    wrt = [net.v_rest, net.tau, net.strength, x, v0]
    grads = torch.autograd.grad((y * probe).sum(), wrt)
    grads_ref = torch.autograd.grad((y_ref * probe).sum(), wrt)
    for name, a, b in zip(["v_rest", "tau", "strength", "stimulus", "initial state"], grads, grads_ref, strict=True):
        assert float(b.abs().max()) > 0, name
        assert _rel(a, b) < 1e-5, name


def test_float32_agrees(fly_connectome):
    net = FlyNetwork(fly_connectome, seed=0)
    x = torch.rand(1, 10, 721, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = net(x, 0.02)
        y_ref = per_edge_reference(net.double(), x.double(), net.resting_state(1), 0.02)
    assert _rel(y.double(), y_ref) < 1e-5


def test_parameters_and_states(fly_connectome):
    a, b = FlyNetwork(fly_connectome, seed=0), FlyNetwork(fly_connectome, seed=1)
    assert a.n_free == 734 and a.n_fixed == 2_959
    assert not torch.equal(a.v_rest, b.v_rest) and torch.equal(a.strength, b.strength)
    assert torch.equal(FlyNetwork(fly_connectome, seed=1).v_rest, b.v_rest)  # one model per seed, reproducible
    assert abs(float(a.v_rest.detach().mean()) - 0.5) < 0.03 and torch.all(a.tau == 0.05)
    # strength init: 0.01 / mean synapse count of the pair (edge-weighted)
    c = fly_connectome
    pair = 0
    n_syn = c.edge_n_syn[c.edge_type == pair]
    assert float(a.strength[pair]) == pytest.approx(0.01 / n_syn.mean(), rel=1e-6)
    a.strength.data[:3] = -1.0
    a.clamp_()
    assert float(a.strength.min()) >= 0
    # steady state of grey is a fixed point of grey input; fade-in of a grey frame equals it
    dt = 0.02
    s = a.steady_state(2, dt, t_pre=4.0)
    grey = torch.full((2, 5, 721), 0.5)
    with torch.no_grad():
        after = a(grey, dt, s)
    assert float((after[:, -1] - s).abs().max()) < 1e-3
    faded = a.fade_in_state(torch.full((2, 721), 0.5), dt, t_fade=4.0)
    torch.testing.assert_close(faded, s)
    v = a.simulate(torch.rand(1, 4, 721), dt)
    assert a.responses(v, "T4c", central=True).shape == (1, 4)
    assert a.responses(v, "T4c").shape == (1, 4, 721)
    assert np.array_equal(a.output_index().shape, (34, 721))


def test_output_voltages_equal_plain_indexing(fly_connectome):
    """output_voltages(v) == v[..., output_index()] in value and gradient, for the forward's layout and others."""
    net = FlyNetwork(fly_connectome, seed=2)
    g = torch.Generator().manual_seed(0)
    for v in (net(torch.rand(2, 3, 721, generator=g), 0.02).detach(), torch.randn(2, 3, net.connectome.n_nodes)):
        w = torch.randn(2, 3, 34, 721, generator=g)
        got_in, ref_in = v.clone().requires_grad_(), v.clone().requires_grad_()
        if v.stride(-1) != 1:  # keep the forward's (T, N, B) memory layout
            got_in = v.permute(1, 2, 0).clone().permute(2, 0, 1).requires_grad_()
        got, ref = net.output_voltages(got_in), ref_in[..., net.output_index()]
        assert torch.equal(got, ref)
        (gg,) = torch.autograd.grad((got * w).sum(), got_in)
        (gr,) = torch.autograd.grad((ref * w).sum(), ref_in)
        assert torch.equal(gg, gr) and gg.stride() == got_in.stride()


def test_state_dict_holds_the_parameters_only_and_older_checkpoints_load(fly_connectome):
    """Checkpoints keep the 734 free and 2,959 fixed parameters, not the connectome's index tables."""
    net = FlyNetwork(fly_connectome, seed=1)
    sd = net.state_dict()
    assert set(sd) == {"v_rest", "tau", "strength", "sign", "n_syn"}
    assert sum(t.numel() for k, t in sd.items() if k in ("v_rest", "tau", "strength")) == 734
    assert sd["sign"].numel() + sd["n_syn"].numel() == 2_959
    # a state dict written when the tables were saved too still loads, after checking them against this network
    old = dict(sd, csr_group=net.csr_group.clone(), csr_pair=net.group_pair[net.csr_group],
               node_type=net.node_type.clone(), input_index=net.input_index.clone())  # fmt: skip
    other = FlyNetwork(fly_connectome, seed=2)
    other.load_state_dict(old)
    assert torch.equal(other.strength, net.strength) and torch.equal(other.v_rest, net.v_rest)
    old["csr_group"] = old["csr_group"].flip(0)
    with pytest.raises(RuntimeError, match="csr_group does not match this connectome"):
        other.load_state_dict(old)
