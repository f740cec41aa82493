"""The OpenAPI document (app/api/openapi.py): it covers every route the app has, describes
only routes that exist, is valid OpenAPI 3.1, and is what ``GET /api/v1/openapi.json`` serves.

A new route must land in the document or in :data:`NOT_DOCUMENTED` with its reason; the
live fuzzing of the documented routes is in ``test_schemathesis.py``."""

from __future__ import annotations

import json
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from app.api import openapi
from app.api.errors import _TYPES as ERROR_TYPES
from app.api.server import build_app
from app.core.config.settings import FIELD_NAMES, RUNTIME_SETTABLE

pytestmark = pytest.mark.timeout(60)

NOT_DOCUMENTED: dict[tuple[str, str], str] = {
    # (method, path as the router writes it, without the regex of a variable): why it is left out
    # Ollama's own API (app/api/ollama): its shapes are Ollama's, documented by Ollama (docs/api.md)
    ("GET", "/"): "Ollama's API: 'Ollama is running'",
    ("GET", "/api/version"): "Ollama's API, documented by Ollama",
    ("GET", "/api/tags"): "Ollama's API, documented by Ollama",
    ("GET", "/api/ps"): "Ollama's API, documented by Ollama",
    ("POST", "/api/show"): "Ollama's API, documented by Ollama",
    ("POST", "/api/chat"): "Ollama's API, documented by Ollama",
    ("POST", "/api/generate"): "Ollama's API, documented by Ollama",
    ("POST", "/api/embed"): "Ollama's API, documented by Ollama",
    ("POST", "/api/embeddings"): "Ollama's API, documented by Ollama",
    ("POST", "/api/pull"): "Ollama's API, documented by Ollama",
    ("DELETE", "/api/delete"): "Ollama's API, documented by Ollama",
    ("POST", "/api/create"): "Ollama's API: 501, with what to do instead",
    ("POST", "/api/copy"): "Ollama's API: 501, with what to do instead",
    ("POST", "/api/push"): "Ollama's API: 501, with what to do instead",
    ("HEAD", "/api/blobs/{digest}"): "Ollama's API: 501, with what to do instead",
    ("POST", "/api/blobs/{digest}"): "Ollama's API: 501, with what to do instead",
}
"""Routes of the app that the document leaves out on purpose, each with its reason."""

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _app_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route; aiohttp's implicit HEAD of a GET is left out
    (it is the GET without a body, and OpenAPI documents it with the GET)."""
    routes = {(route.method, route.resource.canonical) for route in app.router.routes() if route.resource is not None}
    return {(method, path) for method, path in routes if not (method == "HEAD" and ("GET", path) in routes)}


def _documented() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in openapi.document()["paths"].items()
            for method in item if method in METHODS}


async def test_every_route_of_the_app_is_documented_or_left_out_with_a_reason(manager_factory):
    app = build_app(await manager_factory())
    routes = _app_routes(app)
    documented = _documented()
    missing = sorted(r for r in routes if r not in documented and r not in NOT_DOCUMENTED)
    assert not missing, (f"routes neither in the OpenAPI document (app/api/openapi.py) nor in NOT_DOCUMENTED: "
                         f"{missing}")
    stale = sorted(r for r in NOT_DOCUMENTED if r not in routes)
    assert not stale, f"NOT_DOCUMENTED names routes the app no longer has: {stale}"


async def test_every_documented_operation_reaches_a_route_of_the_app(manager_factory):
    """The document describes no route that is gone: each documented path, its variables
    filled in, is matched by the app's router for that method (/v1/chat/completions by
    POST /v1/{tail})."""
    app = build_app(await manager_factory())
    for method, path in sorted(_documented()):
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        match = await app.router.resolve(make_mocked_request(method, concrete, app=app))
        assert match.http_exception is None, f"{method} {path} is documented but the app has no such route"


def test_the_document_is_valid_openapi_3_1():
    from openapi_spec_validator import OpenAPIV31SpecValidator, validate

    document = openapi.document()
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)
    assert json.loads(json.dumps(document)) == document  # plain JSON: no tuples, sets or NaN


def test_schemathesis_loads_the_document_with_every_operation():
    schemathesis = pytest.importorskip("schemathesis")

    schema = schemathesis.openapi.from_dict(openapi.document())
    operations = {(op.method.upper(), op.path) for op in (result.ok() for result in schema.get_all_operations())}
    assert operations == _documented()


def test_every_setting_and_error_type_is_described():
    """A new setting, a run-time settable one or an error type must get its schema here,
    not the empty schema app/api/openapi.py falls back to."""
    assert set(openapi._SETTING_VALUES) == set(FIELD_NAMES)
    assert set(RUNTIME_SETTABLE) <= set(openapi._SETTING_INPUTS)
    error = openapi.document()["components"]["schemas"]["Error"]["properties"]["error"]
    assert set(ERROR_TYPES.values()) <= set(error["properties"]["type"]["enum"])


def test_each_error_response_names_its_codes_and_every_route_the_guards():
    for path, item in openapi.document()["paths"].items():
        for method, op in ((m, o) for m, o in item.items() if m in METHODS):
            responses = op["responses"]
            assert {"401", "403"} <= set(responses), f"{method} {path}: the guard's answers are missing"
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    codes = response["content"]["application/json"]["schema"]["allOf"][1]
                    assert codes["properties"]["error"]["properties"]["code"]["enum"], f"{method} {path} {status}"
            if method in ("post", "patch"):
                assert "415" in responses and "requestBody" in op, f"{method} {path}"


async def test_the_route_serves_the_document(front_door):
    _manager, http, url = await front_door()
    async with http.get(url + openapi.PATH) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.json() == openapi.document()
