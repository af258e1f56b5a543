"""run.json: what a training run is, and the rules for running a command again on the same --out (plain).

    {"format": "raywave.run/1", "kind": "nfp", "status": "running" | "complete" | "failed",
     "config": {...resolved...}, "fingerprint": sha256 of the config, "code": raywave.provenance.code_version(),
     "data": {...dataset identity...}, "seed": 0, "workers": 2, "device": "cpu", "created": iso,
     "attempts": [{"start": iso, "end": iso, "status": ..., "error": ...}], "summary": {...}, "run_dir": uri}

`begin_run` creates the record or checks it: the same config resumes (a new attempt), another config is refused
with one line naming the keys that differ, and a complete run is returned as such (the caller trains nothing).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from raywave.errors import RaywaveError
from raywave.provenance import code_version
from raywave.storage import Location, makedirs, read_json, resolve, write_json

RUN_JSON = "run.json"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def fingerprint(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def read_run(run: str | Location) -> dict | None:
    loc = run if isinstance(run, Location) else resolve(run)
    try:
        return read_json(loc, RUN_JSON)
    except FileNotFoundError:
        return None


def check_resumable(run: str | Location, kind: str, config: dict) -> dict | None:
    """The existing record if this --out may continue with `config` (None for a new run); raises otherwise."""
    loc = run if isinstance(run, Location) else resolve(run)
    rec = read_run(loc)
    if rec is None:
        return None
    if rec.get("kind") != kind:
        raise RaywaveError(f"{loc.uri} holds a {rec.get('kind')!r} run, not {kind!r}; use a new --out")
    if rec.get("fingerprint") != fingerprint(config):
        keys = diff_keys(rec.get("config", {}), config)
        raise RaywaveError(f"{loc.uri} holds a run with another config (differs in: {', '.join(keys[:6]) or '?'}); "
                           "re-run with the same options to resume, or use a new --out")  # fmt: skip
    return rec


def begin_run(run: str | Location, kind: str, config: dict, data: dict, seed: int, workers: int, device: str,
              extra: dict | None = None) -> dict:  # fmt: skip
    """Create or reopen run.json (status running, a new attempt); a complete run is returned untouched."""
    loc = run if isinstance(run, Location) else resolve(run)
    rec = check_resumable(loc, kind, config)
    if rec is not None and rec.get("status") == "complete":
        return rec
    if rec is None:
        makedirs(loc)
        rec = {"format": "raywave.run/1", "kind": kind, "status": "running", "config": config,
               "fingerprint": fingerprint(config), "code": code_version(), "data": data, "seed": seed,
               "workers": workers, "device": device, "created": now(), "attempts": [], "summary": None,
               "run_dir": loc.uri, **(extra or {})}  # fmt: skip
    rec["status"] = "running"
    rec["code"] = code_version()
    rec["attempts"] = [*rec.get("attempts", []), {"start": now(), "end": None, "status": "running"}]
    write_json(loc, RUN_JSON, rec)
    return rec


def end_run(run: str | Location, status: str, summary: dict | None = None, error: str | None = None,
            **fields: Any) -> dict:  # fmt: skip
    """Mark the current attempt and the run complete or failed; store the summary."""
    loc = run if isinstance(run, Location) else resolve(run)
    rec = read_run(loc) or {}
    rec["status"] = status
    if summary is not None:
        rec["summary"] = summary
    if rec.get("attempts"):
        rec["attempts"][-1].update(end=now(), status=status, **({"error": error} if error else {}))
    rec.update(fields)
    write_json(loc, RUN_JSON, rec)
    return rec
