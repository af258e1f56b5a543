"""Cluster configs (issue 15, acceptance 3): the launcher YAMLs pass Ray's own preparation and validation; the
KubeRay manifests parse and name the same images, storage, entrypoints and runtime envs as jobs/; GPUs are
requested where training runs, /dev/shm is sized, token authentication stays on, the dashboard stays private."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from raywave.config import build
from raywave.data.sweep_config import SweepConfig, expand

from .conftest import ROOT

CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
BUCKET = "s3://YOUR-BUCKET/raywave"  # the launcher clusters' bucket in jobs/README.md; /data/raywave on KubeRay
IMAGES = {"cpu": "ghcr.io/YOUR-ORG/raywave:2.60.0-cpu", "gpu": "ghcr.io/YOUR-ORG/raywave:2.60.0-gpu"}
RAYJOBS = {"rayjob-generate.yaml": "waves-generate", "rayjob-transfer-sweep.yaml": "sweep-transfer",
           "rayjob-fly-ensemble.yaml": "fly-ensemble-train"}  # fmt: skip


def _launcher(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs_pass_rays_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = _launcher(name)
    prepared = prepare_config(copy.deepcopy(cfg))  # what `ray up` does before it talks to the cloud
    validate_config(prepared)
    bad = dict(cfg, max_wokers=3)  # a typo is caught by Ray's schema
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_layout_auth_storage_and_setup(name):
    cfg, text = _launcher(name), (CLUSTER / name).read_text()
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    assert {"cpu-sim", "gpu-train", "gpu-sweep"} <= set(types)
    for gpu_type in ("gpu-train", "gpu-sweep"):
        assert "gpu" in types[gpu_type]["docker"]["worker_image"]
        node = json.dumps(types[gpu_type]["node_config"])
        assert ("g6e." in node) if name == "aws.yaml" else ("acceleratorCount" in node)
        assert any("-e /home/ray/raywave" in c for c in types[gpu_type]["worker_setup_commands"])
    assert "whl/cpu" in " ".join(types["cpu-sim"]["worker_setup_commands"])  # no CUDA build on CPU nodes
    assert any("-e /home/ray/raywave" in c for c in cfg["setup_commands"])  # the project installed everywhere
    assert cfg["file_mounts"]["/home/ray/raywave"] == "."
    for node_type in types.values():  # every node can reach the bucket
        assert ("IamInstanceProfile" if name == "aws.yaml" else "serviceAccounts") in node_type["node_config"]
    starts = " ".join(cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2 and "disabled" not in text
    assert "--dashboard-host=127.0.0.1" in starts and "0.0.0.0" not in text
    assert cfg["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert ray.__version__ in cfg["docker"]["image"]


SHARED_FS = {  # launcher -> (NFS options the provider recommends, the placeholder source of the shared file system)
    "aws.yaml": ("nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport",
                 "fs-YOUR-EFS-ID.efs.us-west-2.amazonaws.com:/"),
    "gcp.yaml": ("rw,hard,intr", "YOUR-FILESTORE-IP:/raywave"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SHARED_FS))
def test_launcher_mounts_a_shared_file_system_at_data(name):
    """Sweeps and fly ensembles need a POSIX file system every node shares: the host mounts it at /data before
    the container starts (initialization_commands), and Ray's own `docker run` passes it into the container."""
    from ray.autoscaler._private.docker import docker_start_cmds

    cfg = _launcher(name)
    options, source = SHARED_FS[name]
    init = cfg["initialization_commands"]
    mounts = [c for c in init if " mount " in f" {c} " and "/data" in c]
    assert len(mounts) == 1 and mounts[0].startswith("mountpoint -q /data ||")  # idempotent on a re-run `ray up`
    assert f"-o {options} {source} /data" in " ".join(mounts[0].split())
    assert any("nfs-common" in c for c in init) and init.index("sudo mkdir -p /data") < init.index(mounts[0])
    assert any("chown 1000:100 /data/raywave" in c for c in init[init.index(mounts[0]) :])  # the container's `ray`
    assert "-v /data:/data" in cfg["docker"]["run_options"]
    for node_type in cfg["available_node_types"].values():  # no node type replaces the options that mount it
        assert "run_options" not in node_type.get("docker", {}) and "worker_run_options" not in node_type.get(
            "docker", {}
        )
    run = docker_start_cmds("ubuntu", cfg["docker"]["image"], {}, "ray_container", cfg["docker"]["run_options"],
                            cfg["cluster_name"], "/home/ray", "docker")  # fmt: skip
    assert " -v /data:/data " in f" {run} "


def _manifests() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(KUBERAY.glob("*.yaml"))}


