"""The key helpers on their own: where a key is read from, and the schemes the schema shows."""

import pytest
from pydantic import SecretStr

from app.auth import (
    ADMIN,
    API,
    KeyMiddleware,
    _schemes,
    keys_as_configured,
    protected_paths,
    supplied_key,
)
from app.middleware import RouteLabel


def scope(*headers: tuple[bytes, bytes]) -> dict:
    return {"type": "http", "headers": list(headers)}


def test_a_bearer_token_is_the_supplied_key():
    assert supplied_key(scope((b"authorization", b"Bearer  s3cret ")), "X-API-Key") == "s3cret"


def test_the_bearer_scheme_is_matched_without_regard_to_case():
    assert supplied_key(scope((b"authorization", b"bEaReR s3cret")), "X-API-Key") == "s3cret"


def test_another_authorization_scheme_falls_back_to_the_key_header():
    basic = (b"authorization", b"Basic s3cret")
    assert supplied_key(scope(basic), "X-API-Key") == ""
    assert supplied_key(scope(basic, (b"x-api-key", b"k3y")), "X-API-Key") == "k3y"


def test_an_empty_bearer_token_falls_back_to_the_key_header():
    empty = (b"authorization", b"Bearer   ")
    assert supplied_key(scope(empty, (b"x-admin-key", b"adm")), "X-Admin-Key") == "adm"


def test_no_key_anywhere_is_the_empty_string():
    assert supplied_key(scope(), "X-API-Key") == ""
    assert supplied_key({"type": "http"}, "X-API-Key") == ""  # a scope without headers


def test_header_bytes_are_read_as_latin_1():
    assert supplied_key(scope((b"x-api-key", "clé".encode("latin-1"))), "X-API-Key") == "clé"


@pytest.mark.parametrize(("kind", "variable", "header"), [
    (API, "DECONVSEG_API_KEY", "X-API-Key"), (ADMIN, "DECONVSEG_ADMIN_KEY", "X-Admin-Key")])
def test_each_key_has_a_bearer_and_a_header_scheme_named_for_its_setting(kind, variable, header):
    bearer, in_header = _schemes(kind)
    assert (bearer.scheme_name, in_header.scheme_name) == kind.schemes
    assert bearer.model.description == f"{variable} as a bearer token"
    assert in_header.model.name == header
    assert in_header.model.description == f"{variable} in the {header} header"
    # auto_error off: a missing key is the route's 401 in our error format, not FastAPI's 403
    assert bearer.auto_error is False and in_header.auto_error is False


SCHEMA = {"paths": {
    "/a": {"post": {"security": [{"APIKeyBearer": []}, {"APIKeyHeader": []}]}},
    "/open": {"get": {"responses": {}}, "parameters": []},
    "/models/{name}": {"post": {"security": [{"AdminKeyHeader": []}]}},
}}


def test_protected_paths_are_those_whose_operations_require_the_kind_of_key():
    api, admin = protected_paths(SCHEMA, API), protected_paths(SCHEMA, ADMIN)
    assert set(api) == {"/a"} and set(admin) == {"/models/{name}"}
    assert admin["/models/{name}"].match("/models/m1") and not api["/a"].match("/ab")


async def call(middleware, path: str, *headers: tuple[bytes, bytes]) -> tuple[int, bool]:
    """(status sent, whether the app behind the middleware ran)."""
    sent, ran = [], []

    async def app(scope, receive, send):
        ran.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        raise AssertionError("the body was read")

    async def send(message):
        sent.append(message)

    middleware.app = app
    await middleware({"type": "http", "path": path, "headers": list(headers)}, receive, send)
    return sent[0]["status"], bool(ran)


