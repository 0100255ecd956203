"""The single-image upload routes without FastAPI's per-request machinery.

`POST /segment` (and `/models/{name}/segment`, `/models/{name}/versions/{version}/segment`) is
most of the traffic, and for a 256² image FastAPI's routing, dependency solving and multipart
parsing (python-multipart's byte-by-byte state machine, a spooled temporary file per upload)
cost the event loop more than the image's decode, mask and PNG encode together. This ASGI
middleware answers the plain case itself: a well-formed query and a multipart body holding one
`file` part, split with `bytes.find`. It then runs the route's own code
(`segment_upload`), so the response is the same, byte for byte, as FastAPI's.

Anything else goes on to FastAPI unchanged, with the body replayed if it was read: an unknown
or repeated parameter value, a version that is not a plain number, any other multipart shape
(preamble, several parts, extra fields, headers folded across lines, a missing filename) and
any other content type. So every error a malformed request gets still comes from FastAPI, and
the fast path never answers differently from it (tests/app/test_fastpath.py sends the same
requests both ways).
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.multipart import parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ServingError
from app.middleware import RouteLabel
from app.pipeline import Format, Outputs, accepts_gzip
from app.registry import Registry
from app.responses import error_response, unexpected_response
from app.routes.segment import (
    INCLUDE_PATTERN,
    MAX_TOLERANCE,
    MIN_AREA,
    segment_upload,
    upload_route,
)
from app.runtime import Runtime

SINGLE = re.compile(r"/segment|/models/(?P<name>[^/]+)/segment"
                    r"|/models/(?P<model>[^/]+)/versions/(?P<version>[1-9][0-9]{0,17})/segment")
_INCLUDE = re.compile(INCLUDE_PATTERN)
_INT = re.compile(r"[0-9]{1,18}")
_DECIMAL = re.compile(r"[0-9]{1,18}(\.[0-9]{1,18})?")
_FORMATS = {f.value: f for f in Format}
_RLE = {"compressed": True, "uncompressed": False}
# Distinct (query, Accept-Encoding) pairs whose parse is remembered: clients repeat theirs, and
# parsing one is a tenth of the event loop's work on a request; the memo empties when full.
QUERY_MEMO_SIZE = 256


class Declined(Exception):
    """Not the plain case: FastAPI answers this request."""


def parse_query(query_string: bytes, accept_encoding: bytes | None = None) -> Outputs:
    """What the route's query asks for, when each of its parameters comes at most once, in the
    plain form FastAPI would read the same way, and `Outputs.parse` takes it; else Declined, and
    FastAPI answers (its errors included). Other parameters are ignored, as FastAPI ignores
    them."""
    seen: dict[str, str] = {}
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key in ("format", "include", "min_area", "tolerance", "rle"):
            if key in seen:
                raise Declined
            seen[key] = value
    fmt = _FORMATS.get(seen.get("format", "json"))
    rle = _RLE.get(seen.get("rle", "compressed"))
    include = seen.get("include")
    min_area = seen.get("min_area", "1")
    tolerance = seen.get("tolerance")
    if (fmt is None or rle is None or not _INT.fullmatch(min_area)
            or int(min_area) < MIN_AREA
            or (include is not None and not (include.isascii() and _INCLUDE.fullmatch(include)))
            or (tolerance is not None and not (_DECIMAL.fullmatch(tolerance)
                                               and float(tolerance) <= MAX_TOLERANCE))):
        raise Declined
    options: dict[str, Any] = {} if tolerance is None else {"tolerance": float(tolerance)}
    gzip = accepts_gzip(None if accept_encoding is None else accept_encoding.decode("latin-1"))
    try:
        return Outputs.parse(fmt, include, min_area=int(min_area), compressed_rle=rle, gzip=gzip,
                             **options)
    except ServingError:  # include= for a format it does not apply to: FastAPI says so
        raise Declined from None


def boundary_of(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The multipart boundary of a `multipart/form-data` request with one Content-Type."""
    types = [value for name, value in headers if name == b"content-type"]
    if len(types) != 1:
        raise Declined
    kind, params = parse_options_header(types[0])
    boundary = params.get(b"boundary", b"")
    if kind != b"multipart/form-data" or not boundary or b"charset" in params:
        raise Declined
    return boundary


