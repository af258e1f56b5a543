"""Storage locations: a local path or a URI (file://, s3://, gs://, an NFS mount), through pyarrow.fs.

Every write goes to a temporary name in the same directory and is then moved onto its final name, so a reader
never sees half a file (a rename on local/NFS file systems; copy-then-delete on object stores, where the final
object appears whole or not at all).
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from raywave.errors import RaywaveError


@dataclass(frozen=True)
class Location:
    """A directory on some file system; `uri` is what the user wrote (kept for messages and manifests)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)


def resolve(uri: str | Path) -> Location:
    """A Location for a local path or URI; an unknown scheme is one clear error."""
    text = str(uri)
    if "://" not in text:
        return Location(pafs.LocalFileSystem(), str(Path(text).expanduser().absolute()), text)
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, ValueError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise RaywaveError(
            f"cannot open storage {text!r} ({first}); use a local path, file://, s3:// or gs://"
        ) from None
    return Location(fs, path.rstrip("/"), text.rstrip("/"))


def check_output_uri(uri: str, kind: str = "dir", option: str = "--out") -> Location:
    """The URI half of `raywave.io.check_output`: the scheme must open, and an existing object must be of the
    right kind (a directory for "dir", a file for "file"). Object stores are not probed for write access
    here (that costs a round trip and a write); the first write reports a refusal as one line."""
    loc = resolve(uri)
    try:
        info = loc.fs.get_file_info(loc.path)
    except (pa.ArrowException, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise RaywaveError(f"{option} {uri!r} cannot be reached ({first})") from None
    if kind == "dir" and info.type == pafs.FileType.File:
        raise RaywaveError(f"{option} {uri!r} is a file, not a directory; choose a directory")
    if kind == "file" and info.type == pafs.FileType.Directory:
        raise RaywaveError(f"{option} {uri!r} is a directory; give a file name")
    return loc


def exists(loc: Location, rel: str) -> bool:
    return loc.fs.get_file_info(loc.join(rel)).type != pafs.FileType.NotFound


def makedirs(loc: Location, rel: str = "") -> None:
    loc.fs.create_dir(loc.join(rel) if rel else loc.path, recursive=True)


def list_dir(loc: Location, rel: str) -> list[str]:
    """Base names in a directory (empty if it does not exist)."""
    sel = pafs.FileSelector(loc.join(rel), allow_not_found=True)
    return sorted(posixpath.basename(i.path) for i in loc.fs.get_file_info(sel))


@contextlib.contextmanager
def atomic_output(loc: Location, rel: str) -> Iterator[str]:
    """Yield a temporary path (in `loc`'s file system) to write; on success it is moved onto `rel`."""
    final = loc.join(rel)
    loc.fs.create_dir(posixpath.dirname(final), recursive=True)
    tmp = posixpath.join(posixpath.dirname(final), f".{posixpath.basename(final)}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        loc.fs.move(tmp, final)
    finally:
        if loc.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            loc.fs.delete_file(tmp)


def write_bytes(loc: Location, rel: str, data: bytes) -> None:
    with atomic_output(loc, rel) as tmp, loc.fs.open_output_stream(tmp) as f:
        f.write(data)


def read_bytes(loc: Location, rel: str) -> bytes:
    with loc.fs.open_input_stream(loc.join(rel)) as f:
        return f.read()


def write_json(loc: Location, rel: str, obj: Any) -> None:
    from raywave.io import _json_default

    write_bytes(loc, rel, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def read_json(loc: Location, rel: str) -> Any:
    """A JSON file; missing -> FileNotFoundError, corrupt -> RaywaveError naming the file."""
    try:
        raw = read_bytes(loc, rel)
    except FileNotFoundError:
        raise
    except OSError as exc:  # some file systems report a missing object as a generic OSError
        if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
            raise FileNotFoundError(loc.join(rel)) from None
        raise RaywaveError(f"cannot read {loc.join(rel)}: {exc}") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RaywaveError(f"{posixpath.join(loc.uri, rel)} is corrupt ({exc})") from None


def remove_stale_temps(loc: Location, rel: str) -> int:
    """Delete `.*.tmp` files left in a directory by writers that died; returns how many."""
    n = 0
    for name in list_dir(loc, rel):
        if name.startswith(".") and name.endswith(".tmp"):
            loc.fs.delete_file(loc.join(rel, name))
            n += 1
    return n