def _cluster_specs(docs: dict[str, dict]) -> dict[str, dict]:
    specs = {"raycluster.yaml": docs["raycluster.yaml"]["spec"]}
    specs.update({name: docs[name]["spec"]["rayClusterSpec"] for name in RAYJOBS})
    return specs


def _pods(spec: dict) -> list[tuple[str, dict]]:
    return [("head", spec["headGroupSpec"]["template"]["spec"])] + [
        (g["groupName"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]
    ]


def _readme_entrypoints() -> dict[str, str]:
    """runtime env stem -> entrypoint, from the submit lines of jobs/README.md."""
    out = {}
    for line in (ROOT / "jobs" / "README.md").read_text().splitlines():
        if line.startswith("raywave job submit"):
            argv = shlex.split(line)
            env = argv[argv.index("-r") + 1]
            out[Path(env).stem] = shlex.join(argv[argv.index("--") + 1 :])
    return out


def test_kuberay_manifests_agree_with_each_other_and_with_jobs():
    docs = _manifests()
    assert set(RAYJOBS) | {"raycluster.yaml", "pvc.yaml"} <= set(docs)
    assert docs["raycluster.yaml"]["kind"] == "RayCluster" and docs["pvc.yaml"]["kind"] == "PersistentVolumeClaim"
    assert docs["pvc.yaml"]["spec"]["accessModes"] == ["ReadWriteMany"]
    claim = docs["pvc.yaml"]["metadata"]["name"]
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    assert all(tag in dockerfile for tag in IMAGES.values())  # both flavours built from the one Dockerfile
    images = set()
    for name, spec in _cluster_specs(docs).items():
        assert docs[name]["apiVersion"] == "ray.io/v1"
        assert spec["rayVersion"] == ray.__version__
        assert spec["authOptions"] == {"mode": "token"}
        assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"  # dashboard not public
        assert "dashboard-host" not in spec["headGroupSpec"]["rayStartParams"]
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for group, pod in _pods(spec):
            (container,) = pod["containers"]
            images.add(container["image"])
            env = {e["name"] for e in container.get("env", [])}
            assert not env & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}  # KubeRay's authOptions owns authentication
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == claim  # one shared storage
            shm = volumes[mounts["/dev/shm"]]["emptyDir"]
            assert shm["medium"] == "Memory" and shm["sizeLimit"].endswith("Gi")
            gpus = int(container["resources"]["limits"].get("nvidia.com/gpu", 0))
            assert container["resources"]["requests"].get("nvidia.com/gpu") == container["resources"]["limits"].get(
                "nvidia.com/gpu"
            )
            assert (gpus > 0) == group.startswith("gpu-"), (name, group)
            assert container["image"] == IMAGES["gpu" if gpus else "cpu"], (name, group)
    assert images == set(IMAGES.values())
    text = "".join(p.read_text() for p in KUBERAY.glob("*.yaml"))
    assert "LoadBalancer" not in text and "Ingress" not in text and "NodePort" not in text


@pytest.mark.parametrize("name,stage", sorted(RAYJOBS.items()))
def test_rayjobs_run_the_documented_entrypoints(name, stage):
    job = _manifests()[name]
    spec = job["spec"]
    assert job["kind"] == "RayJob" and spec["shutdownAfterJobFinishes"]
    documented = _readme_entrypoints()[stage]
    assert spec["entrypoint"] == documented.replace(BUCKET, "/data/raywave")  # the same command, on the volume
    if stage != "waves-generate":  # sweeps and ensembles are on the shared volume in the documented line itself
        assert spec["entrypoint"] == documented and " /data/raywave/" in documented
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    stage_env = yaml.safe_load((ROOT / "jobs" / f"{stage}.yaml").read_text())
    assert runtime_env["env_vars"] == stage_env["env_vars"]
    assert runtime_env["working_dir"] == "/home/ray/raywave"  # the image's copy of the project (Dockerfile)
    groups = {g["groupName"] for g in spec["rayClusterSpec"]["workerGroupSpecs"]}
    expected = "cpu-sim" if stage == "waves-generate" else "gpu-sweep" if "sweep" in stage else "gpu-train"
    assert groups == {expected}
    for path in shlex.split(spec["entrypoint"]):
        if path.startswith("examples/"):  # config files named by an entrypoint exist in the image's copy
            assert (ROOT / path).is_file(), path


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("sweep-*.yaml")), ids=lambda p: p.name)
def test_example_sweeps_are_valid(path):
    if path.name.startswith(("sweep-transfer", "sweep-nfp")):
        pytest.skip("a Tune sweep file, checked by the sweep tests")  # they share the wave sweeps' prefix
    data = yaml.safe_load(path.read_text())
    specs = expand(build(SweepConfig, data))
    assert len(specs) >= 1
