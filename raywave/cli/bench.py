"""`raywave bench ...`: benchmarks against their baselines, in the same run."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from raywave.errors import ConfigError
from raywave.io import write_json_atomic

app = typer.Typer(help="Benchmarks: this project against its baseline in the same run.", no_args_is_help=True)


def _emit(result: dict, save: Path | None, as_json: bool) -> bool:
    """Save the results if asked; with --json print them as one object and return True (no table)."""
    if save:
        write_json_atomic(save, result)
    if as_json:
        typer.echo(json.dumps(result))
    return as_json


def _require_device(device: str) -> None:
    """A cuda device that is not there is a one-line error before anything runs."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is visible; use --device cpu")


@app.command()
def waves(
    sizes: str = typer.Option("32,64,128", help="comma-separated square lattice sides"),
    backends: str = typer.Option("all", help="comma-separated backends, or all (see --list)"),
    max_frames: int = typer.Option(10, help="at most this many 100-ms frames per timing (shorter for slow ones)"),
    poster: bool = typer.Option(False, help="also time the poster's full run (432x432, 540 s) on --device"),
    device: str = typer.Option("cuda", help="device of the --poster run"),
    save: Path = typer.Option(None, help="write the results JSON here (e.g. benchmarks/results/waves-cpu.json)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
    list_: bool = typer.Option(False, "--list", help="list the backends and exit"),
) -> None:
    """Cell-steps per second of every backend on the same lattices, as ratios against Brian2 cpp_standalone."""
    from raywave.bench.waves import BACKENDS, available_backends, poster_run, run_benchmark

    if list_:
        typer.echo("\n".join(BACKENDS))
        return
    try:
        size_list = [int(x) for x in sizes.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--sizes {sizes!r}: give comma-separated integers, e.g. 64,128") from None
    if not size_list or min(size_list) < 1:
        raise ConfigError("--sizes needs at least one lattice side >= 1")
    chosen = available_backends() if backends == "all" else [b.strip() for b in backends.split(",")]
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown:
        raise ConfigError(f"unknown backend(s) {unknown}; choose from {list(BACKENDS)}")
    console = Console(stderr=True)
    result = run_benchmark(size_list, chosen, max_frames, log=None if as_json else console.log)
    if poster:
        result["poster_run"] = poster_run(device)
    if _emit(result, save, as_json):
        return
    m = result["machine"]
    t = Table(title=f"waves benchmark ({m['cpus']} CPUs: {m['cpu']}; gpu: {m['gpu']}; "
                    f"load {result['load_average_1min']:.1f})")  # fmt: skip
    cols = ("backend", "lattice", "threads", "ns/cell-step", "limit ns", "% of limit", "cell-steps/s",
            "x brian2 cpp (1 thread)", "warm-up s")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="right")
    for r in result["rows"]:
        ratio, frac = r["speedup_vs_brian2_cpp_standalone_1thread"], r["fraction_of_limit"]
        t.add_row(r["backend"], r["lattice"], str(r["threads"]), f"{r['ns_per_cell_step']:.2f}",
                  f"{r['limit_ns_per_cell_step']:.2f}" if r["limit_ns_per_cell_step"] else "-",
                  f"{100 * frac:.0f}" if frac else "-", f"{r['cell_steps_per_s']:.3g}",
                  f"{ratio:.1f}" if ratio else "-", f"{r['warmup_seconds']:.1f}")  # fmt: skip
    out = Console(width=max(Console().width, 140))
    out.print(t)
    if result.get("native_build_seconds") is not None:
        out.print(f"native kernel: a fresh build takes {result['native_build_seconds']:.1f} s (once per machine)")
    if result.get("arithmetic_limit"):
        lim = result["arithmetic_limit"]
        out.print(f"limit: {lim['cycles_per_cell_step']:.2f} cycles per cell-step (the native float32 loop's "
                  f"vector instructions on every pipe) at {lim['clock_ghz_from_fma_peak']:.2f} GHz (from the "
                  "measured FMA peak)")  # fmt: skip
    if "poster_run" in result:
        out.print(result["poster_run"])


@app.command()
def data(
    sweep_size: int = typer.Option(64, help="lattice side of the sweep-throughput simulations"),
    sweep_duration_s: float = typer.Option(20.0, help="simulated seconds per sweep simulation"),
    sweep_sims: int = typer.Option(12, help="simulations in the sweep"),
    load_size: int = typer.Option(128, help="lattice side of the triplet-loading dataset"),
    load_duration_s: float = typer.Option(10.0, help="simulated seconds per loading-dataset simulation"),
    epochs: int = typer.Option(100, help="epochs of triplets each loader delivers (one stream)"),
    batch_size: int = typer.Option(64, help="triplets per batch"),
    save: Path = typer.Option(None, help="write the results JSON here (e.g. benchmarks/results/data-cpu.json)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
) -> None:
    """Sweep throughput (2 workers vs 1) and triplet loading (Ray Data vs torch DataLoader), one run."""
    from raywave.bench.data import run_benchmark

    if min(sweep_size, load_size, sweep_sims, epochs, batch_size) < 1 or min(sweep_duration_s, load_duration_s) <= 0:
        raise ConfigError("sizes, counts and durations must be positive")
    console = Console(stderr=True)
    result = run_benchmark(sweep_size, sweep_duration_s, sweep_sims, load_size, 4, load_duration_s, epochs,
                           batch_size, log=None if as_json else console.log)  # fmt: skip
    if _emit(result, save, as_json):
        return
    s, ld = result["sweep"], result["loading"]
    t = Table(title=f"data benchmark ({result['machine']['cpus']} CPUs: {result['machine']['cpu']})")
    for col in ("measure", "baseline", "raywave", "ratio", "goal"):
        t.add_column(col)
    t.add_row(
        f"sweep, {s['simulations']} sims {s['lattice']} x {s['duration_s']:g} s (sims/min)",
        f"1 worker: {s['workers_1']['simulations_per_minute']:.2f}",
        f"2 workers: {s['workers_2']['simulations_per_minute']:.2f}",
        f"{s['speedup_2_vs_1']:.2f}x",
        ">= 1.7x",
    )
    t.add_row(f"triplets {ld['lattice']}, batch {ld['batch_size']}, {ld['epochs']} epochs (triplets/s)",
              f"DataLoader: {ld['torch_dataloader']['triplets_per_s']:.0f}",
              f"Ray Data: {ld['ray_data']['triplets_per_s']:.0f}", f"{ld['ray_vs_plain']:.2f}x",
              ">= 0.8x, >= 1000/s")  # fmt: skip
    cold = ld["cold"]
    t.add_row("  (first pipeline of the session, start-up included)",
              f"DataLoader: {cold['torch_dataloader']['triplets_per_s']:.0f}",
              f"Ray Data: {cold['ray_data']['triplets_per_s']:.0f}", f"{ld['ray_vs_plain_cold']:.2f}x", "")  # fmt: skip
    Console(width=max(Console().width, 140)).print(t)


@app.command()
def raft(
    device: str = typer.Option("cpu", help="cpu or cuda (cuda also times bf16 autocast against fp32)"),
    repeats: int = typer.Option(2, help="timed repetitions per measurement (the fastest is reported)"),
    height: int = typer.Option(368, help="image height"),
    width: int = typer.Option(496, help="image width"),
    save: Path = typer.Option(None, help="write the results JSON here (e.g. benchmarks/results/raft-cpu.json)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
) -> None:
    """Train-step (batch 2, 12 iterations) and eval (24 iterations) time and peak memory of RAFT small and basic."""
    from raywave.bench.raft import run_benchmark

    if repeats < 1 or height % 8 or width % 8 or min(height, width) < 128:
        raise ConfigError("--repeats >= 1; --height and --width multiples of 8 and >= 128")
    _require_device(device)
    console = Console(stderr=True)
    result = run_benchmark(device, repeats, (height, width), log=None if as_json else console.log)
    if _emit(result, save, as_json):
        return
    t = Table(title=f"RAFT benchmark on {device} ({result['machine']['cpu']}, gpu: {result['machine']['gpu']})")
    for col in ("variant", "mode", "dtype", "size x batch", "iters", "s", "peak MiB", "reference s", "vs fp32"):
        t.add_column(col, justify="right")
    for r in result["rows"]:
        ref = r.get("reference_cpu_s_from_design_notes")
        t.add_row(r["variant"], r["mode"], r["dtype"], f"{r['size']} x {r['batch']}", str(r["iters"]),
                  f"{r['seconds']:.2f}", f"{r['peak_memory_mib']:.0f}", f"{ref:g}" if ref else "-",
                  f"{r['speedup_vs_fp32']:.2f}x" if "speedup_vs_fp32" in r else "-")  # fmt: skip
    Console(width=max(Console().width, 120)).print(t)


@app.command()
def fly(
    device: str = typer.Option("cpu", help="cpu or cuda"),
    batch: int = typer.Option(4, help="batch size"),
    steps: int = typer.Option(40, help="Euler steps (40 = 19 frames at 24 fps resampled to dt 0.02 s)"),
    repeats: int = typer.Option(10, help="timed repetitions per process (the fastest is reported)"),
    rounds: int = typer.Option(2, help="fresh processes per implementation, alternating between the two"),
    save: Path = typer.Option(None, help="write the results JSON here (e.g. benchmarks/results/fly-cpu.json)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
    flyvis_python: Path = typer.Option(
        None, help="python of an environment with flyvis 1.2.0: also time flyvis itself (never a dependency)"
    ),
) -> None:
    """Fly network forward and forward+decoder+backward: this project vs the per-edge scatter baseline (and flyvis)."""
    from raywave.bench.fly import check_flyvis_python, run_benchmark

    if min(repeats, rounds, batch, steps) < 1:
        raise ConfigError("--repeats, --rounds, --batch and --steps must be >= 1")
    _require_device(device)
    if flyvis_python is not None:
        check_flyvis_python(flyvis_python)
        if device != "cpu":
            raise ConfigError("--flyvis-python times flyvis on the CPU; use --device cpu")
    console = Console(stderr=True)
    result = run_benchmark(device, batch, steps, repeats, rounds, log=None if as_json else console.log,
                           flyvis_python=flyvis_python)  # fmt: skip
    if _emit(result, save, as_json):
        return
    t = Table(title=f"fly network benchmark on {device} ({result['machine']['cpu']}, gpu: {result['machine']['gpu']})")
    for col in ("mode", "implementation", "batch x steps", "s", "peak MiB", "vs per-edge", "vs flyvis", "max rel diff"):
        t.add_column(col, justify="right")
    for r in result["rows"]:
        diff = r["max_rel_grad_diff"] if r.get("max_rel_grad_diff") is not None else r.get("max_rel_voltage_diff")
        impl = f"{r['impl']} ({r['kernel']})" if r.get("kernel") else r["impl"]
        t.add_row(r["mode"], impl, f"{r['batch']} x {r['steps']}", f"{r['seconds']:.3f}",
                  f"{r['peak_memory_mib']:.0f}",
                  f"{r['speedup_vs_per_edge']:.1f}x" if "speedup_vs_per_edge" in r else "-",
                  f"{r['speedup_vs_flyvis']:.1f}x (cpu {r['cpu_time_ratio_vs_flyvis']:.1f}x)"
                  if "speedup_vs_flyvis" in r else "-",
                  f"{diff:.1e}" if diff is not None else "-")  # fmt: skip
    Console(width=max(Console().width, 120)).print(t)


@app.command()
def ensemble(
    models: str = typer.Option("1,4,8", help="comma-separated models per pass (K); add 50 on a GPU"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    batch: int = typer.Option(4, help="batch size per model"),
    steps: int = typer.Option(40, help="Euler steps per sample"),
    repeats: int = typer.Option(3, help="timed repetitions per process (the fastest is reported)"),
    rounds: int = typer.Option(2, help="fresh processes per K, alternating between the K values"),
    save: Path = typer.Option(None, help="write the results JSON here (e.g. benchmarks/results/ensemble-cpu.json)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
) -> None:
    """Fly ensembles: per-model training throughput with K models in one network pass, against K = 1."""
    from raywave.bench.ensemble import run_benchmark

    try:
        ks = sorted({int(k) for k in models.split(",") if k.strip()})
    except ValueError:
        raise ConfigError(f"--models {models!r}: give comma-separated integers, e.g. 1,4,8") from None
    if not ks or ks[0] < 1 or min(repeats, rounds, batch, steps) < 1:
        raise ConfigError("--models values, --repeats, --rounds, --batch and --steps must be >= 1")
    _require_device(device)
    result = run_benchmark(ks, device, batch, steps, repeats, rounds, log=None if as_json else Console(stderr=True).log)
    if _emit(result, save, as_json):
        return
    t = Table(title=f"fly ensemble benchmark on {device} ({result['machine']['cpu']}, gpu: {result['machine']['gpu']})")
    for col in ("K", "step s", "model-it/s", "per model vs K=1", "median step s", "vs K=1 (medians)", "peak MiB"):
        t.add_column(col, justify="right")
    for r in result["rows"]:
        ratio, ratio_median = r["per_model_vs_k1"], r["per_model_vs_k1_median"]
        t.add_row(str(r["models_per_pass"]), f"{r['step_seconds']:.3f}", f"{r['model_iterations_per_s']:.2f}",
                  "-" if ratio is None else f"{ratio:.2f}x", f"{r['median_step_seconds']:.3f}",
                  "-" if ratio_median is None else f"{ratio_median:.2f}x", f"{r['peak_memory_mib']:.0f}")  # fmt: skip
    Console(width=max(Console().width, 120)).print(t)


@app.command()
def train(
    steps: int = typer.Option(30, help="optimizer steps per configuration (throughput after --warmup steps)"),
    batch: int = typer.Option(8, help="global batch"),
    warmup: int = typer.Option(5, help="steps not timed at the start"),
    side: int = typer.Option(16, help="lattice side of the benchmark's wave-like dataset"),
    pixels_per_cell: int = typer.Option(2, help="pixels per lattice cell (frames of side x this px)"),
    tasks: str = typer.Option("nfp,raft", help="nfp, raft or both (RAFT-small: 128x128, batch 4, 20 steps)"),
    save: Path = typer.Option(None, help="write the results JSON here (e.g. benchmarks/results/train-cpu.json)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
) -> None:
    """Samples/s of NFP-small and RAFT-small training: plain loop vs Ray Train with 1 and 2 workers (1 thread each)."""
    from raywave.bench.train import run_benchmark

    if min(steps, batch, side, pixels_per_cell) < 1 or batch % 2 or not 0 <= warmup < steps - 1:
        raise ConfigError("--steps, --batch (even), --side, --pixels-per-cell >= 1; 0 <= --warmup < steps - 1")
    chosen = tuple(t.strip() for t in tasks.split(",") if t.strip())
    if not chosen or set(chosen) - {"nfp", "raft"}:
        raise ConfigError(f"--tasks {tasks!r}: choose nfp, raft or nfp,raft")
    console = Console(stderr=True)
    result = run_benchmark(steps, batch, warmup, side, pixels_per_cell, log=None if as_json else console.log,
                           tasks=chosen)  # fmt: skip
    if _emit(result, save, as_json):
        return
    m = result["machine"]
    t = Table(title=f"training benchmark ({m['cpus']} CPUs: {m['cpu']}; load {result['load_average_1_5_15'][0]:.1f})")
    for col in ("task", "mode", "samples/s", "x plain", "command wall s", "goal"):
        t.add_column(col, justify="right")
    for r in result["rows"]:
        t.add_row(r["task"], r["mode"], f"{r['samples_per_s']:.2f}", f"{r['vs_plain']:.2f}x",
                  f"{r['command_wall_s']:.0f}", ">= 0.9x" if r["workers"] == 1 else "")  # fmt: skip
    Console(width=max(Console().width, 120)).print(t)
