"""The hexagonal column lattice of the fly eye in axial coordinates (u, v), and its symmetries.

Columns satisfy |u|, |v|, |u+v| <= extent (721 columns for extent 15), ordered by u ascending, then v — the
order of the published network. A column sits at u·a1 + v·a2 with unit vectors 60° apart; in the eye's
isotropic frame (x right, y up, one unit = one pixel row) that is x = d·(√3/2)·v, y = -d·(u + v/2) for a column
spacing of d pixels. Rotations by 60° and mirror flips map the lattice onto itself: on data they are column
permutations, and on flow vectors (given in the isotropic frame) the matching 2×2 orthogonal matrix.
"""

from __future__ import annotations

import functools

import numpy as np

EXTENT = 15
# Axial maps of the lattice symmetries: (u, v) -> M @ (u, v).
_ROT60 = np.array([[0, -1], [1, 1]])  # +60° about the centre: a1 -> a2, a2 -> a2 - a1
_FLIP = np.array([[1, 1], [0, -1]])  # mirror in the a1 axis: a1 -> a1, a2 -> a1 - a2


def n_columns(extent: int = EXTENT) -> int:
    return 3 * extent * (extent + 1) + 1


@functools.cache
def columns(extent: int = EXTENT, stride: tuple[int, int] = (1, 1)) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) of the lattice's columns (optionally only those on a (u, v) stride sub-lattice), in network order."""
    us, vs = [], []
    for u in range(-extent, extent + 1):
        for v in range(max(-extent, -extent - u), min(extent, extent - u) + 1):
            if u % stride[0] == 0 and v % stride[1] == 0:
                us.append(u)
                vs.append(v)
    u_arr, v_arr = np.array(us, dtype=np.int64), np.array(vs, dtype=np.int64)
    u_arr.setflags(write=False)
    v_arr.setflags(write=False)
    return u_arr, v_arr


def basis(spacing: float = 1.0) -> np.ndarray:
    """Columns of the 2×2 matrix are a1, a2 in the isotropic (x right, y up) frame."""
    return spacing * np.array([[0.0, np.sqrt(3) / 2], [-1.0, -0.5]])


def positions(extent: int = EXTENT, spacing: float = 1.0) -> np.ndarray:
    """(n, 2) isotropic (x, y) positions of the columns."""
    u, v = columns(extent)
    return (basis(spacing) @ np.stack([u, v])).T


def _axial_map(n_rot: int, flip_axis: int) -> np.ndarray:
    """Axial matrix of `flip_axis` (0 none, 1..3 mirrors through the three lattice directions) then n_rot·60°."""
    m = np.eye(2, dtype=np.int64)
    if flip_axis:
        j = flip_axis - 1  # mirror line along a1 rotated by j·60°
        m = np.linalg.matrix_power(_ROT60, j) @ _FLIP @ np.linalg.matrix_power(_ROT60, (6 - j) % 6)
    return np.linalg.matrix_power(_ROT60, n_rot % 6) @ m


def permutation(n_rot: int = 0, flip_axis: int = 0, extent: int = EXTENT) -> np.ndarray:
    """Index array p with out[..., i] = data[..., p[i]] for the transformed field (flip, then rotate)."""
    if flip_axis not in (0, 1, 2, 3):
        raise ValueError(f"flip_axis must be 0 (none) or 1, 2, 3, not {flip_axis}")
    u, v = columns(extent)
    inv = np.round(np.linalg.inv(_axial_map(n_rot, flip_axis))).astype(np.int64)
    su, sv = inv @ np.stack([u, v])  # the column whose value lands on (u, v)
    index = column_index(extent)
    return index[su + extent, sv + extent]


def vector_matrix(n_rot: int = 0, flip_axis: int = 0) -> np.ndarray:
    """2×2 matrix that transforms isotropic (x, y) vectors like the lattice map (orthogonal)."""
    b = basis()
    return b @ _axial_map(n_rot, flip_axis) @ np.linalg.inv(b)


@functools.cache
def column_index(extent: int = EXTENT) -> np.ndarray:
    """(2e+1, 2e+1) array: column index at [u+e, v+e], -1 outside the hexagon."""
    u, v = columns(extent)
    grid = np.full((2 * extent + 1, 2 * extent + 1), -1, dtype=np.int64)
    grid[u + extent, v + extent] = np.arange(len(u))
    grid.setflags(write=False)
    return grid


def to_map(values: np.ndarray, extent: int = EXTENT, fill: float = 0.0) -> np.ndarray:
    """(..., n_columns) -> (..., 2e+1, 2e+1) axial map, `fill` outside the hexagon."""
    u, v = columns(extent)
    out = np.full((*values.shape[:-1], 2 * extent + 1, 2 * extent + 1), fill, dtype=values.dtype)
    out[..., u + extent, v + extent] = values
    return out
