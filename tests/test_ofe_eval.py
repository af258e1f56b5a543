"""Flow metrics against hand-computed values, the colour wheel, and `raywave ofe synth|evaluate` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from raywave.ofe.evaluate import InputPadder
from raywave.ofe.metrics import combine, flow_metrics
from raywave.viz.flow import colorwheel, flow_to_color


def test_metrics_by_hand():
    gt = torch.zeros(1, 2, 2, 2)
    pred = torch.tensor([[[[0.5, 3.0], [0.0, 6.0]], [[0.0, 4.0], [2.0, 8.0]]]])  # EPEs: 0.5, 5, 2, 10
    occ = torch.tensor([[[False, True], [False, True]]])
    m = flow_metrics(pred, gt, torch.ones(1, 2, 2), occ)
    assert m["epe"] == pytest.approx(17.5 / 4) and m["1px"] == 0.25 and m["3px"] == 0.5 and m["5px"] == 0.5
    assert m["noc_epe"] == pytest.approx(1.25) and m["occ_epe"] == pytest.approx(7.5)
    valid = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    part = flow_metrics(pred, gt, valid)
    assert part["epe"] == pytest.approx(2.75) and part["pixels"] == 2
    both = combine([part, flow_metrics(pred, gt, 1 - valid)])
    assert both["epe"] == pytest.approx(m["epe"]) and both["pixels"] == 4  # pixel-weighted, exact


def test_colour_wheel():
    wheel = colorwheel()
    assert wheel.shape == (55, 3) and tuple(wheel[0]) == (255, 0, 0)
    flow = np.array([[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    col = flow_to_color(flow, max_norm=1.0)
    assert tuple(col[0, 3]) == (255, 255, 255)  # no motion is white
    assert len({tuple(c) for c in col[0, :3]}) == 3  # directions get different hues
    half = flow_to_color(flow * 0.5, max_norm=1.0)
    assert (half[0, :3].astype(int) >= col[0, :3].astype(int)).all()  # smaller motion is paler


def test_input_padder_round_trip():
    x = torch.randn(1, 3, 50, 61)
    for mode in ("sintel", "chairs"):
        p = InputPadder(x.shape, mode)
        (y,) = p.pad_(x)
        assert y.shape[-2] % 8 == 0 and y.shape[-1] % 8 == 0 and torch.equal(p.unpad(y), x)


def test_cli_synth_and_evaluate(tmp_path, cli):
    from raywave.models.raft import RAFT

    res = cli("ofe", "synth", "--out", str(tmp_path / "chairs"), "--count", "3", "--height", "128", "--width", "136")
    assert res.returncode == 0, res.stderr
    res = cli("ofe", "synth", "--layout", "sintel", "--out", str(tmp_path / "sintel"), "--count", "2", "--frames",
              "2", "--height", "130", "--width", "140")  # fmt: skip
    assert res.returncode == 0, res.stderr
    torch.manual_seed(0)
    ckpt = tmp_path / "raft-small.pth"
    torch.save({f"module.{k}": v for k, v in RAFT("small").state_dict().items()}, ckpt)  # as released: DataParallel
    res = cli("ofe", "evaluate", "-k", str(ckpt), "--variant", "small", "--dataset", "sintel", "--root",
              str(tmp_path / "sintel"), "--iters", "2", "--out", str(tmp_path / "ev"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["pairs"] == 2 and m["pixels"] == 2 * 130 * 140 and np.isfinite(m["epe"]) and "occ_epe" in m
    assert (tmp_path / "ev" / "panels.png").stat().st_size > 1000
    bad = cli("ofe", "evaluate", "-k", str(ckpt), "--variant", "basic", "--dataset", "chairs", "--root",
              str(tmp_path / "chairs"), "--split", "train")  # fmt: skip
    assert bad.returncode == 2 and "does not match RAFT-basic" in bad.stderr
    small = cli("ofe", "synth", "--out", str(tmp_path / "tiny"), "--count", "1", "--height", "64", "--width", "64")
    assert small.returncode == 0
    res = cli("ofe", "evaluate", "-k", str(ckpt), "--variant", "small", "--dataset", "chairs", "--root",
              str(tmp_path / "tiny"), "--split", "train", "--iters", "1")  # fmt: skip
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "too small" in lines[0], res.stderr
