"""Ray start/attach: an embedded local Ray by default, a cluster with `--address` or RAY_ADDRESS.

This is the only place that decides how Ray is started; everything else calls `ray_session()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from raywave.errors import RaywaveError


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    object_store_mb: int | None = None,
    dashboard: bool = False,
    quiet: bool = True,
) -> Iterator[dict]:
    """Use the Ray already initialised in this process, or attach to `address`/RAY_ADDRESS, or start a
    local one (not attaching to a `ray start` cluster on this host unless asked). Shuts down only what it
    started. Yields the cluster's resources."""
    import ray

    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": not quiet}
    if address:
        kwargs["address"] = address
    else:
        kwargs.update(address="local", include_dashboard=dashboard, num_cpus=num_cpus or os.cpu_count())
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
        if object_store_mb:
            kwargs["object_store_memory"] = object_store_mb * 2**20
    _init(ray, kwargs, address)
    try:
        if quiet:
            from ray.data import DataContext

            DataContext.get_current().enable_progress_bars = False
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


def _init(ray, kwargs: dict, address: str | None, attempts: int = 2) -> None:
    """ray.init, once more if a local start times out (a raylet that misses Ray's 30 s registration window on an
    overloaded machine); any failure is one line. ray.init raises plain Exceptions for a node start timeout."""
    # Ray 2.60 turns token authentication on for a new local cluster and says so on stderr at every start; it
    # stays on (never disabled here), the notice is dropped so that a command's errors stay one line.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    for attempt in range(1, attempts + 1):
        try:
            ray.init(**kwargs)
            return
        except ConnectionError as exc:
            raise RaywaveError(
                f"cannot reach the Ray cluster at {address!r} ({exc}); check --address or RAY_ADDRESS"
            ) from None
        except Exception as exc:  # noqa: BLE001
            with contextlib.suppress(Exception):
                ray.shutdown()
            if address or attempt == attempts:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                where = f"at {address!r}" if address else "(the embedded local Ray)"
                raise RaywaveError(f"Ray did not start {where}: {first}; nothing was written, re-run the command "
                                   "(on a busy machine, once the load is lower)") from None
