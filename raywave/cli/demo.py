"""`raywave demo`: the whole pipeline at small scale on the embedded Ray, each stage the real command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="folder of the demo's outputs (re-run to resume)"),
    tiny: bool = typer.Option(False, "--tiny", help="the test profile: the same stages on the smallest configs"),
) -> None:
    """Waves -> dataset card -> triplets -> NFP pretraining -> transfer sweep -> report, and a fly ensemble.

    Each stage runs the real `raywave` command and is skipped on a re-run once it finished; an interrupted
    stage continues where it stopped. Ends with the path of OUT/index.html, a page of every stage's figures.
    """
    from raywave.demo import run_demo
    from raywave.io import check_shared_path

    check_shared_path(out, "--out", "the demo's stages write their folders through the file system",
                      "/data/raywave/demo")  # fmt: skip
    index = run_demo(out, tiny=tiny, say=lambda text: console.print(text, highlight=False, soft_wrap=True))
    console.print(f"[green]demo finished:[/] {index.resolve()}", highlight=False, soft_wrap=True)
