"""The `raywave` command line: one sub-app per stage."""

from __future__ import annotations

import errno
import sys
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from raywave.cli.bench import app as bench_app
from raywave.cli.data import app as data_app
from raywave.cli.demo import demo
from raywave.cli.doctor import doctor
from raywave.cli.fly import app as fly_app
from raywave.cli.job import app as job_app
from raywave.cli.nfp import app as nfp_app
from raywave.cli.ofe import app as ofe_app
from raywave.cli.runs import app as runs_app
from raywave.cli.sweep import app as sweep_app
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
app.add_typer(nfp_app, name="nfp")
app.add_typer(ofe_app, name="ofe")
app.add_typer(fly_app, name="fly")
app.add_typer(runs_app, name="runs")
app.add_typer(bench_app, name="bench")
app.add_typer(sweep_app, name="sweep")
app.add_typer(job_app, name="job")
app.command("doctor")(doctor)
app.command("demo")(demo)


def _error_line(message: str, code: int = 2) -> NoReturn:
    """Print `error: <message>` as one line on stderr (markup-safe, never wrapped) and exit with `code`."""
    line = " ".join(str(message).split())
    Console(stderr=True).print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _interrupted() -> NoReturn:
    Console(stderr=True).print("interrupted; re-run the same command to resume", highlight=False)
    sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one red line on stderr and exit status 2; Ctrl-C exits 130 with a hint.

    Click runs without its standalone mode so that its usage errors (a missing value, `--workers abc`, a value
    out of range) come back here and are printed as one line too, and so that Ctrl-C reaches the hint: Typer
    turns KeyboardInterrupt into `Exit(130)`, which non-standalone click returns as the exit code 130.
    A pydantic ValidationError that escaped a command's own config loading is caught as a last resort.
    """
    from pydantic import ValidationError

    from raywave.config import format_validation_error

    try:  # Typer >= 0.20 vendors click as typer._click; older ones use click itself
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc

    try:
        rc = app(args=argv, prog_name="raywave", standalone_mode=False)
    except click_exc.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click_exc.UsageError as exc:
        hint = f"; see `{exc.ctx.command_path} --help`" if exc.ctx else ""
        _error_line(f"{exc.format_message().rstrip('.')}{hint}", exc.exit_code)
    except click_exc.ClickException as exc:
        _error_line(exc.format_message(), exc.exit_code)
    except typer.Abort:
        _error_line("aborted", 1)
    except RaywaveError as exc:
        _error_line(str(exc))
    except ValidationError as exc:
        _error_line(format_validation_error(exc))
    except OSError as exc:  # the file system refused (disk full, read-only, permissions): one line, not a bug
        if exc.filename is None and exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
            raise
        where = f": {exc.filename}" if exc.filename else ""
        _error_line(f"{exc.strerror or exc}{where}; free space or choose another location, then re-run to resume")
    except KeyboardInterrupt:
        _interrupted()
    if rc == 130:  # Typer's translation of KeyboardInterrupt (no command exits 130 itself)
        _interrupted()
    sys.exit(rc if isinstance(rc, int) else 0)
