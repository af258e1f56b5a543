"""The CLI reference (docs/cli.md) is generated from the Typer app by Typer's own generator and is never stale;
every command has --help and appears in it (issue 15, acceptance 4)."""

from __future__ import annotations

import importlib.util

import typer
from typer.testing import CliRunner

from .conftest import ROOT


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _command_paths() -> list[list[str]]:
    from raywave.cli import app

    paths, stack = [], [([], typer.main.get_command(app))]
    while stack:
        path, cmd = stack.pop()
        paths.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            stack.append((path + [name], sub))
    return sorted(paths)


def test_cli_reference_is_current():
    gen = _generator()
    fresh = gen.render()
    current = gen.CLI_MD.read_text() if gen.CLI_MD.exists() else ""
    assert current == fresh, "docs/cli.md is stale: run `make docs` (python docs/gen_cli.py) and commit it"


def test_every_command_has_help_and_is_in_the_reference():
    from raywave.cli import app

    text = _generator().render()
    paths = _command_paths()
    assert len(paths) > 20
    runner = CliRunner()
    for path in paths:
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, (path, res.output)
        assert f"`{' '.join(['raywave', *path])}`" in text, path
