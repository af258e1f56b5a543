"""Rich progress bars for long work."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def frame_progress(description: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """Yield `update(done, total)`; draws a bar on a terminal, nothing when quiet."""
    if quiet:
        yield lambda done, total: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("frames"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextlib.contextmanager
def sweep_progress(n_sims: int, quiet: bool = False) -> Iterator[Callable[[dict], None]]:
    """Yield `update(info)` for a sweep: frames done across running simulations, and simulations done."""
    if quiet:
        yield lambda info: None
        return
    with Progress(
        TextColumn("[bold]sweep"),
        BarColumn(),
        TextColumn("{task.fields[sims]}"),
        MofNCompleteColumn(),
        TextColumn("frames"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task("sweep", total=None, sims=f"0/{n_sims} new sims")

        def update(info: dict) -> None:
            bar.update(task, completed=info["frames_done"], total=info["frames_total"],
                       sims=f"{info['sims_done']}/{info['sims_total']} new sims")  # fmt: skip

        yield update
