"""Analytic cartesian stimuli with exact flow, for probing the eye and the network (moving edges, grey)."""

from __future__ import annotations

import numpy as np

from raywave.fly.eye import PIXEL_TO_ISO


def moving_edge(
    angle_deg: float,
    speed: float,
    n_frames: int,
    size: int = 436,
    start: float = -60.0,
    on: bool = True,
    low: float = 0.0,
    high: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A bright half-plane advancing along direction `angle_deg` (eye's isotropic frame, counter-clockwise
    from +x, y up) at `speed` isotropic px per frame over a dark one (or a dark one over bright when not `on`).

    Returns frames (T, size, size) and pixel flow (T, size, size, 2) (x right, y down): the advancing side
    moves with the edge, the other side is static.
    """
    theta = np.radians(angle_deg)
    n = np.array([np.cos(theta), np.sin(theta)])
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    px = np.stack([xs - size // 2, ys - size // 2], -1)  # pixel offsets from the centre (x, y-down)
    iso = px @ PIXEL_TO_ISO.T
    proj = iso @ n
    v_px = np.linalg.solve(PIXEL_TO_ISO, speed * n)  # the edge's velocity in pixels per frame
    frames = np.empty((n_frames, size, size), np.float32)
    flow = np.zeros((n_frames, size, size, 2), np.float32)
    for k in range(n_frames):
        moving = proj < start + speed * k  # the advancing half-plane
        frames[k] = np.where(moving, high if on else low, low if on else high)
        flow[k][moving] = v_px
    return frames, flow


def grey(n_frames: int, size: int = 436, value: float = 0.5) -> np.ndarray:
    return np.full((n_frames, size, size), value, np.float32)
