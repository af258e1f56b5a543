"""Opt-in: raywave's RAFT computes the reference implementation's flow (needs a princeton-vl/RAFT clone).

    RAYWAVE_RAFT_REFERENCE=/path/to/RAFT/core pytest tests/test_raft_reference.py

Skipped when the variable is unset (the reference code is not part of this project and cannot be downloaded
in CI); `benchmarks/results/raft-reference.json` holds the last recorded run.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from .conftest import ROOT

REFERENCE = os.environ.get("RAYWAVE_RAFT_REFERENCE")


@pytest.mark.skipif(not REFERENCE, reason="set RAYWAVE_RAFT_REFERENCE to the core/ folder of a princeton-vl/RAFT clone")
def test_same_flow_and_gradients_as_reference():
    spec = importlib.util.spec_from_file_location("raft_reference", ROOT / "benchmarks" / "raft_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.compare(Path(REFERENCE), sizes=((128, 160),), iters=6)
    assert len(res["rows"]) == 6
    for row in res["rows"]:
        assert row["max_abs_flow_diff_px"] <= 1e-4, row
        assert row.get("max_rel_grad_diff", 0.0) <= 1e-4, row
