"""The fly network's integration as one native CPU kernel (kernel.cpp, built by `raywave.native`), with the
same interface as the torch path of `raywave.fly.dynamics`.

The synaptic matrix is stored as runs of consecutive edges of one (type pair, du, dv) group (see kernel.cpp):
for the published connectome 1,513,231 edges become about 73 k runs, so a step reads about 1 MB of tables
instead of a 12 MB CSR matrix, and K models share the tables (one call takes them one after another, so a
model's state stays in the caches). One call integrates all steps (the Euler update fused with the synaptic sums)
and, with a `Readout`, writes the decoder's input map after every step; one call runs the adjoint
and, inside its transposed product (which reads the same values), the gradient of the 2,355 group weights (the
strengths' gradient then follows by a 2,355-entry gather's backward, not a 1.5 M-edge index_add). Every array is
laid out step by step (T, K·N, B).

Used on the CPU when a C++ compiler is available (`RAYWAVE_FLY_KERNEL=torch` forces the torch path, `native`
makes a failed build an error); results agree with the torch path to rounding and are bit for bit reproducible
at any thread count (each output is summed by one thread in a fixed order).
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raywave.errors import RaywaveError

BLOCK = 512  # target (source) neurons per task: a block's sums stay in L1


@dataclass
class Runs:
    tar: torch.Tensor  # (R,) int32 first target neuron of each run
    src: torch.Tensor  # (R,) int32 first source neuron
    length: torch.Tensor  # (R,) int32 edges in the run
    group: torch.Tensor  # (R,) int32 the run's (type pair, du, dv) group
    ptr: torch.Tensor  # int64 first run of each block (or group), one more entry at the end


@dataclass
class RunTables:
    """The connectome's edges as runs, in the two orders the kernels read them."""

    n: int
    n_groups: int
    forward: Runs  # by target block, then group
    backward: Runs  # by source block, then group
    in_col: torch.Tensor  # (N,) int32 column of an input neuron's luminance, -1 for others

    @classmethod
    def build(cls, src: np.ndarray, tar: np.ndarray, group: np.ndarray, n: int, n_groups: int,
              input_index: np.ndarray, n_columns: int) -> RunTables:  # fmt: skip
        in_col = np.full(n, -1, dtype=np.int32)
        in_col[input_index] = np.arange(len(input_index)) % n_columns
        fwd = _runs(src, tar, group, tar // BLOCK, n_blocks=-(-n // BLOCK))
        bwd = _runs(src, tar, group, src // BLOCK, n_blocks=-(-n // BLOCK), along_source=True)
        return cls(n, n_groups, fwd, bwd, torch.from_numpy(in_col))


@dataclass
class Readout:
    """Where the decoder reads the output neurons on its (side x side) axial input map: output type c's neuron at
    column i, nodes[c·columns + i], goes to position pos[i], channel c; `off` are the map's positions off the
    lattice (always zero)."""

    nodes: torch.Tensor  # (types · columns,) int32
    pos: torch.Tensor  # (columns,) int32
    off: torch.Tensor  # int32
    n_out: int  # output types (channels per model)
    side: int

    @classmethod
    def build(cls, out_index: np.ndarray, map_index: np.ndarray, side: int) -> Readout:
        """out_index (types, columns): the node of every output type and column; map_index (columns,): the
        column's position on the map."""
        off = np.setdiff1d(np.arange(side * side), map_index)
        i32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32))  # noqa: E731
        return cls(i32(out_index.reshape(-1)), i32(map_index), i32(off), out_index.shape[0], side)

    @property
    def columns(self) -> int:
        return len(self.pos)

    def layout(self) -> _MapLayout:
        """The kernel's view of these tables (kernel.cpp's MapLayout; valid while this object lives)."""
        return _MapLayout(*map(pointer, (self.nodes, self.pos, self.off)), len(self.off), self.n_out, self.columns,
                          self.side**2)  # fmt: skip


class _MapLayout(ctypes.Structure):
    _fields_ = [("nodes", ctypes.c_void_p), ("pos", ctypes.c_void_p), ("off", ctypes.c_void_p),
                ("n_off", ctypes.c_int64), ("O", ctypes.c_int64), ("cols", ctypes.c_int64),
                ("P", ctypes.c_int64)]  # fmt: skip


