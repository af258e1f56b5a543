"""Unchanged on a cluster, and a node lost (issue 15, acceptance 5).

A head and two worker nodes on this machine (Ray's own `ray.cluster_utils.Cluster`, at the node's own IP: Ray
resolves a 127.0.0.1 address to that IP, so a cluster bound to loopback only cannot be reached by address; served
from a helper process
with its own RAY_TMPDIR, its own token and its own session, so nothing else on the host can attach to it or be
touched by its shutdown), storage shared through a temp folder. The real CLI runs against it with `--address`;
a worker node is removed while a simulation runs on it; the command finishes with every simulation exactly
once, the interrupted one bit-identical to the same simulation run alone. The same `waves generate` command
against the embedded default is covered by tests/test_sweep.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from .conftest import ROOT

SYSTEM_CONFIG = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                 "health_check_failure_threshold": 3}  # a lost node is declared dead in ~3 s  # fmt: skip
SWEEP = {"base": {"height": 8, "width": 8, "duration_s": 1.0, "checkpoint_every_s": 0.1, "storage_dtype": "uint8",
                  "compile": "off"},
         "seeds": [1, 2, 3, 4], "workers": 4, "cpus_per_worker": 0.5, "max_retries": 3,
         "analyze": False}  # fmt: skip


def serve_cluster(info_path: str, workers: int = 2, cpus: int = 2) -> None:
    """Run in a helper process: start the cluster, write its address and raylet pids to `info_path`, then obey
    lines on stdin: `remove I` (kill worker node I without grace), `quit` (shut everything down)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, shutdown_at_exit=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False,
        "object_store_memory": 100 * 2**20, "_system_config": SYSTEM_CONFIG})  # fmt: skip
    nodes = [cluster.add_node(num_cpus=cpus, object_store_memory=100 * 2**20) for _ in range(workers)]
    cluster.wait_for_nodes()
    raylets = [n.all_processes["raylet"][0].process.pid for n in nodes]
    Path(info_path + ".tmp").write_text(json.dumps({"address": cluster.address, "raylets": raylets}))
    os.replace(info_path + ".tmp", info_path)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[:1] == ["remove"]:
            cluster.remove_node(nodes[int(cmd[1])], allow_graceful=False)
            print("removed", flush=True)
        elif cmd[:1] == ["quit"]:
            break
    cluster.shutdown()


