"""The connectome-constrained network: shared parameters, initial states, simulation and training forward.

    tau_t dV/dt = -V + V_rest,t + sum_e sign_e · n_syn_e · strength_pair(e) · ReLU(V_src(e)) + x(t)

Free parameters (734 for the published connectome): a resting potential and a time constant per cell type and a
non-negative synapse strength per type pair. Fixed: the sign per type pair and the synapse count per (type pair,
du, dv) group. The stimulus adds the same luminance to all photoreceptor (input) types at a column.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from raywave.errors import RaywaveError
from raywave.fly import kernel
from raywave.fly.connectome import Connectome
from raywave.fly.decoder import input_map
from raywave.fly.dynamics import SparseStructure, integrate

INIT = {"v_rest_mean": 0.5, "v_rest_std": 0.05, "tau": 0.05, "strength_scale": 0.01}


def init_parameters(c: Connectome, seed: int) -> dict[str, torch.Tensor]:
    """The free parameters of model `seed`: resting potentials N(0.5, 0.05) drawn from its own generator,
    time constants 0.05 s, strengths 0.01 / mean synapse count of the type pair."""
    g = torch.Generator().manual_seed(seed)
    n_types, n_pairs = len(c.types), len(c.pair_src)
    mean_n = np.bincount(c.edge_type, weights=c.edge_n_syn, minlength=n_pairs) / np.bincount(
        c.edge_type, minlength=n_pairs
    )
    return {
        "v_rest": INIT["v_rest_mean"] + INIT["v_rest_std"] * torch.randn(n_types, generator=g),
        "tau": torch.full((n_types,), INIT["tau"]),
        "strength": torch.from_numpy(INIT["strength_scale"] / mean_n).float(),
    }


class FlyNetwork(nn.Module):
    """The network on a compiled connectome. Parameters are drawn from `seed` (one model per seed)."""

    def __init__(self, connectome: Connectome, seed: int = 0):
        super().__init__()
        self.connectome = c = connectome
        init = init_parameters(c, seed)
        self.v_rest, self.tau, self.strength = (nn.Parameter(init[k]) for k in ("v_rest", "tau", "strength"))
        # fixed parameters
        self.register_buffer("sign", torch.from_numpy(c.pair_sign).float())
        self.register_buffer("n_syn", torch.from_numpy(c.group_n_syn).float())
        # index tables derived from the connectome: rebuilt on construction, not saved (a checkpoint holds the 734
        # free and 2,959 fixed parameters, instead of ~25 MB of tables)
        self.structure = SparseStructure.build(c.edge_src, c.edge_tar, c.n_nodes)
        order = self.structure.order.numpy()
        # the (type pair, du, dv) group of every CSR entry of W and of W^T
        self.register_buffer("csr_group", torch.from_numpy(c.edge_group[order]), persistent=False)
        t_group = c.edge_group[order][self.structure.t_perm.numpy()]
        self.register_buffer("csr_group_t", torch.from_numpy(t_group), persistent=False)
        self.register_buffer("group_pair", torch.from_numpy(c.group_pair), persistent=False)
        self.register_buffer("node_type", torch.from_numpy(c.node_type), persistent=False)
        inputs = np.concatenate([c.nodes_of(t) for t in c.input_types])
        self.register_buffer("input_index", torch.from_numpy(inputs), persistent=False)
        self.n_columns = len(c.nodes_of(c.input_types[0]))
        outputs = np.stack([c.nodes_of(t) for t in c.output_types])
        self.register_buffer("out_index", torch.from_numpy(outputs), persistent=False)
        self.register_buffer("central_index", torch.from_numpy(c.central_nodes), persistent=False)
        self.register_load_state_dict_pre_hook(_accept_saved_tables)
        self._run_tables: kernel.RunTables | None = None
        self._readouts: dict[tuple, kernel.Readout] = {}

    def run_tables(self) -> kernel.RunTables:
        """The edges as runs for the native kernel (built on first use, shared by ensembles of this network)."""
        if self._run_tables is None:
            c = self.connectome
            self._run_tables = kernel.RunTables.build(c.edge_src, c.edge_tar, c.edge_group, c.n_nodes,
                                                      len(c.group_pair), self.input_index.cpu().numpy(),
                                                      self.n_columns)  # fmt: skip
        return self._run_tables

    def readout_tables(self, map_index: torch.Tensor, side: int) -> kernel.Readout:
        """Where the native kernel writes the output neurons on the decoder's side x side input map, column i at
        position map_index[i] (cached per map)."""
        key = (side, map_index.cpu().numpy().tobytes())
        if key not in self._readouts:
            out = self.out_index.cpu().numpy()
            self._readouts[key] = kernel.Readout.build(out, map_index.cpu().numpy(), side)
        return self._readouts[key]

    # -- parameters -----------------------------------------------------------------------------------
    def _apply(self, fn, *args, **kwargs):  # keep the (non-buffer) sparse structure on the module's device
        out = super()._apply(fn, *args, **kwargs)
        self.structure = self.structure.to(self.v_rest.device)
        return out

    @property
    def model_input_index(self) -> torch.Tensor:
        """The input (photoreceptor) neurons of one model, type by type, each in column order."""
        return self.input_index

    @property
    def n_free(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def n_fixed(self) -> int:
        return self.sign.numel() + self.n_syn.numel()

    def per_node(self, per_type: torch.Tensor) -> torch.Tensor:
        """A per-type quantity (n_types,) expanded to every neuron (N,).

        Deterministic: `index_select`'s backward accumulates with index_add_, a serial loop in a fixed order on
        a CPU. Advanced indexing (`per_type[node_type]`) must not be used on a gradient path: its backward is
        index_put_(accumulate=True), which with more than one thread and >= 32,768 elements adds with atomic
        float additions in thread-timing order, so the 45,669 contributions to each of the 65 sums were added in
        a different order on every run (training with 2 threads differed by 1.8e-3 between identical runs)."""
        return per_type.index_select(0, self.node_type)

    def group_weights(self) -> torch.Tensor:
        """Weight sign · n_syn · strength of each (type pair, du, dv) group; every edge of a group shares it.
        (`index_select`, not indexing, for a fixed summation order in the backward; see `per_node`.)"""
        return self.sign.index_select(0, self.group_pair) * self.n_syn * self.strength.index_select(0, self.group_pair)

    def edge_weights(self) -> torch.Tensor:
        """Per-edge weights in CSR order (differentiable in the strengths): one gather from the group table."""
        return self.group_weights().index_select(0, self.csr_group)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Project parameters onto their domain after an optimizer step: strengths ≥ 0."""
        self.strength.clamp_(min=0)

    # -- dynamics -------------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.n_columns:
            raise RaywaveError(
                f"stimulus must have shape (batch, frames, {self.n_columns} columns), got "
                f"{tuple(x.shape)}; render frames with `raywave fly render` or the BoxEye"
            )

    def resting_state(self, batch: int) -> torch.Tensor:
        """(batch, N): every neuron at its type's resting potential."""
        return self.per_node(self.v_rest).unsqueeze(0).expand(batch, -1).clone()

    def forward(self, x: torch.Tensor, dt: float, state: torch.Tensor | None = None, readout: tuple | None = None):
        """Voltages (batch, frames, N) after each stimulus frame x (batch, frames, columns), from `state`.

        With `readout` = a decoder's `readout()` (map_index, side), returns (voltages, map): the map is the
        decoder's input, (batch, frames, side, side, output types), the ReLU of the output neurons' voltages with
        column i at position map_index[i] (the native kernel writes it after each step; see `run_dynamics`)."""
        self._check(x)
        batch, steps, _ = x.shape
        v0 = self.resting_state(batch) if state is None else state
        a = self.per_node(dt / torch.clamp(self.tau, min=dt))
        b = self.per_node(self.v_rest)
        x_tkcb = x.permute(1, 2, 0).unsqueeze(1)  # (T, 1, columns, B)
        out = run_dynamics(self, self.group_weights(), a, b, x_tkcb.to(v0.dtype), v0.T.contiguous(), 1, readout)
        return out.permute(2, 0, 1) if readout is None else (out[0].permute(2, 0, 1), out[1])  # (B, T, N), a view

    def steady_state(
        self, batch: int, dt: float, t_pre: float = 0.5, value: float = 0.5, grad: bool = False
    ) -> torch.Tensor:
        """State after t_pre seconds of uniform grey `value`, from rest (no gradient unless `grad`)."""
        steps = int(round(t_pre / dt))
        if steps <= 0:
            return self.resting_state(batch)
        x = torch.full((batch, steps, self.n_columns), value, dtype=self.v_rest.dtype, device=self.v_rest.device)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return self(x, dt)[:, -1]

    def fade_in_state(
        self, first_frame: torch.Tensor, dt: float, t_fade: float = 0.5, grad: bool = False
    ) -> torch.Tensor:
        """State after the first frame (batch, columns) faded in from grey: contrast ramps 0 -> 1 over t_fade."""
        steps = int(round(t_fade / dt))
        if steps <= 0:
            return self.resting_state(first_frame.shape[0])
        ramp = torch.linspace(0, 1, steps, dtype=first_frame.dtype, device=first_frame.device)
        x = 0.5 + ramp[None, :, None] * (first_frame[:, None, :] - 0.5)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return self(x, dt)[:, -1]

    def initial_state(self, x: torch.Tensor, dt: float, mode: str = "steady", t_pre: float = 0.5) -> torch.Tensor:
        if mode == "steady":
            return self.steady_state(x.shape[0], dt, t_pre)
        if mode == "fade":
            return self.fade_in_state(x[:, 0], dt, t_pre)
        if mode == "rest":
            return self.resting_state(x.shape[0])
        raise RaywaveError(f"unknown initial state {mode!r}; use steady, fade or rest")

    @torch.no_grad()
    def simulate(self, x: torch.Tensor, dt: float, initial: str = "steady", t_pre: float = 0.5) -> torch.Tensor:
        """Voltages (batch, frames, N) for analysis (no gradient), from a steady, fade-in or resting state."""
        self._check(x)
        return self(x, dt, self.initial_state(x, dt, initial, t_pre))

    # -- read-out -------------------------------------------------------------------------------------
    def responses(self, voltages: torch.Tensor, cell_type: str, central: bool = False) -> torch.Tensor:
        """A type's voltages (..., columns) — or its central column's (...) — from (..., N) voltages."""
        if central:
            return voltages[..., self.connectome.central_node(cell_type)]
        return voltages[..., torch.from_numpy(self.connectome.nodes_of(cell_type)).to(voltages.device)]

    def output_index(self) -> torch.Tensor:
        """(n_output_types, columns) node indices of the output types (decoder input)."""
        return self.out_index

    def output_voltages(self, voltages: torch.Tensor) -> torch.Tensor:
        """The output types' voltages (B, T, n_output_types, columns) from (B, T, N) voltages: the decoder input.

        Equal to `voltages[..., output_index()]`, laid out (B, T, columns, types) in memory for the decoder's
        channels-last maps, with a backward that writes the (unique) nodes' gradients in place of an
        accumulating scatter."""
        b, t, _ = voltages.shape
        c, n = self.out_index.shape
        flat = self.out_index.T.reshape(-1)
        return _SelectNodes.apply(voltages, flat).view(b, t, n, c).transpose(-1, -2)


