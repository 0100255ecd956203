"""SIGTERM under load on a real server: every request it accepted is answered, then it exits."""

import asyncio

import pytest

from tests.support.server import (
    Tally,
    multipart_request,
    server_counts,
    sigterm_under_load,
    start_server,
)
from tests.support.server import stop as stop_server
from tests.support.service import image_bytes

TIMEOUT_S = 10


@pytest.mark.slow
def test_sigterm_under_load_answers_every_accepted_request_and_exits_in_time(
        tiny_checkpoint, tmp_path):
    log, report = tmp_path / "server.log", tmp_path / "drain.json"
    env = {"DECONVSEG_CHECKPOINT": str(tiny_checkpoint), "DECONVSEG_DEVICE": "cpu",
           "DECONVSEG_THREADS": "1", "DECONVSEG_LOG_LEVEL": "info",
           "DECONVSEG_REQUEST_TIMEOUT_S": str(TIMEOUT_S), "DECONVSEG_DRAIN_REPORT": str(report)}
    proc, base = start_server(env, log=log)
    try:
        requests = [multipart_request(base, image_bytes(256, 256, seed=i)) for i in range(4)]
        tally = Tally()
        result = asyncio.run(sigterm_under_load(proc, base, requests, 8, 2, tally))
    finally:
        stop_server(proc)
    served = server_counts(report)
    received = {status: n for status, n in tally.statuses.items() if status}
    assert result["exit_status"] == 0 and result["exit_s"] < TIMEOUT_S
    assert result["answered_200_after_sigterm"] >= 1  # requests were in flight at the signal
    assert set(received) <= {200, 503}
    assert served == received  # what the server answered is exactly what the clients got
