"""One writer per run or dataset directory: an exclusive lock held for the whole run.

`exclusive(directory, what)` takes an OS-level lock (`filelock.FileLock`, flock on POSIX) on
`<directory>/.raywave.lock` and records who holds it (pid, host, start time, command) in
`<directory>/.raywave.lock.owner.json`. A second writer does not wait: it gets one RaywaveError line naming the
holder. The OS drops the lock when the holder dies (SIGKILL, machine loss), so a stale owner file never blocks
a resume: the next writer simply takes the lock and rewrites it. A block that fails removes the lock file if
it made it (and the directory, if it made that and nothing else was written), so a refused start leaves nothing.

Use it around everything that writes a run or dataset directory (simulation runs, sweeps into a dataset,
triplet indexes, training runs). Directories that must look empty to a writer ignore `LOCK_FILES`.
Object stores (s3://, gs://) have no such lock; their writers lock a local directory instead (see
`raywave.data.sweep_runner`), which serialises writers on one machine only.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from raywave.errors import RaywaveError

LOCK_NAME = ".raywave.lock"
OWNER_NAME = ".raywave.lock.owner.json"
LOCK_FILES = frozenset({LOCK_NAME, OWNER_NAME})


def is_lock_file(name: str) -> bool:
    """True for the lock's own files (and the owner file's temporary names while it is being written)."""
    return name in LOCK_FILES or (name.startswith(f".{OWNER_NAME}.") and name.endswith(".tmp"))


def holder(directory: str | os.PathLike) -> dict | None:
    """Who holds (or last held) the lock of `directory`, as recorded by the holder; None if unknown."""
    try:
        return json.loads((Path(directory) / OWNER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _describe(owner: dict | None) -> str:
    if not owner:
        return "holder unknown"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
    return f"pid {owner.get('pid')} on host {owner.get('host')}, since {since}: {owner.get('command', '?')}"


@contextlib.contextmanager
def exclusive(directory: str | os.PathLike, what: str = "run directory", option: str = "--out") -> Iterator[Path]:
    """Hold the writer lock of `directory` (created if needed) for the duration of the block."""
    from raywave.io import write_json_atomic

    root = Path(directory)
    had_dir, had_lock = root.is_dir(), (root / LOCK_NAME).exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(root / LOCK_NAME)
        lock.acquire(timeout=0)
    except Timeout:
        raise RaywaveError(
            f"{what} {str(root)!r} is being written by another process ({_describe(holder(root))}); "
            f"wait for it to finish, or choose another {option}"
        ) from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise RaywaveError(f"cannot lock {what} {str(root)!r} ({reason}); choose another {option}") from None
    failed = True
    try:
        owner = {"pid": os.getpid(), "host": platform.node(), "since": time.time(),
                 "command": " ".join(["raywave", *sys.argv[1:]]) if sys.argv else "?"}  # fmt: skip
        write_json_atomic(root / OWNER_NAME, owner)
        yield root
        failed = False
    finally:
        with contextlib.suppress(OSError):
            (root / OWNER_NAME).unlink()
        if failed and not had_lock:  # a refused or failed start leaves no trace: not even the lock file
            with contextlib.suppress(OSError):
                (root / LOCK_NAME).unlink()  # unlinked while still held, so nobody locks a doomed file
        lock.release()
        if failed and not had_dir:
            with contextlib.suppress(OSError):
                root.rmdir()  # only if nothing else was written