def run_dynamics(net, gw: torch.Tensor, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, v0: torch.Tensor,
                 k: int, readout: tuple | None = None):  # fmt: skip
    """K models' integration on `net` (a FlyNetwork, or a FlyEnsemble of k models): gw (K·groups,) group weights,
    a and b (K·N,), x (T, K, columns, B), v0 (K·N, B) -> (T, K·N, B). The native kernel on the CPU when it
    builds (`raywave.fly.kernel`), else the torch sparse-product path (`raywave.fly.dynamics`).

    With `readout` (map_index, side) -> ((T, K·N, B), the decoder's input map (B, T, side, side, K·types)): the
    native kernel writes the map as it integrates, and its adjoint reads the map's gradient directly (no gather
    of the output neurons, no dense (T, K·N, B) gradient); the torch path builds the map from the voltages."""
    if kernel.available(v0.device, v0.dtype):
        tables = net.readout_tables(*readout) if readout is not None else None
        return kernel.integrate(gw, a, b, x, v0, net.run_tables(), k, net.model_input_index, tables)
    steps, _, cols, batch = x.shape
    n_in = len(net.input_index) // (k * cols)
    x_in = x.repeat(1, 1, n_in, 1).reshape(steps, -1, batch)  # (T, K·M, B): same luminance for every input type
    w_t = gw.detach().index_select(0, net.csr_group_t)  # W^T's values: no gradient needed
    v = integrate(gw.index_select(0, net.csr_group), a.unsqueeze(1), b.unsqueeze(1), x_in, v0, net.structure,
                  net.input_index, w_t)  # fmt: skip
    if readout is None:
        return v
    return v, input_map(net.output_voltages(v.permute(2, 0, 1)), *readout)


#: index tables that checkpoints written before they became derived-only still carry
_SAVED_TABLES = ("csr_group", "csr_pair", "node_type", "input_index")


def _accept_saved_tables(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
    """Load older checkpoints: drop their copies of the derived tables, after checking they describe this network."""
    for name in _SAVED_TABLES:
        saved = state_dict.pop(prefix + name, None)
        if saved is None:
            continue
        ours = module.group_pair[module.csr_group] if name == "csr_pair" else getattr(module, name)
        if saved.shape != ours.shape or not torch.equal(saved.to(ours.device), ours):
            errors.append(f"the checkpoint's {name} does not match this connectome; load it with the connectome it "
                          "was trained on")  # fmt: skip


class _SelectNodes(torch.autograd.Function):
    """v.index_select(-1, index) for an index without repeats; the gradient keeps v's memory layout."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.like = torch.empty_like(v, device="meta")
        return v.index_select(-1, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        out = torch.zeros_like(ctx.like, device=grad.device)
        return out.index_copy_(-1, index, grad), None
