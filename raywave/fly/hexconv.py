"""The decoder's hex-masked convolution as a native CPU kernel (hexconv.cpp), forward and backward: the taps of the
hexagon only (19 of 25), the K models of an ensemble in one call, work only where the input is nonzero and the
output is read (`Support`); the decoder's training-mode batch norm (`channel_norm`); and its softplus and dropout
in one pass (`softplus_keep`, activation.cpp). Results do not depend on the thread count.

`hex_conv(x, weight, bias, mask, groups, tap_table, in_support, out_support)` is `F.conv2d(x * in_mask, weight *
mask, bias, padding=r, groups=groups) * out_mask` for a channels-last x, with the masks of the two supports (the
whole map by default). The decoder's first layer reads a map that is zero off the lattice (its input support), its
second layer's output is read on the lattice only (its output support). The native kernel serves float32 and float64
on the CPU where it builds (the switch `RAYWAVE_FLY_KERNEL` of `raywave.fly.kernel` applies to both fly kernels);
the library convolution serves everything else. On a 2-core CPU (160 frames, one model) the decoder's first layer
took about 10 ms forward against oneDNN's 19 ms, and 13 ms for its input gradient against 29 ms for the earlier
native kernel that formed every position and kept all 34 output channels' weights in one pass.
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
    for name in ("hexconv_grad_weight_f32", "hexconv_grad_weight_f64"):
        getattr(lib, name).restype = ctypes.c_int
    for name in ("hexconv_conv_f32", "hexconv_conv_f64", "norm_forward_f32", "norm_forward_f64", "norm_backward_f32",
                 "norm_backward_f64"):  # fmt: skip
        getattr(lib, name).restype = None
    return lib


def taps(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(du, dv, flat) of the kernel's unmasked taps, row-major: offsets from the centre and positions in the
    flattened kernel."""
    r = mask.shape[0] // 2
    flat = np.flatnonzero(mask.cpu().numpy().reshape(-1))
    du, dv = flat // mask.shape[1] - r, flat % mask.shape[1] - r
    i32 = lambda a: torch.from_numpy(a.astype(np.int32))  # noqa: E731
    return i32(du), i32(dv), torch.from_numpy(flat)


class Support:
    """Where on an (H, W) map a convolution's input may be nonzero, or its output is formed: one contiguous segment
    of every row (as the hex lattice's rows are on the axial map)."""

    def __init__(self, mask: np.ndarray):
        mask = np.asarray(mask, dtype=bool)
        seg = np.zeros((mask.shape[0], 2), dtype=np.int32)
        seg[:, 1] = -1  # an empty row: hi < lo
        for u, row in enumerate(mask):
            on = np.flatnonzero(row)
            if len(on) and on[-1] - on[0] + 1 != len(on):
                raise ValueError(f"support row {u} is not one contiguous segment")
            if len(on):
                seg[u] = on[0], on[-1]
        self.mask = torch.from_numpy(mask)
        self.segments = torch.from_numpy(seg)  # (H, 2) [lo, hi] of each row

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def full(h: int, w: int) -> Support:
        return Support(np.ones((h, w), dtype=bool))

    @property
    def is_full(self) -> bool:
        return bool(self.mask.all())


WEIGHT_GRAD_VECTORS = (1, 2)  # the weight gradient's instantiations: output channels padded to this many vectors


def _lanes(dtype: torch.dtype) -> int:
    return 32 // torch.empty(0, dtype=dtype).element_size()  # one AVX vector


