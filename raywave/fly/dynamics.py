"""The hot path: explicit-Euler leaky-integrator dynamics with a sparse synaptic sum and a hand-written adjoint.

    V[k+1] = V[k] + a * (-V[k] + b + W @ relu(V[k]) + x[k]),    a = dt / max(tau, dt) per neuron

W is the (N × N) synapse matrix (row = target, column = source) in CSR form; its values are the per-edge weights
sign · n_syn · strength. One step is one sparse-matrix × dense product (a few ms for 1.5 M edges on a CPU), not a
per-edge gather/scatter. The backward pass is the discrete adjoint of the whole integration: one transposed
product per step for the voltage gradient, and a single sampled dense-dense product (SDDMM) over all steps and
batch entries for the 1.5 M edge-weight gradients — autograd never sees 1.5 M-edge intermediates per step.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class SparseStructure:
    """The fixed sparsity pattern of W and of its transpose (values are supplied per call, in edge order)."""

    n: int
    order: torch.Tensor  # edge index of each CSR entry of W (edges sorted by target, then source)
    crow: torch.Tensor
    col: torch.Tensor
    t_perm: torch.Tensor  # CSR entry of W for each CSR entry of W^T
    t_crow: torch.Tensor
    t_col: torch.Tensor

    @classmethod
    def build(cls, src: np.ndarray, tar: np.ndarray, n: int) -> SparseStructure:
        order = np.lexsort((src, tar))
        s, t = src[order], tar[order]
        crow = np.zeros(n + 1, dtype=np.int64)
        crow[1:] = np.cumsum(np.bincount(t, minlength=n))
        t_perm = np.lexsort((t, s))  # W^T is W sorted by source, then target
        t_crow = np.zeros(n + 1, dtype=np.int64)
        t_crow[1:] = np.cumsum(np.bincount(s, minlength=n))
        i32 = n < 2**31 and len(src) < 2**31
        idx = torch.int32 if i32 else torch.int64

        def tt(a: np.ndarray, dtype=idx) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

        return cls(n, tt(order, torch.int64), tt(crow), tt(s), tt(t_perm, torch.int64), tt(t_crow), tt(t[t_perm]))

    def to(self, device: torch.device | str) -> SparseStructure:
        return SparseStructure(
            self.n, *(getattr(self, f).to(device) for f in ("order", "crow", "col", "t_perm", "t_crow", "t_col"))
        )

    def tile(self, k: int) -> SparseStructure:
        """The block-diagonal structure of k independent copies (an ensemble of k models in one product): copy j
        holds neurons j·n ... (j+1)·n - 1 and edges j·E ... (j+1)·E - 1. Each row keeps its entries in the same
        order, so every model's sums are formed exactly as in a single-model product."""
        if k == 1:
            return self
        nnz = len(self.col)

        def rows(crow: torch.Tensor) -> torch.Tensor:
            parts = [crow[:-1].long() + j * nnz for j in range(k)] + [torch.tensor([k * nnz])]
            return torch.cat(parts)

        def shifted(a: torch.Tensor, step: int) -> torch.Tensor:
            return torch.cat([a.long() + j * step for j in range(k)])

        idx = torch.int32 if k * self.n < 2**31 and k * nnz < 2**31 else torch.int64
        return SparseStructure(k * self.n, shifted(self.order, nnz), rows(self.crow).to(idx),
                               shifted(self.col, self.n).to(idx), shifted(self.t_perm, nnz),
                               rows(self.t_crow).to(idx), shifted(self.t_col, self.n).to(idx))  # fmt: skip

    def matrix(self, csr_values: torch.Tensor) -> torch.Tensor:
        return _csr(self.crow, self.col, csr_values, self.n)

    def transpose(self, t_values: torch.Tensor) -> torch.Tensor:
        """W^T from its values in W^T's CSR order, i.e. `csr_values[t_perm]`."""
        return _csr(self.t_crow, self.t_col, t_values, self.n)


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the ops used here are stable in practice
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False)


