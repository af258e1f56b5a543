"""Print a Markdown table of a `raywave bench waves|data --save` JSON file (used for the README's tables)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def data_table(res: dict) -> None:
    m, s, ld = res["machine"], res["sweep"], res["loading"]
    print(
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), GPU: {m['gpu'] or 'none'}; embedded Ray with "
        f"{res['embedded_ray_cpus']} CPUs; Ray {res['versions']['ray']}; {res['date']}.\n"
    )
    print("| measure | baseline | raywave | ratio | goal |")
    print("|---|---|---|---|---|")
    print(
        f"| sweep of {s['simulations']} simulations, {s['lattice']} x {s['duration_s']:g} s (simulations/min, "
        f"actor start-up included) | 1 worker: {s['workers_1']['simulations_per_minute']:.2f} | 2 workers: "
        f"{s['workers_2']['simulations_per_minute']:.2f} | {s['speedup_2_vs_1']:.2f}x | >= 1.7x |"
    )
    n = ld["triplets_per_epoch"] * ld["epochs"]
    for label, runs, ratio in [
        ("", ld, ld["ray_vs_plain"]),
        (" (first pipeline of the session)", ld["cold"], ld["ray_vs_plain_cold"]),
    ]:
        p, r = runs["torch_dataloader"], runs["ray_data"]
        print(
            f"| triplets {ld['lattice']}, {n} in batches of {ld['batch_size']}{label} (triplets/s) | "
            f"DataLoader: {p['triplets_per_s']:.0f} | Ray Data: {r['triplets_per_s']:.0f} | {ratio:.2f}x | "
            ">= 0.8x and >= 1,000/s |"
        )
    p, r = ld["torch_dataloader"], ld["ray_data"]
    print(
        f"| same, steady state (after the first batch) | {p['steady_triplets_per_s']:.0f} | "
        f"{r['steady_triplets_per_s']:.0f} | {ld['ray_vs_plain_steady']:.2f}x | |"
    )
    print(f"| time to the first batch (s) | {p['first_batch_s']:.2f} | {r['first_batch_s']:.2f} | | |")


def _machine_line(res: dict) -> None:
    m = res["machine"]
    print(f"Machine: {m['cpus']} CPUs ({m['cpu']}), torch threads {m['torch_threads']}, GPU: {m['gpu'] or 'none'}; "
          f"torch {res['torch']}; device {res['device']}; {res['date']}.\n")


def raft_table(res: dict) -> None:
    _machine_line(res)
    print("| variant | mode | dtype | size x batch | iterations | s | peak MiB | reference s (design notes) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        ref = r.get("reference_cpu_s_from_design_notes", "-")
        print(f"| {r['variant']} | {r['mode']} | {r['dtype']} | {r['size']} x {r['batch']} | {r['iters']} | "
              f"{r['seconds']:.2f} | {r['peak_memory_mib']:.0f} | {ref} |")


def fly_table(res: dict) -> None:
    _machine_line(res)
    print("| mode | implementation | batch x steps | s | peak MiB | speed-up vs per-edge | max rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        up = f"{r['speedup_vs_per_edge']:.1f}x" if "speedup_vs_per_edge" in r else "-"
        diff = r["max_rel_grad_diff"] if r.get("max_rel_grad_diff") is not None else r.get("max_rel_voltage_diff")
        print(f"| {r['mode']} | {r['impl']} | {r['batch']} x {r['steps']} | {r['seconds']:.3f} | "
              f"{r['peak_memory_mib']:.0f} | {up} | {f'{diff:.1e}' if diff is not None else '-'} |")


def main(path: str) -> None:
    res = json.loads(Path(path).read_text())
    if res.get("benchmark") == "data":
        data_table(res)
        return
    if res.get("benchmark") == "raft":
        raft_table(res)
        return
    if res.get("benchmark") == "fly":
        fly_table(res)
        return
    m = res["machine"]
    load = f"; load average {res['load_average_1min']:.1f} at the start" if "load_average_1min" in res else ""
    print(
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), torch threads {m['torch_threads']}, GPU: {m['gpu'] or 'none'}; "
        f"{res['date']}; {res['model']}{load}.\n"
    )
    print("| backend | lattice | threads | ns / cell-step | limit ns | % of limit | cell-steps / s | "
          "x Brian2 cpp_standalone (1 thread) | warm-up s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        ratio, lim, frac = (r["speedup_vs_brian2_cpp_standalone_1thread"], r.get("limit_ns_per_cell_step"),
                            r.get("fraction_of_limit"))
        print(
            f"| {r['backend']} | {r['lattice']} | {r.get('threads', '-')} | {r['ns_per_cell_step']:.2f} | "
            f"{f'{lim:.2f}' if lim else '-'} | {f'{100 * frac:.0f}' if frac else '-'} | {r['cell_steps_per_s']:.3g} | "
            f"{ratio:.2f} | {r['warmup_seconds']:.1f} |"
        )
    if res.get("native_build_seconds") is not None:
        print(f"\nA fresh build of the native kernel took {res['native_build_seconds']:.1f} s (once per machine).")
    lim = res.get("arithmetic_limit")
    if lim:
        print(f"Limit: {lim['cycles_per_cell_step']:.2f} cycles per cell-step (the native float32 loop's vector "
              f"instructions on every pipe) at {lim['clock_ghz_from_fma_peak']:.2f} GHz (measured FMA peak).")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/waves-cpu.json")