def _vectors(channels: int, dtype: torch.dtype, options=WEIGHT_GRAD_VECTORS) -> int:
    """The fewest instantiated vectors that hold `channels` (0: none do)."""
    need = -(-channels // _lanes(dtype))
    return next((n for n in options if n >= need), 0)


def _chunked(w: torch.Tensor) -> torch.Tensor:
    """w (K, taps, CI, CO) -> (K, chunks, taps, CI, L): the output channels in chunks of one vector of L lanes
    (zero-padded), each chunk's weights contiguous."""
    lanes = _lanes(w.dtype)
    k, nt, ci, co = w.shape
    chunks = -(-co // lanes)
    w = F.pad(w, (0, chunks * lanes - co))
    return w.view(k, nt, ci, chunks, lanes).permute(0, 3, 1, 2, 4).contiguous()


def _like(x: torch.Tensor, *others) -> bool:
    """Whether the other tensors are given and share x's dtype and device (what a native call of x needs)."""
    return all(t is not None and t.dtype == x.dtype and t.device == x.device for t in others)


def _check(ok: int) -> None:
    if not ok:  # hex_conv checks the channel counts first (native_serves): this is a bug if it happens
        raise RuntimeError("hexconv: no kernel instantiation for these channel counts")


def _dims(x: torch.Tensor, k: int, ci: int, co: int, nt: int) -> list:
    f, h, wd, _ = x.shape
    return [ctypes.c_int64(v) for v in (f, h, wd, k, ci, co, nt)]


def _conv(x: torch.Tensor, w: torch.Tensor, bias, du, dv, in_seg, out_seg) -> torch.Tensor:
    """The kernel's convolution: x (F, H, W, K·CI), w (K, taps, CI, CO) -> (F, H, W, K·CO), zero off out_seg."""
    k, nt, ci, co = w.shape
    w = _chunked(w)  # (held here: the call only gets its address)
    out = x.new_empty(*x.shape[:3], k * co)
    getattr(_library(), f"hexconv_conv_{kernel.dtype_suffix(x.dtype)}")(
        *_dims(x, k, ci, co, nt), *map(kernel.pointer, (du, dv, in_seg, out_seg, x, w, bias, out)),
        ctypes.c_int(torch.get_num_threads()))  # fmt: skip
    return out


def _weight_grad(x, gy, k: int, ci: int, co: int, tap_table, in_seg, out_seg):
    """(K, taps, CI, CO) weight and (K·CO,) bias gradients from channels-last x and gy."""
    du, dv, flat = tap_table
    packed, gb = x.new_empty(k, len(flat), ci, co), x.new_empty(k * co)
    blocks = min(16, x.shape[0])  # a fixed split of the frames: sums independent of the thread count
    _check(getattr(_library(), f"hexconv_grad_weight_{kernel.dtype_suffix(x.dtype)}")(
        ctypes.c_int64(_vectors(co, x.dtype)), *_dims(x, k, ci, co, len(flat)),
        *map(kernel.pointer, (du, dv, in_seg, out_seg, x, gy, packed, gb)), ctypes.c_int64(blocks),
        ctypes.c_int(torch.get_num_threads())))  # fmt: skip
    return packed, gb


class _HexConv(torch.autograd.Function):
    """conv2d(x on in_support, weight * mask, bias, padding=r, groups=K) on out_support, with x (F, K·CI, H, W)
    stored channels last (and the result too)."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, tap_table, in_support: Support, out_support: Support):
        k, co, ci = groups, weight.shape[0] // groups, weight.shape[1]
        du, dv, flat = tap_table
        w = weight.reshape(k, co, ci, -1).index_select(3, flat).permute(0, 3, 2, 1)  # (K, taps, CI, CO)
        x_cl = x.permute(0, 2, 3, 1)
        y = _conv(x_cl, w, bias.contiguous(), du, dv, in_support.segments, out_support.segments)
        ctx.save_for_backward(x, w)
        ctx.tap_table, ctx.supports, ctx.weight_shape = tap_table, (in_support, out_support), weight.shape
        return y.permute(0, 3, 1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        du, dv, flat = ctx.tap_table
        k, nt, ci, co = w.shape
        ins, outs = (s.segments for s in ctx.supports)
        x_cl, gy_cl = x.permute(0, 2, 3, 1), gy.permute(0, 2, 3, 1).contiguous()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:  # gy convolved with the weights transposed, the taps mirrored (row-major)
            mirrored = w.transpose(2, 3).flip(1)
            gx = _conv(gy_cl, mirrored, None, -du.flip(0), -dv.flip(0), outs, ins).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            packed, gb = _weight_grad(x_cl, gy_cl, k, ci, co, ctx.tap_table, ins, outs)
            gw = packed.new_zeros(k, co, ci, ctx.weight_shape[2] * ctx.weight_shape[3])
            gw = gw.index_copy_(3, flat, packed.permute(0, 3, 2, 1)).view(ctx.weight_shape)  # zero at masked taps
        return gx, gw, gb, None, None, None, None


NORM_BLOCKS = 64  # a fixed split of the rows for the batch norm's sums: independent of the thread count


class _ChannelNorm(torch.autograd.Function):
    """Batch norm in training mode over the rows of x (N, C): -> (y, mean, biased variance); see hexconv.cpp."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps: float):
        n, c = x.shape
        gamma, beta = gamma.contiguous(), beta.contiguous()
        y = torch.empty_like(x)
        mean, var, invstd = x.new_empty(c), x.new_empty(c), x.new_empty(c)
        getattr(_library(), f"norm_forward_{kernel.dtype_suffix(x.dtype)}")(
            ctypes.c_int64(n), ctypes.c_int64(c), *map(kernel.pointer, (x, gamma, beta)), ctypes.c_double(eps),
            *map(kernel.pointer, (y, mean, var, invstd)), ctypes.c_int64(NORM_BLOCKS),
            ctypes.c_int(torch.get_num_threads()))  # fmt: skip
        ctx.save_for_backward(x, gamma, mean, invstd)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, _g_mean, _g_var):
        x, gamma, mean, invstd = ctx.saved_tensors
        n, c = x.shape
        gy = gy.contiguous()
        gx, g_gamma, g_beta = torch.empty_like(x), x.new_empty(c), x.new_empty(c)
        getattr(_library(), f"norm_backward_{kernel.dtype_suffix(x.dtype)}")(
            ctypes.c_int64(n), ctypes.c_int64(c),
            *map(kernel.pointer, (x, gy, mean, invstd, gamma, gx, g_gamma, g_beta)), ctypes.c_int64(NORM_BLOCKS),
            ctypes.c_int(torch.get_num_threads()))  # fmt: skip
        return gx, g_gamma, g_beta, None


def channel_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float):
    """Batch normalisation in training mode over the rows of x (N, C) contiguous, with this library's kernel:
    -> (y, mean, biased variance), or None where the kernel does not serve x."""
    if not (_like(x, gamma, beta) and x.is_contiguous() and x.dim() == 2 and x.shape[0] > 1
            and kernel.available(x.device, x.dtype, _library)):  # fmt: skip
        return None
    return _ChannelNorm.apply(x, gamma, beta, eps)


