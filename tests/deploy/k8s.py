"""Reading deploy/k8s: the kustomizations, the files they name, and the objects in those files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(path.parent for path in (K8S / "overlays").glob("*/kustomization.yaml"))
INFERENCE_SERVICE = K8S / "kserve" / "inferenceservice.yaml"
ADAPTER_VALUES = K8S / "overlays" / "queue-depth-hpa" / "prometheus-adapter-values.yaml"

Object = dict[str, Any]


def load_objects(path: Path) -> list[Object]:
    """Every document in a YAML file, empty ones left out."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization(folder: Path) -> Object:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def patch_files(folder: Path) -> list[Path]:
    """The patch files one kustomization names (inline patches have no file)."""
    return [folder / patch["path"] for patch in kustomization(folder).get("patches", [])
            if "path" in patch]


def resource_files(folder: Path) -> list[Path]:
    """The resource files a kustomization builds from, following folders to their own."""
    files: list[Path] = []
    for entry in kustomization(folder).get("resources", []):
        path = (folder / entry).resolve()
        files += resource_files(path) if path.is_dir() else [path]
    return files


def identity(obj: Object) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def find(objects: list[Object], kind: str) -> Object:
    """The one object of a kind."""
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    return found


def kustomize_command() -> list[str] | None:
    """A kustomize that builds offline: the standalone binary, else kubectl's built-in one."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def build(folder: Path) -> list[Object]:
    """The objects `kubectl apply -k folder` would send."""
    command = kustomize_command()
    assert command is not None, "no kustomize or kubectl on PATH"
    result = subprocess.run([*command, str(folder)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def settings_env(container: Object, objects: list[Object]) -> dict[str, Any]:
    """The container's environment: its ConfigMaps' data (envFrom), then its own `env`, where a
    literal is a string and a reference (secretKeyRef, resourceFieldRef) stays a dict."""
    configmaps = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "ConfigMap"}
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        env[var["name"]] = var["value"] if "value" in var else var["valueFrom"]
    return env
