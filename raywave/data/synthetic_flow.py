"""Synthetic optical flow with exact ground truth: textured layers moving with random affine motions.

A scene is a background layer plus `n_layers` shapes (ellipses and rectangles), each with its own smooth
texture and its own affine motion per frame step. Every frame is rendered by sampling each layer's texture at
the inverse-transformed pixel coordinates (back to front), so for a pixel x of frame k whose top layer is l,
the content is at A_l x in frame k+1: the flow is A_l x - x, exactly. A pixel is occluded when a different
layer (or the image border) covers A_l x in frame k+1. Depth is constant per layer (background farthest).

`write_chairs` and `write_sintel` write the official FlyingChairs and MPI-Sintel layouts, so the real loaders
read them. Frames are uint8 RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from raywave.data.flow_io import write_dpt, write_flo, write_image


@dataclass
class Layer:
    texture: np.ndarray  # (Ht, Wt, 3) float32 in [0, 255], defined on canonical coordinates
    kind: str  # background, ellipse or rect
    center: np.ndarray  # canonical centre (x, y) of the shape
    radii: np.ndarray  # half-axes (x, y)
    pose: np.ndarray  # 3x3: canonical -> image coordinates in the first frame
    step: np.ndarray  # 3x3: image coordinates in frame k -> frame k+1
    depth: float


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth multi-scale colour noise with some stripes, in [0, 255]."""
    tex = np.zeros((h, w, 3), np.float32)
    for sigma, amp in ((1.5, 0.5), (4.0, 0.8), (12.0, 1.0)):
        tex += amp * ndimage.gaussian_filter(rng.standard_normal((h, w, 3)), (sigma, sigma, 0)) * sigma
    yy, xx = np.mgrid[0:h, 0:w]
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.2)
    tex += 0.8 * tex.std() * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))[..., None]
    tex = (tex - tex.min()) / (np.ptp(tex) + 1e-9)
    base = rng.uniform(0.2, 0.8, 3)
    return (255 * np.clip(0.15 + 0.7 * tex * base / base.max() + 0.15 * rng.uniform(0, 1), 0, 1)).astype(np.float32)


def _affine(rng: np.random.Generator, max_shift: float, max_rot: float, max_scale: float, center) -> np.ndarray:
    """A random small affine motion about `center` (rotation, scale, shear, translation) as 3x3."""
    a = rng.uniform(-max_rot, max_rot)
    s = np.exp(rng.uniform(-max_scale, max_scale, 2))
    sh = rng.uniform(-0.5 * max_scale, 0.5 * max_scale)
    lin = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array([[s[0], sh], [0, s[1]]])
    t = rng.uniform(-max_shift, max_shift, 2)
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = np.asarray(center) - lin @ np.asarray(center) + t
    return m


def make_scene(rng: np.random.Generator, h: int, w: int, n_layers: int = 4, max_shift: float = 6.0) -> list[Layer]:
    """A background and `n_layers` shapes with textures and per-step affine motions."""
    layers = [Layer(_texture(rng, h + 64, w + 64), "background", np.zeros(2), np.zeros(2),
                    np.array([[1, 0, -32], [0, 1, -32], [0, 0, 1]], float),
                    _affine(rng, 0.5 * max_shift, 0.02, 0.02, (w / 2, h / 2)), 100.0)]  # fmt: skip
    for i in range(n_layers):
        size = int(rng.uniform(0.2, 0.45) * min(h, w))
        tex = _texture(rng, 2 * size + 8, 2 * size + 8)
        radii = rng.uniform(0.5, 1.0, 2) * size
        center = np.array([size + 4, size + 4], float)
        pos = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h])
        pose = np.array([[1, 0, pos[0] - center[0]], [0, 1, pos[1] - center[1]], [0, 0, 1]], float)
        step = _affine(rng, max_shift, 0.08, 0.05, pos)
        kind = "ellipse" if rng.random() < 0.5 else "rect"
        layers.append(Layer(tex, kind, center, radii, pose, step, float(50 - 10 * i)))
    return layers


def _inside(layer: Layer, c: np.ndarray) -> np.ndarray:
    """Which canonical coordinates c (2, ...) lie on the layer's shape."""
    if layer.kind == "background":
        return np.ones(c.shape[1:], bool)
    d = (c - layer.center.reshape(2, *([1] * (c.ndim - 1)))) / layer.radii.reshape(2, *([1] * (c.ndim - 1)))
    if layer.kind == "ellipse":
        return (d**2).sum(axis=0) <= 1.0
    return (np.abs(d) <= 1.0).all(axis=0)


def _pose_at(layer: Layer, k: int) -> np.ndarray:
    return np.linalg.matrix_power(layer.step, k) @ layer.pose