def _runs(src, tar, group, block, n_blocks: int, along_source: bool = False) -> Runs:
    """Edges sorted by (block, group, position) and cut into maximal runs of consecutive targets and sources."""
    pos = src if along_source else tar
    order = np.lexsort((pos, group, block))
    s, t, g, b = src[order], tar[order], group[order], block[order]
    start = np.ones(len(s), dtype=bool)
    start[1:] = (b[1:] != b[:-1]) | (g[1:] != g[:-1]) | (t[1:] != t[:-1] + 1) | (s[1:] != s[:-1] + 1)
    first = np.flatnonzero(start)
    length = np.diff(np.append(first, len(s)))
    ptr = np.searchsorted(b[first], np.arange(n_blocks + 1))
    i32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32))  # noqa: E731
    return Runs(i32(t[first]), i32(s[first]), i32(length), i32(g[first]), torch.from_numpy(ptr.astype(np.int64)))


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    from raywave import native

    lib, _ = native.load(Path(__file__).with_name("kernel.cpp"), "flykernel",
                         flags=(*native.DEFAULT_FLAGS, "-ffp-contract=fast"))  # fmt: skip
    for name in ("fly_forward_f32", "fly_forward_f64", "fly_backward_f32", "fly_backward_f64"):
        getattr(lib, name).restype = None
    return lib


def available(device: torch.device, dtype: torch.dtype, library=None) -> bool:
    """Whether the native kernel serves this device and dtype (built on first use; a failed build falls back
    to the torch path unless RAYWAVE_FLY_KERNEL=native). `library`: the loader of another native library of the
    fly network under the same switch (the decoder convolution's backward, `raywave.fly.hexconv`)."""
    mode = os.environ.get("RAYWAVE_FLY_KERNEL", "auto")
    if mode not in ("auto", "native", "torch"):
        raise RaywaveError(f"RAYWAVE_FLY_KERNEL={mode!r}: use auto, native or torch")
    if mode == "torch" or device.type != "cpu" or dtype not in (torch.float32, torch.float64):
        return False
    try:
        (library or _library)()
    except (RaywaveError, ImportError, OSError) as exc:
        if mode == "native":
            raise RaywaveError(f"RAYWAVE_FLY_KERNEL=native but the kernel is unavailable: {exc}") from None
        return False
    return True


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Have glibc's malloc serve blocks up to `limit` bytes from its heap and keep freed memory for reuse
    (mallopt M_MMAP_THRESHOLD and M_TRIM_THRESHOLD). A training step allocates and frees the same arrays every
    iteration (states, adjoint, decoder maps: ~100 MB per model); by default glibc hands blocks over 32 MB back to
    the system when freed, and the next step pays a page fault per 4 kB to get them again, which cost ~40% of a
    K = 8 step on the CPU. Process-wide (the resident size stays at its peak): called by the training loop and
    the benchmarks, never on import. False where it does not apply (no glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, limit)) and bool(libc.mallopt(m_trim_threshold, 2 * limit))
    except (OSError, AttributeError):
        return False


def pointer(t: torch.Tensor | None):
    """A tensor's data for a ctypes call (None: a null pointer); shared with `raywave.fly.hexconv`."""
    return ctypes.c_void_p(t.data_ptr() if t is not None else 0)


def _i(v: int):
    return ctypes.c_int64(v)


def _run_args(r: Runs) -> list:
    return [pointer(t) for t in (r.tar, r.src, r.length, r.group, r.ptr)]


def dtype_suffix(dtype: torch.dtype) -> str:
    return "f64" if dtype == torch.float64 else "f32"


