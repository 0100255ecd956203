"""Optional API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.errors import APIError

bearer_scheme = HTTPBearer(auto_error=False, description="DECONVSEG_API_KEY as a bearer token")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False,
                             description="DECONVSEG_API_KEY in the X-API-Key header")


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
    if not hmac.compare_digest(supplied.encode(), expected.get_secret_value().encode()):
        raise APIError(401, "unauthorized",
                       "a valid API key is required: send 'Authorization: Bearer <key>' or "
                       "'X-API-Key: <key>'", {"WWW-Authenticate": 'Bearer realm="deconvseg"'})


APIKey = Depends(require_api_key)
