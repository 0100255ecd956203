"""Keys: the API key (`DECONVSEG_API_KEY`, every API route) and the admin key
(`DECONVSEG_ADMIN_KEY`, the model-control routes). Each is sent as `Authorization: Bearer KEY`
or in its own header (`X-API-Key`, `X-Admin-Key`) and compared in constant time.

A route asks for a key by declaring its dependency (`APIKey`, `AdminKey`), which puts a security
requirement on it in the OpenAPI schema; `keys_as_configured` keeps that requirement only while
the key is set, so the schema describes the server as it runs. `KeyMiddleware` enforces the key
on exactly the paths the schema marks, before the app runs, so an unauthenticated upload is
refused with 401 without reading its body (the dependency alone would run only after FastAPI has
parsed the multipart body).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import Unauthorized
from app.middleware import RouteLabel
from app.responses import send_error
from app.settings import Settings


@dataclass(frozen=True)
class KeyKind:
    setting: str  # the Settings field holding the key
    header: str  # the header that may carry it instead of Authorization: Bearer
    schemes: tuple[str, str]  # OpenAPI security scheme names (bearer, header)

    def refusal(self) -> Unauthorized:
        return Unauthorized("unauthorized", f"a valid {self.noun} is required: send "
                                            f"'Authorization: Bearer <key>' or "
                                            f"'{self.header}: <key>'")

    @property
    def noun(self) -> str:
        return "admin key" if self.setting == "admin_key" else "API key"


API = KeyKind("api_key", "X-API-Key", ("APIKeyBearer", "APIKeyHeader"))
ADMIN = KeyKind("admin_key", "X-Admin-Key", ("AdminKeyBearer", "AdminKeyHeader"))


def key_matches(supplied: str, expected: SecretStr) -> bool:
    """Constant-time comparison of fixed-length digests (no timing signal, not even length)."""
    return hmac.compare_digest(hashlib.sha256(supplied.encode()).digest(),
                               hashlib.sha256(expected.get_secret_value().encode()).digest())


def _schemes(kind: KeyKind) -> tuple[HTTPBearer, APIKeyHeader]:
    variable = f"DECONVSEG_{kind.setting.upper()}"
    return (HTTPBearer(auto_error=False, scheme_name=kind.schemes[0],
                       description=f"{variable} as a bearer token"),
            APIKeyHeader(name=kind.header, auto_error=False, scheme_name=kind.schemes[1],
                         description=f"{variable} in the {kind.header} header"))


def _check(request: Request, kind: KeyKind, token: HTTPAuthorizationCredentials | None,
           header_key: str | None) -> None:
    """Pass when no key is configured or the request carries it; else 401."""
    expected = getattr(request.app.state.settings, kind.setting)
    if expected is None:
        return
    supplied = token.credentials if token is not None else header_key or ""
    if not key_matches(supplied, expected):
        raise kind.refusal()


_api_bearer, _api_header = _schemes(API)
_admin_bearer, _admin_header = _schemes(ADMIN)


async def require_api_key(
        request: Request,
        token: Annotated[HTTPAuthorizationCredentials | None, Depends(_api_bearer)],
        header_key: Annotated[str | None, Depends(_api_header)]) -> None:
    _check(request, API, token, header_key)


async def require_admin_key(
        request: Request,
        token: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
        header_key: Annotated[str | None, Depends(_admin_header)]) -> None:
    _check(request, ADMIN, token, header_key)


# Async, like every dependency here: FastAPI runs a plain `def` dependency in its thread pool,
# two thread hops per request for a dictionary lookup.
APIKey = Depends(require_api_key)
AdminKey = Depends(require_admin_key)


def keys_as_configured(openapi: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The schema without the keys `settings` leave unset: their security requirements, their
    schemes, and the 401 of each operation left with no requirement (none can happen there)."""
    unset = {scheme for kind in (API, ADMIN) if getattr(settings, kind.setting) is None
             for scheme in kind.schemes}
    for item in openapi["paths"].values():
        for op in item.values():
            if not isinstance(op, dict) or not op.get("security"):
                continue
            op["security"] = [req for req in op["security"] if not unset & req.keys()]
            if not op["security"]:
                del op["security"]
                op.get("responses", {}).pop("401", None)
    schemes = openapi.get("components", {}).get("securitySchemes", {})
    for scheme in unset & schemes.keys():
        del schemes[scheme]
    if not schemes:
        openapi.get("components", {}).pop("securitySchemes", None)
    return openapi


def protected_paths(openapi: dict[str, Any], kind: KeyKind = API) -> dict[str, re.Pattern]:
    """Path template → regex, for every path with an operation that requires `kind`'s key."""
    def requires(op: Any) -> bool:
        return isinstance(op, dict) and any(
            scheme in kind.schemes for req in op.get("security", []) for scheme in req)

    return {path: compile_path(path)[0] for path, item in openapi["paths"].items()
            if any(requires(op) for op in item.values())}


def supplied_key(scope: Scope, header: str) -> str:
    headers = dict(scope.get("headers", []))
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get(header.lower().encode(), b"").decode("latin-1")


class KeyMiddleware:
    """401 before the body is read, on the paths whose operations require `kind`'s key."""

    def __init__(self, app: ASGIApp, key: SecretStr | None,
                 openapi: Callable[[], dict[str, Any]], kind: KeyKind = API) -> None:
        self.app = app
        self.key = key
        self.kind = kind
        self.openapi = openapi  # the app's schema, built once on first use
        self._protected: dict[str, re.Pattern] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.key is not None:
            if self._protected is None:
                self._protected = protected_paths(self.openapi(), self.kind)
            path = next((template for template, regex in self._protected.items()
                         if regex.match(scope["path"])), None)
            if path is not None and not key_matches(supplied_key(scope, self.kind.header),
                                                    self.key):
                scope["route"] = RouteLabel(path)  # metrics count it under its route
                return await send_error(send, self.kind.refusal(), scope["path"])
        await self.app(scope, receive, send)
