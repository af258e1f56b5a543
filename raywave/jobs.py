"""Ray job submission for raywave stages (the orchestration layer; `raywave job ...` is its CLI).

A thin layer over `ray.job_submission.JobSubmissionClient` that adds what the raw client leaves to the user:
token authentication always on (Ray 2.60: the client sends a token only when `RAY_AUTH_MODE=token`, so this
module sets it and refuses `disabled`), runtime envs read from `jobs/*.yaml` and checked before anything is
sent, and one-line errors for an unreachable address, a refused token or an unknown job id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from raywave.errors import ConfigError, RaywaveError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Never uploaded with the working directory: the virtual environment, outputs, git history, caches.
DEFAULT_EXCLUDES = [".venv", "runs", ".git", "**/__pycache__", ".pytest_cache", ".ruff_cache"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def resolve_address(address: str | None) -> str:
    """`--address`, else RAY_API_SERVER_ADDRESS, else the local dashboard; a bare host:port gets http://."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_ADDRESS
    if address.startswith("ray://"):
        raise RaywaveError(
            f"--address {address!r} is a Ray Client address; jobs go to the dashboard's HTTP address "
            "(http://HEAD:8265)"
        )
    if "://" not in address:
        address = f"http://{address}"
    return address.rstrip("/")


def enable_token_auth(token_file: Path | None = None) -> None:
    """Make this process send Ray's auth token, as a 2.60 client must; never turns authentication off.

    The token comes from RAY_AUTH_TOKEN, else `token_file` / RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token
    (Ray's own order). A cluster without authentication ignores the header, so sending it always is safe.
    """
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    if mode and mode != "token":
        raise RaywaveError(
            f"RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}: raywave never turns Ray's token authentication off; "
            "unset it (or set it to 'token') and give the cluster's token"
        )
    if token_file is not None:
        if not Path(token_file).is_file():
            raise RaywaveError(f"token file {str(token_file)!r} does not exist; give the cluster's auth token file")
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(Path(token_file).resolve())
    os.environ["RAY_AUTH_MODE"] = "token"
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")  # re-read RAY_AUTH_MODE in this process
    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()
    if not loader.has_token(ignore_auth_mode=True):
        raise RaywaveError(
            "no Ray auth token found (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); copy the "
            "cluster's token there or pass --token-file (a new cluster: `ray get-auth-token --generate` first)"
        )


