"""Triplets: temporal order, no straddling, activity thresholds, normalisation, augmentation invariants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raywave.data.generate import import_movie
from raywave.data.rw_dataset import RWDataset
from raywave.data.triplets import (
    Augment,
    TripletConfig,
    TripletDataset,
    TripletSource,
    apply_ops,
    augment_ops,
    build_index,
    scale_frames,
    triplet_starts,
)
from raywave.errors import ConfigError, RaywaveError
from raywave.storage import resolve

FI = 0.1  # frame interval (s)
REST, PEAK = 100.0, 300.0


def movie(n: int, h: int = 12, w: int = 12, active_frames=(), seed: int = 0) -> np.ndarray:
    """Random texture at rest level; frames in `active_frames` have a bright quarter (25% of cells active).
    Every pixel encodes (frame, row, col) in its fractional part, so a triplet can be traced back exactly."""
    rng = np.random.default_rng(seed)
    m = REST + rng.uniform(0, 20, (n, h, w)).astype(np.float32)
    for t in active_frames:
        m[t, : h // 2, : w // 2] = PEAK + rng.uniform(0, 20, (h // 2, w // 2))
    return m


def make(tmp_path, movies: dict[str, np.ndarray]) -> str:
    loc = resolve(tmp_path / "ds")
    for sim_id, m in movies.items():
        import_movie(loc, sim_id, m, FI)
    return str(tmp_path / "ds")


def plain(**kw) -> TripletConfig:
    base = {"augment": {"rot90": False, "hflip": False, "vflip": False},
            "activity": {"min_fraction": 0.0}, "normalization": {"method": "minmax"}}  # fmt: skip
    for k, v in kw.items():
        base[k] = dict(base.get(k, {}), **v) if isinstance(v, dict) else v
    return TripletConfig.model_validate(base)


def test_triplet_starts_never_cross_a_gap():
    keep = np.ones(20, bool)
    keep[[7, 15]] = False
    for k in (1, 2, 3):
        for t in triplet_starts(keep, k, 1):
            assert keep[t : t + 2 * k + 1].all()
        brute = [t for t in range(20 - 2 * k) if keep[t : t + 2 * k + 1].all()]
        assert list(triplet_starts(keep, k, 1)) == brute
    assert list(triplet_starts(keep, 1, 2)) == [t for t in range(0, 18, 2) if keep[t : t + 3].all()]


def test_order_no_straddling_and_values(tmp_path):
    a, b = movie(30, seed=1), movie(25, seed=2)
    root = make(tmp_path, {"sim-a": a, "sim-b": b})
    prep = build_index(root, plain(dt_s=[0.1, 0.3]))
    assert prep["n_triplets"] == (30 - 2) + (30 - 6) + (25 - 2) + (25 - 6)
    src = TripletSource(root)
    rows = src.rows("all")
    batch = src.get(rows, augment=False)
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    for j, row in enumerate(rows):
        sim = src.sims[src._cols["sim_index"][row]]["sim_id"]
        t, k = src._cols["t0"][row], src._cols["step"][row]
        m = a if sim == "sim-a" else b
        assert t + 2 * k < len(m)  # within one simulation
        assert abs(src._cols["dt_s"][row] - k * FI) < 1e-9
        expect = (m[[t, t + k, t + 2 * k]] - lo) / (hi - lo)  # I1, I2, I3 in temporal order
        np.testing.assert_allclose(batch["frames"][j], expect, rtol=1e-5, atol=1e-6)


def test_activity_threshold_filters_frames(tmp_path):
    active = list(range(5, 15)) + list(range(20, 24))
    root = make(tmp_path, {"sim-a": movie(30, active_frames=active)})
    # 25% of cells active in `active` frames, none elsewhere
    prep = build_index(root, plain(activity={"min_fraction": 0.2, "max_fraction": 0.3}))
    src = TripletSource(root)
    starts = sorted(src._cols["t0"])
    assert starts == [t for t in range(28) if all(x in active for x in (t, t + 1, t + 2))]
    assert prep["simulations"][0]["frames_kept"] == len(active)
    assert build_index(root, plain(activity={"min_fraction": 0.3}), name="none")["n_triplets"] == 0
    assert build_index(root, plain(activity={"max_fraction": 0.2}), name="quiet")["n_triplets"] == (
        len(triplet_starts(~np.isin(np.arange(30), active), 1, 1))
    )


def test_flip_of_triplet_is_triplet_of_flipped_movie(tmp_path):
    m = movie(20, 12, 16, active_frames=range(3, 12))
    for name, flip in [("h", lambda x: x[..., ::-1]), ("v", lambda x: x[..., ::-1, :]),
                       ("r", lambda x: np.rot90(x, 1, axes=(-2, -1)))]:  # fmt: skip
        r1 = make(tmp_path / name / "1", {"sim-a": m})
        r2 = make(tmp_path / name / "2", {"sim-a": np.ascontiguousarray(flip(m))})
        cfg = plain(activity={"min_fraction": 0.1})
        build_index(r1, cfg)
        build_index(r2, cfg)
        s1, s2 = TripletSource(r1), TripletSource(r2)
        assert np.array_equal(s1._cols["t0"], s2._cols["t0"])
        t1 = s1.get(s1.rows("all"), augment=False)["frames"]
        t2 = s2.get(s2.rows("all"), augment=False)["frames"]
        np.testing.assert_array_equal(flip(t1), t2)


def test_augmentations_are_consistent_and_invertible():
    rng = np.random.default_rng(0)
    trip = rng.random((3, 12, 12)).astype(np.float32)
    aug = Augment(crop=8)
    seen = set()
    for row in range(64):
        ops = augment_ops(aug, 0, 0, row, (12, 12))
        out = apply_ops(trip, ops, aug.crop)
        assert out.shape == (3, 8, 8)
        for i in range(3):  # the same transform on each of the three frames
            assert np.array_equal(out[i], apply_ops(trip[i], ops, aug.crop))
        seen.add((ops["k"], ops["hflip"], ops["vflip"]))
        assert ops == augment_ops(aug, 0, 0, row, (12, 12))  # deterministic per (seed, epoch, row)
    assert len(seen) >= 12  # rotations and flips all occur
    ops = {"top": 0, "left": 0, "k": 1, "hflip": 0, "vflip": 0}
    x = trip
    for _ in range(4):
        x = apply_ops(x, ops, None)
    assert np.array_equal(x, trip)
    hv = apply_ops(trip, {"top": 0, "left": 0, "k": 0, "hflip": 1, "vflip": 1}, None)
    assert np.array_equal(hv, apply_ops(trip, {"top": 0, "left": 0, "k": 2, "hflip": 0, "vflip": 0}, None))
    rect = augment_ops(Augment(), 0, 0, 3, (8, 12))
    assert rect["k"] in (0, 2)  # 90-degree turns would change a non-square shape


def test_normalisation_modes(tmp_path):
    a, b = movie(10, seed=1), movie(10, seed=2) * 2
    root = make(tmp_path, {"sim-a": a, "sim-b": b})
    prep = build_index(root, plain(normalization={"mode": "per_simulation", "method": "minmax"}))
    src = TripletSource(root)
    frames = src.get(src.rows("all"), augment=False)["frames"]
    assert frames.min() == pytest.approx(0, abs=1e-6) and frames.max() == pytest.approx(1, abs=1e-6)
    assert [s["low"] for s in prep["simulations"]] == [pytest.approx(a.min()), pytest.approx(b.min())]
    build_index(root, plain(normalization={"method": "zscore"}), name="z")
    z = TripletSource(root, "z")
    both = np.concatenate([a, b])
    low = z.sims[0]["low"]
    assert low == pytest.approx(both.mean(dtype=np.float64), rel=1e-5)
    assert z.sims[0]["high"] - low == pytest.approx(both.std(dtype=np.float64), rel=1e-4)


def test_pixels_per_cell_scaling(tmp_path):
    import torch
    import torch.nn.functional as F

    x = np.random.default_rng(0).random((3, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(scale_frames(x, 3, "nearest"), np.kron(x, np.ones((1, 3, 3), np.float32)))
    ref = F.interpolate(torch.from_numpy(x)[None], scale_factor=4, mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(scale_frames(x, 4, "bilinear"), ref, rtol=1e-5, atol=1e-6)
    assert scale_frames(x, 1, "bilinear") is x
    m = movie(12)  # 12x12 cells
    root = make(tmp_path, {"sim-a": m})
    prep = build_index(root, plain(pixels_per_cell=2, resample="nearest", augment={"crop": 8}))
    assert prep["output_shape"] == [16, 16] and prep["pixels_per_cell"] == 2 and prep["resample"] == "nearest"
    assert prep["config"]["pixels_per_cell"] == 2
    src = TripletSource(root)
    got = src.get(src.rows("all")[:2], augment=False)["frames"]
    lo, hi = m.min(), m.max()
    t0 = src._cols["t0"][0]
    expect = np.kron((m[[t0, t0 + 1, t0 + 2], 2:10, 2:10] - lo) / (hi - lo), np.ones((1, 2, 2), np.float32))
    np.testing.assert_allclose(got[0], expect, rtol=1e-5, atol=1e-6)  # centre crop 8x8 cells -> 16x16 px


def test_torch_dataset_and_loader(tmp_path):
    root = make(tmp_path, {"sim-a": movie(40, seed=3), "sim-b": movie(40, seed=4)})
    build_index(root, plain(augment={"crop": 8, "rot90": True, "hflip": True}, val_fraction=0.5))
    train, val = TripletDataset(root, split="train"), TripletDataset(root, split="val")
    assert len(train) + len(val) == 2 * 38 and len(train) and len(val)
    item = train[0]
    assert item["frames"].shape == (3, 8, 8)
    seen = []
    for batch in train.loader(batch_size=16, num_workers=0):
        assert batch["frames"].shape[1:] == (3, 8, 8)
        seen += batch["row"].tolist()
    assert sorted(seen) == sorted(train._rows.tolist())  # one epoch sees each triplet exactly once
    again = TripletDataset(root, split="train")[[0, 1]]["frames"]
    assert np.array_equal(again.numpy(), train[[0, 1]]["frames"].numpy())  # augmentation is reproducible
    train.set_epoch(1)
    assert not np.array_equal(again.numpy(), train[[0, 1]]["frames"].numpy())


def test_bad_triplet_input(tmp_path):
    root = make(tmp_path, {"sim-a": movie(10)})
    with pytest.raises(ConfigError, match="not a whole multiple of the frame interval"):
        build_index(root, plain(dt_s=[0.15]))
    with pytest.raises(ConfigError, match="crop 16 exceeds"):
        build_index(root, plain(augment={"crop": 16}))
    assert not (tmp_path / "ds" / "triplets").exists()
    with pytest.raises(RaywaveError, match="not a raywave wave dataset"):
        build_index(str(tmp_path / "nothing"), plain())
    # a corrupt frames file is one clear error, and no index is written
    sim = RWDataset(root).simulation("sim-a")
    path = tmp_path / "ds" / "simulations" / "sim-a" / "frames.parquet"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RaywaveError, match="unreadable or corrupt|manifest says"):
        build_index(root, plain())
    with pytest.raises(RaywaveError, match="checksum"):
        sim.verify()
    assert not (tmp_path / "ds" / "triplets").exists()


def test_ray_data_pipeline_matches_the_plain_dataset(ray_local, tmp_path):
    from raywave.data.ray_pipelines import frames_dataset, triplet_dataset

    a, b = movie(30, seed=5), movie(30, seed=6)
    root = make(tmp_path, {"sim-a": a, "sim-b": b})
    build_index(root, plain(augment={"crop": 8, "rot90": True, "hflip": True, "vflip": True}, dt_s=[0.1, 0.2],
                            pixels_per_cell=2, resample="bilinear"))  # fmt: skip
    ds = triplet_dataset(root, epoch=3, batch_size=8, workers=2)
    got = {}
    for batch in ds.iter_torch_batches(batch_size=16):
        assert batch["frames"].shape[1:] == (3, 16, 16)  # 8x8 cells at 2 px per cell
        for row, frames in zip(batch["row"].tolist(), batch["frames"].numpy(), strict=True):
            got[row] = frames
    plain_ds = TripletDataset(root, epoch=3)
    assert sorted(got) == sorted(plain_ds._rows.tolist())  # every triplet once
    rows = sorted(got)
    expect = plain_ds.source.get(np.array(rows), epoch=3)["frames"]
    np.testing.assert_array_equal(np.stack([got[r] for r in rows]), expect)
    # all frames as a Ray Dataset: rows = frames, tensors come back as arrays
    fr = frames_dataset(root)
    assert fr.count() == 60
    first = fr.filter(expr="sim_id == 'sim-b' and frame == 7").take(1)[0]
    np.testing.assert_array_equal(first["calcium"], b[7])


def test_cli_triplets_and_describe(tmp_path, cli):
    root = make(tmp_path, {"sim-a": movie(30, active_frames=range(4, 20), seed=7), "sim-b": movie(30, seed=8)})
    res = cli("data", "triplets", root, "--dt-s", "0.1,0.2", "--min-active", "0.1")
    assert res.returncode == 0, res.stderr
    assert "26 triplets" in " ".join(res.stdout.split())  # (16 - 2) + (16 - 4) in sim-a, none in sim-b
    res = cli("data", "describe", root, "--json")
    assert res.returncode == 0, res.stderr
    import json

    card = json.loads(res.stdout)
    assert card["simulations_committed"] == 2 and card["frames"] == 60 and card["shapes"] == [[12, 12]]
    assert card["triplets"][0]["n_triplets"] == 26
    assert sum(card["activity"]["hist_counts"]) == 60
    for fig in card["figures"].values():
        assert Path(fig).stat().st_size > 1000
    bad = cli("data", "triplets", root, "--dt-s", "0.25", "--name", "bad")
    assert bad.returncode == 2 and "whole multiple" in bad.stderr and not (Path(root) / "triplets" / "bad").exists()
    frames = Path(root) / "simulations" / "sim-b" / "frames.parquet"
    frames.write_bytes(b"PAR1" + b"\0" * 50)
    for args in (["data", "describe", root], ["data", "triplets", root, "--name", "x"]):
        res = cli(*args)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1 and "corrupt" in lines[0], res.stderr
    assert not (Path(root) / "triplets" / "x").exists()


def test_validation_split_is_never_empty_and_order_free():
    from raywave.data.triplets import val_simulations

    ids = [f"sim-{i:016x}" for i in range(7)]
    for n in range(2, 8):
        for fraction in (0.01, 0.25, 0.5, 0.99):
            val = val_simulations(ids[:n], fraction)
            assert 1 <= len(val) <= n - 1
            assert len(val) == min(max(round(fraction * n), 1), n - 1)
            assert val == val_simulations(list(reversed(ids[:n])), fraction)
    assert val_simulations(ids, 0.0) == set()
    assert val_simulations(ids[:1], 0.5) == set()
