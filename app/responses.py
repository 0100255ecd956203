"""The HTTP edge: domain errors → status codes, and one JSON error shape for every response:
`{"error": {"code": "...", "message": "..."}}`."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from app import errors

log = logging.getLogger("deconvseg.errors")

STATUS: dict[type[errors.ServingError], int] = {
    errors.InvalidInput: 400, errors.LoadFailed: 400, errors.Unauthorized: 401,
    errors.NotFound: 404, errors.Conflict: 409, errors.TooLarge: 413,
    errors.UnsupportedFormat: 415, errors.ClientGone: 499, errors.Failed: 500,
    errors.Unavailable: 503, errors.TimedOut: 504,
}
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="deconvseg"'}

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               422: "invalid_request", 503: "unavailable"}


def status_of(exc: errors.ServingError) -> int:
    return next(status for kind, status in STATUS.items() if isinstance(exc, kind))


def headers_of(exc: errors.ServingError) -> dict[str, str]:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
    return headers | (CHALLENGE if isinstance(exc, errors.Unauthorized) else {})


def error_body(code: str, message: str, path: str = "/") -> dict[str, Any]:
    """The error shape for `path`: ours, or under /v2 the Open Inference Protocol's
    `{"error": "<message>"}` (a string, which tritonclient and the kserve client read), with
    our code in front of the message."""
    if path == "/v2" or path.startswith("/v2/"):
        return {"error": f"{code}: {message}"}
    return {"error": {"code": code, "message": message}}


def _json(status: int, code: str, message: str, path: str,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, path), status_code=status, headers=headers)


async def send_json(send: Send, status: int, body: dict[str, Any],
                    headers: dict[str, str] | None = None, close: bool = True) -> None:
    """A JSON response from ASGI middleware; `close` (for a body left unread) ends the
    connection after it."""
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(b"connection", b"close")] if close else []
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


async def send_error(send: Send, exc: errors.ServingError, path: str,
                     close: bool = True) -> None:
    await send_json(send, status_of(exc), error_body(exc.code, exc.message, path),
                    headers_of(exc), close)


def error_response(exc: errors.ServingError, path: str) -> JSONResponse:
    """A domain error as the response the app's handler gives it."""
    return _json(status_of(exc), exc.code, exc.message, path, headers_of(exc))


def unexpected_response(exc: Exception, path: str) -> JSONResponse:
    """500 for a fault no handler expected, logged with its traceback."""
    log.exception("unhandled error: %s", exc)
    return _json(500, "internal_error", "the server failed to handle this request; it has "
                                        "been logged", path)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.ServingError)
    async def _serving_error(request: Request, exc: errors.ServingError) -> JSONResponse:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
        message = "; ".join(parts) or "invalid request"
        if any(e.get("type") == "missing" and "file" in map(str, e.get("loc", ()))
               for e in exc.errors()):
            message += " (send the image as multipart/form-data field 'file')"
        return _json(422, "invalid_request", message, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return _json(exc.status_code, code, detail, request.url.path,
                     getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_response(exc, request.url.path)
