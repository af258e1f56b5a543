"""K fly-network models in one network pass: parameters (K × 65 resting potentials, K × 65 time constants,
K × 604 strengths) side by side, one block-diagonal synaptic matrix, one integration, one adjoint.

Model j's neurons are rows j·N ... (j+1)·N - 1 of the K·N-neuron state, its edges the j-th block of the
block-diagonal W, its per-type and per-pair parameters the j-th rows of (K, ·) tensors. Nothing couples the
blocks, so each model's voltages and gradients are formed by exactly the operations (and, for the synaptic sums,
in exactly the order) of a single `FlyNetwork`; `member_state(j)` / `load_member(j, ...)` convert to and from
the single-model checkpoint layout. Every per-type or per-group gather is a 1-D `index_select` over flattened
(K · n) tables, whose backward is the serial, fixed-order index_add_ (see `FlyNetwork.per_node`).
"""

from __future__ import annotations

import torch
from torch import nn

from raywave.fly.connectome import Connectome
from raywave.fly.network import FlyNetwork, _SelectNodes, init_parameters, run_dynamics


def _tiled(index: torch.Tensor, k: int, step: int) -> torch.Tensor:
    """Concatenate k copies of an index table, copy j shifted by j·step (int64)."""
    return torch.cat([index.long() + j * step for j in range(k)])


class FlyEnsemble(nn.Module):
    """K models on one connectome, model j drawn from seeds[j] exactly as `FlyNetwork(connectome, seeds[j])`."""

    def __init__(self, connectome: Connectome, seeds: list[int], template: FlyNetwork | None = None):
        super().__init__()
        self.connectome = c = connectome
        self.seeds = list(seeds)
        k = len(self.seeds)
        base = template if template is not None else FlyNetwork(c, self.seeds[0])
        inits = [init_parameters(c, s) for s in self.seeds]
        for name in ("v_rest", "tau", "strength"):
            setattr(self, name, nn.Parameter(torch.stack([p[name] for p in inits])))
        self.register_buffer("sign", base.sign.clone())
        self.register_buffer("n_syn", base.n_syn.clone())
        self.n_types, self.n_pairs, self.n_groups = len(c.types), len(c.pair_src), len(c.group_pair)
        self.n_nodes, self.n_columns = c.n_nodes, base.n_columns
        self._base = (base.structure, base.csr_group, base.csr_group_t)  # tiled for the torch path when used
        self._torch_tables: dict = {}
        self.register_buffer("node_type", _tiled(base.node_type, k, self.n_types), persistent=False)
        self.register_buffer("group_pair", _tiled(base.group_pair, k, self.n_pairs), persistent=False)
        self.register_buffer("input_index", _tiled(base.input_index, k, self.n_nodes), persistent=False)
        self.register_buffer("model_input_index", base.input_index.clone(), persistent=False)
        self.run_tables = base.run_tables  # the native kernel's tables: one model's, shared by all K
        self.readout_tables = base.readout_tables
        self.register_buffer("central_index", base.central_index.clone(), persistent=False)
        # decoder input: for every column, model, output type -> node of the K·N state
        out = base.out_index.T.long()  # (columns, types)
        flat = out[:, None, :] + self.n_nodes * torch.arange(k)[None, :, None]
        self.register_buffer("out_flat", flat.reshape(-1), persistent=False)
        self.n_out_types = base.out_index.shape[0]

    @property
    def n_models(self) -> int:
        return len(self.seeds)

    def _tiled_tables(self) -> tuple:
        """The block-diagonal CSR structure of the K models and every CSR entry's group, for the torch path
        (built on first use on the parameters' device: K x 1.5 M entries that the native kernel does not need)."""
        dev = self.v_rest.device
        if dev not in self._torch_tables:
            structure, group, group_t = self._base
            k, ng = self.n_models, self.n_groups
            self._torch_tables = {dev: (structure.tile(k).to(dev), _tiled(group, k, ng).to(dev),
                                        _tiled(group_t, k, ng).to(dev))}  # fmt: skip
        return self._torch_tables[dev]

    @property
    def structure(self):
        return self._tiled_tables()[0]

    @property
    def csr_group(self) -> torch.Tensor:
        return self._tiled_tables()[1]

    @property
    def csr_group_t(self) -> torch.Tensor:
        return self._tiled_tables()[2]

    # -- parameters -----------------------------------------------------------------------------------
    def per_node(self, per_type: torch.Tensor) -> torch.Tensor:
        """(K, n_types) -> (K·N,): every neuron's value of its model and type (fixed-order backward)."""
        return per_type.reshape(-1).index_select(0, self.node_type)

    def group_weights(self) -> torch.Tensor:
        """(K·groups,) sign · n_syn · strength of every model's (type pair, du, dv) groups."""
        strength = self.strength.reshape(-1).index_select(0, self.group_pair)
        sign = self.sign.index_select(0, self.group_pair % self.n_pairs)
        return sign * self.n_syn.repeat(self.n_models) * strength

    @torch.no_grad()
    def clamp_(self) -> None:
        self.strength.clamp_(min=0)

    def member_state(self, j: int) -> dict[str, torch.Tensor]:
        """Model j's parameters in the layout of a single `FlyNetwork` state dict."""
        return {"v_rest": self.v_rest[j].detach().clone(), "tau": self.tau[j].detach().clone(),
                "strength": self.strength[j].detach().clone(), "sign": self.sign.clone(),
                "n_syn": self.n_syn.clone()}  # fmt: skip

    @torch.no_grad()
    def load_member(self, j: int, state: dict[str, torch.Tensor]) -> None:
        """Set model j from a single model's state dict (after `FlyNetwork.load_state_dict` checked it)."""
        for name in ("v_rest", "tau", "strength"):
            getattr(self, name)[j].copy_(state[name])

    def finite(self) -> torch.Tensor:
        """(K,) bool: model j's parameters are all finite."""
        k, params = self.n_models, (self.v_rest, self.tau, self.strength)
        return torch.stack([p.detach().view(k, -1).isfinite().all(1) for p in params]).all(0)

    # -- dynamics -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, dt: float, state: torch.Tensor | None = None, readout: tuple | None = None):
        """Voltages (B, T, K·N) — model j's neurons at j·N ... — after each frame of x (K, B, T, columns)
        from `state` (B, K·N) (default: rest); with `readout`, also the decoders' input map (B, T, side, side,
        K·types), model j's types at channels j·types ... (as `FlyNetwork.forward`)."""
        k, batch, steps, cols = x.shape
        if state is None:
            state = self.per_node(self.v_rest).unsqueeze(0).expand(batch, -1)
        a = self.per_node(dt / torch.clamp(self.tau, min=dt))
        b = self.per_node(self.v_rest)
        x_tkcb = x.permute(2, 0, 3, 1).to(state.dtype)  # (T, K, columns, B)
        out = run_dynamics(self, self.group_weights(), a, b, x_tkcb, state.T.contiguous(), k, readout)
        return out.permute(2, 0, 1) if readout is None else (out[0].permute(2, 0, 1), out[1])  # (B, T, K·N) view

    def steady_state(self, batch: int, dt: float, t_pre: float = 0.5, value: float = 0.5) -> torch.Tensor:
        """(B, K·N) after t_pre seconds of uniform grey from rest, no gradient."""
        steps = int(round(t_pre / dt))
        if steps <= 0:
            return self.per_node(self.v_rest).detach().unsqueeze(0).expand(batch, -1).clone()
        x = torch.full((self.n_models, batch, steps, self.n_columns), value, dtype=self.v_rest.dtype,
                       device=self.v_rest.device)  # fmt: skip
        with torch.no_grad():
            return self(x, dt)[:, -1]

    def by_model(self, v: torch.Tensor) -> torch.Tensor:
        """(B, T, K·N) -> (K, B, T, N) view."""
        b, t, _ = v.shape
        return v.view(b, t, self.n_models, self.n_nodes).permute(2, 0, 1, 3)

    def output_voltages(self, v: torch.Tensor) -> torch.Tensor:
        """The decoder input (B, T, K·types, columns), laid out (B, T, columns, K·types) in memory."""
        b, t, _ = v.shape
        cols = len(self.out_flat) // (self.n_models * self.n_out_types)
        return _SelectNodes.apply(v, self.out_flat).view(b, t, cols, -1).transpose(-1, -2)


