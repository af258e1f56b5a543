"""Direction selectivity of the motion-detector cells (T4a-d to ON edges, T5a-d to OFF edges): plain numpy.

For a cell's responses r(θ) >= 0 to edges moving in directions θ (degrees, evenly spaced):

    z = Σ_θ r(θ) · e^{iθ},     DSI = |z| / Σ_θ r(θ)  (0 for no response),     preferred direction = arg z

so a response b + a·cos(θ - θ_p) over evenly spaced directions (b >= a >= 0) has DSI a / 2b and preferred
direction θ_p; a cell that answers one direction only has DSI 1. The response to one direction is the peak of
the central cell's voltage above its value before the edge arrived, rectified at zero.
"""

from __future__ import annotations

import numpy as np
import torch

T4 = ["T4a", "T4b", "T4c", "T4d"]
T5 = ["T5a", "T5b", "T5c", "T5d"]
ANGLES = np.arange(0, 360, 30.0)  # 12 directions


def peak_responses(traces: np.ndarray, baseline: np.ndarray | float) -> np.ndarray:
    """(..., T) voltage traces -> (...) peak above `baseline`, rectified at 0."""
    return np.maximum(np.max(np.asarray(traces) - np.asarray(baseline)[..., None], axis=-1), 0.0)


def direction_selectivity(responses: np.ndarray, angles_deg: np.ndarray = ANGLES) -> tuple[np.ndarray, np.ndarray]:
    """(..., n_directions) non-negative responses -> (DSI (...), preferred direction in degrees [0, 360) (...))."""
    r = np.asarray(responses, dtype=np.float64)
    z = (r * np.exp(1j * np.radians(angles_deg))).sum(-1)
    total = r.sum(-1)
    dsi = np.divide(np.abs(z), total, out=np.zeros_like(total), where=total > 0)
    preferred = np.degrees(np.angle(z)) % 360
    return dsi, np.where(preferred >= 360 - 1e-9, 0.0, preferred)  # -0° rounds to 360.0, meaning 0°


def edge_stimuli(angles_deg: np.ndarray, on: bool, dt: float, frames: int = 24, speed: float = 13.0) -> torch.Tensor:
    """Moving ON or OFF edges in every direction, rendered by the box eye and resampled to dt: (n, T, columns)."""
    from raywave.fly.augment import resample
    from raywave.fly.eye import BoxEye
    from raywave.fly.stimuli import moving_edge

    eye, out = BoxEye(), []
    for angle in angles_deg:
        img, _ = moving_edge(float(angle), speed, frames, on=on, start=-6.5 * frames)
        lum, _ = resample(eye.luminance(torch.from_numpy(img)), None, 24.0, dt)
        out.append(lum)
    return torch.stack(out)


@torch.no_grad()
def edge_tuning(ens, cell_types: list[str], on: bool, dt: float = 0.02, angles_deg: np.ndarray = ANGLES,
                t_pre: float = 0.5) -> dict[str, np.ndarray]:  # fmt: skip
    """Every model's central-cell peak responses to edges in every direction, all models in one pass:
    {type: (K, n_directions)} plus "traces" (K, n_directions, T, types)."""
    x = edge_stimuli(angles_deg, on, dt).to(ens.v_rest.device, ens.v_rest.dtype)
    k = ens.n_models
    xs = x.unsqueeze(0).expand(k, *x.shape).contiguous()
    state = ens.steady_state(len(angles_deg), dt, t_pre)
    v = ens.by_model(ens(xs, dt, state))  # (K, n, T, N)
    nodes = [ens.connectome.central_node(t) for t in cell_types]
    traces = v[..., nodes].cpu().numpy()  # (K, n, T, types)
    rest = ens.by_model(state.unsqueeze(1))[:, :, 0][..., nodes].cpu().numpy()  # (K, n, types)
    peaks = peak_responses(np.moveaxis(traces, 2, -1), rest)  # (K, n, types)
    return {**{t: peaks[..., i] for i, t in enumerate(cell_types)}, "traces": traces}
