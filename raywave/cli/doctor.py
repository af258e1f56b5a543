"""`raywave doctor`: what this machine offers raywave (Ray, torch devices, Brian2 targets, output root)."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def _brian2_target_ok(target: str) -> tuple[bool, str]:
    """Compile and run a one-neuron network on `target`."""
    import brian2 as b2

    try:
        if target == "cpp_standalone":
            with tempfile.TemporaryDirectory() as d:
                b2.set_device("cpp_standalone", directory=d, build_on_run=True, with_output=False)
                g = b2.NeuronGroup(1, "dv/dt = -v/(10*ms) : 1", method="exact")
                b2.run(1 * b2.ms)
                b2.device.reinit()
                b2.device.activate()
                b2.set_device("runtime")
        else:
            b2.prefs.codegen.target = target
            g = b2.NeuronGroup(1, "dv/dt = -v/(10*ms) : 1", method="exact")
            b2.Network(g).run(1 * b2.ms)
        return True, "compiles and runs"
    except Exception as exc:  # noqa: BLE001 - report any failure of the toolchain
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"


def doctor(
    brian2_targets: bool = typer.Option(True, help="compile a tiny network on each Brian2 target (~20 s)"),
) -> None:
    """Report Ray, torch (devices), Brian2 (which targets compile) and where outputs go."""
    import brian2
    import ray
    import torch

    console = Console()
    t = Table(title="raywave doctor", show_header=False)
    t.add_column("item", style="bold")
    t.add_column("status")
    t.add_row("python", f"{platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    addr = os.environ.get("RAY_ADDRESS")
    t.add_row(
        "ray", f"{ray.__version__}; " + (f"RAY_ADDRESS={addr}" if addr else "embedded local Ray (no RAY_ADDRESS)")
    )
    devs = ["cpu"] + [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    t.add_row("torch", f"{torch.__version__}; devices: {', '.join(devs)}; threads {torch.get_num_threads()}")
    t.add_row("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "(unset: active; set PASSIVE on a loaded box)"))
    t.add_row("brian2", brian2.__version__)
    if brian2_targets:
        for target in ("numpy", "cython", "cpp_standalone"):
            ok, msg = _brian2_target_ok(target)
            t.add_row(f"  brian2 {target}", f"[green]{msg}[/]" if ok else f"[red]{msg}[/]")
    t.add_row("C++ compiler", shutil.which("g++") or shutil.which("c++") or "[red]none (cython/cpp_standalone fail)[/]")
    t.add_row("outputs", f"{Path('runs').resolve()} (the default --out root; pass --out elsewhere)")
    t.add_row("ffmpeg (mp4 movies)", shutil.which("ffmpeg") or "not found: movies are GIF")
    console.print(t)
