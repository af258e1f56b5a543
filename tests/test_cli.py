"""The CLI end to end: every command documents itself; simulate -> analyze -> snapshot -> movie."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from .conftest import LATTICE

COMMANDS = [[], ["waves"], ["waves", "simulate"], ["waves", "analyze"], ["waves", "snapshot"], ["waves", "movie"],
            ["waves", "scan-ga"], ["waves", "params"], ["bench"], ["bench", "waves"], ["doctor"]]  # fmt: skip


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "raywave")
def test_help(cli, cmd):
    res = cli(*cmd, "--help")
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout


def test_simulate_analyze_draw(cli, tmp_path):
    run = tmp_path / "run"
    res = cli("waves", "simulate", "--out", str(run), "--size", str(LATTICE), "--duration-s", "20",
              "--transient-s", "2", "--compile", "on", "--ga", "0.05", "--seed", "3", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    man = json.loads((run / "manifest.json").read_text())
    assert man["status"] == "complete" and man["n_frames"] == 200 and man["shape"] == [LATTICE, LATTICE]
    assert abs(man["first_frame_time_s"] - 2.1) < 1e-9

    res = cli("waves", "analyze", str(run))
    assert res.returncode == 0, res.stderr
    stats = json.loads((run / "analysis" / "stats.json").read_text())
    events = pq.read_table(run / "analysis" / "events.parquet")
    assert stats["n_events"] == events.num_rows > 0
    assert stats["frames"] == 200 and 0 < stats["fraction_cells_bursting"] <= 1

    assert cli("waves", "snapshot", str(run), "--every-s", "5").returncode == 0
    png = Image.open(run / "figures" / "snapshots.png")
    assert png.format == "PNG" and png.size[0] > 300
    assert cli("waves", "movie", str(run), "--stride", "10").returncode == 0
    gif = Image.open(run / "figures" / "movie.gif")
    assert gif.format == "GIF" and gif.n_frames == 20

    bad = cli("waves", "movie", str(run), "--format", "avi")
    assert bad.returncode == 2 and "not supported" in bad.stderr
    assert not (run / "figures" / "movie.avi").exists()


def test_params_lists_every_parameter(cli):
    from raywave.waves.params import SACParameters

    res = cli("waves", "params")
    assert res.returncode == 0
    for name in SACParameters.model_fields:
        assert name in res.stdout
