"""Pure-ASGI middleware: the upload byte limit, load shedding and per-route request metrics."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import InvalidInput, ServingError, TooLarge
from app.metrics import Metrics
from app.responses import send_error


class BodyTooLarge(Exception):
    """Raised from `receive` once a streamed body passes the limit."""


@dataclass(frozen=True)
class RouteLabel:
    """Stands in for the matched route in `scope["route"]` when a middleware answers a request
    itself, so that the metrics count it under its route template."""

    path: str


class BodyLimitMiddleware:
    """413 for a Content-Length over the limit before any body byte is read; chunked or
    under-declared bodies are counted as they stream and cut off at the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: str) -> TooLarge:
        return TooLarge("payload_too_large",
                        f"the request body is {size}; the limit is {self.max_bytes:,} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                return await send_error(send, InvalidInput(
                    "bad_request", "the Content-Length header is not a number"), path)
            if length > self.max_bytes:
                return await send_error(send, self._too_large(f"{length:,} bytes"), path)
        received = 0
        exceeded = replaced = started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app made of the cut-off body (FastAPI turns it into a 400), the client
            # gets the 413 that explains it.
            nonlocal replaced, started
            if exceeded and not started:
                if not replaced:
                    replaced = True
                    await send_error(send, self._too_large(f"over {self.max_bytes:,} bytes"),
                                     path)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not started and not replaced:
                await send_error(send, self._too_large(f"over {self.max_bytes:,} bytes"), path)


async def _drain(receive: Receive) -> None:
    """Read the request body to its end without keeping it."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


class LoadShedMiddleware:
    """503 for uploads to the segmentation routes while the server cannot take them (`check`
    raises), before the multipart body is parsed or any image decoded: the body is read and
    dropped, so the refusal is cheap under a burst and the connection stays usable."""

    def __init__(self, app: ASGIApp, check: Callable[[], None], paths: re.Pattern,
                 route_of: Callable[[str], str], pace_s: float = 0.0) -> None:
        self.app = app
        self.check = check
        self.paths = paths
        self.route_of = route_of  # path → route template, for the metrics label
        # A `queue_full` refusal is answered after `pace_s`: clients that retry at once (a
        # flood) then send fewer requests, and the cores go to the admitted ones.
        self.pace_s = pace_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self.paths.fullmatch(
                scope["path"]):
            try:
                self.check()
            except ServingError as exc:
                scope["route"] = RouteLabel(self.route_of(scope["path"]))
                await _drain(receive)
                if exc.code == "queue_full" and self.pace_s:
                    await asyncio.sleep(self.pace_s)
                return await send_error(send, exc, scope["path"], close=False)
        await self.app(scope, receive, send)


class RequestMetricsMiddleware:
    """Counts requests by route template and status, and times them."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        t0 = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            # The router records the matched route in the scope; unmatched paths share a label.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.request(route, status, time.perf_counter() - t0)
