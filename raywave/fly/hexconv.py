"""The backward of the decoder's hex-masked convolution as a native CPU kernel (hexconv.cpp): the taps of the
hexagon only (19 of 25), the K models of an ensemble in one call, the input gradient (a convolution pass) and the
weight and bias gradients; results do not depend on the thread count.

`hex_conv(x, weight, bias, mask, groups)` is `F.conv2d(x, weight * mask, bias, padding=r, groups=groups)` for a
channels-last x. Its forward is that library call (oneDNN was faster there: ~20 ms against ~25 ms for the
decoder's first layer on a 2-core CPU); its backward is this kernel's where the native library builds (the switch
`RAYWAVE_FLY_KERNEL` of `raywave.fly.kernel` applies to both kernels), which for K = 8 grouped models took about
55 ms per model against about 80 ms for oneDNN's grouped backward (as fast for one model), measured in isolation.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from raywave.fly import kernel


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    from raywave import native

    lib, _ = native.load(Path(__file__).with_name("hexconv.cpp"), "flyhexconv",
                         flags=(*native.DEFAULT_FLAGS, "-ffp-contract=fast"))  # fmt: skip
    for name in ("hexconv_rows_f32", "hexconv_rows_f64", "hexconv_grad_weight_f32", "hexconv_grad_weight_f64"):
        getattr(lib, name).restype = ctypes.c_int
    return lib


def taps(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(du, dv, flat) of the kernel's unmasked taps, row-major: offsets from the centre and positions in the
    flattened kernel."""
    r = mask.shape[0] // 2
    flat = np.flatnonzero(mask.cpu().numpy().reshape(-1))
    du, dv = flat // mask.shape[1] - r, flat % mask.shape[1] - r
    i32 = lambda a: torch.from_numpy(a.astype(np.int32))  # noqa: E731
    return i32(du), i32(dv), torch.from_numpy(flat)


VECTORS = (1, 2, 5, 10)  # the kernel's instantiations: output channels padded to this many vectors
WEIGHT_GRAD_VECTORS = (1, 2)


def _lanes(dtype: torch.dtype) -> int:
    return 32 // torch.empty(0, dtype=dtype).element_size()  # one AVX vector


def _vectors(channels: int, dtype: torch.dtype, options=VECTORS) -> int:
    """The fewest instantiated vectors that hold `channels` (0: none do)."""
    need = -(-channels // _lanes(dtype))
    return next((n for n in options if n >= need), 0)


def _padded(w: torch.Tensor, vectors: int) -> torch.Tensor:
    """w (..., C) with C padded with zeros to `vectors` vectors."""
    return F.pad(w, (0, vectors * _lanes(w.dtype) - w.shape[-1])).contiguous()


def _check(ok: int) -> None:
    if not ok:  # hex_conv checks the channel counts first (native_serves): this is a bug if it happens
        raise RuntimeError("hexconv: no kernel instantiation for these channel counts")


def _rows(x: torch.Tensor, w: torch.Tensor, du, dv, c_out: int) -> torch.Tensor:
    """The kernel's convolution pass without bias: x (F, H, W, K·CI), w (K, taps, CI, CO) -> (F, H, W, K·CO)."""
    f, h, wd, _ = x.shape
    k, nt, ci, _ = w.shape
    nv = _vectors(c_out, x.dtype)
    w = _padded(w, nv)
    out = x.new_empty(f, h, wd, k * c_out)
    dims = [ctypes.c_int64(v) for v in (nv, f, h, wd, k, ci, c_out, nt)]
    _check(getattr(_library(), f"hexconv_rows_{kernel.dtype_suffix(x.dtype)}")(
        *dims, *map(kernel.pointer, (du, dv, x, w, None, out)), ctypes.c_int(torch.get_num_threads())))  # fmt: skip
    return out


class _HexConv(torch.autograd.Function):
    """conv2d(x, weight * mask, bias, padding=r, groups=K) with x (F, K·CI, H, W) stored channels last: the
    forward is the library's convolution, the backward this kernel's."""

    @staticmethod
    def forward(ctx, x, weight, bias, mask, groups: int, tap_table):
        ctx.save_for_backward(x, weight)
        ctx.groups, ctx.tap_table, ctx.padding = groups, tap_table, mask.shape[0] // 2
        return F.conv2d(x, weight * mask, bias, padding=ctx.padding, groups=groups)

    @staticmethod
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        du, dv, flat = ctx.tap_table
        k, co, ci = ctx.groups, weight.shape[0] // ctx.groups, weight.shape[1]
        w = weight.reshape(k, co, ci, -1).index_select(3, flat).permute(0, 3, 2, 1)  # (K, taps, CI, CO)
        x_cl, gy_cl = x.permute(0, 2, 3, 1).contiguous(), gy.permute(0, 2, 3, 1).contiguous()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:  # a convolution of gy with the weights transposed and the taps mirrored
            gx = _rows(gy_cl, w.transpose(2, 3), -du, -dv, ci).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            f, h, wd, _ = x_cl.shape
            nt = len(flat)
            packed, gb = x.new_empty(k, nt, ci, co), x.new_empty(k * co)
            blocks = min(16, f)  # a fixed split of the frames: sums independent of the thread count
            _check(getattr(_library(), f"hexconv_grad_weight_{kernel.dtype_suffix(x.dtype)}")(
                ctypes.c_int64(_vectors(co, x.dtype, WEIGHT_GRAD_VECTORS)),
                *[ctypes.c_int64(v) for v in (f, h, wd, k, ci, co, nt)],
                *map(kernel.pointer, (du, dv, x_cl, gy_cl, packed, gb)), ctypes.c_int64(blocks),
                ctypes.c_int(torch.get_num_threads())))  # fmt: skip
            gw = weight.new_zeros(k, co, ci, weight.shape[2] * weight.shape[3])
            gw = gw.index_copy_(3, flat, packed.permute(0, 3, 2, 1)).view_as(weight)  # zero at the masked taps
        return gx, gw, gb, None, None, None


def native_serves(x: torch.Tensor, c_in: int, c_out: int) -> bool:
    """Whether the kernel has instantiations for these channel counts (per model) and x's device and dtype."""
    return (x.dtype in (torch.float32, torch.float64) and _vectors(c_out, x.dtype, WEIGHT_GRAD_VECTORS) > 0
            and _vectors(c_in, x.dtype) > 0 and kernel.available(x.device, x.dtype, _library))  # fmt: skip


def hex_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor, groups: int,
             tap_table: tuple | None = None) -> torch.Tensor:  # fmt: skip
    """conv2d(x, weight * mask, bias, padding=r, groups) for x (F, K·CI, H, W) stored channels last (as the
    decoder's maps are), with this kernel's backward where it serves (else all the library's)."""
    co, ci = weight.shape[0] // groups, weight.shape[1]
    if not x.permute(0, 2, 3, 1).is_contiguous() or not native_serves(x, ci, co):
        return F.conv2d(x, weight * mask, bias, padding=mask.shape[0] // 2, groups=groups)
    return _HexConv.apply(x, weight, bias, mask, groups, tap_table if tap_table is not None else taps(mask))
