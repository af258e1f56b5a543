"""The box eye, hex augmentations and resampling: symmetry, rotation of moving edges, norms, frame counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raywave.errors import RaywaveError
from raywave.fly import augment, hexlattice
from raywave.fly.eye import BoxEye
from raywave.fly.stimuli import moving_edge


def test_box_eye_against_brute_force():
    eye = BoxEye()
    assert eye.min_size == (391, 391) and eye.n_columns == 721
    img = torch.rand(436, 417, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lum, total = eye.luminance(img), eye.box_sum(img)
    h, w = img.shape
    for i in (0, 17, 360, 720):
        cy, cx = eye.centres[i] + [h // 2, w // 2]
        box = img[cy - 6 : cy + 7, cx - 6 : cx + 7]
        assert float(total[i]) == pytest.approx(float(box.sum()), rel=1e-12)
        assert float(lum[i]) == pytest.approx(float(box.mean()), rel=1e-12)
        assert float(eye.median(img)[i]) == pytest.approx(float(box.flatten().median()))
    with pytest.raises(RaywaveError, match="too small"):
        eye.luminance(torch.zeros(300, 500))


def test_six_rotations_identity_on_rendered_data():
    frames, flow = moving_edge(30.0, 4.0, 3)
    eye = BoxEye()
    lum, fl = eye.luminance(torch.from_numpy(frames)), eye.flow(torch.from_numpy(flow))
    a, b = lum, fl
    for _ in range(6):
        a, b = augment.hex_transform(a, b, n_rot=1)
    torch.testing.assert_close(a, lum)
    torch.testing.assert_close(b, fl, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("angle", [0.0, 25.0, 100.0])
def test_rotating_a_moving_edge_rotates_its_rendered_flow(angle):
    eye = BoxEye()
    speed, n = 5.0, 4
    lum1, flow1 = (torch.from_numpy(a) for a in moving_edge(angle, speed, n))
    lum2, flow2 = (torch.from_numpy(a) for a in moving_edge(angle + 60.0, speed, n))
    r1, f1 = eye.luminance(lum1), eye.flow(flow1)
    r2, f2 = eye.luminance(lum2), eye.flow(flow2)
    rot_l, rot_f = augment.hex_transform(r1, f1, n_rot=1)
    # columns whose box lies wholly on one side of the edge in every frame match exactly; the box spans at
    # most 13·(√3/2, 1) isotropic px, so a margin of 10 px from the edge line is safe
    pos = hexlattice.positions(spacing=13.0)
    normal = np.array([np.cos(np.radians(angle + 60)), np.sin(np.radians(angle + 60))])
    proj = pos @ normal
    clear = np.ones(721, bool)
    for k in range(n):
        clear &= np.abs(proj - (-60.0 + speed * k)) > 10
    assert clear.sum() > 600
    torch.testing.assert_close(rot_l[:, clear], r2[:, clear])
    torch.testing.assert_close(rot_f[:, clear], f2[:, clear], atol=1e-3, rtol=1e-5)
    # the moving side carries 169 px of flow of the edge's velocity, pointing along the edge normal
    moving = clear & (proj < -60.0)
    v = f2[0, torch.from_numpy(moving)]
    torch.testing.assert_close(v, (169 * speed * torch.from_numpy(normal)).float().expand_as(v), atol=1e-2, rtol=1e-4)
    assert float(f2[0, torch.from_numpy(clear & (proj > -60.0 + 10))].abs().max()) == 0


def test_flips_and_rotations_keep_flow_norms():
    g = torch.Generator().manual_seed(0)
    lum, flow = torch.rand(5, 721, generator=g), torch.randn(5, 721, 2, generator=g)
    for n_rot in range(6):
        for axis in range(4):
            l2, f2 = augment.hex_transform(lum, flow, n_rot, axis)
            perm = torch.from_numpy(hexlattice.permutation(n_rot, axis))
            torch.testing.assert_close(l2, lum[:, perm])
            torch.testing.assert_close(f2.norm(dim=-1), flow.norm(dim=-1)[:, perm])
            assert sorted(l2.sum(0).tolist()) == pytest.approx(sorted(lum.sum(0).tolist()))
    # a flip is its own inverse, with the vectors mirrored back
    for axis in (1, 2, 3):
        l2, f2 = augment.hex_transform(*augment.hex_transform(lum, flow, 0, axis), 0, axis)
        torch.testing.assert_close(f2, flow)


def test_resampling_counts_and_values():
    lum, flow = torch.arange(19.0)[:, None].expand(19, 3), torch.arange(19.0)[:, None, None].expand(19, 3, 2)
    l2, f2 = augment.resample(lum, flow, fps=24, dt=0.02)
    assert l2.shape == (40, 3) and f2.shape == (40, 3, 2)
    t = torch.arange(40) * 0.02 * 24  # source frame position of each step
    torch.testing.assert_close(l2[:, 0], t.floor().clamp(max=18))  # sample-and-hold
    torch.testing.assert_close(f2[:, 0, 0], t.clamp(max=18).float())  # linear
    assert augment.n_resampled(19, 24, 0.02) == 40 and augment.n_resampled(24, 24, 0.01) == 100


def test_photometric_augmentations():
    lum = torch.rand(4, 721)
    out = augment.contrast_brightness(lum, 2.0, 0.1)
    torch.testing.assert_close(out, torch.clamp(2 * (lum - 0.5) + 0.5 + 0.2, min=0))
    cfg = augment.AugmentConfig()
    params = augment.sample_params(np.random.default_rng(3), cfg)
    a, _ = augment.augment(lum, torch.zeros(4, 721, 2), params, cfg)
    b, _ = augment.augment(lum, torch.zeros(4, 721, 2), params, cfg)
    torch.testing.assert_close(a, b)  # reproducible per drawn parameters
    assert float(a.min()) >= 0
