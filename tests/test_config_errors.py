"""Bad input -> one clear line, non-zero exit, no partial output (acceptance 5)."""

from __future__ import annotations

import pytest

from raywave.config import build
from raywave.errors import ConfigError
from raywave.waves.config import SimulationConfig

BAD = [
    (["--dt-ms", "-0.1"], "dt_ms"),
    (["--frame-interval-ms", "0.25"], "multiple of dt_ms"),
    (["--size", "0"], "height"),
    (["--backend", "nest"], "backend"),
    (["--param", "gFOO=1"], "unknown parameter"),
    (["--duration-s", "1.05"], "multiple of the frame interval"),
]


@pytest.mark.parametrize("args,needle", BAD)
def test_cli_rejects_bad_input_without_output(cli, tmp_path, args, needle):
    out = tmp_path / "run"
    res = cli("waves", "simulate", "--out", str(out), "-q", *args)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert needle in lines[0]
    assert not out.exists()


def test_unknown_parameter_in_yaml(cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("height: 8\nparams:\n  gAA: 0.1\n")
    res = cli("waves", "simulate", "--config", str(cfg), "--out", str(tmp_path / "r"), "-q")
    assert res.returncode == 2 and "params.gAA" in res.stderr and "unknown parameter" in res.stderr
    assert not (tmp_path / "r").exists()


def test_unwritable_output(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = cli("waves", "simulate", "--size", "4", "--duration-s", "0.1", "--out", str(blocker / "run"), "-q")
    assert res.returncode == 2 and "not writable" in res.stderr
    assert blocker.read_text() == "not a directory"


def test_missing_and_malformed_config(cli, tmp_path):
    res = cli("waves", "simulate", "--config", str(tmp_path / "nope.yaml"), "-q")
    assert res.returncode == 2 and "does not exist" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("height: [1,\n")
    res = cli("waves", "simulate", "--config", str(bad), "-q")
    assert res.returncode == 2 and "not valid YAML" in res.stderr


def test_not_a_run_directory(cli, tmp_path):
    res = cli("waves", "analyze", str(tmp_path))
    assert res.returncode == 2 and "not a raywave run" in res.stderr


def test_config_yaml_round_trip(tmp_path):
    from raywave.config import load_model, save_model

    cfg = SimulationConfig(height=12, width=7, neighbours=8, boundary="periodic", record=["V", "C"],
                           params={"gA": 0.07, "gsAHP": 4.6})  # fmt: skip
    save_model(cfg, tmp_path / "c.yaml")
    again = load_model(SimulationConfig, tmp_path / "c.yaml")
    assert again == cfg and again.record == ["C", "V"]
    assert again.fingerprint() == cfg.fingerprint()


def test_validation_messages_are_one_line():
    with pytest.raises(ConfigError) as exc:
        build(SimulationConfig, {"dt_ms": 0.1, "frame_interval_ms": 0.15, "width": 0})
    assert "\n" not in str(exc.value)