def _apply(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return np.tensordot(m[:2, :2], xy, axes=1) + m[:2, 2].reshape(2, *([1] * (xy.ndim - 1)))


def render(layers: list[Layer], h: int, w: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame k as (uint8 image (h, w, 3), index of the top layer per pixel)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    xy = np.stack([xs, ys])
    image = np.zeros((h, w, 3), np.float32)
    top = np.zeros((h, w), np.int32)
    for i, layer in enumerate(layers):
        c = _apply(np.linalg.inv(_pose_at(layer, k)), xy)
        mask = _inside(layer, c)
        for ch in range(3):
            sampled = ndimage.map_coordinates(layer.texture[..., ch], [c[1], c[0]], order=1, mode="reflect")
            image[..., ch] = np.where(mask, sampled, image[..., ch])
        top = np.where(mask, i, top)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), top


def ground_truth(layers: list[Layer], h: int, w: int, k: int) -> dict[str, np.ndarray]:
    """Flow (h, w, 2) from frame k to k+1, occlusion mask (1 = not visible in frame k+1), depth (h, w)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    xy = np.stack([xs, ys])
    _, top = render(layers, h, w, k)
    _, top_next = render(layers, h, w, k + 1)
    flow = np.zeros((2, h, w))
    depth = np.zeros((h, w))
    for i, layer in enumerate(layers):
        sel = top == i
        flow[:, sel] = (_apply(layer.step, xy) - xy)[:, sel]
        depth[sel] = layer.depth
    dest = xy + flow
    outside = (dest[0] < 0) | (dest[0] > w - 1) | (dest[1] < 0) | (dest[1] > h - 1)
    dx = np.clip(np.rint(dest[0]), 0, w - 1).astype(int)
    dy = np.clip(np.rint(dest[1]), 0, h - 1).astype(int)
    occluded = outside | (top_next[dy, dx] != top)
    return {"flow": flow.transpose(1, 2, 0).astype(np.float32), "occluded": occluded, "depth": depth.astype(np.float32)}


def write_chairs(root: str | Path, n_pairs: int, h: int = 384, w: int = 512, seed: int = 0,
                 val_every: int = 5) -> Path:  # fmt: skip
    """A FlyingChairs-layout tree: data/NNNNN_img1.ppm, _img2.ppm, _flow.flo and FlyingChairs_train_val.txt
    (1 = train, 2 = val; every `val_every`-th pair is val)."""
    root = Path(root)
    (root / "data").mkdir(parents=True, exist_ok=True)
    split = []
    for i in range(n_pairs):
        rng = np.random.default_rng([seed, i])
        layers = make_scene(rng, h, w, n_layers=int(rng.integers(2, 6)))
        stem = root / "data" / f"{i + 1:05d}"
        write_image(f"{stem}_img1.ppm", render(layers, h, w, 0)[0])
        write_image(f"{stem}_img2.ppm", render(layers, h, w, 1)[0])
        write_flo(f"{stem}_flow.flo", ground_truth(layers, h, w, 0)["flow"])
        split.append("2" if val_every and (i + 1) % val_every == 0 else "1")
    (root / "FlyingChairs_train_val.txt").write_text("\n".join(split) + "\n")
    return root


def _final_pass(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sintel's final pass adds blur and atmospheric effects: a blur, a haze and noise here."""
    blurred = ndimage.gaussian_filter(image.astype(np.float32), (1.0, 1.0, 0))
    haze = 0.85 * blurred + 0.15 * 180.0 + rng.normal(0, 2.0, image.shape)
    return np.clip(np.rint(haze), 0, 255).astype(np.uint8)


def write_sintel(root: str | Path, scenes: list[str] | int = 3, frames: int = 4, h: int = 436 // 2,
                 w: int = 1024 // 2, seed: int = 0, n_layers: int | None = None,
                 max_shift: float = 4.0) -> Path:  # fmt: skip
    """An MPI-Sintel-layout tree under root/training: clean/ and final/ frames (frame_0001.png ...), flow/,
    occlusions/, invalid/ and depth/ for every frame but the last of each scene. Each scene has `n_layers`
    moving shapes over a moving background (2-5 at random when None); the background moves by up to half of
    `max_shift` px per frame, the shapes by up to `max_shift`."""
    root = Path(root) / "training"
    names = [f"scene_{i + 1}" for i in range(scenes)] if isinstance(scenes, int) else list(scenes)
    for si, scene in enumerate(names):
        rng = np.random.default_rng([seed, 1000 + si])
        n = int(rng.integers(2, 6)) if n_layers is None else n_layers
        layers = make_scene(rng, h, w, n_layers=n, max_shift=max_shift)
        for k in range(frames):
            img, _ = render(layers, h, w, k)
            name = f"frame_{k + 1:04d}"
            write_image(root / "clean" / scene / f"{name}.png", img)
            write_image(root / "final" / scene / f"{name}.png", _final_pass(img, rng))
            if k < frames - 1:
                gt = ground_truth(layers, h, w, k)
                write_flo(root / "flow" / scene / f"{name}.flo", gt["flow"])
                write_dpt(root / "depth" / scene / f"{name}.dpt", gt["depth"])
                write_image(root / "occlusions" / scene / f"{name}.png", (255 * gt["occluded"]).astype(np.uint8))
                write_image(root / "invalid" / scene / f"{name}.png", np.zeros((h, w), np.uint8))
    return root.parent