@functools.lru_cache(maxsize=1)
def _activation_library() -> ctypes.CDLL:
    from raywave import native

    lib, _ = native.load(Path(__file__).with_name("activation.cpp"), "flyactivation",
                         flags=(*native.DEFAULT_FLAGS, "-ffp-contract=fast"))  # fmt: skip
    for name in ("softplus_keep_forward_f32", "softplus_keep_forward_f64", "softplus_keep_backward_f32",
                 "softplus_keep_backward_f64"):  # fmt: skip
        getattr(lib, name).restype = None
    return lib


class _SoftplusKeep(torch.autograd.Function):
    """softplus(z) * keep for z and keep (F, C, H, W) stored channels last (keep: None for none); activation.cpp."""

    @staticmethod
    def forward(ctx, z, keep):
        y = torch.empty_like(z)
        getattr(_activation_library(), f"softplus_keep_forward_{kernel.dtype_suffix(z.dtype)}")(
            ctypes.c_int64(z.numel()), *map(kernel.pointer, (z, keep, y)), ctypes.c_int(torch.get_num_threads()))
        ctx.save_for_backward(z, keep)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        z, keep = ctx.saved_tensors
        gy = gy.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # (z's memory order)
        gz = torch.empty_like(z)
        getattr(_activation_library(), f"softplus_keep_backward_{kernel.dtype_suffix(z.dtype)}")(
            ctypes.c_int64(z.numel()), *map(kernel.pointer, (z, keep, gy, gz)), ctypes.c_int(torch.get_num_threads()))
        return gz, None


def softplus_keep(z: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """F.softplus(z) * keep (keep: the dropout multipliers, None for none) for z (F, C, H, W): one native pass each
    way where z (and keep) are stored channels last on the CPU and the library builds (with glibc the loops call its
    vector exp and log1p: about 4x faster than torch's softplus and multiply for the decoder's maps), else torch."""
    tensors = (z,) if keep is None else (z, keep)
    stored = _like(z, *tensors) and all(
        t.dim() == 4 and t.shape == z.shape and t.permute(0, 2, 3, 1).is_contiguous() for t in tensors)
    if stored and kernel.available(z.device, z.dtype, _activation_library):
        return _SoftplusKeep.apply(z, keep)
    y = F.softplus(z)
    return y if keep is None else y * keep


def native_serves(x: torch.Tensor, c_out: int) -> bool:
    """Whether the kernel serves x's device and dtype and c_out output channels per model."""
    return (x.dtype in (torch.float32, torch.float64) and _vectors(c_out, x.dtype) > 0
            and kernel.available(x.device, x.dtype, _library))  # fmt: skip


def hex_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor, groups: int,
             tap_table: tuple | None = None, in_support: Support | None = None,
             out_support: Support | None = None) -> torch.Tensor:  # fmt: skip
    """conv2d(x on in_support, weight * mask, bias, padding=r, groups) on out_support (zero elsewhere; both
    supports default to the whole map) for x (F, K·CI, H, W); this kernel's where it serves and x is stored
    channels last (as the decoder's maps are), else the library's."""
    co = weight.shape[0] // groups
    h, w = x.shape[2:]
    ins = in_support if in_support is not None else Support.full(h, w)
    outs = out_support if out_support is not None else Support.full(h, w)
    if ins.mask.shape != (h, w) or outs.mask.shape != (h, w):
        raise ValueError(f"supports of shape {tuple(ins.mask.shape)} and {tuple(outs.mask.shape)} for a {h}x{w} map")
    if _like(x, weight, bias) and x.permute(0, 2, 3, 1).is_contiguous() and native_serves(x, co):
        return _HexConv.apply(x, weight, bias, groups, tap_table if tap_table is not None else taps(mask), ins, outs)
    if not ins.is_full:
        x = x * ins.mask.to(x.device, x.dtype)
    y = F.conv2d(x, weight * mask, bias, padding=mask.shape[0] // 2, groups=groups)
    return y if outs.is_full else y * outs.mask.to(y.device, y.dtype)
