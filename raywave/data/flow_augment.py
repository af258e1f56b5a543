"""RAFT's training augmentations (its FlowAugmentor), in numpy, with the flow transformed with the images.

Photometric: colour jitter (brightness, contrast, saturation 0.4, hue 0.5/pi), applied to both images alike or,
with probability 0.2, to each separately; an eraser that paints 1-2 rectangles of img2 with its mean colour
(simulating occlusions). Geometric: a random scale 2^U(min, max) with a stretch of 2^U(-0.2, 0.2) per axis,
horizontal (p 0.5) and vertical (p 0.1) flips, and a random crop. Every random choice comes from
(seed, epoch, index), so an augmented sample is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from scipy import ndimage

from raywave.errors import RaywaveError


def resize(array: np.ndarray, out_h: int, out_w: int, order: int = 1) -> np.ndarray:
    """Resize (H, W[, C]) with pixel centres at integers and edges aligned (as cv2.resize): a point x maps to
    (x + 0.5) * out / in - 0.5. order 1 = bilinear (images, flow), 0 = nearest (masks)."""
    h, w = array.shape[:2]
    ys = (np.arange(out_h) + 0.5) * h / out_h - 0.5
    xs = (np.arange(out_w) + 0.5) * w / out_w - 0.5
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    if array.ndim == 2:
        return ndimage.map_coordinates(array, [yy, xx], order=order, mode="nearest")
    return np.stack([ndimage.map_coordinates(array[..., c], [yy, xx], order=order, mode="nearest")
                     for c in range(array.shape[2])], axis=-1)  # fmt: skip


def color_jitter(images: list[np.ndarray], rng: np.random.Generator, brightness=0.4, contrast=0.4,
                 saturation=0.4, hue=0.5 / np.pi) -> list[np.ndarray]:  # fmt: skip
    """The same random brightness/contrast/saturation/hue change, in a random order, for every image given."""
    b = rng.uniform(1 - brightness, 1 + brightness)
    c = rng.uniform(1 - contrast, 1 + contrast)
    s = rng.uniform(1 - saturation, 1 + saturation)
    h = rng.uniform(-hue, hue)
    order = rng.permutation(4)
    out = []
    for img in images:
        x = img.astype(np.float32) / 255.0
        for op in order:
            gray = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]
            if op == 0:
                x = x * b
            elif op == 1:
                x = gray.mean() + c * (x - gray.mean())
            elif op == 2:
                x = gray + s * (x - gray)
            else:
                hsv = rgb_to_hsv(np.clip(x, 0, 1))
                hsv[..., 0] = (hsv[..., 0] + h) % 1.0
                x = hsv_to_rgb(hsv)
            x = np.clip(x, 0, 1)
        out.append(np.rint(x * 255).astype(np.uint8))
    return out


@dataclass
class FlowAugmentor:
    """RAFT's dense-flow augmentations for a crop of (crop_h, crop_w); defaults are its FlyingChairs settings."""

    crop_size: tuple[int, int] = (368, 496)
    min_scale: float = -0.1
    max_scale: float = 1.0
    do_flip: bool = True
    spatial_prob: float = 0.8
    stretch_prob: float = 0.8
    max_stretch: float = 0.2
    h_flip_prob: float = 0.5
    v_flip_prob: float = 0.1
    asymmetric_color_prob: float = 0.2
    eraser_prob: float = 0.5
    photometric: bool = True
    seed: int = 0
    epoch: int = 0

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def photometric_aug(self, img1: np.ndarray, img2: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
        if rng.random() < self.asymmetric_color_prob:
            return color_jitter([img1], rng)[0], color_jitter([img2], rng)[0]
        return tuple(color_jitter([img1, img2], rng))  # type: ignore[return-value]

    def eraser(self, img2: np.ndarray, rng) -> np.ndarray:
        h, w = img2.shape[:2]
        if rng.random() < self.eraser_prob:
            img2 = img2.copy()
            mean = img2.reshape(-1, 3).mean(axis=0)
            for _ in range(rng.integers(1, 3)):
                x0, y0 = rng.integers(0, w), rng.integers(0, h)
                dx, dy = rng.integers(50, 100), rng.integers(50, 100)
                img2[y0 : y0 + dy, x0 : x0 + dx] = mean
        return img2

    def spatial(self, item: dict[str, np.ndarray], rng) -> dict[str, np.ndarray]:
        """Scale/stretch, flips, crop: images, flow vectors and masks together."""
        ch, cw = self.crop_size
        h, w = item["img1"].shape[:2]
        min_scale = max((ch + 8) / h, (cw + 8) / w)
        scale = 2 ** rng.uniform(self.min_scale, self.max_scale)
        sx = sy = scale
        if rng.random() < self.stretch_prob:
            sx *= 2 ** rng.uniform(-self.max_stretch, self.max_stretch)
            sy *= 2 ** rng.uniform(-self.max_stretch, self.max_stretch)
        sx, sy = max(sx, min_scale), max(sy, min_scale)
        out = dict(item)
        if rng.random() < self.spatial_prob:
            nh, nw = int(round(h * sy)), int(round(w * sx))
            out = scale_item(out, nh, nw)
        if self.do_flip:
            if rng.random() < self.h_flip_prob:
                out = flip_item(out, horizontal=True)
            if rng.random() < self.v_flip_prob:
                out = flip_item(out, horizontal=False)
        h, w = out["img1"].shape[:2]
        if h < ch or w < cw:
            raise RaywaveError(f"a {h}x{w} frame is smaller than the crop {ch}x{cw}; lower crop_size")
        y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        return crop_item(out, y0, x0, ch, cw)

    def __call__(self, item: dict[str, np.ndarray], index: int = 0) -> dict[str, np.ndarray]:
        rng = self.rng(index)
        img1, img2 = item["img1"], item["img2"]
        if self.photometric:
            img1, img2 = self.photometric_aug(img1, img2, rng)
            img2 = self.eraser(img2, rng)
        return self.spatial(dict(item, img1=img1, img2=img2), rng)


def scale_item(item: dict[str, np.ndarray], nh: int, nw: int) -> dict[str, np.ndarray]:
    h, w = item["img1"].shape[:2]
    out = dict(item)
    for k in ("img1", "img2"):
        out[k] = np.clip(np.rint(resize(item[k].astype(np.float32), nh, nw)), 0, 255).astype(np.uint8)
    out["flow"] = resize(item["flow"], nh, nw) * np.array([nw / w, nh / h], np.float32)
    for k in ("valid", "occluded"):
        if k in item:
            out[k] = resize(item[k].astype(np.uint8), nh, nw, order=0).astype(bool)
    return out


def flip_item(item: dict[str, np.ndarray], horizontal: bool) -> dict[str, np.ndarray]:
    sl = (slice(None), slice(None, None, -1)) if horizontal else (slice(None, None, -1), slice(None))
    sign = np.array([-1.0, 1.0] if horizontal else [1.0, -1.0], np.float32)
    out = {k: v[sl] for k, v in item.items() if k in ("img1", "img2", "valid", "occluded")}
    out["flow"] = item["flow"][sl] * sign
    return {**item, **out}


def crop_item(item: dict[str, np.ndarray], y0: int, x0: int, ch: int, cw: int) -> dict[str, np.ndarray]:
    keys = ("img1", "img2", "flow", "valid", "occluded")
    return {k: (np.ascontiguousarray(v[y0 : y0 + ch, x0 : x0 + cw]) if k in keys else v) for k, v in item.items()}
