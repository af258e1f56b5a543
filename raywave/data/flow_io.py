"""Optical-flow file formats: Middlebury `.flo` (flow), Sintel `.dpt` (depth), PPM/PNG frames.

`.flo`: little-endian float32 magic 202021.25 ("PIEH"), int32 width, int32 height, then H*W*2 float32
(u, v interleaved, row-major). `.dpt`: the same 12-byte header, then H*W float32 depth.
Readers check the magic and the size and raise a one-line RaywaveError on a corrupt file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from raywave.errors import RaywaveError
from raywave.io import atomic_path

FLO_MAGIC = 202021.25
_HEADER = np.dtype([("magic", "<f4"), ("width", "<i4"), ("height", "<i4")])


def _read(path: str | os.PathLike, channels: int, kind: str) -> np.ndarray:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RaywaveError(f"cannot read {kind} file {str(path)!r}: {exc.strerror}") from None
    if len(raw) < _HEADER.itemsize:
        raise RaywaveError(f"{str(path)!r} is not a {kind} file (shorter than its 12-byte header)")
    head = np.frombuffer(raw, _HEADER, count=1)[0]
    if head["magic"] != np.float32(FLO_MAGIC):
        raise RaywaveError(f"{str(path)!r} is not a {kind} file (magic {float(head['magic'])!r}, expected 202021.25)")
    w, h = int(head["width"]), int(head["height"])
    expected = _HEADER.itemsize + 4 * w * h * channels
    if w <= 0 or h <= 0 or len(raw) != expected:
        raise RaywaveError(
            f"{str(path)!r} is corrupt: header says {w}x{h}, file has {len(raw)} bytes, expected {expected}"
        )
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.frombuffer(raw, "<f4", offset=_HEADER.itemsize).reshape(shape).astype(np.float32)


def _write(path: str | os.PathLike, data: np.ndarray) -> None:
    h, w = data.shape[:2]
    header = np.array([(FLO_MAGIC, w, h)], dtype=_HEADER)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(np.ascontiguousarray(data, dtype="<f4").tobytes())


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Flow (H, W, 2) float32: [..., 0] = u (x, right), [..., 1] = v (y, down), in pixels."""
    return _read(path, 2, ".flo")


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> None:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must have shape (H, W, 2), got {flow.shape}")
    _write(path, flow)


def read_dpt(path: str | os.PathLike) -> np.ndarray:
    """Depth (H, W) float32."""
    return _read(path, 1, ".dpt")


def write_dpt(path: str | os.PathLike, depth: np.ndarray) -> None:
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must have shape (H, W), got {depth.shape}")
    _write(path, depth)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB frame (PPM, PNG, ...) as uint8 (H, W, 3); greyscale frames are repeated to 3 channels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise RaywaveError(f"image {str(path)!r} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise RaywaveError(f"cannot read image {str(path)!r} ({exc})") from None
    return arr


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write uint8 (H, W, 3) or (H, W) as PPM/PNG/JPEG (format from the suffix), atomically."""
    from PIL import Image

    path = Path(path)
    fmt = {".ppm": "PPM", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if fmt is None:
        raise RaywaveError(f"unsupported image format {path.suffix!r}; use .ppm, .png or .jpg")
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format=fmt)


def check_sample_shapes(item: dict[str, np.ndarray], paths: dict[str, str] | None = None) -> None:
    """One line when a sample's frames, flow and masks differ in height x width (a .flo from another frame
    size, a resized image): every array in `item` must share the flow's (H, W). `paths` names the files."""
    flow = item.get("flow")
    if flow is None:
        return
    want = tuple(flow.shape[:2])
    for key, arr in item.items():
        if hasattr(arr, "shape") and arr.ndim >= 2 and tuple(arr.shape[:2]) != want:
            where = (paths or {}).get(key, key)
            flo = (paths or {}).get("flow", "its flow")
            raise RaywaveError(
                f"{where} is {arr.shape[1]}x{arr.shape[0]} px but {flo} is {want[1]}x{want[0]}; a sample's frames "
                "and flow must have the same size (replace the mismatched file)"
            )
