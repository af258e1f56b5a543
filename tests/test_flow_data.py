"""Synthetic flow (exact by warping), FlyingChairs/Sintel loaders on generated trees, augmentation consistency."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from raywave.data.flow_augment import FlowAugmentor, crop_item, flip_item, scale_item
from raywave.data.flow_datasets import FlyingChairs, MpiSintel, scene_split, sintel_scenes, to_tensors
from raywave.data.flow_io import read_dpt
from raywave.data.synthetic_flow import ground_truth, make_scene, render, write_chairs, write_sintel
from raywave.errors import RaywaveError


def warp_error(item: dict, margin: int = 2) -> tuple[float, float]:
    """Mean |I2(x + flow) - I1(x)| over non-occluded pixels away from layer edges, and the zero-flow error."""
    i1, i2, f = (item[k].astype(np.float64) for k in ("img1", "img2", "flow"))
    h, w = i1.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(float)
    warped = np.stack([ndimage.map_coordinates(i2[..., c], [ys + f[..., 1], xs + f[..., 0]], order=1)
                       for c in range(3)], -1)  # fmt: skip
    ok = item["valid"] & ~item["occluded"]
    # motion boundaries (flow jumps between layers; affine flow inside a layer varies slowly)
    edges = np.max([ndimage.generic_gradient_magnitude(f[..., c], ndimage.sobel) for c in range(2)], axis=0) > 2.0
    ok &= ~ndimage.binary_dilation(edges, iterations=margin)
    inside = (xs + f[..., 0] >= 0) & (xs + f[..., 0] <= w - 1) & (ys + f[..., 1] >= 0) & (ys + f[..., 1] <= h - 1)
    ok &= inside
    assert ok.mean() > 0.3
    return float(np.abs(warped - i1).mean(-1)[ok].mean()), float(np.abs(i2 - i1).mean(-1)[ok].mean())


def synthetic_item(seed: int = 0, h: int = 120, w: int = 160) -> dict:
    layers = make_scene(np.random.default_rng(seed), h, w, 4)
    gt = ground_truth(layers, h, w, 0)
    return {"img1": render(layers, h, w, 0)[0], "img2": render(layers, h, w, 1)[0], "flow": gt["flow"],
            "valid": np.ones((h, w), bool), "occluded": gt["occluded"]}  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_flow_is_exact_by_warping(seed):
    item = synthetic_item(seed)
    err, zero = warp_error(item)
    assert err < 1.0 and zero > 5 * err, (err, zero)
    assert 0 < item["occluded"].mean() < 0.5 and np.abs(item["flow"]).max() > 1


def test_geometric_augmentations_keep_flow_consistent():
    item = synthetic_item(3)
    base, _ = warp_error(item)
    cases = {
        "hflip": flip_item(item, horizontal=True),
        "vflip": flip_item(item, horizontal=False),
        "crop": crop_item(item, 7, 11, 96, 128),
        "upscale+stretch": scale_item(item, 150, 230),
        "downscale": scale_item(item, 96, 120),
    }
    for name, aug in cases.items():
        err, zero = warp_error(aug, margin=3)
        assert err < max(1.5, 2 * base) and zero > 3 * err, (name, err, zero)
    # flips are exact permutations: flipping twice is the identity, and the flow's norm is unchanged
    twice = flip_item(flip_item(item, True), True)
    assert all(np.array_equal(twice[k], item[k]) for k in ("img1", "img2", "flow", "occluded"))
    assert np.allclose(np.linalg.norm(cases["hflip"]["flow"], axis=-1), np.linalg.norm(item["flow"], axis=-1)[:, ::-1])


def test_full_augmentor_is_consistent_and_reproducible():
    item = synthetic_item(4, 160, 200)
    aug = FlowAugmentor(crop_size=(96, 128), min_scale=-0.2, max_scale=0.4, photometric=False, seed=1)
    for index in range(6):
        out = aug(item, index)
        assert out["img1"].shape == (96, 128, 3) and out["flow"].shape == (96, 128, 2)
        err, zero = warp_error(out, margin=3)
        assert err < 1.5 and zero > 2 * err, (index, err, zero)
        again = aug(item, index)
        assert all(np.array_equal(out[k], again[k]) for k in out)
    photo = FlowAugmentor(crop_size=(96, 128), seed=1)(item, 0)
    assert photo["img1"].dtype == np.uint8 and photo["flow"].shape == (96, 128, 2)
    with pytest.raises(RaywaveError, match="smaller than the crop"):
        FlowAugmentor(crop_size=(400, 400), spatial_prob=0, photometric=False)(item, 0)


def test_chairs_layout_round_trip(tmp_path):
    root = write_chairs(tmp_path / "chairs", n_pairs=5, h=64, w=96, val_every=5)
    train, val = FlyingChairs(root, "train"), FlyingChairs(root, "val")
    assert (len(train), len(val)) == (4, 1)
    item = train[0]
    assert item["img1"].shape == (64, 96, 3) and item["flow"].shape == (64, 96, 2) and item["valid"].all()
    t = to_tensors(item)
    assert t["img1"].shape == (3, 64, 96) and t["flow"].shape == (2, 64, 96)
    with pytest.raises(RaywaveError, match="not a FlyingChairs root.*FlyingChairs_train_val.txt"):
        FlyingChairs(tmp_path / "nowhere")


def test_sintel_layout_round_trip_and_scene_split(tmp_path):
    root = write_sintel(tmp_path / "sintel", scenes=3, frames=3, h=48, w=64)
    scenes = sintel_scenes(root)
    assert scenes == ["scene_1", "scene_2", "scene_3"]
    train_s, val_s = scene_split(scenes, 1, seed=0)
    assert len(val_s) == 1 and not set(train_s) & set(val_s)
    for dstype in ("clean", "final"):
        ds = MpiSintel(root, dstype, scenes=train_s)
        assert len(ds) == 2 * 2 and {s["scene"] for s in ds.samples} == set(train_s)
        item = ds[0]
        assert item["occluded"].shape == (48, 64) and item["valid"].all()
    clean = MpiSintel(root, "clean")[0]
    assert clean["occluded"].any()
    err, zero = warp_error(clean)
    assert err < 1.0 and zero > 3 * err
    assert read_dpt(root / "training" / "depth" / "scene_1" / "frame_0001.dpt").shape == (48, 64)
    with pytest.raises(RaywaveError, match="not an MPI-Sintel root"):
        MpiSintel(tmp_path / "nowhere")
    with pytest.raises(RaywaveError, match="unknown Sintel scenes"):
        scene_split(scenes, ["alley_1"])
