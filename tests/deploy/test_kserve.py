"""deploy/k8s/kserve/inferenceservice.yaml against KServe's own CRD schema (shipped in
tests/deploy/schemas, see its README) with unknown fields refused, and against the Deployment
it mirrors: same image, probes and locked-down container, speaking the v2 protocol."""

from __future__ import annotations

import copy
import gzip
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.k8s import BASE, INFERENCE_SERVICE, find, load_objects, settings_env

CRD = Path(__file__).parent / "schemas" / "serving.kserve.io_inferenceservices.yaml.gz"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def refuse_unknown_fields(schema: Any) -> None:
    """Make every object schema closed, as the API server's strict field validation is (a CRD's
    schema leaves unknown fields to pruning, which would drop a misspelled field silently)."""
    if isinstance(schema, dict):
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for value in schema.values():
            refuse_unknown_fields(value)
    elif isinstance(schema, list):
        for value in schema:
            refuse_unknown_fields(value)


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    (obj,) = load_objects(INFERENCE_SERVICE)
    return obj


@pytest.fixture(scope="module")
def validator(service) -> jsonschema.protocols.Validator:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(gzip.decompress(CRD.read_bytes()), Loader=loader)
    group, version = service["apiVersion"].split("/")
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"]) == (group, service["kind"])
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = served["schema"]["openAPIV3Schema"]
    refuse_unknown_fields(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return find(load_objects(BASE / "deployment.yaml"), "Deployment")


def predictor_container(service: dict[str, Any]) -> dict[str, Any]:
    (container,) = service["spec"]["predictor"]["containers"]
    return container


def test_inference_service_passes_the_kserve_crd_schema(service, validator):
    errors = [f"{list(error.absolute_path)}: {error.message}"
              for error in validator.iter_errors(service)]
    assert not errors


def test_crd_schema_refuses_protocol_version_on_a_custom_predictor(service, validator):
    # protocolVersion belongs to predictor.model (a ServingRuntime); a custom container says
    # its protocol in PROTOCOL instead, which is why the manifest does so.
    wrong = copy.deepcopy(service)
    wrong["spec"]["predictor"]["protocolVersion"] = "v2"
    assert not validator.is_valid(wrong)


def test_predictor_is_one_custom_container_speaking_v2(service):
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1",
                                                        "InferenceService")
    predictor = service["spec"]["predictor"]
    assert not {"model", "pytorch", "onnx", "triton", "sklearn"} & predictor.keys()
    container = predictor_container(service)
    assert container["name"] == "kserve-container"  # the name KServe routes to
    assert settings_env(container, [])["PROTOCOL"] == "v2"


def test_predictor_runs_the_deployments_image(service, deployment):
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert predictor_container(service)["image"] == container["image"]


def test_predictor_serves_the_base_claim_where_kserve_mounts_it(service):
    claim = find(load_objects(BASE / "pvc.yaml"), "PersistentVolumeClaim")["metadata"]["name"]
    env = settings_env(predictor_container(service), [])
    assert env["STORAGE_URI"] == f"pvc://{claim}"
    assert env["DECONVSEG_MODEL_REPOSITORY"] == "/mnt/models"  # KServe's model mount path


def test_predictor_probes_lifecycle_and_security_equal_the_deployments(service, deployment):
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    predictor = service["spec"]["predictor"]
    theirs = predictor_container(service)
    for probe in PROBES:
        ours = {**container[probe], "httpGet": {**container[probe]["httpGet"], "port": None}}
        other = {**theirs[probe], "httpGet": {**theirs[probe]["httpGet"], "port": None}}
        assert other == ours, probe
    assert theirs["lifecycle"] == container["lifecycle"]
    assert theirs["securityContext"] == container["securityContext"]
    assert theirs["resources"] == container["resources"]
    assert predictor["terminationGracePeriodSeconds"] == pod["terminationGracePeriodSeconds"]
