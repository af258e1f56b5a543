"""`raywave bench raft` end to end at the smallest size RAFT accepts, with --json."""

from __future__ import annotations

import json

import pytest


def test_bench_raft_bad_size_is_one_line(cli):
    bad = cli("bench", "raft", "--height", "100")
    assert bad.returncode == 2 and "multiples of 8" in bad.stderr


@pytest.mark.slow  # four fresh processes timing RAFT small and basic: minutes on 2 CPUs (`make test-slow`)
def test_bench_raft_json(cli):
    res = cli("bench", "raft", "--height", "128", "--width", "128", "--repeats", "1", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    rows = {(r["variant"], r["mode"]) for r in out["rows"]}
    assert rows == {("small", "train"), ("small", "eval"), ("basic", "train"), ("basic", "eval")}
    assert all(r["seconds"] > 0 and r["peak_memory_mib"] > 50 for r in out["rows"])
