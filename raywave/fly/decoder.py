"""The flow decoder on the hex lattice and the task objectives.

ReLU voltages of the output cell types on the (2e+1)² axial map -> hex-masked 5×5 conv (34 -> 8) -> BatchNorm
-> Softplus -> Dropout 0.5 -> hex-masked 5×5 conv (8 -> 3); flow = ch[0:2] / (softplus(ch[2]) + 1).
7,427 parameters for 34 output types. The masks keep the kernel taps of a hexagon of radius 2 in axial
coordinates (19 of 25), so the convolution is a function on the hex lattice.

The maps are channels-last (frames, rows, cols, channels) throughout: the layout the native kernels of
`raywave.fly.hexconv` read (the convolutions, on the lattice where only it matters, and the training-mode batch
norm), and the one oneDNN convolves fastest where they do not serve (about 2× over NCHW for these shapes); a
(B, T, columns, C)-ordered input, as `FlyNetwork.output_voltages` returns, goes onto the map without a transpose.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from raywave.fly import hexconv, hexlattice


class HexConv(nn.Conv2d):
    """A conv2d on axial maps whose kernel is restricted to a hexagonal neighbourhood (`groups` independent
    convolutions side by side: one per ensemble member)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5, groups: int = 1):
        super().__init__(c_in, c_out, kernel, padding=kernel // 2, groups=groups)
        r = kernel // 2
        du, dv = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
        mask = (np.abs(du + dv) <= r).astype(np.float32)
        self.register_buffer("mask", torch.from_numpy(mask))
        with torch.no_grad():
            self.weight.mul_(self.mask)
        self._taps = hexconv.taps(self.mask)  # the unmasked taps, for the native kernel
        self.in_support = self.out_support = None  # `hexconv.Support`s (None: the whole map)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hexconv.hex_conv(x, self.weight, self.bias, self.mask, self.groups, self._taps, self.in_support,
                                self.out_support)


class FlowDecoder(nn.Module):
    """(batch, frames, n_out, columns) output-cell voltages -> (batch, frames, columns, 2) flow.

    With a list of seeds it is K = len(seeds) decoders side by side (an ensemble in one pass): grouped
    convolutions and a BatchNorm over K · hidden channels, so model j's weights are the j-th slice of every
    tensor (`member_state(j)` has the single-decoder layout); input (batch, frames, K · n_out, columns) with
    model j's types at channels j · n_out ..., output (batch, frames, columns, K, 2). Model j is initialised
    from its own seed exactly as a single decoder with that seed."""

    def __init__(
        self,
        n_out: int = 34,
        hidden: int = 8,
        kernel: int = 5,
        extent: int = hexlattice.EXTENT,
        dropout: float = 0.5,
        seed: int | list[int] = 0,
    ):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.seeds = [seed] if isinstance(seed, int) else list(seed)
        self.single, k = isinstance(seed, int), len(self.seeds)
        with torch.random.fork_rng(devices=[]):  # the global generator is neither used nor advanced
            self.conv1 = HexConv(k * n_out, k * hidden, kernel, groups=k)
            self.norm = nn.BatchNorm2d(k * hidden)
            self.conv2 = HexConv(k * hidden, k * 3, kernel, groups=k)
        with torch.no_grad():
            for j, s in enumerate(self.seeds):  # model j's slices drawn from its seed, as a single decoder's
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(s)
                    one = HexConv(n_out, hidden, kernel)
                self.conv1.weight[j * hidden : (j + 1) * hidden] = one.weight
                self.conv1.bias[j * hidden : (j + 1) * hidden] = one.bias
            nn.init.zeros_(self.conv2.weight)  # start from the zero-flow prediction; training moves away from it
            nn.init.zeros_(self.conv2.bias)
        self.extent, self.dropout, self.hidden, self.n_out = extent, dropout, hidden, n_out
        u, v = hexlattice.columns(extent)
        self.register_buffer("flat_index", torch.from_numpy((u + extent) * (2 * extent + 1) + (v + extent)))
        side = 2 * extent + 1
        lattice = np.zeros(side * side, dtype=bool)
        lattice[self.flat_index.numpy()] = True
        # the input map is zero off the lattice and the flow is read on it: the convolutions skip the rest
        self.conv1.in_support = self.conv2.out_support = hexconv.Support(lattice.reshape(side, side))

    @property
    def n_models(self) -> int:
        return len(self.seeds)

    def readout(self) -> tuple[torch.Tensor, int]:
        """(map_index, side): column i of the network's output goes to position map_index[i] of the side x side
        input map (pass to `FlyNetwork.forward(..., readout=)` to get the map from the integration itself)."""
        return self.flat_index, 2 * self.extent + 1

    def forward(self, voltages: torch.Tensor, generator=None) -> torch.Tensor:
        """Flow from voltages; in training mode the dropout mask is drawn from `generator` (one per model for
        an ensemble; training passes them per iteration, so masks never depend on the global seed)."""
        return self.decode(input_map(voltages, *self.readout()), generator)

    def decode(self, maps: torch.Tensor, generator=None) -> torch.Tensor:
        """Flow (batch, frames, columns, [K,] 2) from the input map (batch, frames, side, side, K · n_out): the
        ReLU of the output voltages on the axial map, as `input_map` or the network's readout gives it."""
        b, t, side, _, c = maps.shape
        k, n = self.n_models, len(self.flat_index)
        x = maps.view(b * t, side, side, c).permute(0, 3, 1, 2)  # NCHW shape, channels-last memory
        x = batch_norm(self.conv1(x), self.norm)
        keep = None
        if self.training and self.dropout > 0:  # inverted dropout (see dropout_keep)
            gens = generator if isinstance(generator, list | tuple) else [generator] * k
            keep = dropout_keep(x.shape, self.dropout, gens, x.dtype, x.device)
        x = hexconv.softplus_keep(x, keep)  # softplus, then the dropout
        y = self.conv2(x).permute(0, 2, 3, 1).reshape(b * t, side * side, 3 * k)
        y = y.index_select(1, self.flat_index).view(b * t, n, k, 3)  # (backward: a serial index_add_)
        flow = y[..., :2] / (F.softplus(y[..., 2:].contiguous()) + 1)  # (a strided softplus is ~6x slower)
        return flow.view(b, t, n, 2) if self.single else flow.view(b, t, n, k, 2)

    def member_state(self, j: int) -> dict[str, torch.Tensor]:
        """Model j's state dict in the layout of a single decoder."""
        per = {"conv1": self.hidden, "norm": self.hidden, "conv2": 3}
        out = {}
        for name, value in self.state_dict().items():
            part = name.split(".")[0]
            if name.endswith("mask") or name == "flat_index" or value.dim() == 0:
                out[name] = value.clone()
            else:
                out[name] = value[j * per[part] : (j + 1) * per[part]].clone()
        return out

    def load_member(self, j: int, state: dict[str, torch.Tensor]) -> None:
        """Set model j's slices from a single decoder's state dict."""
        own = self.state_dict()
        per = {"conv1": self.hidden, "norm": self.hidden, "conv2": 3}
        with torch.no_grad():
            for name, value in state.items():
                if name.endswith("mask") or name == "flat_index":
                    continue
                if value.dim() == 0:
                    own[name].copy_(value)
                else:
                    own[name][j * per[name.split(".")[0]] : (j + 1) * per[name.split(".")[0]]].copy_(value)


