"""The native fly kernel: its run tables hold exactly the connectome's edges, it agrees with the torch path and the
per-edge reference, and its results do not depend on the thread count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raywave.fly import kernel
from raywave.fly.network import FlyNetwork

from .test_fly_dynamics import per_edge_reference

pytestmark = pytest.mark.skipif(not kernel.available(torch.device("cpu"), torch.float32),
                                reason="no C++ compiler: the torch path is used")  # fmt: skip


def _expand(runs: kernel.Runs) -> np.ndarray:
    """(tar, src, group) of every edge the runs describe, sorted."""
    length = runs.length.numpy().astype(np.int64)
    offset = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
    rows = [np.repeat(runs.tar.numpy(), length) + offset, np.repeat(runs.src.numpy(), length) + offset,
            np.repeat(runs.group.numpy(), length)]  # fmt: skip
    return np.stack(rows)[:, np.lexsort(rows[::-1])]


def test_run_tables_hold_exactly_the_edges(fly_connectome):
    c = fly_connectome
    net = FlyNetwork(c, seed=0)
    tables = net.run_tables()
    edges = np.stack([c.edge_tar, c.edge_src, c.edge_group])
    edges = edges[:, np.lexsort(edges[::-1])]
    for runs in (tables.forward, tables.backward):
        assert np.array_equal(_expand(runs), edges)
    # every run of the forward table lies in one block of target neurons, every backward run in one source block
    for runs, pos in ((tables.forward, tables.forward.tar), (tables.backward, tables.backward.src)):
        first, last = pos.numpy() // kernel.BLOCK, (pos.numpy() + runs.length.numpy() - 1) // kernel.BLOCK
        assert np.array_equal(first, last)
        assert np.array_equal(np.searchsorted(first, np.arange(len(runs.ptr))), runs.ptr.numpy())
    assert len(tables.forward.tar) < c.n_edges / 10  # runs are long: the point of the layout
    inputs = net.input_index.numpy()
    assert np.array_equal(tables.in_col.numpy()[inputs], np.arange(len(inputs)) % net.n_columns)
    assert (tables.in_col.numpy() >= 0).sum() == len(inputs)


def _grads(net: FlyNetwork, x: torch.Tensor, v0: torch.Tensor, probe: torch.Tensor) -> list[torch.Tensor]:
    y = net(x, 0.02, v0)
    wrt = [net.v_rest, net.tau, net.strength, x, v0]
    return [y.detach(), *torch.autograd.grad((y * probe).sum(), wrt)]


@pytest.fixture(scope="module")
def problem(fly_connectome):
    net = FlyNetwork(fly_connectome, seed=4).double()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        net.v_rest.normal_(0.5, 0.3, generator=g)
        net.tau.uniform_(0.01, 0.1, generator=g)
        net.strength.mul_(3 * torch.rand(net.strength.shape, generator=g, dtype=torch.float64))
    x = torch.rand(3, 12, 721, generator=g, dtype=torch.float64, requires_grad=True)
    v0 = net.resting_state(3) + 0.1 * torch.randn(3, fly_connectome.n_nodes, generator=g, dtype=torch.float64)
    probe = torch.randn(3, 12, fly_connectome.n_nodes, generator=g, dtype=torch.float64)
    return net, x, v0.detach().requires_grad_(), probe


def test_native_agrees_with_the_torch_path_and_the_per_edge_reference(problem, monkeypatch):
    net, x, v0, probe = problem
    native = _grads(net, x, v0, probe)
    monkeypatch.setenv("RAYWAVE_FLY_KERNEL", "torch")
    assert not kernel.available(torch.device("cpu"), torch.float64)
    torch_path = _grads(net, x, v0, probe)
    y_ref = per_edge_reference(net, x, v0, 0.02)
    wrt = [net.v_rest, net.tau, net.strength, x, v0]
    reference = [y_ref.detach(), *torch.autograd.grad((y_ref * probe).sum(), wrt)]
    names = ["voltages", "v_rest", "tau", "strength", "stimulus", "initial state"]
    for name, a, b, r in zip(names, native, torch_path, reference, strict=True):
        assert float(r.abs().max()) > 0, name
        assert float((a - r).abs().max() / r.abs().max()) < 1e-12, name  # float64: rounding only
        assert float((b - r).abs().max() / r.abs().max()) < 1e-12, name


def _readout_grads(net: FlyNetwork, x, v0, probe, map_probe, decoder) -> list[torch.Tensor]:
    """The decoder input map and the gradients of a loss on both the map and the voltages."""
    y, maps = net(x, 0.02, v0, readout=decoder.readout())
    wrt = [net.v_rest, net.tau, net.strength, x, v0]
    loss = (y * probe).sum() + (maps * map_probe).sum()
    return [maps.detach(), *torch.autograd.grad(loss, wrt)]


def test_the_readout_map_and_its_gradient_equal_the_decoders_own_map(problem, monkeypatch):
    """The kernel writes the decoder's input map while it integrates and its adjoint reads the map's gradient:
    the same values and gradients as gathering the output voltages and building the map with torch ops."""
    from raywave.fly.decoder import FlowDecoder, input_map

    net, x, v0, probe = problem
    dec = FlowDecoder(len(net.connectome.output_types)).double()
    g = torch.Generator().manual_seed(8)
    map_probe = torch.randn(3, 12, 31, 31, len(net.connectome.output_types), generator=g, dtype=torch.float64)
    native = _readout_grads(net, x, v0, probe, map_probe, dec)
    y = net(x, 0.02, v0)
    maps = input_map(net.output_voltages(y), *dec.readout())
    assert torch.equal(native[0], maps.detach())
    assert float(maps.detach().abs().sum()) > 0 and bool((maps == 0).any())  # ReLU'd and off-lattice zeros both present
    wrt = [net.v_rest, net.tau, net.strength, x, v0]
    gathered = torch.autograd.grad((y * probe).sum() + (maps * map_probe).sum(), wrt)
    monkeypatch.setenv("RAYWAVE_FLY_KERNEL", "torch")
    torch_path = _readout_grads(net, x, v0, probe, map_probe, dec)
    for a, b, c in zip(native[1:], gathered, torch_path[1:], strict=True):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-12
        assert float((c - b).abs().max() / b.abs().max()) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_results_do_not_depend_on_the_thread_count(problem, dtype):
    net, x, v0, probe = problem
    net = FlyNetwork(net.connectome, seed=4).to(dtype)
    net.load_state_dict(problem[0].state_dict())
    x, v0, probe = (t.detach().to(dtype).requires_grad_(t.requires_grad) for t in (x, v0, probe))
    from raywave.fly.decoder import FlowDecoder

    dec = FlowDecoder(len(net.connectome.output_types)).to(dtype)
    map_probe = torch.randn(3, 12, 31, 31, len(net.connectome.output_types), dtype=dtype,
                            generator=torch.Generator().manual_seed(9))  # fmt: skip
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3, 1):
            torch.set_num_threads(n)
            runs.append(_grads(net, x, v0, probe) + _readout_grads(net, x, v0, probe, map_probe, dec))
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert torch.equal(a, b)
