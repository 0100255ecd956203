"""The pods the base Deployment and the KServe predictor describe agree with the server: probe
paths are its health routes, the port is the one it listens on, the grace period outlasts its
drain, settings are ones it accepts, and the user is the Dockerfile's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from app.main import create_app
from app.settings import ENV_PREFIX, Settings
from tests.deploy.k8s import (
    BASE,
    INFERENCE_SERVICE,
    ROOT,
    find,
    load_objects,
    resource_files,
    settings_env,
)


@dataclass(frozen=True)
class Pod:
    spec: dict[str, Any]  # a PodSpec, or KServe's predictor (a PodSpec plus its own fields)
    container: dict[str, Any]
    env: dict[str, Any]


def deployment_pod() -> Pod:
    objects = [obj for path in resource_files(BASE) for obj in load_objects(path)]
    spec = find(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return Pod(spec, container, settings_env(container, objects))


def kserve_pod() -> Pod:
    (service,) = load_objects(INFERENCE_SERVICE)
    spec = service["spec"]["predictor"]
    (container,) = spec["containers"]
    return Pod(spec, container, settings_env(container, []))


PODS = {"deployment": deployment_pod(), "kserve": kserve_pod()}
parametrize_pods = pytest.mark.parametrize("pod", PODS.values(), ids=PODS.keys())


@pytest.fixture(scope="module")
def app():
    return create_app(Settings(checkpoint="unread.pt"))  # routes only: nothing is loaded


def port_number(pod: Pod, port: int | str) -> int:
    by_name = {p["name"]: p["containerPort"] for p in pod.container["ports"]}
    return by_name[port] if isinstance(port, str) else port


def prestop_seconds(container: dict[str, Any]) -> int:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1])


@parametrize_pods
def test_grace_period_outlasts_prestop_sleep_plus_drain_limit(pod):
    default = Settings.model_fields["request_timeout_s"].default
    drain = float(pod.env.get(f"{ENV_PREFIX}REQUEST_TIMEOUT_S", default))
    assert pod.spec["terminationGracePeriodSeconds"] > prestop_seconds(pod.container) + drain


@parametrize_pods
def test_readiness_and_startup_probe_the_readiness_route(pod, app):
    for probe in ("readinessProbe", "startupProbe"):
        assert pod.container[probe]["httpGet"]["path"] == app.url_path_for("readyz")


@parametrize_pods
def test_liveness_probes_the_liveness_route(pod, app):
    assert pod.container["livenessProbe"]["httpGet"]["path"] == app.url_path_for("healthz")


@parametrize_pods
def test_container_port_and_probes_are_the_port_the_server_listens_on(pod):
    (port,) = pod.container["ports"]
    assert port["containerPort"] == int(pod.env[f"{ENV_PREFIX}PORT"])
    assert pod.env[f"{ENV_PREFIX}HOST"] == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert port_number(pod, pod.container[probe]["httpGet"]["port"]) == port["containerPort"]


@parametrize_pods
def test_pod_runs_as_the_dockerfile_user(pod):
    user, group = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M).groups()
    context = pod.spec["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(user), int(group))
    assert context["runAsNonRoot"] is True


@parametrize_pods
def test_container_is_locked_down_with_a_writable_tmp(pod):
    context = pod.container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert pod.spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    volumes = {volume["name"]: volume for volume in pod.spec["volumes"]}
    (tmp,) = [m for m in pod.container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]


@parametrize_pods
def test_every_deconvseg_variable_is_a_setting_the_server_accepts(pod, monkeypatch):
    variables = {k: v for k, v in pod.env.items() if k.startswith(ENV_PREFIX)}
    unknown = {k for k in variables if k.removeprefix(ENV_PREFIX).lower() not in
               Settings.model_fields}
    assert not unknown
    for key, value in variables.items():
        if isinstance(value, str):  # references resolve only in a cluster
            monkeypatch.setenv(key, value)
    Settings()  # raises ValidationError naming any value it refuses


@parametrize_pods
def test_torch_threads_follow_the_containers_cpu_limit(pod):
    source = pod.env[f"{ENV_PREFIX}THREADS"]["resourceFieldRef"]
    assert (source["containerName"], source["resource"]) == (pod.container["name"], "limits.cpu")
    assert source["divisor"] == "1"


@parametrize_pods
def test_admin_and_api_keys_come_from_a_secret(pod):
    for setting in ("ADMIN_KEY", "API_KEY"):
        assert "secretKeyRef" in pod.env[f"{ENV_PREFIX}{setting}"]


def test_deployment_mounts_the_model_repository_claim_read_only_where_the_setting_points():
    pod = PODS["deployment"]
    (mount,) = [m for m in pod.container["volumeMounts"]
                if m["mountPath"] == pod.env[f"{ENV_PREFIX}MODEL_REPOSITORY"]]
    assert mount["readOnly"] is True
    volumes = {volume["name"]: volume for volume in pod.spec["volumes"]}
    claim = find(load_objects(BASE / "pvc.yaml"), "PersistentVolumeClaim")["metadata"]["name"]
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim


def test_deployment_is_found_by_its_service_budget_autoscaler_and_scrape_annotation():
    objects = [obj for path in resource_files(BASE) for obj in load_objects(path)]
    deployment = find(objects, "Deployment")
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"].items()
    service = find(objects, "Service")
    assert service["spec"]["selector"].items() <= labels
    assert find(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels
    target = find(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    pod = PODS["deployment"]
    (port,) = service["spec"]["ports"]
    assert port_number(pod, port["targetPort"]) == int(pod.env[f"{ENV_PREFIX}PORT"])
    assert int(template["metadata"]["annotations"]["prometheus.io/port"]) == int(
        pod.env[f"{ENV_PREFIX}PORT"])
