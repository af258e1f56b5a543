"""Side-by-side check of raywave's RAFT against the reference implementation (princeton-vl/RAFT).

The reference code is not part of this project: pass the `core/` folder of your own clone,

    git clone https://github.com/princeton-vl/RAFT /tmp/RAFT
    python benchmarks/raft_reference.py /tmp/RAFT/core --save benchmarks/results/raft-reference.json

For both variants, the reference model is built with its own random initialisation (BatchNorm statistics made
non-trivial), its state dict is loaded into raywave's RAFT with `load_official` (strict, `module.` prefixed as in
the released checkpoints), and both get the same 0-255 images: the low-resolution and upsampled test-mode flows
(with and without `flow_init`), every training-mode prediction, and the parameter gradients of the sequence loss
are compared. Exit status 1 when a flow differs by more than `--tol` pixels.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch


def _reference_commit(core: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(core), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def compare(core: Path, sizes=((128, 160), (184, 248)), iters: int = 12) -> dict:
    """Run both implementations on the same weights and images; return the largest differences."""
    if not (core / "raft.py").is_file() or not (core / "extractor.py").is_file():
        raise SystemExit(f"{core} is not RAFT's core/ folder (raft.py, extractor.py, corr.py, update.py, utils/)")
    sys.path.insert(0, str(core))
    warnings.simplefilter("ignore")  # the reference's torch.meshgrid and torch.cuda.amp.autocast warnings
    from raft import RAFT as Reference  # noqa: PLC0415 (the user's clone)

    from raywave.models.raft import RAFT, load_official, sequence_loss

    rows = []
    for variant in ("basic", "small"):
        torch.manual_seed(0)
        args = argparse.Namespace(small=variant == "small", mixed_precision=False, dropout=0, alternate_corr=False)
        ref = Reference(args)
        with torch.no_grad():
            for name, buf in ref.named_buffers():
                if name.endswith("running_mean"):
                    buf.uniform_(-0.2, 0.2)
                elif name.endswith("running_var"):
                    buf.uniform_(0.5, 1.5)
        ours = RAFT(variant)
        load_official(ours, {"module." + k: v for k, v in ref.state_dict().items()})
        g = torch.Generator().manual_seed(1)
        for h, w in sizes:
            img1 = torch.rand(2, 3, h, w, generator=g) * 255
            noise = 10 * torch.rand(2, 3, h, w, generator=g)
            img2 = (torch.roll(img1, shifts=(3, -5), dims=(2, 3)) + noise).clamp(0, 255)
            init = torch.randn(2, 2, h // 8, w // 8, generator=g)
            ref.eval()
            ours.eval()
            with torch.no_grad():
                for flow_init in (None, init):
                    lo_r, up_r = ref(img1, img2, iters=iters, flow_init=flow_init, test_mode=True)
                    lo_o, up_o = ours(img1, img2, iters=iters, flow_init=flow_init, test_mode=True)
                    diff = max((up_r - up_o).abs().max(), (lo_r - lo_o).abs().max())
                    rows.append({"variant": variant, "size": f"{h}x{w}", "mode": "eval, test_mode",
                                 "flow_init": flow_init is not None, "iters": iters,
                                 "max_abs_flow_diff_px": float(diff),
                                 "max_abs_flow_px": float(up_r.abs().max())})  # fmt: skip
            ref.train()
            ours.train()
            preds_r, preds_o = ref(img1, img2, iters=6), ours(img1, img2, iters=6)
            gt = torch.randn(2, 2, h, w, generator=g) * 3
            valid = torch.ones(2, h, w)
            ref.zero_grad()
            ours.zero_grad()
            sequence_loss(preds_r, gt, valid)[0].backward()
            sequence_loss(preds_o, gt, valid)[0].backward()
            grads_r = dict(ref.named_parameters())
            gmax = max(float(p.grad.abs().max()) for p in ref.parameters())
            # conv biases directly before a norm layer have a gradient that is exactly zero in exact arithmetic
            # (~1e-10 here, rounding noise); the relative comparison covers parameters with a real gradient
            real = [(grads_r[k].grad, p.grad) for k, p in ours.named_parameters()
                    if float(grads_r[k].grad.abs().max()) > 1e-4 * gmax]  # fmt: skip
            rel = max(float((a - b).abs().max() / a.abs().max()) for a, b in real)
            absdiff = max(float((grads_r[k].grad - p.grad).abs().max()) for k, p in ours.named_parameters())
            pred_diff = max(float((a - b).abs().max()) for a, b in zip(preds_r, preds_o, strict=True))
            rows.append({"variant": variant, "size": f"{h}x{w}", "mode": "train, 6 iterations + sequence loss",
                         "max_abs_flow_diff_px": pred_diff,
                         "max_rel_grad_diff": rel, "max_abs_grad_diff_over_max_grad": absdiff / gmax})  # fmt: skip
    return {"benchmark": "raft-reference", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
            "reference": str(core), "reference_commit": _reference_commit(core), "rows": rows}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("core", type=Path, help="the core/ folder of a princeton-vl/RAFT clone")
    ap.add_argument("--save", type=Path, help="write the results JSON here")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest flow difference in pixels that passes")
    ap.add_argument("--note", default=None, help="recorded with the results (e.g. which reference commit)")
    a = ap.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    res = compare(a.core.resolve())
    if a.note:
        res["note"] = a.note
    text = json.dumps(res, indent=1)
    print(text)
    if a.save:
        tmp = a.save.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(a.save)
    worst = max(r["max_abs_flow_diff_px"] for r in res["rows"])
    sys.exit(0 if worst <= a.tol else 1)


if __name__ == "__main__":
    main()
