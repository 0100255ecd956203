"""Optional API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time.

A route asks for the key by declaring the `APIKey` dependency, which puts a security
requirement on it in the OpenAPI schema. `ApiKeyMiddleware` enforces the key on exactly those
paths before the app runs, so an unauthenticated upload is refused with 401 without reading its
body (the dependency alone would run only after FastAPI has parsed the multipart body).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import APIError, error_body
from app.middleware import RouteLabel, send_json

bearer_scheme = HTTPBearer(auto_error=False, description="DECONVSEG_API_KEY as a bearer token")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False,
                             description="DECONVSEG_API_KEY in the X-API-Key header")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="deconvseg"'}
MESSAGE = "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def key_matches(supplied: str, expected: SecretStr) -> bool:
    """Constant-time comparison of fixed-length digests (no timing signal, not even length)."""
    return hmac.compare_digest(hashlib.sha256(supplied.encode()).digest(),
                               hashlib.sha256(expected.get_secret_value().encode()).digest())


def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    header_key: Annotated[str | None, Depends(header_scheme)],
) -> None:
    """Pass when no key is configured or the request carries it; else 401."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    supplied = bearer.credentials if bearer is not None else header_key or ""
    if not key_matches(supplied, expected):
        raise APIError(401, "unauthorized", MESSAGE, CHALLENGE)


APIKey = Depends(require_api_key)


def protected_paths(openapi: dict[str, Any]) -> dict[str, re.Pattern]:
    """Path template → regex, for every path with an operation that requires the key."""
    return {path: compile_path(path)[0] for path, item in openapi["paths"].items()
            if any(isinstance(op, dict) and op.get("security") for op in item.values())}


def _supplied_key(scope: Scope) -> str:
    headers = dict(scope.get("headers", []))
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get(b"x-api-key", b"").decode("latin-1")


class ApiKeyMiddleware:
    """401 before the body is read, on the paths whose operations require the key."""

    def __init__(self, app: ASGIApp, api_key: SecretStr | None,
                 openapi: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.api_key = api_key
        self.openapi = openapi  # the app's schema, built once on first use
        self._protected: dict[str, re.Pattern] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.api_key is not None:
            if self._protected is None:
                self._protected = protected_paths(self.openapi())
            path = next((template for template, regex in self._protected.items()
                         if regex.match(scope["path"])), None)
            if path is not None and not key_matches(_supplied_key(scope), self.api_key):
                scope["route"] = RouteLabel(path)  # metrics count it under its route
                return await send_json(send, 401, error_body("unauthorized", MESSAGE), CHALLENGE)
        await self.app(scope, receive, send)
