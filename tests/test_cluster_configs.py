"""Cluster configs: the launcher YAMLs validate against Ray's own schema; KubeRay manifests have what KubeRay
needs; every config keeps token authentication on and names this Ray version."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from raywave.config import build
from raywave.data.sweep_config import SweepConfig, expand

from .conftest import ROOT

CLUSTER = ROOT / "cluster"
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs_match_rays_schema(name):
    cfg = yaml.safe_load((CLUSTER / name).read_text())
    jsonschema.validate(cfg, SCHEMA)
    assert cfg["available_node_types"][cfg["head_node_type"]]["resources"] == {"CPU": 0}
    starts = " ".join(cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2 and "disabled" not in (CLUSTER / name).read_text()
    assert "2.60.0" in cfg["docker"]["image"]
    bad = dict(cfg, max_wokers=3)  # a typo is caught by the schema
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_kuberay_manifests():
    docs = {p.name: yaml.safe_load(p.read_text()) for p in (CLUSTER / "kuberay").glob("*.yaml")}
    rc, job = docs["raycluster.yaml"], docs["rayjob-generate.yaml"]
    assert rc["apiVersion"] == job["apiVersion"] == "ray.io/v1"
    assert (rc["kind"], job["kind"]) == ("RayCluster", "RayJob")
    for spec in (rc["spec"], job["spec"]["rayClusterSpec"]):
        assert spec["rayVersion"] == ray.__version__
        assert spec["authOptions"] == {"mode": "token"}
        groups = spec["workerGroupSpecs"]
        assert all(g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in groups)
        for pod in [spec["headGroupSpec"]["template"]] + [g["template"] for g in groups]:
            claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]}
            assert claims == {docs["pvc.yaml"]["metadata"]["name"]}
    assert "waves generate" in job["spec"]["entrypoint"] and job["spec"]["shutdownAfterJobFinishes"]


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("sweep-*.yaml")))
def test_example_sweeps_are_valid(path):
    specs = expand(build(SweepConfig, yaml.safe_load(path.read_text())))
    assert len(specs) >= 4