def batch_norm(x: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
    """norm(x) for x (F, C, H, W). In training mode, for x stored channels last on the CPU, with the native kernel
    (`hexconv.channel_norm`, two passes forward and two backward over the (F·H·W, C) matrix, about 3x faster than
    torch's channels-last batch norm for the decoder's 8 channels per model), the running statistics updated as
    nn.BatchNorm2d does."""
    f, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1)
    out = None
    if norm.training and norm.track_running_stats and norm.affine and rows.is_contiguous():
        out = hexconv.channel_norm(rows.view(-1, c), norm.weight, norm.bias, norm.eps)
    if out is None:
        return norm(x)
    y, mean, var = out
    n = rows.numel() // c
    with torch.no_grad():
        norm.num_batches_tracked.add_(1)
        m = norm.momentum if norm.momentum is not None else 1 / float(norm.num_batches_tracked)
        norm.running_mean.mul_(1 - m).add_(mean, alpha=m)
        norm.running_var.mul_(1 - m).add_(var * (n / max(n - 1, 1)), alpha=m)
    return y.view(f, h, w, c).permute(0, 3, 1, 2)


def input_map(voltages: torch.Tensor, map_index: torch.Tensor, side: int) -> torch.Tensor:
    """The decoder's input map (batch, frames, side, side, channels) from output voltages (batch, frames, channels,
    columns): their ReLU, column i at position map_index[i], zero off the lattice."""
    b, t, c, n = voltages.shape
    grid = voltages.new_zeros(b, t, side * side, c)
    grid[:, :, map_index] = torch.relu(voltages).transpose(-1, -2)  # unique indices: a plain (gather) backward
    return grid.view(b, t, side, side, c)


def dropout_keep(shape, p: float, generators: list, dtype, device) -> torch.Tensor:
    """Inverted-dropout multiplier for NCHW `shape` (K models' channels side by side), laid out like the
    decoder's channels-last maps: values 0 or 1/(1-p). Model j's mask is drawn from generators[j] in (frame, row,
    col, channel) order, so a model's mask is the same alone or in an ensemble.

    For p = 0.5 (flyvis' and the default) and up to 12 channels per model, one random integer per position and
    model gives all its channels' keep bits, looked up as a row of a table already in the maps' layout: 8x fewer
    random numbers than one uniform per element, and no interleaving pass (about 10 ms less per model and step
    on a CPU). Otherwise a uniform per element, kept where it is at least p."""
    n, c, h, w = shape
    k = len(generators)
    per = c // k
    if p == 0.5 and per <= 12:
        words = torch.empty((k, n * h * w), dtype=torch.int64, device=device)
        for j, g in enumerate(generators):  # one stream per model: the only per-model loop of a step
            words[j].random_(0, 1 << per, generator=g)
        bits = torch.arange(1 << per, device=device).unsqueeze(-1) >> torch.arange(per, device=device)
        table = (bits & 1).to(dtype) * 2  # row r: the multipliers of keep bits r
        return table.index_select(0, words.T.reshape(-1)).view(n, h, w, c).permute(0, 3, 1, 2)
    u = torch.empty((n, h, w, k, per), dtype=dtype, device=device)
    for j, g in enumerate(generators):
        u[:, :, :, j] = torch.rand((n, h, w, per), generator=g, dtype=dtype, device=device)
    return u.view(n, h, w, c).ge_(p).mul_(1 / (1 - p)).permute(0, 3, 1, 2)


def l2norm(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Training loss: mean over the batch of sqrt(sum over frames, columns and xy of squared error)."""
    return ((pred - target) ** 2).flatten(1).sum(1).sqrt().mean()


def epe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """End-point error: mean over batch, frames and columns of |pred - target|."""
    return torch.linalg.vector_norm(pred - target, dim=-1).mean()
