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


async def test_a_refused_upload_is_read_to_its_end_and_no_further():
    """The refusal drains the body (so the connection can carry the next request) and stops at
    the last chunk: a read past it would wait for a request that is not there."""
    chunks = [{"type": "http.request", "body": b"a", "more_body": True},
              {"type": "http.request", "body": b"b", "more_body": True},
              {"type": "http.request", "body": b"c", "more_body": False},
              {"type": "http.request", "body": b"next request", "more_body": False}]
    read = []

    async def receive():
        read.append(chunks[len(read)])
        return read[-1]

    await middleware._drain(receive)
    assert [m["body"] for m in read] == [b"a", b"b", b"c"]


async def test_draining_stops_at_a_disconnect():
    messages = [{"type": "http.request", "body": b"a", "more_body": True},
                {"type": "http.disconnect"}]
    read = []

    async def receive():
        read.append(messages[len(read)])
        return read[-1]

    await middleware._drain(receive)
    assert len(read) == 2


async def test_draining_stops_at_a_message_that_does_not_say_more_body():
    """ASGI's `more_body` defaults to False: a message without it is the last one."""
    messages = [{"type": "http.request", "body": b"all"}, {"type": "http.request", "body": b"x"}]
    read = []

    async def receive():
        read.append(messages[len(read)])
        return read[-1]

    await middleware._drain(receive)
    assert [m["body"] for m in read] == [b"all"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/segment"), ("POST", "/other")])
async def test_only_posts_to_the_shed_paths_are_refused(method, path):
    ran = []

    def check():
        raise errors.queue_full(16)

    async def app(scope, receive, send):
        ran.append(scope["path"])

    shed = LoadShedMiddleware(app, check, re.compile("/segment"), lambda p: p)
    await shed({"type": "http", "method": method, "path": path, "headers": []}, None, None)
    assert ran == [path]


async def test_a_shed_request_is_labelled_with_its_route_template_for_the_metrics():
    def check():
        raise errors.queue_full(16)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    scope = {"type": "http", "method": "POST", "path": "/models/m/segment", "headers": []}
    shed = LoadShedMiddleware(None, check, re.compile("/models/[^/]+/segment"),
                              lambda path: "/models/{name}/segment")
    await shed(scope, receive, send)
    assert scope["route"] == middleware.RouteLabel("/models/{name}/segment")


@pytest.mark.parametrize("wrap", [
    lambda app, _metrics: middleware.BodyLimitMiddleware(app, 10),
    lambda app, metrics: middleware.RequestMetricsMiddleware(app, metrics),
], ids=["body limit", "request metrics"])
async def test_other_scopes_pass_through_untouched_and_uncounted(wrap):
    from app.metrics import Metrics
    seen = []

    async def app(scope, receive, send):
        seen.append((scope, receive, send))

    async def receive():
        return {}

    async def send(message):
        pass

    scope = {"type": "lifespan"}
    metrics = Metrics()
    await wrap(app, metrics)(scope, receive, send)
    assert seen == [(scope, receive, send)]
    assert _sample(metrics, "deconvseg_requests_total",
                   {"route": "unmatched", "status": "500"}) is None


async def test_the_body_limit_takes_a_scope_without_headers():
    ran = []

    async def app(scope, receive, send):
        ran.append(scope["path"])

    await middleware.BodyLimitMiddleware(app, 10)({"type": "http", "path": "/x"}, None, None)
    assert ran == ["/x"]


async def test_a_content_length_that_is_not_a_number_is_a_400():
    import json
    sent = []

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        raise AssertionError("the app ran")

    scope = {"type": "http", "path": "/segment", "headers": [(b"content-length", b"12a")]}
    await middleware.BodyLimitMiddleware(app, 10)(scope, None, send)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"] == {
        "code": "bad_request", "message": "the Content-Length header is not a number"}


async def test_a_shed_refusal_keeps_the_connection_open():
    def check():
        raise errors.queue_full(16)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    shed = LoadShedMiddleware(None, check, re.compile("/segment"), lambda p: p)
    await shed({"type": "http", "method": "POST", "path": "/segment", "headers": []},
               receive, send)
    assert sent[0]["status"] == 503
    assert (b"connection", b"close") not in sent[0]["headers"]


def chunks(*sizes):
    parts = [{"type": "http.request", "body": b"x" * n, "more_body": True} for n in sizes]
    parts[-1]["more_body"] = False
    return iter(parts)


async def test_a_streamed_body_over_the_limit_gets_the_413_instead_of_the_apps_answer():
    import json
    body = chunks(6, 6)

    async def receive():
        return next(body)

    async def app(scope, receive, send):  # as FastAPI does: a cut-off body becomes its 400
        try:
            while (await receive())["more_body"]:
                pass
        except middleware.BodyTooLarge:
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

    sent = []

    async def send(message):
        sent.append(message)

    await middleware.BodyLimitMiddleware(app, 10)(
        {"type": "http", "path": "/segment", "headers": []}, receive, send)
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [413]
    assert json.loads(sent[1]["body"])["error"]["message"] == (
        "the request body is over 10 bytes; the limit is 10 bytes")


async def test_a_response_already_started_is_not_followed_by_a_413():
    body = chunks(6, 6)

    async def receive():
        return next(body)

    async def app(scope, receive, send):  # answers first, reads the body afterwards
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive())["more_body"]:
            pass

    sent = []

    async def send(message):
        sent.append(message)

    await middleware.BodyLimitMiddleware(app, 10)(
        {"type": "http", "path": "/segment", "headers": []}, receive, send)
    assert sent == [{"type": "http.response.start", "status": 200, "headers": []}]


async def test_a_body_over_the_limit_the_app_does_not_catch_still_gets_one_413():
    import json
    body = chunks(6, 6)

    async def receive():
        return next(body)

    async def app(scope, receive, send):  # reads on; the cut-off raises through it
        while (await receive())["more_body"]:
            pass

    sent = []

    async def send(message):
        sent.append(message)

    await middleware.BodyLimitMiddleware(app, 10)(
        {"type": "http", "path": "/segment", "headers": []}, receive, send)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [413]
    assert json.loads(sent[1]["body"])["error"] == {
        "code": "payload_too_large",
        "message": "the request body is over 10 bytes; the limit is 10 bytes"}


def test_load_shedding_answers_at_once_unless_given_a_pace():
    assert LoadShedMiddleware(None, lambda: None, re.compile("/segment"), str).pace_s == 0.0


def _sample(metrics, name, labels):
    return metrics.registry.get_sample_value(name, labels)


async def test_a_request_that_fails_before_answering_is_counted_as_500_and_timed():
    from app.metrics import Metrics

    async def app(scope, receive, send):
        scope["route"] = middleware.RouteLabel("/segment")
        raise RuntimeError("boom")

    metrics = Metrics()
    with pytest.raises(RuntimeError):
        await middleware.RequestMetricsMiddleware(app, metrics)(
            {"type": "http", "path": "/segment"}, None, None)
    assert _sample(metrics, "deconvseg_requests_total",
                   {"route": "/segment", "status": "500"}) == 1.0
    assert _sample(metrics, "deconvseg_request_seconds_count", {"route": "/segment"}) == 1.0
    seconds = _sample(metrics, "deconvseg_request_seconds_sum", {"route": "/segment"})
    assert 0 <= seconds < 60  # a duration, not a clock reading
