"""Training one fly model: it learns (validation EPE below zero flow), and a killed run resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from raywave.data.synthetic_flow import write_sintel
from raywave.fly.decoder import FlowDecoder, epe, l2norm
from raywave.fly.train import FlyTrainConfig, learning_rate, train_one

from .conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def flow_root(tmp_path_factory):
    """Small Sintel-layout data: textured backgrounds translating by up to 6 px per frame, 6 scenes."""
    root = tmp_path_factory.mktemp("fly-sintel")
    write_sintel(root, scenes=6, frames=8, h=436, w=1024, seed=1, n_layers=0, max_shift=12.0)
    return root


def _config(flow_root, tmp_path, **kw) -> dict:
    base = {
        "sintel_root": str(flow_root),
        "cache": str(tmp_path / "cache"),
        "iterations": 60,
        "checkpoint_every": 30,
        "n_frames": 7,
        "lr_start": 1e-2,
        "lr_end": 1e-2,
        "lr_steps": 1,
        "augment": False,
        "val_scenes": 2,
    }
    return {**base, **kw}


def test_decoder_and_objectives():
    dec = FlowDecoder()
    assert sum(p.numel() for p in dec.parameters()) == 7_427
    assert int(dec.conv1.mask.sum()) == 19  # the radius-2 hexagon of a 5x5 axial kernel
    y = dec(torch.randn(2, 3, 34, 721))
    assert (
        y.shape == (2, 3, 721, 2) and float(y.detach().abs().max()) == 0
    )  # training starts at the zero-flow prediction
    a, b = torch.zeros(2, 3, 721, 2), torch.zeros(2, 3, 721, 2)
    b[..., 0] = 3.0
    b[..., 1] = 4.0
    assert float(epe(a, b)) == pytest.approx(5.0)
    assert float(l2norm(a, b)) == pytest.approx((3 * 721 * 25) ** 0.5)


def _reference_decoder(dec: FlowDecoder, v: torch.Tensor) -> torch.Tensor:
    """The decoder written plainly: NCHW maps, masked kernels, no dropout (compare in eval mode)."""
    import torch.nn.functional as F

    b, t, c, n = v.shape
    side = 2 * dec.extent + 1
    grid = torch.zeros(b * t, c, side * side, dtype=v.dtype)
    grid[..., dec.flat_index] = torch.relu(v).reshape(b * t, c, n)
    x = F.conv2d(grid.view(b * t, c, side, side), dec.conv1.weight * dec.conv1.mask, dec.conv1.bias, padding=2)
    x = F.softplus(dec.norm(x))
    y = F.conv2d(x, dec.conv2.weight * dec.conv2.mask, dec.conv2.bias, padding=2).flatten(2)[..., dec.flat_index]
    flow = y[:, :2] / (F.softplus(y[:, 2:3]) + 1)
    return flow.view(b, t, 2, n).transpose(-1, -2)


def test_decoder_matches_plain_reference():
    """The channels-last decoder computes what the plain NCHW formulation computes, values and gradients."""
    dec = FlowDecoder(seed=3).double()
    with torch.no_grad():
        dec.conv2.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0)).mul_(dec.conv2.mask)
        dec.norm.running_mean.uniform_(-0.5, 0.5)
        dec.norm.running_var.uniform_(0.5, 2.0)
    dec.eval()
    v = torch.randn(2, 3, 34, 721, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got_in, ref_in = v.clone().requires_grad_(), v.clone().requires_grad_()
    got, ref = dec(got_in), _reference_decoder(dec, ref_in)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(ref)
    (gg,) = torch.autograd.grad((got * w).sum(), got_in)
    (gr,) = torch.autograd.grad((ref * w).sum(), ref_in)
    torch.testing.assert_close(gg, gr, rtol=1e-10, atol=1e-12)
    assert float(gr.abs().max()) > 0
    # dropout: only in training mode, keeps the expectation (inverted dropout), zeroes about half the units
    dec.train()
    torch.manual_seed(0)
    a = dec(v)
    torch.manual_seed(0)
    assert torch.equal(a, dec(v)) and not torch.allclose(a, dec.eval()(v))


def test_learning_rate_schedule():
    cfg = FlyTrainConfig(iterations=100, lr_start=1e-3, lr_end=1e-5, lr_steps=3)
    assert [learning_rate(cfg, i) for i in (0, 33, 34, 66, 67, 99)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5]
    )


def test_short_run_beats_zero_flow(flow_root, tmp_path):
    best = train_one(FlyTrainConfig(**_config(flow_root, tmp_path)), tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["iteration"] for h in history] == [30, 60]
    assert best["val_epe"] < 0.97 * best["zero_flow_epe"], history
    assert (tmp_path / "run" / best["checkpoint"]).is_file()


def test_kill_and_resume_continues_from_last_checkpoint(flow_root, tmp_path):
    cfg = _config(flow_root, tmp_path, iterations=40, checkpoint_every=20)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = [
        sys.executable,
        "-m",
        "raywave",
        "fly",
        "train-one",
        "--config",
        str(tmp_path / "cfg.yaml"),
        "--out",
        str(run),
    ]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = run / "checkpoints" / "it-00000020.pt"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert first.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoints" / "it-00000040.pt").exists()
    stamp = first.stat().st_mtime_ns
    resumed = run_cli("fly", "train-one", "--config", str(tmp_path / "cfg.yaml"), "--out", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert first.stat().st_mtime_ns == stamp  # the first checkpoint was kept, not redone
    history = json.loads((run / "history.json").read_text())
    assert [h["iteration"] for h in history] == [20, 40]
    # the resumed run ends exactly where an uninterrupted one does
    # (in a fresh process like the resumed one, so both use the same threads and kernels)
    straight = run_cli("fly", "train-one", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    a = torch.load(run / "checkpoints" / "it-00000040.pt", weights_only=False)
    b = torch.load(tmp_path / "straight" / "checkpoints" / "it-00000040.pt", weights_only=False)
    for key in ("network", "decoder"):
        for name, value in b[key].items():
            torch.testing.assert_close(a[key][name], value, rtol=1e-5, atol=1e-7, msg=name)
    # a different config in the same directory is refused with one line
    other = run_cli("fly", "train-one", "--config", str(tmp_path / "cfg.yaml"), "--out", str(run), "--seed", "5")
    assert other.returncode == 2 and "different config" in other.stderr


def test_bad_inputs(tmp_path, flow_root):
    bad = run_cli("fly", "train-one", "--out", str(tmp_path / "r"), "--iterations", "0")
    assert bad.returncode == 2 and "iterations" in bad.stderr and not (tmp_path / "r" / "checkpoints").exists()
    (tmp_path / "c.yaml").write_text("batch_sise: 4\n")
    bad = run_cli("fly", "train-one", "--out", str(tmp_path / "r"), "--config", str(tmp_path / "c.yaml"))
    assert bad.returncode == 2 and "batch_sise" in bad.stderr
    missing = run_cli("fly", "evaluate", "--checkpoint", str(tmp_path / "none.pt"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    (tmp_path / "junk.pt").write_bytes(b"junk")
    corrupt = run_cli("fly", "evaluate", "--checkpoint", str(tmp_path / "junk.pt"))
    assert corrupt.returncode == 2 and "not a readable fly checkpoint" in corrupt.stderr
    small = run_cli("fly", "render", "--sintel-root", str(tmp_path / "nope"), "--out", str(tmp_path / "x"))
    assert small.returncode == 2 and "Sintel" in small.stderr
