"""Atomic file writes and output-directory checks (nothing half-written is ever visible)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from raywave.errors import RaywaveError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and check that files can be written there; raise a one-line error if not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise RaywaveError(
            f"output directory {str(path)!r} is not writable ({exc.strerror or exc}); choose another --out"
        ) from None
    return path


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")  # also what a Path makes of "s3://b" ("s3:/b")


def check_output(
    target: str | os.PathLike, kind: str = "dir", option: str = "--out", uri_ok: bool = False
) -> str | Path:
    """THE up-front check of an output location, before anything is computed or written.

    `kind` is "dir" (a directory to create or reuse) or "file" (a file to create or replace). A local path that
    exists as the wrong kind, or whose nearest existing ancestor is a file or is not writable, and a URI whose
    scheme no storage layer knows (`foo://x`) or that names an existing object of the wrong kind, are one-line
    RaywaveErrors naming `option`; so is any URI but file:// unless `uri_ok` (the command writes through
    raywave.storage). Nothing is created: only a temporary probe file, removed at once, shows that
    the nearest existing directory accepts writes (as root, permission bits alone do not say so).
    Returns the target as given (a Path for local paths, the URI string otherwise).
    """
    if kind not in ("dir", "file"):
        raise ValueError(f"kind must be 'dir' or 'file', not {kind!r}")
    text = str(target)
    if not text.strip():
        raise RaywaveError(f"{option} is empty; give a path")
    if _URI.match(text) and not text.startswith("file://"):
        if not uri_ok or "://" not in text:
            raise RaywaveError(
                f"{option} {text!r} looks like a URI; this command writes a local directory or file (object "
                "storage is for `raywave waves generate --out s3://...`)"
            )
        from raywave.storage import check_output_uri

        check_output_uri(text, kind, option)
        return text
    path = Path(text.removeprefix("file://")).expanduser()
    if kind == "dir" and path.exists() and not path.is_dir():
        raise RaywaveError(f"{option} {text!r} is a file, not a directory; choose a directory")
    if kind == "file" and path.is_dir():
        raise RaywaveError(f"{option} {text!r} is a directory; give a file name")
    probe = path if kind == "dir" else path.parent
    probe = probe.absolute()
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():  # a dangling link: the directory it points to cannot be made here
            raise RaywaveError(f"{option} {text!r} is not writable ({probe} is a broken link); choose another")
        probe = probe.parent
    if not probe.is_dir():
        raise RaywaveError(f"{option} {text!r} is not writable ({probe} is a file, not a directory); choose another")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise RaywaveError(
            f"{option} {text!r} is not writable ({probe}: {exc.strerror or exc}); choose another"
        ) from None
    return path


def check_shared_path(target: str | os.PathLike, option: str, why: str, example: str) -> Path:
    """Refuse a URI where a command needs a POSIX file system (directories, renames, file locks), before anything
    starts; returns the path. A typer `Path` option turns `s3://b/x` into `s3:/b/x`: both forms are caught, and
    the message shows the URI as typed. On a cluster the path must be on a file system every node mounts."""
    text = str(target)
    if _URI.match(text):
        scheme, rest = text.split(":", 1)
        shown = text if "://" in text else f"{scheme}://{'/' if scheme == 'file' else ''}{rest.lstrip('/')}"
        raise RaywaveError(
            f"{option} {shown!r} is a URI, but {why}; give a path on a file system every node mounts (NFS, EFS, "
            f"Filestore, a ReadWriteMany volume; e.g. {example}), or a local path on one machine"
        )
    return Path(text)


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=-]{0,127}")


def check_name(name: str, what: str = "--name") -> str:
    """A name that becomes a path component (a run, an index, an ensemble member): letters, digits and
    `._+=-`, not starting with a dot, at most 128 characters; so no separators, no `..`, nothing hidden."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RaywaveError(
            f"{what} {name!r} is not a valid name: use letters, digits, '.', '_', '-', '+' or '=' (no '/', "
            "no leading '.', at most 128 characters)"
        )
    return name


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
