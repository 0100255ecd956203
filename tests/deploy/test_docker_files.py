"""No Docker engine runs here, so the Dockerfile is linted and the compose file checked."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_and_starts_like_make_run():
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^RUN make install\b", dockerfile, re.M)
    assert re.search(r"^run: install\n\t\$\(PY\) -m app$", makefile, re.M)
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.M).group(1)
    assert json.loads(cmd) == ["python", "-m", "app"]  # exec form: SIGTERM reaches uvicorn
    assert re.search(r"^USER \d+", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/readyz" in dockerfile
    assert "COPY --chown=10001:10001 weights" in dockerfile or "weights ./weights" in dockerfile


def test_compose_names_healthcheck_port_and_entry_point():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["deconvseg"]
    assert "8000:8000" in service["ports"]
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert service["command"] == ["python", "-m", "app"]
    assert service["restart"] == "unless-stopped"
    grace = int(service["stop_grace_period"].rstrip("s"))
    assert grace > float(service["environment"]["DECONVSEG_REQUEST_TIMEOUT_S"]) + 1
    assert compose["services"]["deconvseg-gpu"]["profiles"] == ["gpu"]
    nginx = compose["services"]["nginx"]
    assert nginx["profiles"] == ["scale"]
    assert nginx["environment"]["MAX_BODY"] == service["environment"][
        "DECONVSEG_MAX_UPLOAD_BYTES"]
