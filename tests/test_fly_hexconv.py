"""The native kernel of the decoder's hex-masked convolutions equals the library convolution and its gradients, for
one model and for K grouped models, for both decoder layers' shapes and supports, and does not depend on the thread
count."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from raywave.fly import hexconv
from raywave.fly.decoder import FlowDecoder, HexConv, batch_norm

pytestmark = pytest.mark.skipif(not hexconv.native_serves(torch.zeros(1, dtype=torch.float64), 8),
                                reason="no C++ compiler: the library convolution is used")  # fmt: skip


def _grads(conv: HexConv, x: torch.Tensor, gy: torch.Tensor, native: bool) -> list[torch.Tensor]:
    if native:
        y = hexconv.hex_conv(x, conv.weight, conv.bias, conv.mask, conv.groups)
    else:
        y = F.conv2d(x, conv.weight * conv.mask, conv.bias, padding=2, groups=conv.groups)
    return [y.detach(), *torch.autograd.grad(y, [x, conv.weight, conv.bias], gy)]


def _problem(c_in: int, c_out: int, k: int, dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    conv = HexConv(k * c_in, k * c_out, 5, groups=k).to(dtype)
    x = torch.relu(torch.randn(5, 31, 31, k * c_in, generator=g, dtype=dtype)).permute(0, 3, 1, 2)
    gy = torch.randn(5, 31, 31, k * c_out, generator=g, dtype=dtype).permute(0, 3, 1, 2)
    return conv, x.requires_grad_(), gy


@pytest.mark.parametrize(("c_in", "c_out", "k"), [(34, 8, 1), (34, 8, 3), (8, 3, 1), (8, 3, 2)])
def test_native_backward_equals_the_library_convolution(c_in, c_out, k):
    conv, x, gy = _problem(c_in, c_out, k, torch.float64)
    native, library = _grads(conv, x, gy, True), _grads(conv, x, gy, False)
    for name, a, b in zip(["output", "input", "weight", "bias"], native, library, strict=True):
        assert float(b.abs().max()) > 0, name
        assert float((a - b).abs().max() / b.abs().max()) < 1e-12, name  # float64: rounding only
    assert float(native[2][:, :, 0, 0].abs().max()) == 0  # masked corner taps get no gradient
    assert native[1].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("layer", "dtype"), [("first", torch.float64), ("second", torch.float64),
                                             ("first", torch.float32), ("second", torch.float32)])  # fmt: skip
def test_supports_equal_the_masked_library_convolution(layer, dtype):
    """The decoder's supports: the first layer reads its input on the lattice only, the second forms its output
    there only; the kernel must equal conv2d(x * in_mask) * out_mask and its gradients (x dense everywhere)."""
    lattice = FlowDecoder(34).conv1.in_support
    full = hexconv.Support.full(31, 31)
    c_in, c_out, ins, outs = (34, 8, lattice, full) if layer == "first" else (8, 3, full, lattice)
    conv, x, gy = _problem(c_in, c_out, 2, dtype, seed=5)
    x = torch.randn_like(x).requires_grad_()  # nonzero off the lattice too: the support must mask it
    y = hexconv.hex_conv(x, conv.weight, conv.bias, conv.mask, 2, None, ins, outs)
    native = [y.detach(), *torch.autograd.grad(y, [x, conv.weight, conv.bias], gy)]
    in_mask, out_mask = ins.mask.to(dtype), outs.mask.to(dtype)
    ref = F.conv2d(x * in_mask, conv.weight * conv.mask, conv.bias, padding=2, groups=2) * out_mask
    library = [ref.detach(), *torch.autograd.grad(ref, [x, conv.weight, conv.bias], gy)]
    tol = 1e-12 if dtype == torch.float64 else 1e-5  # float32: the whole-vector paths (8 lanes) are exercised too
    for name, a, b in zip(["output", "input", "weight", "bias"], native, library, strict=True):
        assert float((a - b).abs().max() / b.abs().max()) < tol, name
    assert not native[0][..., ~outs.mask].any()  # nothing formed off the output's support
    assert not native[1][..., ~ins.mask].any()


def test_a_support_is_one_segment_per_row_of_the_map():
    with pytest.raises(ValueError, match="row 0"):
        hexconv.Support(torch.tensor([[True, False, True]]).numpy())
    conv, x, _ = _problem(8, 3, 1, torch.float32)
    with pytest.raises(ValueError, match="for a 31x31 map"):
        hexconv.hex_conv(x, conv.weight, conv.bias, conv.mask, 1, None, hexconv.Support.full(29, 29))


def test_native_backward_does_not_depend_on_the_thread_count():
    conv, x, gy = _problem(34, 8, 2, torch.float32, seed=3)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append(_grads(conv, x, gy, True))
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert torch.equal(a, b)


def test_the_kernel_switch_selects_the_library(monkeypatch):
    monkeypatch.setenv("RAYWAVE_FLY_KERNEL", "torch")
    x = torch.zeros(1, 34, 31, 31).contiguous(memory_format=torch.channels_last)
    assert not hexconv.native_serves(x, 8)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_native_batch_norm_equals_torch(dtype):
    """The decoder's training-mode batch norm (native kernel) equals nn.BatchNorm2d: output, gradients and running
    statistics over two steps, for channels-last maps that are far from zero mean (the two-pass variance)."""
    g = torch.Generator().manual_seed(0)
    ours, ref = torch.nn.BatchNorm2d(16).to(dtype), torch.nn.BatchNorm2d(16).to(dtype)
    with torch.no_grad():
        ours.weight.normal_(generator=g), ours.bias.normal_(generator=g)
        ref.load_state_dict(ours.state_dict())
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for _ in range(2):
        x = (torch.randn(6, 31, 31, 16, generator=g, dtype=dtype) * 3 + 5).permute(0, 3, 1, 2).requires_grad_()
        gy = torch.randn(6, 16, 31, 31, generator=g, dtype=dtype)
        a, b = batch_norm(x, ours), ref(x)
        assert a.is_contiguous(memory_format=torch.channels_last)
        ga = torch.autograd.grad(a, [x, ours.weight, ours.bias], gy)
        gb = torch.autograd.grad(b, [x, ref.weight, ref.bias], gy)
        for u, v in [(a, b), *zip(ga, gb, strict=True), (ours.running_mean, ref.running_mean),
                     (ours.running_var, ref.running_var)]:  # fmt: skip
            assert float((u - v).detach().abs().max() / v.detach().abs().max()) < tol
    assert int(ours.num_batches_tracked) == 2
    rows, threads = x.detach().permute(0, 2, 3, 1).reshape(-1, 16), torch.get_num_threads()
    try:
        runs = []
        for n in (1, 3):
            torch.set_num_threads(n)
            runs.append(hexconv.channel_norm(rows, ours.weight, ours.bias, 1e-5))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))  # the sums' blocks do not follow the threads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_softplus_and_dropout_equal_torch(dtype):
    """softplus(z) * keep and its gradient equal torch's (vector exp/log1p: rounding only), above and below the
    threshold, with and without a dropout mask; a NaN stays NaN (a diverged model must be seen)."""
    g = torch.Generator().manual_seed(2)
    z = (8 * torch.randn(6, 31, 31, 8, generator=g, dtype=dtype)).permute(0, 3, 1, 2)
    z[0, :4, 0, 0] = torch.tensor([25.0, -30.0, 20.0, 0.0], dtype=dtype)
    z.requires_grad_()
    keep = 2 * (torch.rand(6, 31, 31, 8, generator=g) < 0.5).to(dtype).permute(0, 3, 1, 2)
    gy = torch.randn(6, 8, 31, 31, generator=g, dtype=dtype)
    tol = 1e-14 if dtype == torch.float64 else 1e-6
    for k in (keep, None):
        ours, ref = hexconv.softplus_keep(z, k), F.softplus(z) * (1 if k is None else k)
        assert ours.is_contiguous(memory_format=torch.channels_last)
        for a, b in [(ours, ref), (torch.autograd.grad(ours, z, gy)[0], torch.autograd.grad(ref, z, gy)[0])]:
            assert float((a - b).detach().abs().max() / b.detach().abs().max()) < tol
    bad = z.detach().clone()
    bad[0, 0, 0, 0], bad[0, 0, 0, 1] = float("nan"), float("inf")
    out = hexconv.softplus_keep(bad, None)
    assert torch.isnan(out[0, 0, 0, 0]) and torch.isinf(out[0, 0, 0, 1])