@contextlib.contextmanager
def job_errors(address: str, job_id: str | None = None) -> Iterator[None]:
    """Turn the job client's exceptions into one-line RaywaveErrors."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        head = str(exc).strip().splitlines()[0]
        raise RaywaveError(
            f"the Ray cluster at {address} refused this client's token ({head}); use the cluster's token "
            "(~/.ray/auth_token, RAY_AUTH_TOKEN or --token-file)"
        ) from None
    except (ConnectionError, requests.exceptions.ConnectionError) as exc:
        why = " ".join(str(exc).split())[:160]
        raise RaywaveError(
            f"cannot reach a Ray job server at {address} ({why}); check --address (the dashboard, "
            "http://HEAD:8265; `ray dashboard cluster/aws.yaml` forwards a launcher cluster's) and that it is up"
        ) from None
    except RuntimeError as exc:
        text = " ".join(str(exc).split())
        if job_id is not None and ("404" in text or "does not exist" in text):
            raise RaywaveError(
                f"no job {job_id!r} on {address}; `raywave job list --address {address}` lists its jobs"
            ) from None
        raise RaywaveError(f"the job server at {address} answered: {text[:300]}") from None


def connect(address: str | None, token_file: Path | None = None):
    """A JobSubmissionClient for `address` with token authentication on."""
    import logging

    from ray.job_submission import JobSubmissionClient

    logging.getLogger("ray").setLevel(logging.ERROR)  # packaging chatter; errors reach the user as one line
    address = resolve_address(address)
    enable_token_auth(token_file)
    with job_errors(address):
        return JobSubmissionClient(address)


def load_runtime_env(path: Path | None, working_dir: Path | None) -> dict[str, Any]:
    """The runtime env of a submission: a jobs/*.yaml file, with `working_dir` given or from the file (else
    the current directory), resolved to an absolute path, and the default excludes added. Checked here, so a
    bad file is one line before anything is uploaded."""
    from raywave.config import load_yaml

    env: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"runtime env file {str(path)!r} does not exist; see jobs/ for one per stage")
        env = load_yaml(path) or {}
        if not isinstance(env, dict):
            raise ConfigError(f"runtime env file {str(path)!r} must hold a YAML mapping (env_vars, excludes, ...)")
    from ray.runtime_env import RuntimeEnv

    unknown = sorted(set(env) - RuntimeEnv.known_fields)
    if unknown:
        raise ConfigError(f"runtime env {str(path)!r}: unknown field {unknown[0]!r}; see Ray's runtime_env docs")
    wd = Path(working_dir if working_dir is not None else env.get("working_dir", "."))
    if not wd.is_dir():
        raise ConfigError(f"working directory {str(wd)!r} does not exist; give --working-dir")
    env["working_dir"] = str(wd.resolve())
    env["excludes"] = list(dict.fromkeys([*(env.get("excludes") or []), *DEFAULT_EXCLUDES]))
    env_vars = env.get("env_vars") or {}
    if not isinstance(env_vars, dict):
        raise ConfigError(f"runtime env {str(path)!r}: env_vars must be a mapping NAME: value")
    env["env_vars"] = {str(k): str(v) for k, v in env_vars.items()}
    try:
        RuntimeEnv(**env)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"runtime env {str(path)!r}: {' '.join(str(exc).split())}") from None
    return env


def require_entrypoint(entrypoint: list[str] | None) -> None:
    if not entrypoint:
        raise ConfigError("no entrypoint: give the command after `--`, e.g. -- python -m raywave waves generate ...")


def submit(
    client,
    entrypoint: list[str],
    runtime_env: dict[str, Any],
    submission_id: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
) -> str:
    """Submit `entrypoint` (an argv list) and return its submission id."""
    require_entrypoint(entrypoint)
    kwargs: dict[str, Any] = {}
    if num_cpus is not None:
        kwargs["entrypoint_num_cpus"] = num_cpus
    if num_gpus is not None:
        kwargs["entrypoint_num_gpus"] = num_gpus
    with job_errors(client.get_address()):
        return client.submit_job(
            entrypoint=shlex.join(entrypoint), runtime_env=runtime_env, submission_id=submission_id, **kwargs
        )


def info(client, job_id: str):
    """The job's JobDetails (status, message, entrypoint, times)."""
    with job_errors(client.get_address(), job_id):
        return client.get_job_info(job_id)


def logs(client, job_id: str) -> str:
    with job_errors(client.get_address(), job_id):
        client.get_job_info(job_id)  # a clear error for an unknown id
        return client.get_job_logs(job_id)


def follow(client, job_id: str, write: Callable[[str], None]) -> Any:
    """Stream the job's logs to `write` until it ends; returns its final JobDetails."""

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    with job_errors(client.get_address(), job_id):
        client.get_job_info(job_id)
        asyncio.run(_tail())
        return client.get_job_info(job_id)


def stop(client, job_id: str, wait_s: float = 0.0) -> Any:
    """Ask the job to stop; with `wait_s`, wait up to that long for a terminal status. Returns JobDetails."""
    import time

    with job_errors(client.get_address(), job_id):
        client.get_job_info(job_id)
        client.stop_job(job_id)
        deadline = time.time() + wait_s
        details = client.get_job_info(job_id)
        while str(details.status) not in TERMINAL and time.time() < deadline:
            time.sleep(0.5)
            details = client.get_job_info(job_id)
        return details


def list_jobs(client) -> list[Any]:
    """Every job the cluster knows, newest first."""
    with job_errors(client.get_address()):
        jobs = client.list_jobs()
    return sorted(jobs, key=lambda j: j.start_time or 0, reverse=True)
