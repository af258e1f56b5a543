"""Flow file formats: round trips, the official byte layout, and clear errors on corrupt files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from raywave.data.flow_io import read_dpt, read_flo, read_image, write_dpt, write_flo, write_image
from raywave.errors import RaywaveError


def test_flo_round_trip_and_byte_layout(tmp_path):
    rng = np.random.default_rng(0)
    flow = rng.normal(0, 10, (7, 5, 2)).astype(np.float32)
    write_flo(tmp_path / "a.flo", flow)
    raw = (tmp_path / "a.flo").read_bytes()
    assert raw[:4] == b"PIEH" and struct.unpack("<ii", raw[4:12]) == (5, 7)
    assert struct.unpack("<ff", raw[12:20]) == (flow[0, 0, 0], flow[0, 0, 1])  # u, v interleaved, row-major
    assert len(raw) == 12 + 7 * 5 * 2 * 4
    np.testing.assert_array_equal(read_flo(tmp_path / "a.flo"), flow)


def test_dpt_round_trip(tmp_path):
    depth = np.random.default_rng(1).uniform(0, 100, (4, 9)).astype(np.float32)
    write_dpt(tmp_path / "d.dpt", depth)
    np.testing.assert_array_equal(read_dpt(tmp_path / "d.dpt"), depth)


def test_corrupt_flo_files_are_reported(tmp_path):
    write_flo(tmp_path / "a.flo", np.zeros((3, 4, 2), np.float32))
    raw = (tmp_path / "a.flo").read_bytes()
    (tmp_path / "trunc.flo").write_bytes(raw[:-4])
    (tmp_path / "magic.flo").write_bytes(b"XXXX" + raw[4:])
    (tmp_path / "tiny.flo").write_bytes(raw[:5])
    for name, needle in (("trunc", "corrupt"), ("magic", "magic"), ("tiny", "header"), ("missing", "cannot read")):
        with pytest.raises(RaywaveError, match=needle):
            read_flo(tmp_path / f"{name}.flo")


@pytest.mark.parametrize("suffix", [".ppm", ".png"])
def test_image_round_trip(tmp_path, suffix):
    img = np.random.default_rng(2).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    write_image(tmp_path / f"i{suffix}", img)
    np.testing.assert_array_equal(read_image(tmp_path / f"i{suffix}"), img)
    write_image(tmp_path / f"g{suffix}", img[..., 0])
    assert np.array_equal(read_image(tmp_path / f"g{suffix}"), np.repeat(img[..., :1], 3, axis=2))


def test_bad_image_is_reported(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(RaywaveError, match="cannot read image"):
        read_image(tmp_path / "x.png")


def test_flo_whose_size_does_not_match_its_header(tmp_path):
    write_flo(tmp_path / "a.flo", np.zeros((3, 4, 2), np.float32))
    raw = (tmp_path / "a.flo").read_bytes()
    (tmp_path / "long.flo").write_bytes(raw + b"\0" * 8)  # one pixel too many
    (tmp_path / "negative.flo").write_bytes(raw[:4] + struct.pack("<ii", -4, 3) + raw[12:])
    (tmp_path / "huge.flo").write_bytes(raw[:4] + struct.pack("<ii", 2**31 - 1, 2**31 - 1) + raw[12:])
    for name in ("long", "negative", "huge"):
        with pytest.raises(RaywaveError, match="header says") as exc:
            read_flo(tmp_path / f"{name}.flo")
        assert "\n" not in str(exc.value)


def test_sample_whose_flow_and_frames_differ_in_size():
    from raywave.data.flow_io import check_sample_shapes

    good = {"img1": np.zeros((6, 8, 3)), "img2": np.zeros((6, 8, 3)), "flow": np.zeros((6, 8, 2)),
            "valid": np.ones((6, 8), bool)}  # fmt: skip
    check_sample_shapes(good)
    with pytest.raises(RaywaveError, match=r"f2.png is 8x5 px but f.flo is 8x6"):
        check_sample_shapes(dict(good, img2=np.zeros((5, 8, 3))), {"img2": "f2.png", "flow": "f.flo"})


def test_a_chairs_flow_of_another_size_is_one_line(tmp_path):
    """FlyingChairs' loader checks every sample: a .flo whose size differs from its frames is named."""
    from raywave.data.flow_datasets import FlyingChairs
    from raywave.data.synthetic_flow import write_chairs

    write_chairs(tmp_path, n_pairs=3, h=32, w=48, seed=0)
    ds = FlyingChairs(tmp_path, split="train")
    write_flo(ds.samples[0]["flow"], np.zeros((16, 48, 2), np.float32))
    with pytest.raises(RaywaveError, match="px but"):
        ds[0]