class _Integrate(torch.autograd.Function):
    """K models' Euler integration over T steps; see kernel.cpp. Returns the states after each step (T, K·N, B)
    and, with a `Readout`, the decoder's input map (B, T, side, side, K·types) (else an empty tensor)."""

    @staticmethod
    def forward(ctx, gw, a, b, x, v0, tables: RunTables, k: int, input_index, readout: Readout | None):
        steps, _, cols, batch = x.shape
        n, g = tables.n, tables.n_groups
        keep = torch.is_grad_enabled() or any(ctx.needs_input_grad[:5])
        gw, a, b, x, v0 = (t.contiguous() for t in (gw, a, b, x, v0))
        states = v0.new_empty(steps + 1, k * n, batch)
        states[0] = v0
        drive = v0.new_empty(steps, k * n, batch) if keep else None
        rbuf = v0.new_empty(2, k * n, batch)
        r, f = readout, tables.forward
        grid = v0.new_empty(batch, steps, r.side, r.side, k * r.n_out) if r is not None else v0.new_empty(0)
        layout = ctypes.byref(r.layout()) if r is not None else None
        getattr(_library(), f"fly_forward_{dtype_suffix(v0.dtype)}")(
            _i(k), _i(n), _i(batch), _i(steps), _i(g), _i(cols), *_run_args(f), _i(len(f.ptr) - 1), _i(BLOCK),
            *map(pointer, (gw, a, b, x, tables.in_col, states, drive, rbuf)), layout,
            pointer(grid if r is not None else None), ctypes.c_int(torch.get_num_threads()))  # fmt: skip
        if keep:
            ctx.tables, ctx.k, ctx.input_index, ctx.cols, ctx.readout = tables, k, input_index, cols, readout
            ctx.save_for_backward(gw, a, states, drive)
            ctx.set_materialize_grads(False)
        return states[1:], grid

    @staticmethod
    def backward(ctx, g_out, g_grid):
        gw, a, states, drive = ctx.saved_tensors
        tables, k = ctx.tables, ctx.k
        n, g = tables.n, tables.n_groups
        steps, batch = states.shape[0] - 1, states.shape[2]
        g_out = g_out.contiguous() if g_out is not None else None
        ro = ctx.readout if g_grid is not None else None
        g_grid = g_grid.contiguous() if ro is not None else None
        layout = ctypes.byref(ro.layout()) if ro is not None else None
        need_x = ctx.needs_input_grad[3]
        mu = states.new_empty(steps, k * n, batch) if need_x else None  # a * dL/dV[s+1] of every step
        mbuf = None if need_x else states.new_empty(k * n, batch)
        lam = states.new_empty(k * n, batch)
        grad_a, grad_b = states.new_empty(k * n), states.new_empty(k * n)
        grad_gw = torch.empty_like(gw) if ctx.needs_input_grad[0] else None
        lbuf = states.new_empty(2, k * n, batch)
        r = tables.backward
        getattr(_library(), f"fly_backward_{dtype_suffix(states.dtype)}")(
            _i(k), _i(n), _i(batch), _i(steps), _i(g), *_run_args(r), _i(len(r.ptr) - 1), _i(BLOCK),
            *map(pointer, (gw, a, states, drive, g_out, mu, mbuf, lam, grad_a, grad_b, grad_gw, lbuf)), layout,
            pointer(g_grid), ctypes.c_int(torch.get_num_threads()))  # fmt: skip
        grad_x = None
        if need_x:  # every input type of a column receives the column's luminance
            per = mu.view(steps, k, n, batch)[:, :, ctx.input_index]
            grad_x = per.view(steps, k, -1, ctx.cols, batch).sum(2)  # (T, K, C, B)
        return grad_gw, grad_a.view_as(a), grad_b.view_as(a), grad_x, lam, None, None, None, None


def integrate(gw: torch.Tensor, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, v0: torch.Tensor,
              tables: RunTables, k: int, input_index: torch.Tensor, readout: Readout | None = None):  # fmt: skip
    """K models from v0 (K·N, B): gw (K·groups,) group weights, a and b (K·N,) per neuron, x (T, K, C, B)
    luminance per column; `input_index` the input neurons of one model. -> (T, K·N, B), and with a `readout`
    also the decoder's input map (B, T, side, side, K·types): the ReLU of the output neurons' voltages."""
    states, grid = _Integrate.apply(gw, a, b, x, v0, tables, k, input_index, readout)
    return states if readout is None else (states, grid)
