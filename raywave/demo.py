"""The whole pipeline at small scale, each stage the real `raywave` command, resumable stage by stage.

A stage is data: a name, the command line (run as `python -m raywave ...` in a subprocess, exactly what a user
would type), the folder it writes, and a title for the index page. After a stage's command exits 0 its marker
`OUT/.stages/<name>.json` is written atomically (command, seconds, time); a re-run skips a stage whose marker
holds the same command. Every command is itself resumable, so an interrupted stage is simply run again and
continues where it stopped. At the end `OUT/index.html` links every stage's figures and reports.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from raywave.errors import RaywaveError
from raywave.io import write_json_atomic, write_text_atomic

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    args: tuple[str, ...]  # the raywave command line, without the program name
    output: str  # folder under OUT that this stage writes (its figures are linked from index.html)
    links: tuple[str, ...] = field(default=())  # extra files under OUT to link (reports)


def example(name: str) -> str:
    path = EXAMPLES / name
    if not path.exists():
        raise RaywaveError(f"the demo's config {path} is missing; reinstall raywave from a full checkout")
    return str(path)


def write_configs(out: Path, tiny: bool) -> dict[str, Path]:
    """The demo's resolved config files under OUT/configs, with OUT's paths filled in (the templates in
    examples/ name runs/...). Returns {name: path}: `sweep`, and per NFP setting of the sweep `nfp-<setting>`
    (the exact config the sweep would pretrain, so the sweep finds that run complete and reuses it) and
    `run-nfp-<setting>` (the run directory it trains)."""
    from raywave.config import build, load_yaml
    from raywave.tune.spec import TransferSweep, nfp_settings

    p = "tiny" if tiny else "demo"
    root = out.absolute()
    sweep = load_yaml(example(f"sweep-transfer-{p}.yaml"))
    for setting in sweep.get("nfp", {}).values():
        setting["dataset"] = str(root / "rw-dataset")
    sweep["nfp_store"] = str(root / "nfp-store")
    paths = {"sweep": root / "configs" / "sweep-transfer.yaml"}
    _write_yaml(paths["sweep"], sweep)
    for name, s in nfp_settings(build(TransferSweep, sweep, what="demo sweep"), sweep["nfp_store"]).items():
        paths[f"nfp-{name}"] = root / "configs" / f"nfp-{name}.yaml"
        paths[f"run-nfp-{name}"] = Path(s.run)
        _write_yaml(paths[f"nfp-{name}"], s.config.model_dump(mode="json"))
    return paths


def _write_yaml(path: Path, data: dict) -> None:
    import yaml

    text = yaml.safe_dump(data, sort_keys=False)
    if not path.exists() or path.read_text() != text:
        write_text_atomic(path, text)


def stages(out: Path, tiny: bool, configs: dict[str, Path]) -> list[Stage]:
    """The demo's stages in order. `tiny` is the test profile: the same commands on smaller configs."""
    from raywave.data.sweep_config import load_sweep

    p = "tiny" if tiny else "demo"
    o = str(out)
    sim = f"{o}/rw-dataset/simulations/{load_sweep(example(f'sweep-{p}.yaml'))[1][-1].sim_id}"  # the last: gA 0.03
    nfp: list[Stage] = []
    for name, path in configs.items():
        if name.startswith("nfp-"):
            setting, run = name[4:], configs[f"run-{name}"]
            rel = str(run.relative_to(out.absolute()))
            nfp += [Stage(f"nfp-{setting}", f"NFP pretraining ({setting}, Ray Train)",
                          ("nfp", "pretrain", "--config", str(path), "--quiet"), f"{rel}/checkpoints"),
                    Stage(f"nfp-{setting}-show", f"NFP run ({setting}): summary and learning curve",
                          ("runs", "show", str(run)), rel)]  # fmt: skip
    return [
        Stage("waves", "Wave sweep on Ray actors", ("waves", "generate", "--config", example(f"sweep-{p}.yaml"),
              "--out", f"{o}/rw-dataset", "--quiet"), "rw-dataset/simulations"),  # fmt: skip
        Stage("triplets", "Triplet index for next-frame prediction",
              ("data", "triplets", f"{o}/rw-dataset", "--config", example(f"triplets-{p}.yaml")),
              "rw-dataset/triplets"),
        Stage("card", "Dataset card (with example triplets)", ("data", "describe", f"{o}/rw-dataset"),
              "rw-dataset/card"),
        Stage("snapshots", "Calcium snapshots of one simulation of the sweep",
              ("waves", "snapshot", sim, "--every-s", "4", "--out", f"{o}/figures/snapshots/snapshots.png"),
              "figures/snapshots"),
        Stage("movie", "The same simulation as a movie",
              ("waves", "movie", sim, "--stride", "2", "--fps", "10", "--out", f"{o}/figures/movie/movie.gif"),
              "figures/movie"),
        *nfp,
        Stage("transfer", "Transfer sweep (Ray Tune over `ofe train`)",
              ("sweep", "transfer", "--config", str(configs["sweep"]), "--out", f"{o}/sweep", "--no-report"),
              "sweep/trials/none"),
        Stage("report", "Sweep report: does retinal-wave pre-training help?",
              ("sweep", "analyze", f"{o}/sweep", "--out", f"{o}/sweep/report"), "sweep/report",
              links=("sweep/report/report.html", "sweep/report/report.md")),
        Stage("fly-train", "Fly-network ensemble (Ray Train, models per pass)",
              ("fly", "ensemble", "train", "--name", "demo/0000", "--config", example(f"fly-ensemble-{p}.yaml"),
               "--models", "4", "--workers", "2", "--models-per-pass", "2", "--root", f"{o}/fly"), "fly/none"),
        Stage("fly-view", "Ensemble view: task error, direction selectivity",
              ("fly", "ensemble", "view", "demo/0000", "--root", f"{o}/fly", "--out", f"{o}/fly-view"),
              "fly-view"),
    ]


