"""Model versions swapped on a real server (uvicorn, a repository on disk, real clients)."""

import asyncio
import signal
import time
from collections import Counter

import httpx
import pytest

from tests.support.repository import add_version
from tests.support.server import drain_report, start_server, stop
from tests.support.service import image_bytes
from tests.support.swap import ADMIN_KEY, swap_under_load

pytestmark = pytest.mark.slow
DRAIN_LIMIT_S = 10


def serve(repo, log, report=None, module="app", **env):
    settings = {"DECONVSEG_MODEL_REPOSITORY": str(repo), "DECONVSEG_ADMIN_KEY": ADMIN_KEY,
                "DECONVSEG_THREADS": "1", "DECONVSEG_IO_THREADS": "1",
                "DECONVSEG_REQUEST_TIMEOUT_S": str(DRAIN_LIMIT_S), **env}
    if report is not None:
        settings["DECONVSEG_DRAIN_REPORT"] = str(report)
    return start_server(settings, module=module, log=log)


def test_sixteen_clients_see_only_200s_through_a_swap(tmp_path):
    add_version(tmp_path / "repo", "seg", 1)
    weights = add_version(tmp_path / "staging", "seg", 2, seed=1)
    proc, base = serve(tmp_path / "repo", tmp_path / "server.log")
    try:
        result = asyncio.run(swap_under_load(base, proc.pid, tmp_path / "repo", "seg", weights,
                                             clients=16, seconds=8, swap_at=3, image_size=64))
    finally:
        stop(proc)
    assert result["load_status"] == 200 and result["load_reply"]["serving_version"] == 2
    assert result["non_200"] == 0, result["statuses"]
    assert set(result["versions"]) == {"1", "2"}
    assert result["version_1_sent_after_switch"] == 0
    assert result["version_1_state_at_end"] == "unavailable"


async def _post_until_refused(client: httpx.AsyncClient, statuses: Counter) -> None:
    """Post until the server refuses or goes away (it is shutting down)."""
    while True:
        try:
            r = await client.post("/segment", files={"file": ("a.png", image_bytes(48, 48))})
        except httpx.TransportError:
            statuses["no response"] += 1
            return
        statuses[r.status_code] += 1
        if r.status_code != 200:
            return


async def _sigterm_during_load(proc, base, repo) -> tuple[Counter, httpx.Response | None, float]:
    statuses: Counter = Counter()
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        posting = [asyncio.create_task(_post_until_refused(client, statuses)) for _ in range(4)]
        add_version(repo, "seg", 2, seed=1)
        loading = asyncio.create_task(client.post("/v2/repository/models/seg/load",
                                                  headers={"X-Admin-Key": ADMIN_KEY}))
        for _ in range(200):  # until version 2 is loading (its warm-up takes 3 s here)
            models = (await client.get("/models")).json()
            if {"version": 2, "state": "loading", "reason": None} in models[0]["versions"]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"version 2 never started loading: {models}")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, DRAIN_LIMIT_S + 10)
        exited_after = time.monotonic() - t0
        await asyncio.gather(*posting)
        try:
            load_reply: httpx.Response | None = await loading
        except httpx.TransportError:
            load_reply = None
    return statuses, load_reply, exited_after


def test_sigterm_during_a_load_exits_cleanly_and_loses_nothing(tmp_path):
    add_version(tmp_path / "repo", "seg", 1)
    report = tmp_path / "drain.json"
    proc, base = serve(tmp_path / "repo", tmp_path / "server.log", report=report,
                       module="tests.support.slow_load_app", SLOW_WARM_UP_S="3")
    try:
        statuses, load_reply, exited_after = asyncio.run(
            _sigterm_during_load(proc, base, tmp_path / "repo"))
    finally:
        code = stop(proc)
    answered = drain_report(report)
    assert code == 0 and exited_after < DRAIN_LIMIT_S, (tmp_path / "server.log").read_text()
    assert statuses[200] > 0 and set(statuses) <= {200, 503, "no response"}
    assert answered is not None and answered["answered"].get("/segment 200", 0) == statuses[200]
    assert load_reply is None or load_reply.status_code == 503
