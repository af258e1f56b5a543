"""Optical-flow metrics: end-point error (EPE), 1/3/5 px accuracy, EPE over occluded / non-occluded pixels."""

from __future__ import annotations

import torch


def flow_metrics(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None,
                 occluded: torch.Tensor | None = None) -> dict[str, float | int]:  # fmt: skip
    """Metrics of predicted flow (N, 2, H, W) against ground truth over valid pixels (N, H, W).

    Returns sums and counts as well as means, so results over many batches combine exactly (`combine`)."""
    epe = torch.sum((pred - gt) ** 2, dim=1).sqrt()
    mask = torch.ones_like(epe, dtype=torch.bool) if valid is None else valid >= 0.5
    out: dict[str, float | int] = {"pixels": int(mask.sum()), "epe_sum": float(epe[mask].sum())}
    for px in (1, 3, 5):
        out[f"{px}px_count"] = int((epe[mask] < px).sum())
    if occluded is not None:
        occ = occluded.bool() & mask
        noc = ~occluded.bool() & mask
        out.update(occ_pixels=int(occ.sum()), occ_epe_sum=float(epe[occ].sum()),
                   noc_pixels=int(noc.sum()), noc_epe_sum=float(epe[noc].sum()))  # fmt: skip
    return finish(out)


def combine(parts: list[dict]) -> dict[str, float | int]:
    """Add up the sums and counts of several `flow_metrics` results and recompute the means."""
    total: dict[str, float | int] = {}
    for p in parts:
        for k, v in p.items():
            if k.endswith(("_sum", "_count", "pixels")):
                total[k] = total.get(k, 0) + v
    return finish(total)


def finish(s: dict[str, float | int]) -> dict[str, float | int]:
    out = dict(s)
    n = s.get("pixels", 0)
    out["epe"] = s["epe_sum"] / n if n else float("nan")
    for px in (1, 3, 5):
        out[f"{px}px"] = s[f"{px}px_count"] / n if n else float("nan")
    for pre in ("occ", "noc"):
        if f"{pre}_pixels" in s:
            m = s[f"{pre}_pixels"]
            out[f"{pre}_epe"] = s[f"{pre}_epe_sum"] / m if m else float("nan")
    return out
