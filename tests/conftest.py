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