def member_optimizer_state(opt: torch.optim.Adam, params: list[nn.Parameter], rows: list[int], j: int) -> dict:
    """Model j's Adam state in the layout of a single model's `optimizer.state_dict()` (same parameter order):
    `rows[i]` is how many leading-dimension rows of params[i] belong to one model."""
    state = {}
    for i, (p, r) in enumerate(zip(params, rows, strict=True)):
        s = opt.state.get(p)
        if not s:
            continue
        state[i] = {"step": s["step"].clone(), "exp_avg": _rows(s["exp_avg"], r, j),
                    "exp_avg_sq": _rows(s["exp_avg_sq"], r, j)}  # fmt: skip
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": list(range(len(params)))}
              for g in opt.param_groups]  # fmt: skip
    return {"state": state, "param_groups": groups}


def load_member_optimizer_state(opt: torch.optim.Adam, params: list, rows: list[int], j: int, saved: dict) -> None:
    """Set model j's slices of the ensemble's Adam state from a single model's optimizer state dict."""
    for i, (p, r) in enumerate(zip(params, rows, strict=True)):
        s = saved["state"].get(i, saved["state"].get(str(i)))
        if s is None:
            continue
        own = opt.state[p]
        if not own:
            own["step"] = s["step"].clone()
            own["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            own["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        own["step"] = s["step"].clone()
        _rows(own["exp_avg"], r, j, copy=False).copy_(s["exp_avg"])
        _rows(own["exp_avg_sq"], r, j, copy=False).copy_(s["exp_avg_sq"])


def _rows(t: torch.Tensor, r: int, j: int, copy: bool = True) -> torch.Tensor:
    """Model j's rows of an ensemble tensor: t[j] when r == 0 (a (K, ...) parameter), else t[j·r:(j+1)·r]."""
    part = t[j] if r == 0 else t[j * r : (j + 1) * r]
    return part.clone() if copy else part


def ensemble_sizes(n_models: int, per_pass: int) -> list[int]:
    """Pass sizes for training n_models models per_pass at a time (the last pass may be smaller)."""
    return [min(per_pass, n_models - s) for s in range(0, n_models, per_pass)]


def central_mean(ens: FlyEnsemble, v: torch.Tensor, start: int) -> torch.Tensor:
    """(K, B, types) temporal mean (from frame `start`) of every model's central cells."""
    return ens.by_model(v)[:, :, start:, ens.central_index].mean(2)
