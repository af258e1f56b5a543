"""`raywave job ...`: submit a stage to a Ray cluster's job server, follow it, stop it (token auth always on)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Ray jobs: submit a raywave stage to a cluster (`-- python -m raywave ...`), follow, stop, list.",
    no_args_is_help=True,
)
console = Console()

AddressOpt = typer.Option(
    None, "--address", "-a",
    help="the cluster's job server (dashboard) address, default RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265",
)  # fmt: skip
TokenOpt = typer.Option(
    None, "--token-file",
    help="the cluster's auth token file (default: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)",
)  # fmt: skip
JobIdArg = typer.Argument(..., help="the job's submission id (printed by `submit`, listed by `list`)")


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ms else "-"


def _follow_to_end(client, job_id: str) -> None:
    from raywave import jobs

    def write(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    try:
        details = jobs.follow(client, job_id, write)
    except KeyboardInterrupt:
        console.print(f"stopped following; job {job_id} keeps running (`raywave job stop {job_id}` stops it)")
        raise typer.Exit(130) from None
    status = str(details.status)
    colour = "green" if status == "SUCCEEDED" else "red"
    message = (details.message or "").strip().splitlines()[:1]  # a failure's message repeats the logs after line 1
    console.print(f"[{colour}]job {job_id} {status}[/]" + (f": {message[0]}" if message else ""),
                  soft_wrap=True, highlight=False)  # fmt: skip
    if status != "SUCCEEDED":
        raise typer.Exit(1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    entrypoint: list[str] = typer.Argument(None, help="the command to run, after `--`: python -m raywave ..."),
    address: str = AddressOpt,
    working_dir: Path = typer.Option(
        None, "--working-dir", "-w", help="directory uploaded as the job's working dir (default: the env's, else .)"
    ),
    runtime_env: Path = typer.Option(
        None, "--runtime-env", "-r", help="runtime env YAML (one per stage in jobs/, e.g. jobs/waves-generate.yaml)"
    ),
    submission_id: str = typer.Option(None, "--submission-id", help="the job's id (default: one Ray makes)"),
    num_cpus: float = typer.Option(None, "--entrypoint-num-cpus", help="CPUs reserved for the driver"),
    num_gpus: float = typer.Option(None, "--entrypoint-num-gpus", help="GPUs reserved for the driver"),
    wait: bool = typer.Option(False, "--wait", help="stream the job's logs until it ends; exit 1 unless it succeeded"),
    token_file: Path = TokenOpt,
) -> None:
    """Submit a job: `raywave job submit -r jobs/waves-generate.yaml --wait -- python -m raywave waves generate ...`."""
    from raywave import jobs

    env = jobs.load_runtime_env(runtime_env, working_dir)  # checked before connecting
    jobs.require_entrypoint(entrypoint)
    client = jobs.connect(address, token_file)
    job_id = jobs.submit(client, entrypoint, env, submission_id, num_cpus, num_gpus)
    console.print(f"submitted job [bold]{job_id}[/] to {client.get_address()}", highlight=False)
    if not wait:
        console.print(f"follow it: raywave job logs {job_id} --follow; status: raywave job status {job_id}",
                      highlight=False, soft_wrap=True)  # fmt: skip
        return
    _follow_to_end(client, job_id)


@app.command()
def status(
    job_id: str = JobIdArg,
    address: str = AddressOpt,
    as_json: bool = typer.Option(False, "--json", help="print the job's details as one JSON object"),
    token_file: Path = TokenOpt,
) -> None:
    """A job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), message and times."""
    from raywave import jobs

    client = jobs.connect(address, token_file)
    details = jobs.info(client, job_id)
    if as_json:
        print(json.dumps(details.model_dump(mode="json") if hasattr(details, "model_dump") else details.dict(),
                         default=str))  # fmt: skip
        return
    console.print(f"job {job_id}: [bold]{details.status}[/]" + (f" ({details.message})" if details.message else ""),
                  highlight=False, soft_wrap=True)  # fmt: skip
    console.print(f"  entrypoint: {details.entrypoint}", highlight=False, soft_wrap=True)
    console.print(f"  started {_when(details.start_time)}, ended {_when(details.end_time)}", highlight=False)


@app.command()
def logs(
    job_id: str = JobIdArg,
    address: str = AddressOpt,
    follow: bool = typer.Option(False, "--follow", "-f", help="keep streaming until the job ends"),
    token_file: Path = TokenOpt,
) -> None:
    """A job's driver output (stdout and stderr) so far, or streamed with --follow."""
    from raywave import jobs

    client = jobs.connect(address, token_file)
    if follow:
        _follow_to_end(client, job_id)
        return
    sys.stdout.write(jobs.logs(client, job_id))


@app.command()
def stop(
    job_id: str = JobIdArg,
    address: str = AddressOpt,
    wait_s: float = typer.Option(30.0, "--wait-s", help="seconds to wait for the job to end (0: do not wait)"),
    token_file: Path = TokenOpt,
) -> None:
    """Stop a running job (its driver gets SIGTERM, then SIGKILL); re-submit the same command to resume it."""
    from raywave import jobs

    client = jobs.connect(address, token_file)
    before = jobs.info(client, job_id)
    if str(before.status) in jobs.TERMINAL:
        console.print(f"job {job_id} had already ended: {before.status}", highlight=False)
        return
    details = jobs.stop(client, job_id, wait_s)
    console.print(f"job {job_id}: {details.status}", highlight=False)


@app.command("list")
def list_(
    address: str = AddressOpt,
    as_json: bool = typer.Option(False, "--json", help="one JSON list"),
    token_file: Path = TokenOpt,
) -> None:
    """The cluster's jobs, newest first: id, status, start time, entrypoint."""
    from raywave import jobs

    client = jobs.connect(address, token_file)
    rows = jobs.list_jobs(client)
    if as_json:
        print(json.dumps([{"submission_id": j.submission_id, "status": str(j.status), "entrypoint": j.entrypoint,
                           "start_time": j.start_time, "end_time": j.end_time} for j in rows]))  # fmt: skip
        return
    table = Table("submission id", "status", "started", "entrypoint")
    for j in rows:
        table.add_row(j.submission_id or j.job_id or "-", str(j.status), _when(j.start_time), j.entrypoint)
    console.print(table)
    if not rows:
        console.print(f"no jobs on {client.get_address()}", highlight=False)
