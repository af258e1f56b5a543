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
from raywave.fly.decoder import FlowDecoder, dropout_keep, epe, l2norm
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


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_dropout_masks_keep_1_minus_p_independently_and_per_model(p):
    """Both ways of drawing the mask (keep bits per position for p = 0.5, a uniform per element otherwise) keep a
    fraction 1 - p of the units, independently across channels and frames, scaled by 1/(1-p); model j's mask in a
    pass of 3 is its mask alone."""
    n, hidden, side = 40, 8, 31
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    alone = dropout_keep((n, hidden, side, side), p, gens([11]), torch.float64, "cpu")
    assert set(alone.unique().tolist()) == {0.0, 1 / (1 - p)}
    kept = (alone > 0).double()
    sd = (p * (1 - p) / kept.numel()) ** 0.5
    assert abs(float(kept.mean()) - (1 - p)) < 5 * sd  # binomial: 5 standard deviations
    flat = kept.permute(1, 0, 2, 3).reshape(hidden, -1)  # (channels, units)
    corr = torch.corrcoef(flat)
    off = corr[~torch.eye(hidden, dtype=torch.bool)]
    assert float(off.abs().max()) < 5 / flat.shape[1] ** 0.5  # channels uncorrelated
    assert not torch.equal(kept[0], kept[1])  # frames differ
    pass3 = dropout_keep((n, 3 * hidden, side, side), p, gens([5, 11, 7]), torch.float64, "cpu")
    assert torch.equal(pass3[:, hidden : 2 * hidden], alone)


def test_short_run_beats_zero_flow(flow_root, tmp_path):
    # at this learning rate the validation error of a 60-iteration run moves by +-5% between checkpoints (and
    # with rounding-level changes of the arithmetic): select the best of six checkpoints, as a user would
    best = train_one(FlyTrainConfig(**_config(flow_root, tmp_path, checkpoint_every=10)), tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["iteration"] for h in history] == [10, 20, 30, 40, 50, 60]
    assert best["val_epe"] < 0.97 * best["zero_flow_epe"], history
    assert (tmp_path / "run" / best["checkpoint"]).is_file()


def _assert_same_parameters(a: dict, b: dict) -> None:
    """Bit for bit: every network and decoder tensor of two checkpoints is equal."""
    for key in ("network", "decoder"):
        assert a[key].keys() == b[key].keys()
        for name, value in b[key].items():
            assert torch.equal(a[key][name], value), f"{key}.{name} differs by {(a[key][name] - value).abs().max()}"


def test_kill_and_resume_continues_from_last_checkpoint(flow_root, tmp_path, monkeypatch):
    cfg = _config(flow_root, tmp_path, iterations=8, checkpoint_every=2, n_frames=4, t_pre=0.1, batch_size=2,
                  splits=1)  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
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
    first = run / "checkpoints" / "it-00000002.pt"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert first.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoints" / "it-00000008.pt").exists()
    stamp = first.stat().st_mtime_ns
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # run_cli's processes: 2 threads, like the killed one
    resumed = run_cli("fly", "train-one", "--config", str(tmp_path / "cfg.yaml"), "--out", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert first.stat().st_mtime_ns == stamp  # the first checkpoint was kept, not redone
    history = json.loads((run / "history.json").read_text())
    assert [h["iteration"] for h in history] == [2, 4, 6, 8]
    # the resumed run ends exactly where an uninterrupted one does
    # (in a fresh process like the resumed one, so both use the same threads and kernels)
    straight = run_cli("fly", "train-one", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    a = torch.load(run / "checkpoints" / "it-00000008.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "checkpoints" / "it-00000008.pt", weights_only=True)
    _assert_same_parameters(a, b)
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


@pytest.fixture
def busy_cores():
    """Two busy-loop processes keeping both cores of the machine loaded while a test runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield
    for p in procs:
        p.kill()
        p.wait()


def test_training_is_deterministic_at_two_threads_under_load(flow_root, tmp_path, busy_cores, capsys):
    """The same short training twice in one process, 2 threads, both cores busy: identical parameters; then the
    later run's newest checkpoint is truncated and the run resumes from the previous one, again identically."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = FlyTrainConfig(**_config(flow_root, tmp_path, iterations=8, checkpoint_every=4, t_pre=0.1, n_frames=4,
                                       batch_size=2, splits=1))  # fmt: skip
        train_one(cfg, tmp_path / "a")
        train_one(cfg, tmp_path / "b")
        last = "checkpoints/it-00000008.pt"
        a, b = (torch.load(tmp_path / r / last, weights_only=True) for r in ("a", "b"))
        _assert_same_parameters(a, b)
        # a truncated newest checkpoint: one line, the previous checkpoint is used, the end is the same
        path = tmp_path / "b" / last
        path.write_bytes(path.read_bytes()[:1000])
        train_one(cfg, tmp_path / "b")
        assert "unreadable" in capsys.readouterr().err and path.with_name(path.name + ".corrupt").exists()
        _assert_same_parameters(a, torch.load(path, weights_only=True))
        assert [h["iteration"] for h in json.loads((tmp_path / "b" / "history.json").read_text())] == [4, 8]
    finally:
        torch.set_num_threads(threads)


class _Marker:
    """Unpickling this runs open(path, "w"): what a crafted checkpoint would do if it were executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_pickle_checkpoint_is_not_executed(tmp_path):
    live = tmp_path / "live-marker"
    torch.save({"network": _Marker(live)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False).get("network").close()
    assert live.exists()  # the crafted file is live: loading it unsafely runs its code
    marker = tmp_path / "marker"
    torch.save({"network": _Marker(marker), "decoder": {}, "config": {}, "iteration": 1}, tmp_path / "evil.pt")
    res = run_cli("fly", "evaluate", "-k", str(tmp_path / "evil.pt"))
    assert res.returncode == 2 and "not a readable fly checkpoint" in res.stderr and "Traceback" not in res.stderr
    assert not marker.exists()


def test_checkpoint_of_another_connectome_and_failed_start(flow_root, tmp_path):
    spec = {"nodes": [{"name": "A", "pattern": ["stride", [1, 1]]}, {"name": "B", "pattern": ["stride", [1, 1]]}],
            "edges": [{"src": "A", "tar": "B", "alpha": 1, "offsets": [[[0, 0], 2.0]]}],
            "input_units": ["A"], "output_units": ["B"]}  # fmt: skip
    (tmp_path / "small.json").write_text(json.dumps(spec))
    # a failed start (bad connectome) writes nothing; the corrected command is then accepted and trains
    cfg = _config(flow_root, tmp_path, iterations=2, checkpoint_every=2, t_pre=0.0, n_frames=3, splits=1,
                  batch_size=1)  # fmt: skip
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**cfg, "connectome": str(tmp_path / "nope.json")}))
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    bad = run_cli("fly", "train-one", "--config", str(tmp_path / "bad.yaml"), "--out", str(run))
    assert bad.returncode == 2 and "nope.json" in bad.stderr and not run.exists()
    good = run_cli("fly", "train-one", "--config", str(tmp_path / "good.yaml"), "--out", str(run))
    assert good.returncode == 0, good.stderr
    ckpt = run / "checkpoints" / "it-00000002.pt"
    # that checkpoint with another connectome: one line naming the mismatch
    other = run_cli("fly", "simulate", "--checkpoint", str(ckpt), "--connectome", str(tmp_path / "small.json"),
                    "--out", str(tmp_path / "sim"), "--frames", "2")  # fmt: skip
    assert other.returncode == 2 and "another connectome" in other.stderr and "Traceback" not in other.stderr
