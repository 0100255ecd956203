"""deploy/k8s with no cluster: every resource file passes Kubernetes' own schemas strictly
(kubernetes-validate ships them), every kustomization names files that exist and patches that
land, and each overlay builds (kubectl's kustomize, offline) into objects that pass too."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from app.metrics import Metrics
from tests.deploy.k8s import (
    ADAPTER_VALUES,
    BASE,
    INFERENCE_SERVICE,
    K8S,
    OVERLAYS,
    build,
    find,
    identity,
    kustomization,
    kustomize_command,
    load_objects,
    patch_files,
    resource_files,
)

KUSTOMIZATIONS = [BASE, *OVERLAYS]
RESOURCE_FILES = sorted({path for folder in KUSTOMIZATIONS for path in resource_files(folder)})
# The oldest Kubernetes the manifests claim (README "Deploy") and the newest schemas shipped.
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]

needs_kustomize = pytest.mark.skipif(kustomize_command() is None,
                                     reason="no kustomize or kubectl on PATH to build overlays")


def name(path) -> str:
    return str(path.relative_to(K8S))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", RESOURCE_FILES, ids=name)
def test_resource_file_passes_strict_schema_validation(path, version):
    objects = load_objects(path)
    assert objects, f"{path} holds no Kubernetes object"
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)  # raises on any schema error


def test_strict_validation_rejects_a_misspelled_field():
    deployment = copy.deepcopy(find(load_objects(BASE / "deployment.yaml"), "Deployment"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_every_yaml_file_under_deploy_k8s_is_used():
    used = {INFERENCE_SERVICE, ADAPTER_VALUES, *RESOURCE_FILES}
    for folder in KUSTOMIZATIONS:
        used |= {folder / "kustomization.yaml", *patch_files(folder)}
    assert set(K8S.rglob("*.yaml")) == used


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=name)
def test_every_file_a_kustomization_names_exists(folder):
    entries = kustomization(folder).get("resources", [])
    missing = [entry for entry in entries if not (folder / entry).exists()]
    missing += [str(path) for path in patch_files(folder) if not path.is_file()]
    assert not missing


@pytest.mark.parametrize("folder", OVERLAYS, ids=name)
def test_every_patch_targets_a_resource_the_overlay_builds_on(folder):
    targets = {identity(obj) for path in resource_files(folder) for obj in load_objects(path)}
    for patch in patch_files(folder):
        (obj,) = load_objects(patch)
        assert identity(obj) in targets, f"{name(patch)} patches nothing"


@needs_kustomize
@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=name)
def test_built_kustomization_passes_strict_schema_validation(folder):
    objects = build(folder)
    assert {obj["kind"] for obj in objects} >= {
        "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
        "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for obj in objects:
        kubernetes_validate.validate(obj, VERSIONS[-1], strict=True)


@needs_kustomize
def test_dev_overlay_runs_one_small_pod_on_a_read_write_once_volume():
    objects = build(K8S / "overlays" / "dev")
    assert find(objects, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 1
    (container,) = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["cpu"] == "1"
    assert find(objects, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteOnce"]


@needs_kustomize
def test_production_overlay_pins_the_image_and_gives_guaranteed_resources():
    objects = build(K8S / "overlays" / "production")
    assert find(objects, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
    (container,) = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert not container["image"].endswith(":latest")
    assert container["resources"]["requests"] == container["resources"]["limits"]


@needs_kustomize
def test_queue_depth_overlay_scales_on_queue_depth_and_cpu():
    hpa = find(build(K8S / "overlays" / "queue-depth-hpa"), "HorizontalPodAutoscaler")
    metrics = {metric["type"]: metric for metric in hpa["spec"]["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "deconvseg_queue_depth"
    assert metrics["Resource"]["resource"]["name"] == "cpu"


def test_adapter_rule_serves_the_metric_the_queue_depth_hpa_asks_for():
    (patch,) = patch_files(K8S / "overlays" / "queue-depth-hpa")
    (hpa,) = load_objects(patch)
    asked = {metric["pods"]["metric"]["name"] for metric in hpa["spec"]["metrics"]
             if metric["type"] == "Pods"}
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    served = {rule["name"]["as"] for rule in rules}
    assert asked and asked <= served
    for rule in rules:
        assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"


def test_adapter_rule_reads_a_gauge_the_server_exports():
    exported = Metrics().render().decode()
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    series = rule["seriesQuery"].split("{")[0]
    assert f"# TYPE {series} gauge" in exported
