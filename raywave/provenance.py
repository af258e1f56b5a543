"""Which code produced a result: the raywave version and, in a git checkout, the commit."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from raywave import __version__


@functools.cache
def code_version() -> dict[str, str | bool | None]:
    """{"raywave": version, "git_commit": sha or None, "git_dirty": bool or None}."""
    root = Path(__file__).resolve().parents[1]
    commit = dirty = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
            ).stdout.strip()
            or None
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "raywave"],
            cwd=root, capture_output=True, text=True, timeout=5, check=True,
        ).stdout  # fmt: skip
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"raywave": __version__, "git_commit": commit, "git_dirty": dirty}
