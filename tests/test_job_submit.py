"""`raywave job` against a real Ray head on loopback with token authentication on (issue 15, acceptance 1).

The head is this module's own: its own ports, its own temp dir, its own token file (never ~/.ray/auth_token),
started with `ray start --head --block` in a new session, and stopped by signalling that session and any process
carrying its temp dir (never `ray stop`, which would kill every Ray on the host).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

BIN = Path(sys.executable).parent
PORTS = ["port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
         "runtime-env-agent-port", "metrics-export-port", "node-manager-port", "object-manager-port",
         "ray-client-server-port"]  # fmt: skip
TINY_SWEEP = {"base": {"height": 8, "width": 8, "duration_s": 0.2, "checkpoint_every_s": 0.1,
                       "storage_dtype": "uint8", "compile": "off"},
              "seeds": [3], "workers": 1, "cpus_per_worker": 0.5, "analyze": False}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_with(marker: str) -> list[int]:
    """PIDs whose command line mentions `marker` (this module's temp dir): the processes this module started."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def stop_own_ray(head: subprocess.Popen, marker: str) -> None:
    """Stop only what we started: SIGTERM to `ray start --block` (it tears its node down), then SIGKILL to its
    session and to any process still carrying our temp dir."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(30)
    with_marker = _processes_with(marker)
    for sig_target in [("group", head.pid)] + [("pid", p) for p in with_marker]:
        kind, pid = sig_target
        with contextlib.suppress(ProcessLookupError, PermissionError):
            (os.killpg if kind == "group" else os.kill)(pid, signal.SIGKILL)
    head.wait(10)


class Head:
    def __init__(self, root: Path):
        self.root = root
        self.token = root / "token"
        self.token.write_text(secrets.token_hex(32))
        self.ports = {name: _free_port() for name in PORTS}
        self.address = f"http://127.0.0.1:{self.ports['dashboard-port']}"
        self.env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token),
                        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1")  # fmt: skip
        self.env.pop("RAY_ADDRESS", None)
        self.env.pop("RAY_AUTH_TOKEN", None)

    def start(self, attempts: int = 3) -> None:
        """`ray start --head --block`; on a loaded box the raylet can miss Ray's fixed 30 s registration window,
        so a failed start is retried on fresh ports."""
        for _ in range(attempts):
            if self._start_once():
                return
            stop_own_ray(self.proc, str(self.root))
            self.ports = {name: _free_port() for name in PORTS}
            self.address = f"http://127.0.0.1:{self.ports['dashboard-port']}"
        raise RuntimeError(f"ray start failed {attempts} times: {(self.root / 'head.log').read_text()[-2000:]}")

    def _start_once(self) -> bool:
        cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2",
               f"--object-store-memory={200 * 2**20}", "--disable-usage-stats",
               f"--temp-dir={self.root / 'ray'}"] + [f"--{k}={v}" for k, v in self.ports.items()]  # fmt: skip
        log_path = self.root / "head.log"
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        deadline = time.time() + 180
        while time.time() < deadline and self.proc.poll() is None:
            if "Ray runtime started" in log_path.read_text(errors="replace"):
                try:
                    urllib.request.urlopen(f"{self.address}/api/version", timeout=5)
                except urllib.error.HTTPError:
                    return True  # it answers (401 without a token): the job server is up
                except OSError:
                    pass
                else:
                    return True
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        stop_own_ray(self.proc, str(self.root))

    def cli(self, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "raywave", *args], capture_output=True, text=True,
                              timeout=timeout, env=env or self.env, cwd=ROOT)  # fmt: skip


@pytest.fixture(scope="module")
def head():
    root = Path(tempfile.mkdtemp(prefix="rwjob-", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    h = Head(root)
    h.start()
    try:
        yield h
    finally:
        h.stop()
        assert not _processes_with(str(root)), "a process of this test's Ray survived"
        shutil.rmtree(root, ignore_errors=True)


def _one_error_line(res: subprocess.CompletedProcess, needle: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr


@pytest.mark.slow  # 45 s head start + 249 s on this shared 2-core box under load (~20); the CLI imports dominate
def test_submit_wait_status_logs_list_stop(head):
    """A small stage (a one-simulation `waves generate`) submitted with --wait; then status, logs, list; then a
    long job stopped."""
    sweep = head.root / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(TINY_SWEEP))
    out = head.root / "ds"
    res = head.cli("job", "submit", "--address", head.address, "-r", "jobs/waves-generate.yaml", "--wait", "--",
                   "python", "-m", "raywave", "waves", "generate", "-c", str(sweep), "-o", str(out), "-q")  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    job_id = re.search(r"submitted job (\S+)", res.stdout).group(1)
    text = " ".join(res.stdout.split())
    assert "1 generated, 0 already there" in text and f"job {job_id} SUCCEEDED" in text  # the streamed logs
    from raywave.data.rw_dataset import RWDataset

    ds = RWDataset(out)
    assert ds.info()["status"] == "complete" and len(ds.simulations()) == 1
    ds.simulations()[0].verify()

    status = head.cli("job", "status", job_id, "-a", head.address, "--json")
    assert status.returncode == 0, status.stderr
    details = json.loads(status.stdout)
    assert details["status"] == "SUCCEEDED" and "waves generate" in details["entrypoint"]
    assert details["runtime_env"]["env_vars"]["OMP_WAIT_POLICY"] == "PASSIVE"  # from jobs/waves-generate.yaml
    logs = head.cli("job", "logs", job_id, "-a", head.address)
    assert logs.returncode == 0 and "1 generated" in " ".join(logs.stdout.split())

    workdir = head.root / "sleeper"  # a small working dir (never the head's temp dir, which holds its sockets)
    workdir.mkdir()
    sleeper = head.cli("job", "submit", "-a", head.address, "--submission-id", "rw-sleeper",
                       "-w", str(workdir), "--", "python", "-c",
                       "import time; print('sleeping', flush=True); time.sleep(600)")  # fmt: skip
    assert sleeper.returncode == 0, sleeper.stderr
    listed = head.cli("job", "list", "-a", head.address, "--json")
    assert listed.returncode == 0
    assert {job_id, "rw-sleeper"} <= {j["submission_id"] for j in json.loads(listed.stdout)}
    stopped = head.cli("job", "stop", "rw-sleeper", "-a", head.address, "--wait-s", "60")
    assert stopped.returncode == 0 and "STOPPED" in stopped.stdout, stopped.stdout + stopped.stderr


@pytest.mark.slow  # 72 s here under load: three CLI processes against the head
def test_one_line_errors_against_the_head(head):
    _one_error_line(head.cli("job", "status", "raysubmit_nosuchjob", "-a", head.address), "no job 'raysubmit_nosuch")
    wrong = dict(head.env, RAY_AUTH_TOKEN="0" * 64)
    _one_error_line(head.cli("job", "list", "-a", head.address, env=wrong), "refused this client's token")
    _one_error_line(head.cli("job", "list", "-a", head.address, env=dict(head.env, RAY_AUTH_MODE="disabled")),
                    "never turns Ray's token authentication off")  # fmt: skip


def test_bad_submissions_fail_before_connecting(tmp_path):
    """Checked in this process: nothing here reaches Ray's authentication or a cluster."""
    from typer.testing import CliRunner

    from raywave.cli import app
    from raywave.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("env_varz: {A: 1}\n")
    cases = [(["-r", str(tmp_path / "missing.yaml"), "--", "true"], "does not exist"),
             (["-r", str(bad), "--", "true"], "unknown field 'env_varz'"),
             (["-r", "jobs/runtime_env.yaml", "-w", str(tmp_path / "nowhere"), "--", "true"], "does not exist"),
             (["-r", "jobs/runtime_env.yaml"], "no entrypoint")]  # fmt: skip
    for args, needle in cases:
        res = CliRunner().invoke(app, ["job", "submit", "-a", "127.0.0.1:9", *args])
        assert isinstance(res.exception, ConfigError) and needle in str(res.exception), (args, res.output)
        assert "\n" not in str(res.exception)


def test_one_line_errors_without_a_cluster(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_TOKEN="0" * 64, PYTHONUNBUFFERED="1")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "raywave", "job", *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=120)  # fmt: skip

    port = _free_port()  # nothing listens there
    _one_error_line(cli("list", "-a", f"127.0.0.1:{port}"), "cannot reach a Ray job server")
    env.pop("RAY_AUTH_TOKEN")
    env.update(HOME=str(tmp_path))  # no ~/.ray/auth_token here
    _one_error_line(cli("list", "-a", f"127.0.0.1:{port}"), "no Ray auth token found")


