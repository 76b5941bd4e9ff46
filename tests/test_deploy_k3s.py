"""K3s fleet manifests: strict Kubernetes schema validation, and the selection/probe design they encode."""

from __future__ import annotations

import copy
import functools
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helpers import REPO

K3S = REPO / "deploy" / "k3s"
MANIFESTS = sorted(K3S.glob("*.yaml"))
# The oldest Kubernetes the manifests target (K3s on JetPack 6 boards runs 1.31) and the newest
# schema the validator ships.
KUBERNETES_VERSIONS = ("1.31.0", kubernetes_validate.utils.latest_version())
NFD_PREFIX = "feature.node.kubernetes.io/"


@functools.cache
def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in MANIFESTS
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def _daemonsets() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _documents()
            if doc["kind"] == "DaemonSet" and doc["metadata"]["namespace"] == "edgerun"}


def _pod(daemonset: dict[str, Any]) -> dict[str, Any]:
    return daemonset["spec"]["template"]["spec"]


def _node_terms(daemonset: dict[str, Any]) -> dict[str, dict[str, Any]]:
    affinity = _pod(daemonset)["affinity"]["nodeAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return {e["key"]: e for e in term["matchExpressions"]}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("name", "document"), _documents(),
                         ids=[f"{n}:{d['kind']}" for n, d in _documents()])
def test_manifest_validates_strictly(name: str, document: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(document, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """Control: a typo that kubectl would drop silently is a schema error here."""
    daemonset = copy.deepcopy(_daemonsets()["edgerun-cpu"])
    _pod(daemonset)["containers"][0]["livenessProbes"] = _pod(daemonset)["containers"][0].pop(
        "livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="livenessProbes"):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSIONS[0], strict=True)


def test_one_daemonset_per_accelerator_class() -> None:
    classes = {ds["metadata"]["labels"]["edgerun.io/class"] for ds in _daemonsets().values()}
    assert classes == {"cpu", "jetson-jp5", "jetson-jp6", "coral-usb", "coral-pcie", "rpi"}


@pytest.mark.parametrize("name", sorted(_daemonsets()))
def test_daemonset_probes_security_and_cache(name: str) -> None:
    pod = _pod(_daemonsets()[name])
    (container,) = pod["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/var/cache/edgerun"]]["hostPath"]["path"] == "/var/cache/edgerun"
    assert _node_terms(_daemonsets()[name])["edgerun.io/node"]["values"] == ["true"]


def test_jetson_daemonsets_use_the_nvidia_runtime_and_long_startup() -> None:
    for jetpack in ("jp5", "jp6"):
        daemonset = _daemonsets()[f"edgerun-jetson-{jetpack}"]
        pod = _pod(daemonset)
        assert pod["runtimeClassName"] == "nvidia"
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        startup = pod["containers"][0]["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 900    # engine builds
        selector = _node_terms(daemonset)[NFD_PREFIX + "edgerun-jetson-image"]
        assert selector["values"] == [jetpack]
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert "/run/host/nv_tegra_release" in mounts


def _nfd_config() -> dict[str, Any]:
    (config_map,) = [d for _, d in _documents() if d["metadata"]["name"] == "nfd-worker-conf"]
    return yaml.safe_load(config_map["data"]["nfd-worker.conf"])


def test_selectors_use_labels_that_nfd_is_configured_to_produce() -> None:
    config = _nfd_config()["sources"]
    assert "0880" in config["pci"]["deviceClassWhitelist"]           # Coral PCIe's class
    produced = {NFD_PREFIX + label for rule in config["custom"] for label in rule["labels"]}
    produced |= {NFD_PREFIX + "pci-0880_1ac1.present", NFD_PREFIX + "edgerun-jetson-image"}
    for daemonset in _daemonsets().values():
        for key in _node_terms(daemonset):
            assert key.startswith("edgerun.io/") or key in produced, key


def test_canary_ring_is_exclusive() -> None:
    stable = _node_terms(_daemonsets()["edgerun-cpu"])["edgerun.io/ring"]
    canary = _node_terms(_daemonsets()["edgerun-cpu-canary"])["edgerun.io/ring"]
    assert (stable["operator"], stable["values"]) == ("NotIn", ["canary"])
    assert (canary["operator"], canary["values"]) == ("In", ["canary"])
    volumes = {v["name"]: v for v in _pod(_daemonsets()["edgerun-cpu-canary"])["volumes"]}
    assert volumes["models"]["image"]["reference"]                  # models as an OCI artifact


def test_prometheus_agent_scrapes_edgerun_and_remote_writes() -> None:
    (config_map,) = [d for _, d in _documents()
                     if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "prometheus-agent"]
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    assert config["remote_write"][0]["url"].startswith("https://")
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["edgerun"]
    annotations = _daemonsets()["edgerun-cpu"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    (deployment,) = [d for _, d in _documents() if d["kind"] == "Deployment"]
    assert "--agent" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
