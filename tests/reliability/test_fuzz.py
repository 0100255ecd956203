"""Schemathesis' own command line against the served /openapi.json, as a user would run it: every
check (`--checks all`) and every phase (examples, coverage, fuzzing, stateful), on one server
with an API key (given to Schemathesis per security scheme) and on one without.

What is configured is in schemathesis.toml beside this file; the README names each exemption and
why. Generation is deterministic so that a failure here is a failure on every rerun.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.auth import API
from tests.support.server import drain_report, start_server, stop

CONFIG = Path(__file__).with_name("schemathesis.toml")
KEY = "fuzz-key-0123456789"
EXAMPLES = 50  # per operation and phase
AUTH = "".join(f'\n[auth.openapi.{scheme}]\n{field} = "{KEY}"\n'
               for scheme, field in zip(API.schemes, ("bearer", "api_key"), strict=True))


def schemathesis(url: str, config: Path, report: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", url,
         "--checks", "all", "--max-examples", str(EXAMPLES), "--generation-deterministic",
         "--no-color", "--report", "json", "--report-json-path", str(report)],
        cwd=config.parent, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("key", [KEY, None], ids=["with_api_key", "without_key"])
def test_schemathesis_with_every_check_finds_no_failure(key, tiny_checkpoint, tmp_path):
    config, report = tmp_path / "schemathesis.toml", tmp_path / "report.json"
    config.write_text(CONFIG.read_text() + (AUTH if key else ""))
    drained = tmp_path / "drain.json"
    proc, base = start_server({"DECONVSEG_CHECKPOINT": str(tiny_checkpoint),
                               "DECONVSEG_THREADS": "1", "DECONVSEG_DEVICE": "cpu",
                               "DECONVSEG_API_KEY": key or "",
                               "DECONVSEG_DRAIN_REPORT": str(drained)},
                              log=tmp_path / "server.log")
    try:
        run = schemathesis(f"{base}/openapi.json", config, report)
    finally:
        stop(proc)
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-2_000:]
    summary = json.loads(report.read_text())
    print(f"{summary['test_cases']} in {summary['running_time']:.1f} s")
    assert summary["operations"]["tested"] == summary["operations"]["total"] >= 20
    assert summary["test_cases"]["generated"] >= 500
    answered = (drain_report(drained) or {}).get("answered", {})
    assert answered.get("/segment 200", 0) > 0  # with the key (when set) uploads got through
    assert (answered.get("/segment 401", 0) > 0) == (key is not None)  # and without it, not