# ---- jobs/: every runtime env is valid and every documented submit line parses against the CLI -------------

# Where submit lines are documented: markdown code blocks (a trailing backslash continues a line) and the header
# comments of the runtime envs in jobs/ (the same, after "# ").
DOC_FILES = ["jobs/README.md", "cluster/README.md", "README.md", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md") if p.name != "cli.md")]  # fmt: skip
SHARED_FS_STAGES = {"sweep transfer": "out", "sweep nfp": "out", "sweep analyze": "sweep", "fly ensemble train": "root",
                    "fly ensemble validate": "root", "fly ensemble view": "root"}  # fmt: skip
BUCKETS = ("s3://YOUR-BUCKET/raywave/", "gs://YOUR-BUCKET/raywave/")


def _logical_lines(text: str, comments: bool) -> list[str]:
    """`raywave job submit ...` / `ray job submit ...` lines with their backslash continuations joined."""
    out, current = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if comments:
            if not line.startswith("#"):
                current = None
                continue
            line = line[1:].strip()
        if current is None and not line.startswith(("raywave job submit", "ray job submit")):
            continue
        current = f"{current} {line}" if current is not None else line
        if current.endswith("\\"):
            current = current[:-1].rstrip()
        else:
            out.append(current)
            current = None
    return out


def documented_submits() -> list[tuple[str, list[str]]]:
    """(where, argv with its program: `raywave` or `ray`) of every documented submit line."""
    found = []
    for rel in DOC_FILES:
        found += [(rel, ln) for ln in _logical_lines((ROOT / rel).read_text(), comments=False)]
    for path in sorted((ROOT / "jobs").glob("*.yaml")):
        found += [(f"jobs/{path.name}", ln) for ln in _logical_lines(path.read_text(), comments=True)]
    return [(where, shlex.split(line, comments=True)) for where, line in found]


def submit_lines() -> list[list[str]]:
    """The `raywave job submit ...` lines of jobs/README.md as argv lists (after `raywave`)."""
    return [argv[1:] for where, argv in documented_submits() if where == "jobs/README.md" and argv[0] == "raywave"]


def resolve_command(argv: list[str]):
    """(click command, its argv, its dotted name) for `raywave ARGV`, or None where a name is not registered."""
    import typer

    from raywave.cli import app

    cmd, names = typer.main.get_command(app), []
    while argv and hasattr(cmd, "commands"):
        if argv[0] not in cmd.commands:
            words = [w for w in argv[: next((i for i, w in enumerate(argv) if w.startswith("-")), len(argv))]]
            return None, argv, " ".join(names + words)
        names.append(argv[0])
        cmd, argv = cmd.commands[argv[0]], argv[1:]
    return cmd, argv, " ".join(names)


def parse_submit(argv: list[str]) -> tuple[str, list[str]]:
    """(runtime env file, entrypoint argv) of `raywave job submit ...` (parsed by the real CLI) or of
    `ray job submit ...`; a line of submit_lines() is taken as a raywave one."""
    if argv[0] != "ray":
        cmd, rest, _ = resolve_command(argv[1:] if argv[0] == "raywave" else argv)
        ctx = cmd.make_context("raywave job submit", rest)  # parses options exactly as the CLI would
        return ctx.params["runtime_env"], list(ctx.params["entrypoint"])
    assert argv[1:3] == ["job", "submit"], argv
    return argv[argv.index("--runtime-env") + 1], argv[argv.index("--") + 1 :]


def check_storage(name: str, params: dict) -> None:
    """What the command can write to: sweeps and ensembles a path on the shared file system (the product's own
    check refuses a URI); `ofe train` on a URI only with real data roots on /data, and `--nfp` a path."""
    from raywave.io import check_shared_path

    if name in SHARED_FS_STAGES:
        value = str(params[SHARED_FS_STAGES[name]])
        check_shared_path(value, SHARED_FS_STAGES[name], "the documented line needs a path", "/data/raywave/...")
        assert value.startswith("/data/raywave/"), f"{name}: {value} is not on the cluster's shared file system"
    if name == "ofe train":
        assert "://" not in (params["nfp"] or ""), "ofe train --nfp reads a path, not a URI"
        if "://" in (params["out"] or ""):
            assert params["chairs_root"] and params["sintel_root"], "a URI --out needs real data roots"
            assert params["chairs_root"].startswith("/data/") and params["sintel_root"].startswith("/data/")
    for value in params.values():
        if isinstance(value, str) and "://" in value:
            assert value.startswith(BUCKETS), f"{value}: the documented bucket is s3:// or gs://YOUR-BUCKET/raywave"


@pytest.mark.parametrize("path", sorted((ROOT / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_runtime_envs_are_valid(path):
    from raywave.jobs import load_runtime_env

    env = load_runtime_env(path, ROOT)
    assert env["working_dir"] == str(ROOT) and ".venv" in env["excludes"]
    assert "RAY_AUTH_MODE" not in env["env_vars"]  # authentication is the cluster's, never switched per job


SUBMITS = documented_submits()


@pytest.mark.parametrize("where,argv", SUBMITS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(SUBMITS)])
def test_documented_submit_lines_parse(where, argv):
    """Every documented submit line: the submit options and the stage's options parse with the real CLI, the
    runtime env and the config files it names exist, and its storage is of a kind the stage can write."""
    runtime_env, entrypoint = parse_submit(argv)
    assert (ROOT / runtime_env).is_file() and entrypoint[:3] == ["python", "-m", "raywave"], (where, argv)
    stage, stage_argv, name = resolve_command(entrypoint[3:])
    assert stage is not None, f"{where}: {name!r} is not a raywave command"
    ctx = stage.make_context(f"raywave {name}", stage_argv)
    assert name.replace(" ", "-") in str(runtime_env), (where, name, runtime_env)
    for word in entrypoint:
        if word.startswith("examples/"):  # the config files a line names exist (in the uploaded working dir)
            assert (ROOT / word).is_file(), (where, word)
    check_storage(name, ctx.params)


def test_every_stage_has_its_submit_line():
    """jobs/README.md has a line per stage env, and each env's header line runs the same command."""
    readme = {}
    for argv in submit_lines():
        env, entrypoint = parse_submit(argv)
        readme[Path(env).stem] = entrypoint
    assert len(readme) >= 7 and {p.stem for p in (ROOT / "jobs").glob("*.yaml")} - set(readme) == {"runtime_env"}
    for where, argv in SUBMITS:
        if where.startswith("jobs/") and where.endswith(".yaml"):
            env, entrypoint = parse_submit(argv)
            assert f"jobs/{Path(env).name}" == where and entrypoint == readme[Path(env).stem], where
    sweeps_and_ensembles = [a for _, a in SUBMITS if {"sweep", "ensemble"} & set(parse_submit(a)[1][3:5])]
    assert len(sweeps_and_ensembles) >= 6  # README, jobs/, cluster/, docs/: all checked above
