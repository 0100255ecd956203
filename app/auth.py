"""Optional API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from app.errors import APIError


def require_api_key(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    supplied = x_api_key or ""
    if authorization and authorization.lower().startswith("bearer "):
        supplied = authorization[7:].strip()
    if not hmac.compare_digest(supplied.encode(), expected.get_secret_value().encode()):
        raise APIError(401, "unauthorized",
                       "a valid API key is required: send 'Authorization: Bearer <key>' or "
                       "'X-API-Key: <key>'", {"WWW-Authenticate": 'Bearer realm="deconvseg"'})


APIKey = Depends(require_api_key)
Authorized = Annotated[None, APIKey]
