"""The square lattice of SACs: neighbourhoods, boundaries, and neighbour sums in numpy."""

from __future__ import annotations

from typing import Literal

import numpy as np

Boundary = Literal["zero_flux", "periodic"]

_OFFSETS = {
    4: ((-1, 0), (1, 0), (0, -1), (0, 1)),
    8: ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)),
}


def neighbour_offsets(neighbours: int) -> tuple[tuple[int, int], ...]:
    """(drow, dcol) of the 4 nearest or 8 surrounding neighbours."""
    try:
        return _OFFSETS[neighbours]
    except KeyError:
        raise ValueError(f"neighbours must be 4 or 8, got {neighbours}") from None


def neighbour_pairs(height: int, width: int, neighbours: int, boundary: Boundary) -> tuple[np.ndarray, ...]:
    """(source j, target i) flat indices of every directed coupling j -> i (i's neighbour j).

    Zero-flux: missing neighbours contribute nothing. Periodic: the lattice wraps (a neighbour that is the
    cell itself, on a 1-wide lattice, is dropped; a neighbour reached two ways counts twice, as in the
    torch backend's rolled sums).
    """
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    src, tar = [], []
    for dr, dc in neighbour_offsets(neighbours):
        r, c = rows + dr, cols + dc
        if boundary == "periodic":
            r, c = r % height, c % width
            ok = np.ones_like(r, dtype=bool)
        else:
            ok = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        j = (r * width + c)[ok]
        i = (rows * width + cols)[ok]
        keep = j != i
        src.append(j[keep])
        tar.append(i[keep])
    return np.concatenate(src).astype(np.int64), np.concatenate(tar).astype(np.int64)


def neighbour_sum_numpy(field: np.ndarray, neighbours: int, boundary: Boundary) -> np.ndarray:
    """sum_{j in nbrs(i)} field_j for a (H, W) field (a straightforward reference for tests)."""
    h, w = field.shape
    src, tar = neighbour_pairs(h, w, neighbours, boundary)
    out = np.zeros(h * w, dtype=field.dtype)
    np.add.at(out, tar, field.reshape(-1)[src])
    return out.reshape(h, w)