def single_file(body: bytes, boundary: bytes) -> bytes:
    """The content of the one part of a multipart body, if that part is the field `file` with a
    filename and the body has nothing else (no preamble, no other part, no epilogue but CRLF)."""
    delimiter = b"--" + boundary
    if not body.startswith(delimiter + b"\r\n"):
        raise Declined
    start = len(delimiter) + 2
    end_of_headers = body.find(b"\r\n\r\n", start)
    if end_of_headers < 0:
        raise Declined
    dispositions = []
    for line in body[start:end_of_headers].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or name[:1].isspace():
            raise Declined
        if name.lower() == b"content-disposition":
            dispositions.append(value.strip(b" \t"))
    if len(dispositions) != 1:
        raise Declined
    kind, options = parse_options_header(dispositions[0])
    if kind != b"form-data" or options.get(b"name") != b"file" or b"filename" not in options:
        raise Declined
    content_start = end_of_headers + 4
    closing = b"\r\n" + delimiter + b"--"
    content_end = body.find(b"\r\n" + delimiter, content_start)
    if content_end < 0 or not body.startswith(closing, content_end) or body[
            content_end + len(closing):] not in (b"", b"\r\n"):
        raise Declined
    return body[content_start:content_end]


class SegmentFastPath:
    """Answers the plain single-image upload itself (module docstring); the rest goes on to
    `app`. It sits inside the key, body-limit, load-shedding and metrics middleware, which see
    every request as before."""

    def __init__(self, app: ASGIApp, registry: Registry, runtime: Runtime) -> None:
        self.app = app
        self.registry = registry
        self.runtime = runtime
        self._queries: dict[tuple[bytes, bytes | None], Outputs | None] = {}  # None: Declined

    def outputs(self, query_string: bytes, accept_encoding: bytes | None) -> Outputs:
        """`parse_query`, remembered (Outputs is immutable, so requests can share one)."""
        key = (query_string, accept_encoding)
        try:
            outputs = self._queries[key]
        except KeyError:
            try:
                outputs = parse_query(query_string, accept_encoding)
            except Declined:
                outputs = None
            if len(self._queries) >= QUERY_MEMO_SIZE:
                self._queries.clear()
            self._queries[key] = outputs
        if outputs is None:
            raise Declined
        return outputs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = (SINGLE.fullmatch(scope["path"])
                   if scope["type"] == "http" and scope["method"] == "POST" else None)
        if matched is None:
            return await self.app(scope, receive, send)
        accept = next((value for name, value in scope["headers"] if name == b"accept-encoding"),
                      None)
        try:
            outputs = self.outputs(scope["query_string"], accept)
            boundary = boundary_of(scope["headers"])
        except Declined:
            return await self.app(scope, receive, send)
        chunks, last = await _read_body(receive)
        try:
            if last["type"] != "http.request":
                raise Declined  # the client left mid-body: FastAPI's handling of that stands
            data = single_file(b"".join(chunks), boundary)
        except Declined:
            return await self.app(scope, _replay(chunks, last, receive), send)
        del chunks
        started = time.perf_counter()  # as the route's: the deadline runs from the body's end
        scope["route"] = RouteLabel(upload_route(scope["path"]))  # the metrics' label
        path = scope["path"]
        name = matched["name"] or matched["model"]
        number = int(matched["version"]) if matched["version"] else None
        try:
            response = await segment_upload(receive, name, number, data, started,
                                            self.registry, self.runtime, outputs)
        except ServingError as exc:
            response = error_response(exc, path)
        except Exception as exc:  # noqa: BLE001 (the app's last-resort handler, as in FastAPI)
            response = unexpected_response(exc, path)
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> tuple[list[bytes], Message]:
    """The body's chunks, and the last message: the request's end, or a disconnect."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return chunks, message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks, message


def _replay(chunks: list[bytes], last: Message, receive: Receive) -> Receive:
    """`receive` for the app, as if the body had not been read: the chunks as one message (with
    the disconnect after them if that is how the body ended), then the client's own."""
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks),
                               "more_body": last["type"] != "http.request"}]
    if last["type"] != "http.request":
        pending.append(last)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
