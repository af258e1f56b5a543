"""Where the published connectome spec comes from: the flyvis 1.2.0 wheel on the package registry.

The spec (`fib25-fib19_v2.2.json`, MIT-licensed data of Lappalainen et al., Nature 2024) ships inside the
flyvis wheel. It is fetched once with `pip download flyvis==1.2.0 --no-deps` into a cache directory, the wheel's
sha256 is checked, the JSON is read out of the zip, and a provenance record is written beside it. Nothing of it
is committed to this repository; flyvis itself is never installed or imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from raywave.errors import RaywaveError
from raywave.io import sha256_file

WHEEL = "flyvis-1.2.0-py3-none-any.whl"
WHEEL_SHA256 = "af365b16e870111fcb06782a063f6551b05cce9a105c6eaab9c0bda3b017031f"
MEMBER = "flyvis/connectome/fib25-fib19_v2.2.json"
SPEC_BYTES = 618_148
SPEC_SHA256 = "bfbb0766251ff09e22723d0ebbf7b14793e70b3ae8ad0eea64eac9d28223351a"  # the member of that wheel
SPEC_NAME = "fib25-fib19_v2.2.json"
PROVENANCE = {
    "source": "https://pypi.org/project/flyvis/1.2.0/",
    "wheel": WHEEL,
    "wheel_sha256": WHEEL_SHA256,
    "member": MEMBER,
    "licence": "MIT (flyvis, Copyright (c) 2024 Janne K. Lappalainen et al.)",
    "reference": "Lappalainen et al., Connectome-constrained networks predict neural activity across the fly "
    "visual system, Nature 2024",
}


def cache_dir() -> Path:
    """Cache root: $RAYWAVE_CACHE, else $XDG_CACHE_HOME/raywave, else ~/.cache/raywave."""
    if os.environ.get("RAYWAVE_CACHE"):
        return Path(os.environ["RAYWAVE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "raywave"


def _download_wheel(dest: Path) -> Path:
    """`pip download` the wheel (no dependencies) into `dest`; a clear error when the registry is unreachable."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "flyvis==1.2.0",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RaywaveError(f"could not download {WHEEL} ({exc}); pass --connectome FILE with the spec JSON") from None
    wheel = dest / WHEEL
    if proc.returncode != 0 or not wheel.exists():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RaywaveError(
            f"could not download {WHEEL} from the package registry ({last}); check the network "
            "or pass --connectome FILE with the spec JSON"
        )
    return wheel


def extract_spec(wheel: Path) -> bytes:
    """The connectome JSON out of a flyvis wheel, after checking the wheel's sha256."""
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise RaywaveError(f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256}; delete it and fetch again")
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise RaywaveError(f"{wheel} is not a usable flyvis wheel ({exc}); delete it and fetch again") from None
    if len(data) != SPEC_BYTES or hashlib.sha256(data).hexdigest() != SPEC_SHA256:
        raise RaywaveError(f"{MEMBER} in {wheel} is not the expected file (size or sha256 differ)")
    return data


def fetch_spec(cache: Path | None = None, wheel: Path | None = None) -> Path:
    """Path of the cached connectome JSON, fetching and verifying it on first use (atomic, idempotent).

    `wheel` uses an already downloaded flyvis wheel instead of the registry (it is still sha256-checked).
    """
    root = (cache or cache_dir()) / "flyvis-1.2.0"
    spec, prov = root / SPEC_NAME, root / "provenance.json"
    if spec.exists() and prov.exists():
        verify_cached(spec, prov)
        return spec
    if root.exists() and not root.is_dir():
        raise RaywaveError(f"connectome cache {root} is a file; delete it or set RAYWAVE_CACHE to a directory")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        tmp_path = Path(tmp)
        wheel = wheel or _download_wheel(tmp_path)
        data = extract_spec(wheel)
        staged = tmp_path / SPEC_NAME
        staged.write_bytes(data)
        os.replace(staged, spec)
        record = {**PROVENANCE, "spec_sha256": hashlib.sha256(data).hexdigest(), "spec_bytes": len(data)}
        staged_prov = tmp_path / "provenance.json"
        staged_prov.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(staged_prov, prov)
    return spec


def verify_cached(spec: Path, prov: Path) -> None:
    """Re-hash a cached spec against its provenance record and the pinned sha256 of the wheel's member (the
    record alone could have been rewritten with it): a cache that was edited, truncated or swapped is refused."""
    fix = f"delete {spec.parent} and run again to fetch it afresh"
    try:
        record = json.loads(prov.read_text())
        expected, size = record["spec_sha256"], record["spec_bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        raise RaywaveError(f"connectome provenance record {prov} is unreadable or incomplete; {fix}") from None
    if record.get("wheel_sha256") != WHEEL_SHA256 or size != SPEC_BYTES:
        raise RaywaveError(f"the connectome cache {spec.parent} does not come from {WHEEL}; {fix}")
    if expected != SPEC_SHA256 or spec.stat().st_size != size or sha256_file(spec) != expected:
        raise RaywaveError(f"the cached connectome {spec} does not match its provenance (sha256 or size); {fix}")


def provenance(spec: Path) -> dict:
    """The provenance record written beside a fetched spec, or a record naming a user-supplied file."""
    prov = spec.parent / "provenance.json"
    if spec.name == SPEC_NAME and prov.exists():
        return json.loads(prov.read_text())
    return {"source": str(spec), "spec_sha256": sha256_file(spec), "licence": "as supplied by the user"}


def clear(cache: Path | None = None) -> None:
    """Remove the cached spec (the next use fetches it again)."""
    shutil.rmtree((cache or cache_dir()) / "flyvis-1.2.0", ignore_errors=True)