def _processes_with(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
    return pids


def _ancestors(pid: int) -> set[int]:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return seen


class LoopbackCluster:
    def __init__(self, root: Path):
        self.root = root
        token = root / "token"
        token.write_text(secrets.token_hex(32))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(RAY_TMPDIR=str(root), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
                        PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")  # fmt: skip
        for _ in range(3):  # on a loaded box a raylet can miss Ray's fixed 30 s registration window: retry
            if self._start(root / "cluster.json"):
                return
            self.stop()
        raise RuntimeError(f"the loopback cluster did not start: {(root / 'cluster.log').read_text()[-3000:]}")

    def _start(self, info: Path) -> bool:
        code = f"from tests.test_multinode import serve_cluster; serve_cluster({str(info)!r})"
        self.log = open(self.root / "cluster.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=self.env, text=True,
                                     stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip
        deadline = time.time() + 240
        while not info.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                return False
            time.sleep(0.5)
        data = json.loads(info.read_text())
        self.address, self.raylets = data["address"], data["raylets"]
        return True

    def node_of(self, pid: int) -> int | None:
        """Which worker node (index) runs process `pid`: the one whose raylet is its ancestor."""
        parents = _ancestors(pid)
        return next((i for i, r in enumerate(self.raylets) if r in parents), None)

    def remove(self, index: int) -> None:
        self.proc.stdin.write(f"remove {index}\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """Shut down only this cluster: ask the helper, then SIGKILL its session and anything with our dir."""
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(60)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in _processes_with(str(self.root)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def loopback_cluster():
    root = Path(tempfile.mkdtemp(prefix="rwmn-", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    try:
        cluster = LoopbackCluster(root)
    except RuntimeError:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
        assert not _processes_with(str(root)), "a process of this test's cluster survived"
        shutil.rmtree(root, ignore_errors=True)


def _sim_running_on_a_worker(cluster: LoopbackCluster, scratch: Path) -> tuple[str, int] | None:
    """(sim_id, node index) of a simulation that has written a checkpoint chunk and is still running."""
    for pid_file in scratch.glob("*.pid"):
        sim_id = pid_file.stem
        run_manifest = scratch / sim_id / "run" / "manifest.json"
        with contextlib.suppress(ValueError, OSError, json.JSONDecodeError):
            man = json.loads(run_manifest.read_text())
            if man["chunks"] and man.get("status") != "complete":
                node = cluster.node_of(int(pid_file.read_text()))
                if node is not None:
                    return sim_id, node
    return None


@pytest.mark.slow  # three raylets and four simulations: 385 s on this shared 2-core box under load (~25)
def test_waves_generate_survives_a_lost_node(loopback_cluster, tmp_path):
    from raywave.config import build
    from raywave.data.rw_dataset import RWDataset
    from raywave.data.sweep_config import SweepConfig, expand
    from raywave.waves.simulate import simulate

    shared = loopback_cluster.root / "shared"  # every node of this machine sees it: the shared storage
    sweep_file = shared / "sweep.yaml"
    shared.mkdir()
    sweep_file.write_text(yaml.safe_dump(SWEEP))
    out = shared / "rw-dataset"
    cmd = [sys.executable, "-m", "raywave", "waves", "generate", "-c", str(sweep_file), "-o", str(out), "-q",
           "--address", loopback_cluster.address]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=loopback_cluster.env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    lost = None
    deadline = time.time() + 300
    while lost is None and proc.poll() is None and time.time() < deadline:
        lost = _sim_running_on_a_worker(loopback_cluster, out / "_scratch")
        time.sleep(0.05)
    assert lost is not None, "no simulation was caught running on a worker node"
    loopback_cluster.remove(lost[1])
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout + stderr
    text = " ".join(stdout.split())
    specs = expand(build(SweepConfig, SWEEP))
    assert f"{len(specs)} generated, 0 already there, 0 failed" in text, text
    retried = re.search(r"resumed from an earlier attempt: (\d+)", text)
    assert retried and int(retried.group(1)) >= 1, text

    ds = RWDataset(out)
    assert ds.info()["status"] == "complete"
    sims = ds.simulations()
    assert [s.sim_id for s in sims] == [s.sim_id for s in specs]  # every simulation exactly once
    assert sorted(p.name for p in (out / "simulations").iterdir()) == sorted(s.sim_id for s in specs)
    assert all(sorted(p.name for p in (out / "simulations" / s.sim_id).iterdir()) == ["frames.parquet",
               "manifest.json"] for s in specs)  # fmt: skip
    for sim, spec in zip(sims, specs, strict=True):
        sim.verify()  # sha256 and row count against the manifest
        assert sim.n_frames == spec.config.n_frames
    interrupted = ds.simulation(lost[0])
    assert interrupted.manifest["generation"]["attempts"] >= 2  # it was resumed on the surviving node
    spec = next(s for s in specs if s.sim_id == lost[0])
    alone = simulate(spec.config, tmp_path / "alone")  # the single-process reference
    assert np.array_equal(interrupted.calcium(), alone.frames("C"))


def _titled(word: str) -> list[int]:
    """PIDs whose process title (Ray sets it to the actor's class) contains `word`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if word in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
    return pids


def _last_step(run: Path) -> int:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return json.loads((run / "checkpoints" / "last.json").read_text())["step"]
    return 0


@pytest.mark.slow
def test_ofe_train_survives_a_lost_node(loopback_cluster):
    """A 2-worker, two-stage `ofe train` through --address; the worker node holding a Train worker (and not the
    Train controller) is removed after a checkpoint; Ray Train restarts the group from the last checkpoint
    (FailureConfig) and the run ends with a continuous step count."""
    from raywave.data.synthetic_flow import write_chairs
    from raywave.train.metrics import read_metrics

    from .test_ofe_train import tiny_stage

    shared = loopback_cluster.root / "shared"
    chairs = write_chairs(shared / "chairs", n_pairs=6, h=128, w=160, val_every=3)
    stages = [tiny_stage(steps=4, iters=2), tiny_stage(steps=4, iters=2, lr=1e-4, crop=[128, 160])]
    cfg = shared / "ofe.yaml"
    cfg.write_text(yaml.safe_dump({"variant": "small", "strategy": "scratch", "chairs_root": str(chairs),
                                   "workers": 2, "cpus_per_worker": 1, "max_failures": 3, "stages": stages,
                                   "checkpoint_every": 1, "log_every": 1}))  # fmt: skip
    out = shared / "ofe-run"
    cmd = [sys.executable, "-m", "raywave", "ofe", "train", "-c", str(cfg), "--out", str(out), "--quiet",
           "--address", loopback_cluster.address]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=loopback_cluster.env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    def train_workers() -> dict[int, int]:  # pid -> worker node index, for this cluster's Train workers
        nodes = {pid: loopback_cluster.node_of(pid) for pid in _titled("RayTrainWorker")}
        return {pid: node for pid, node in nodes.items() if node is not None}

    removed, before, deadline = None, {}, time.time() + 900
    while removed is None and proc.poll() is None and time.time() < deadline:
        if _last_step(out) >= 2:
            controller = {loopback_cluster.node_of(p) for p in _titled("TrainController")}
            before = train_workers()
            candidates = sorted(set(before.values()) - controller)
            if candidates:
                removed = candidates[0]
                loopback_cluster.remove(removed)
        time.sleep(0.2)
    assert removed is not None, "no Train worker was caught on a removable node mid-run"
    restarted = set()
    while proc.poll() is None and not restarted:  # the worker group comes back on the surviving node
        restarted = set(train_workers()) - set(before)
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=1200)
    assert restarted, "the Train worker group was never restarted after the node was lost"
    assert proc.returncode == 0, (stdout + stderr)[-3000:]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 9))  # continuous: nothing lost, nothing repeated
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete"
