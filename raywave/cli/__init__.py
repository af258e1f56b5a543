"""The `raywave` command line: one sub-app per stage."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from raywave.cli.bench import app as bench_app
from raywave.cli.data import app as data_app
from raywave.cli.doctor import doctor
from raywave.cli.fly import app as fly_app
from raywave.cli.ofe import app as ofe_app
from raywave.cli.waves import app as waves_app
from raywave.errors import RaywaveError

app = typer.Typer(
    name="raywave",
    help="Retinal-wave simulation, NFP pre-training and optical-flow transfer, locally or on a Ray cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(waves_app, name="waves")
app.add_typer(data_app, name="data")
app.add_typer(ofe_app, name="ofe")
app.add_typer(fly_app, name="fly")
app.add_typer(bench_app, name="bench")
app.command("doctor")(doctor)


def main() -> None:
    """Entry point: user errors become one red line on stderr and exit status 2."""
    try:
        app()
    except RaywaveError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted; re-run the same command to resume", highlight=False)
        sys.exit(130)
