"""`raywave bench fly` end to end on a few steps, with --json: both implementations agree and are timed."""

from __future__ import annotations

import json


def test_bench_fly_json(cli, fly_connectome):
    res = cli("bench", "fly", "--steps", "3", "--repeats", "1", "--rounds", "1", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    rows = {(r["mode"], r["impl"]): r for r in out["rows"]}
    assert set(rows) == {(m, i) for m in ("forward", "forward_backward") for i in ("raywave", "per_edge")}
    assert all(r["seconds"] > 0 and r["peak_memory_mib"] > 50 and r["steps"] == 3 for r in rows.values())
    # the two implementations compute the same voltages and parameter gradients (independent formulations)
    assert rows["forward", "raywave"]["max_rel_voltage_diff"] < 1e-5
    assert rows["forward_backward", "raywave"]["max_rel_grad_diff"] < 1e-4
    assert out["speedup_forward_backward"] == rows["forward_backward", "raywave"]["speedup_vs_per_edge"]
    bad = cli("bench", "fly", "--rounds", "0")
    assert bad.returncode == 2 and "--rounds" in bad.stderr
    bad = cli("bench", "fly", "--flyvis-python", "/nonexistent/python")
    assert bad.returncode == 2 and "--flyvis-python" in bad.stderr