class _Integrate(torch.autograd.Function):
    """Euler integration over T steps in (N, B) layout; returns the states after each step, (T, N, B)."""

    @staticmethod
    def forward(ctx, csr_values, a, b, x, v0, structure: SparseStructure, input_index, t_values):
        # a, b: (N, 1); x: (T, M, B) stimulus for the M input neurons; v0: (N, B)
        steps = x.shape[0]
        n, batch = v0.shape
        w = structure.matrix(csr_values)
        # per-neuron a and b expanded to (N, B): elementwise ops on equal contiguous shapes vectorise, while an
        # (N, 1) operand broadcast over 4 columns runs several times slower per step on a CPU
        a_nb, b_nb = a.expand(n, batch).contiguous(), b.expand(n, batch).contiguous()
        states = v0.new_empty(steps + 1, n, batch)  # V[0..T]
        # relu(V[k]) in (N, T, B) layout: the SDDMM of the backward reads it as an (N, T·B) matrix, copy-free
        rect = v0.new_empty(n, steps, batch)
        drive = v0.new_empty(steps, n, batch)  # -V + b + W relu(V) + x, for the gradient of a
        states[0] = v0
        r = torch.empty_like(v0)
        for k in range(steps):
            torch.clamp_min(states[k], 0, out=r)
            rect[:, k] = r
            d = torch.sub(b_nb, states[k], out=drive[k]).index_add_(0, input_index, x[k])
            d.addmm_(w, r)
            torch.addcmul(states[k], a_nb, d, out=states[k + 1])
        ctx.structure, ctx.input_index = structure, input_index
        ctx.save_for_backward(a, rect, drive, states, t_values)  # states: relu' masks, contiguous per step
        return states[1:]

    @staticmethod
    def backward(ctx, g_out):
        a, rect, drive, states, t_values = ctx.saved_tensors
        structure: SparseStructure = ctx.structure
        n, steps, batch = rect.shape
        wt = structure.transpose(t_values)
        need_w, need_a, need_b, need_x, need_v0 = ctx.needs_input_grad[:5]
        mu = torch.empty_like(rect)  # a * dL/dV[k+1] for every step, (N, T, B) like rect
        mu_drive = torch.zeros_like(rect[:, 0])  # sum over steps of mu * drive, for the gradient of a
        a_nb = a.expand(n, batch).contiguous()
        one_minus_a = 1 - a_nb
        lam = torch.zeros_like(rect[:, 0])  # dL/dV[k+1]
        m, nxt, mask = torch.empty_like(lam), torch.empty_like(lam), torch.empty_like(lam)
        for k in range(steps - 1, -1, -1):
            lam.add_(g_out[k])
            torch.mul(a_nb, lam, out=m)
            mu[:, k] = m
            if need_a:
                mu_drive.addcmul_(m, drive[k])
            # dL/dV[k] = relu'(V[k]) * (W^T mu[k]) + (1 - a) * dL/dV[k+1]; beta=0 ignores nxt's stale values
            torch.gt(states[k], 0, out=mask)  # relu'(V[k]) as 0/1 floats (a bool mask multiplies ~5x slower)
            nxt.addmm_(wt, m, beta=0).mul_(mask).addcmul_(lam, one_minus_a)
            lam, nxt = nxt, lam
        grad_values = grad_a = grad_b = grad_x = None
        if need_w:
            pattern = structure.matrix(torch.zeros_like(t_values))
            mu_nk, rect_nk = mu.view(n, steps * batch), rect.view(n, steps * batch)
            grad_values = torch.sparse.sampled_addmm(pattern, mu_nk, rect_nk.T, beta=0.0).values()
        if need_a:
            grad_a = mu_drive.sum(1, keepdim=True) / a
        if need_b:
            grad_b = mu.view(n, -1).sum(1, keepdim=True)
        if need_x:
            grad_x = mu[ctx.input_index].transpose(0, 1)
        return grad_values, grad_a, grad_b, grad_x, lam if need_v0 else None, None, None, None


def integrate(
    csr_values: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    x: torch.Tensor,
    v0: torch.Tensor,
    structure: SparseStructure,
    input_index: torch.Tensor,
    t_values: torch.Tensor,
) -> torch.Tensor:
    """Run the dynamics; see the module docstring. Shapes: a, b (N, 1); x (T, M, B); v0 (N, B) -> (T, N, B).

    `t_values` are the same weights in the CSR order of W^T (`csr_values[structure.t_perm]`, no gradient flows
    through them); the network builds both from its per-group weight table with one gather each."""
    return _Integrate.apply(csr_values, a, b, x, v0, structure, input_index, t_values)
