"""Optional API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time.

A route asks for the key by declaring the `APIKey` dependency (which also documents it in the
OpenAPI schema). `ApiKeyMiddleware` enforces it for those routes before the app runs, so an
unauthenticated upload is refused with 401 without reading its body.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import APIError, error_body
from app.middleware import send_json

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


def _needs_key(route: BaseRoute) -> bool:
    dependant = getattr(route, "dependant", None)
    return dependant is not None and any(d.call is require_api_key
                                         for d in dependant.dependencies)


def _supplied_key(scope: Scope) -> str:
    headers = dict(scope.get("headers", []))
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get(b"x-api-key", b"").decode("latin-1")


class ApiKeyMiddleware:
    """401 before the body is read, for requests to routes that declare `APIKey`."""

    def __init__(self, app: ASGIApp, api_key: SecretStr | None,
                 routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.api_key = api_key
        self.routes = routes  # the app's live route list

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.api_key is not None:
            route = next((r for r in self.routes
                          if _needs_key(r) and r.matches(scope)[0] is Match.FULL), None)
            if route is not None and not key_matches(_supplied_key(scope), self.api_key):
                scope["route"] = route  # as the router would: metrics count it by route
                return await send_json(send, 401, error_body("unauthorized", MESSAGE), CHALLENGE)
        await self.app(scope, receive, send)
