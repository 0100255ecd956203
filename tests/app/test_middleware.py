import re

import pytest

from app import errors, middleware
from app.middleware import LoadShedMiddleware


async def refuse(exc: errors.ServingError, pace_s: float, monkeypatch) -> tuple[int, list]:
    slept: list[float] = []

    async def record(seconds):
        slept.append(seconds)

    monkeypatch.setattr(middleware.asyncio, "sleep", record)

    def check():
        raise exc

    async def app(scope, receive, send):  # never reached: the request is refused before
        raise AssertionError("the app ran")

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def send(message):
        sent.append(message)

    shed = LoadShedMiddleware(app, check, re.compile("/segment"), lambda p: p, pace_s=pace_s)
    await shed({"type": "http", "method": "POST", "path": "/segment", "headers": []},
               receive, send)
    return sent[0]["status"], slept


async def test_a_queue_full_refusal_is_paced(monkeypatch):
    status, slept = await refuse(errors.queue_full(16), 0.02, monkeypatch)
    assert status == 503 and slept == [0.02]


@pytest.mark.parametrize("pace_s", [0.0, 0.02])
async def test_a_not_ready_refusal_is_answered_at_once(monkeypatch, pace_s):
    status, slept = await refuse(errors.not_ready("shutting down"), pace_s, monkeypatch)
    assert status == 503 and slept == []


async def test_no_pace_means_no_wait(monkeypatch):
    _, slept = await refuse(errors.queue_full(16), 0.0, monkeypatch)
    assert slept == []
