"""RAFT: exact parameter counts, official key set (strict load, with/without `module.`), shapes, input checks."""

from __future__ import annotations

import json

import pytest
import torch

from raywave.errors import RaywaveError
from raywave.models.corr import CorrBlock, coords_grid
from raywave.models.raft import RAFT, convex_upsample, load_official, sequence_loss, upflow8

from .conftest import ROOT

# every key and shape of the released RAFT checkpoints (raft-things.pth, raft-small.pth), from the design notes
OFFICIAL = json.loads((ROOT / "tests" / "data" / "raft-official-keys.json").read_text())
COUNTS = {"basic": 5_257_536, "small": 990_162}


@pytest.mark.parametrize("variant", ["basic", "small"])
def test_parameter_count_and_official_keys(variant):
    model = RAFT(variant)
    assert sum(p.numel() for p in model.parameters()) == COUNTS[variant]
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == OFFICIAL[variant]
    g = torch.Generator().manual_seed(0)
    official = {k: torch.randn(s, generator=g) if s else torch.tensor(3) for k, s in OFFICIAL[variant].items()}
    # a strided block's shortcut norm is also registered as normN (one module, two keys): give both one value
    by_storage: dict[int, str] = {}
    for k, v in model.state_dict().items():
        first = by_storage.setdefault(v.data_ptr(), k) if v.numel() > 1 else k
        official[k] = official[first]
    for prefix in ("", "module."):
        fresh = RAFT(variant)
        load_official(fresh, {prefix + k: v for k, v in official.items()})
        for k, v in fresh.state_dict().items():
            assert torch.equal(v, official[k].to(v.dtype)), k
    with pytest.raises(RaywaveError, match="does not match"):
        load_official(RAFT(variant), {k: v for k, v in list(official.items())[1:]})
    other = "small" if variant == "basic" else "basic"
    with pytest.raises(RaywaveError, match="does not match"):
        load_official(RAFT(other), official)


@pytest.mark.parametrize("variant", ["basic", "small"])
def test_forward_shapes_and_test_mode(variant):
    torch.manual_seed(0)
    model = RAFT(variant).eval()
    img1, img2 = torch.rand(1, 3, 128, 136) * 255, torch.rand(1, 3, 128, 136) * 255
    with torch.no_grad():
        preds = model(img1, img2, iters=3)
        low, up = model(img1, img2, iters=3, test_mode=True)
    assert len(preds) == 3 and preds[-1].shape == (1, 2, 128, 136)
    assert low.shape == (1, 2, 16, 17) and torch.allclose(up, preds[-1])
    assert torch.isfinite(up).all()


def test_small_inputs_are_rejected_clearly():
    model = RAFT("small")
    for h, w in [(64, 128), (120, 128), (127, 129)]:
        with pytest.raises(RaywaveError, match="too small|multiple of 8"):
            model(torch.zeros(1, 3, h, w), torch.zeros(1, 3, h, w))


def test_correlation_lookup_at_integer_offsets():
    """Sampling the volume at coords + (dx, dy) gives the dot product with that pixel of image 2."""
    torch.manual_seed(1)
    f1, f2 = torch.randn(1, 8, 16, 16), torch.randn(1, 8, 16, 16)
    block = CorrBlock(f1, f2, num_levels=1, radius=1)
    coords = coords_grid(1, 16, 16)
    out = block(coords).view(1, 3, 3, 16, 16)  # window index (i, j): i adds to x, j to y (reference order)
    y, x = 7, 5
    for i, dx in enumerate((-1, 0, 1)):
        for j, dy in enumerate((-1, 0, 1)):
            expect = (f1[0, :, y, x] * f2[0, :, y + dy, x + dx]).sum() / 8**0.5
            assert torch.allclose(out[0, i, j, y, x], expect, atol=1e-5)


def test_upsampling_of_constant_flow_and_sequence_loss():
    flow = torch.ones(1, 2, 4, 5) * torch.tensor([1.5, -2.0]).view(1, 2, 1, 1)
    assert torch.allclose(upflow8(flow), 8 * flow[:, :, :1, :1].expand(1, 2, 32, 40))
    mask = torch.randn(1, 9 * 64, 4, 5)
    inner = convex_upsample(flow, mask)[:, :, 8:-8, 8:-8]  # interior: every neighbour has the same flow
    assert torch.allclose(inner, 8 * flow[:, :, :1, :1].expand_as(inner), atol=1e-5)
    gt = torch.zeros(1, 2, 8, 8)
    preds = [gt + 1.0, gt + 0.5]
    loss, m = sequence_loss(preds, gt, torch.ones(1, 8, 8), gamma=0.8)
    assert loss.item() == pytest.approx(0.8 * 1.0 + 0.5) and m["epe"] == pytest.approx(0.5 * 2**0.5)
    assert m["1px"] == 1.0