@pytest.mark.parametrize(("path", "headers", "expected"), [
    ("/a", [], (401, False)),
    ("/a", [(b"x-api-key", b"s3cret")], (200, True)),
    ("/a", [(b"authorization", b"Bearer s3cret")], (200, True)),
    ("/a", [(b"x-api-key", b"S3cret")], (401, False)),
    ("/open", [], (200, True)),
    ("/models/m1", [], (200, True)),  # an admin path: not the API key's business
])
async def test_the_key_middleware_refuses_exactly_the_protected_paths_without_the_key(
        path, headers, expected):
    middleware = KeyMiddleware(None, SecretStr("s3cret"), lambda: SCHEMA, API)
    assert await call(middleware, path, *headers) == expected


async def test_without_a_key_configured_the_middleware_lets_everything_through():
    middleware = KeyMiddleware(None, None, lambda: SCHEMA, API)
    assert await call(middleware, "/a") == (200, True)


def settings_with(**keys):
    from app.settings import Settings
    return Settings(**keys)


def test_the_schema_loses_the_requirements_and_401s_of_unset_keys_only():
    schema = {
        "paths": {"/p": {
            "get": {"responses": {"200": {}}},  # no security: left alone
            "post": {"security": [{"AdminKeyBearer": []}], "responses": {"200": {}, "401": {}}},
            "put": {"security": [{"APIKeyBearer": []}, {"AdminKeyHeader": []}],
                    "responses": {"401": {}}},
            "delete": {"security": [{"AdminKeyHeader": []}]},  # no responses at all
            "patch": {"security": [{"AdminKeyHeader": []}], "responses": {"200": {}}},  # no 401
        }, "/q": {"parameters": []}},
        "components": {"securitySchemes": {s: {} for s in (*API.schemes, *ADMIN.schemes)}},
    }
    out = keys_as_configured(schema, settings_with(api_key="k"))
    ops = out["paths"]["/p"]
    assert ops["get"] == {"responses": {"200": {}}}
    assert ops["post"] == {"responses": {"200": {}}}
    assert ops["put"] == {"security": [{"APIKeyBearer": []}], "responses": {"401": {}}}
    assert ops["delete"] == {} and ops["patch"] == {"responses": {"200": {}}}
    assert set(out["components"]["securitySchemes"]) == set(API.schemes)


def test_with_no_key_set_the_security_schemes_are_gone():
    schema = {"paths": {"/p": {"post": {"security": [{"APIKeyHeader": []}]}}},
              "components": {"securitySchemes": {s: {} for s in API.schemes}, "schemas": {}}}
    out = keys_as_configured(schema, settings_with())
    assert out["components"] == {"schemas": {}} and out["paths"]["/p"]["post"] == {}


@pytest.mark.parametrize("schema", [{"paths": {}}, {"paths": {}, "components": {}}])
def test_a_schema_without_components_or_schemes_is_fine(schema):
    assert keys_as_configured(schema, settings_with()) == schema


@pytest.mark.parametrize(("supplied", "passes"), [(None, False), ("wrong", False), ("k3y", True)])
def test_the_route_dependency_checks_the_key_itself(supplied, passes):
    """Defence in depth: the dependency refuses on its own, whatever the middleware did."""
    from types import SimpleNamespace

    from app.auth import _check
    from app.errors import Unauthorized
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(
        settings=settings_with(api_key="k3y"))))
    if passes:
        _check(request, API, None, supplied)
    else:
        with pytest.raises(Unauthorized):
            _check(request, API, None, supplied)


async def test_the_admin_middleware_guards_the_admin_paths_and_labels_its_refusals():
    middleware = KeyMiddleware(None, SecretStr("adm"), lambda: SCHEMA, ADMIN)
    assert await call(middleware, "/a") == (200, True)  # an API path: not the admin key's
    scope = {"type": "http", "path": "/models/m1", "headers": []}
    sent = []

    async def send(message):
        sent.append(message)

    await middleware(scope, None, send)
    assert sent[0]["status"] == 401
    assert scope["route"] == RouteLabel("/models/{name}")  # counted under its template
