"""Shared test helpers. Tests never start Ray unless they say so; torch tests share one 10x10 lattice shape
so that inductor compiles its kernel once per machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LATTICE = 10  # the shared compiled lattice side


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m raywave ARGS` in a subprocess (the real entry point, exit codes included)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "raywave", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def ray_local():
    """One small embedded Ray for the whole session (never attaches to a `ray start` cluster on the host)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=300 * 2**20,
                 log_to_driver=False)  # fmt: skip
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def fly_connectome():
    """The published connectome, compiled once per session (spec fetched from the flyvis wheel and cached)."""
    from raywave.fly import connectome

    return connectome.load()
