"""Print a Markdown table of a `raywave bench waves --save` JSON file (used for the README's table)."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    res = json.load(open(path))
    m = res["machine"]
    print(f"Machine: {m['cpus']} CPUs ({m['cpu']}), torch threads {m['torch_threads']}, GPU: {m['gpu'] or 'none'}; "
          f"{res['date']}; {res['model']}.\n")
    print("| backend | lattice | ns / cell-step | cell-steps / s | x Brian2 cpp_standalone (1 thread) | warm-up s |")
    print("|---|---|---|---|---|---|")
    for r in res["rows"]:
        ratio = r["speedup_vs_brian2_cpp_standalone_1thread"]
        print(f"| {r['backend']} | {r['lattice']} | {r['ns_per_cell_step']:.1f} | {r['cell_steps_per_s']:.3g} | "
              f"{ratio:.2f} | {r['warmup_seconds']:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/waves-cpu.json")
