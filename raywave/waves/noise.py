"""Counter-based Gaussian noise: a pure function of (seed, step, cell).

Every number is derived by hashing integers, so a run resumed at any step draws exactly the same noise as
an uninterrupted one, on CPU and GPU alike, with no generator state to save. The hash is Chris Wellons'
`lowbias32` (a 32-bit integer permutation) written with int32 ops that torch.compile fuses into the step
kernel; logical right shifts are arithmetic shifts masked to the shifted width.
"""

from __future__ import annotations

import torch

_M1 = 0x7FEB352D
_M2 = 0x846CA68B - (1 << 32)  # as a signed int32
_STREAM2 = 0x68BC21EB
_TWO_PI = 6.283185307179586
_INV_2_24 = 1.0 / (1 << 24)


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int32 tensors (wrapping multiplication)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _M1
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _M2
    return x ^ ((x >> 16) & 0xFFFF)


def hash32_int(x: int) -> int:
    """The same permutation on a Python int (for host-side keys); returns a signed int32 value."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x - (1 << 32) if x >= (1 << 31) else x


def cell_keys(height: int, width: int, device: torch.device | str) -> torch.Tensor:
    """Per-cell hashed indices (int32, (H, W))."""
    idx = torch.arange(height * width, dtype=torch.int32, device=device).reshape(height, width)
    return hash32(idx)


def step_key(seed_key: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Key of one integration step: hash(hash(step) ^ seed_key) (0-d int32 tensors)."""
    return hash32(hash32(step) ^ seed_key)


def standard_normal(cells: torch.Tensor, key: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """N(0, 1) per cell for one step: Box-Muller on two 24-bit uniforms (|z| <= 5.9)."""
    a = hash32(cells ^ key)
    b = hash32(a ^ _STREAM2)
    u1 = ((a & 0xFFFFFF).to(dtype) + 0.5) * _INV_2_24
    u2 = ((b & 0xFFFFFF).to(dtype) + 0.5) * _INV_2_24
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(_TWO_PI * u2)
