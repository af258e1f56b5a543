"""The driver's side of an OFE run, before any worker starts: every input checked (one line each, nothing written),
then the synthetic data written once into the run, and the data's identity for run.json. Plain; no Ray."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from raywave.errors import RaywaveError
from raywave.io import check_shared_path, sha256_file
from raywave.models.transfer import TransferReport
from raywave.ofe.config import OFETrainConfig, StageConfig
from raywave.ofe.data import check_roots, check_stage, data_roots, fraction_subset, stage_datasets, synthetic_root
from raywave.ofe.train import build_model, nfp_checkpoint_path, read_nfp


def check_synthetic_stage(cfg: OFETrainConfig, st: StageConfig) -> None:
    """What `check_stage` checks on real data, from the synthetic data's settings (before writing it)."""
    if st.name == "chairs":
        s = cfg.synthetic_chairs
        h, w = s.height, s.width
        if s.pairs < s.val_every:
            raise RaywaveError(f"synthetic_chairs: {s.pairs} pairs with every {s.val_every}th for validation leave "
                               "no validation pair; raise pairs or lower val_every")  # fmt: skip
    else:
        t = cfg.synthetic_sintel
        h, w = t.height, t.width
        n_val = st.val_scenes if isinstance(st.val_scenes, int) else len(st.val_scenes)
        if n_val >= t.scenes:
            raise RaywaveError(f"stage sintel: {n_val} validation scenes of {t.scenes} leave none for training")
    ch, cw = st.crop
    if ch > h or cw > w:
        raise RaywaveError(f"stage {st.name}: crop {ch}x{cw} is larger than the {h}x{w} synthetic frames; lower the "
                           "stage's crop or raise the synthetic frame size")  # fmt: skip


def check_data(cfg: OFETrainConfig) -> None:
    """Real roots exist and have their layout, splits are non-empty, crops fit the frames."""
    check_roots(cfg)
    roots = data_roots(cfg)
    for st in cfg.stages:
        if roots[st.name] is None:
            check_synthetic_stage(cfg, st)
        else:
            check_stage(st, *stage_datasets(cfg, st, roots[st.name]))


def check_nfp(cfg: OFETrainConfig) -> tuple[str | None, str | None, TransferReport]:
    """(NFP model.pt, its sha256, the transfer report on a fresh RAFT): the strategy is tried before training."""
    if cfg.strategy == "scratch":  # copies nothing: an --nfp given (e.g. by a sweep over strategies) is unused
        report = build_model(cfg, None)[1]
        if cfg.nfp:
            report.notes.append("scratch copies nothing: --nfp is not used")
        return None, None, report
    check_shared_path(cfg.nfp, "--nfp", "every training worker reads the NFP checkpoint through the file system",
                      "/data/raywave/runs/nfp-basic-8")  # fmt: skip
    path = nfp_checkpoint_path(cfg.nfp)
    state = read_nfp(cfg.nfp, cfg.variant)
    report = build_model(cfg, state)[1]
    return str(path.resolve()), sha256_file(path), report


def listing_sha256(root: str | Path) -> str:
    """A hash of a data tree's listing (relative paths and sizes): cheap, and changes when files change."""
    h = hashlib.sha256()
    root = Path(root)
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for f in sorted(files):
            p = Path(dirpath) / f
            h.update(f"{p.relative_to(root)}\t{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def write_data(cfg: OFETrainConfig, out: str) -> dict[str, str]:
    """The root of every stage dataset: the real one, or synthetic data written once under <out>/data."""
    roots = {}
    for name, root in data_roots(cfg).items():
        roots[name] = str(Path(root).resolve()) if root else str(synthetic_root(out, name, cfg).resolve())
    return roots


def data_identity(cfg: OFETrainConfig, roots: dict[str, str]) -> dict:
    """run.json's record of the data: roots, synthetic or real, listing hash, pairs per split and subset."""
    out: dict = {}
    for i, st in enumerate(cfg.stages):
        train, val = stage_datasets(cfg, st, roots[st.name])
        subset = fraction_subset(len(train), cfg.data_fraction, cfg.seed)
        out[f"stage{i}"] = {"dataset": st.name, "root": roots[st.name], "synthetic": data_roots(cfg)[st.name] is None,
                            "listing_sha256": listing_sha256(roots[st.name]), "train_pairs": len(train),
                            "train_pairs_used": len(subset), "val_pairs": len(val) if st.val_pairs is None
                            else min(len(val), st.val_pairs)}  # fmt: skip
    return out


def transfer_record(report: TransferReport) -> dict:
    return {"strategy": report.strategy, "copied": report.copied, "frozen": report.frozen,
            "bn_eval": report.bn_eval, "notes": report.notes, "summary": report.summary()}  # fmt: skip


def resolve_device(name: str, resources: dict | None) -> str:
    """cpu or cuda for the workers: auto picks cuda when the cluster (or this process, without Ray) has a GPU."""
    if name == "auto":
        has_gpu = (resources or {}).get("GPU", 0) > 0 if resources is not None else torch.cuda.is_available()
        return "cuda" if has_gpu else "cpu"
    return "cuda" if name.startswith("cuda") else "cpu"