def marker(out: Path, stage: Stage) -> Path:
    return out / ".stages" / f"{stage.name}.json"


def is_done(out: Path, stage: Stage) -> bool:
    path = marker(out, stage)
    try:
        return json.loads(path.read_text())["args"] == list(stage.args)
    except (OSError, ValueError, KeyError):
        return False


def in_subprocess(args: tuple[str, ...]) -> int:
    """Run `raywave ARGS` as a user would, in its own process (and its own embedded Ray); its exit status."""
    return subprocess.run([sys.executable, "-m", "raywave", *args]).returncode


def run_stage(out: Path, stage: Stage, runner: Callable[[tuple[str, ...]], int] = in_subprocess) -> float:
    """Run one stage's command; raise RaywaveError naming the stage when it fails."""
    t0 = time.monotonic()
    returncode = runner(stage.args)
    if returncode == 130:
        raise KeyboardInterrupt
    if returncode != 0:
        cmd = " ".join(["raywave", *stage.args])
        raise RaywaveError(f"demo stage {stage.name!r} failed (exit {returncode}): {cmd}; "
                           "fix the cause above and re-run `raywave demo` to continue from this stage")  # fmt: skip
    seconds = time.monotonic() - t0
    write_json_atomic(marker(out, stage), {"args": list(stage.args), "seconds": round(seconds, 1),
                                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip
    return seconds


def run_demo(out: Path, tiny: bool = False, say: Callable[[str], None] = print,
             runner: Callable[[tuple[str, ...]], int] = in_subprocess) -> Path:  # fmt: skip
    """Run every stage not yet done, then write and return OUT/index.html. `runner` runs one command line and
    returns its exit status: a subprocess per stage (the default, what a user's shell does), or the test
    suite's in-process runner, which shares the suite's embedded Ray."""
    out.mkdir(parents=True, exist_ok=True)
    plan = stages(out, tiny, write_configs(out, tiny))
    for i, stage in enumerate(plan, 1):
        head = f"[{i}/{len(plan)}] {stage.title}"
        if is_done(out, stage):
            say(f"{head}: done earlier, skipped")
            continue
        say(f"{head}: raywave {' '.join(stage.args)}")
        seconds = run_stage(out, stage, runner)
        say(f"{head}: finished in {seconds:.0f} s")
    return write_index(out, plan)


def write_index(out: Path, plan: list[Stage]) -> Path:
    """A page linking every stage's figures (PNG/GIF shown inline) and reports (HTML/Markdown linked)."""
    parts = ["<!doctype html><meta charset='utf-8'><title>raywave demo</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%;"
             "border:1px solid #ccc;margin:4px 0}code{background:#eee}</style>",
             "<h1>raywave demo</h1><p>Every stage below is the real command; its outputs are under "
             f"<code>{html.escape(str(out))}</code>.</p>"]  # fmt: skip
    for stage in plan:
        info = json.loads(marker(out, stage).read_text()) if marker(out, stage).exists() else {}
        parts.append(f"<h2>{html.escape(stage.title)}</h2>")
        parts.append(f"<p><code>raywave {html.escape(' '.join(stage.args))}</code>"
                     f" ({info.get('seconds', '?')} s)</p>")  # fmt: skip
        folder = out / stage.output
        for link in stage.links:
            if (out / link).exists():
                parts.append(f"<p><a href='{html.escape(link)}'>{html.escape(link)}</a></p>")
        figures = sorted(p for ext in ("png", "gif") for p in folder.glob(f"**/*.{ext}") if ".stages" not in p.parts)
        for fig in figures[:24]:
            rel = fig.relative_to(out).as_posix()
            parts.append(f"<figure><img src='{html.escape(rel)}' alt='{html.escape(rel)}'>"
                         f"<figcaption>{html.escape(rel)}</figcaption></figure>")  # fmt: skip
    path = out / "index.html"
    write_text_atomic(path, "\n".join(parts) + "\n")
    return path
