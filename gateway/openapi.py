"""The gateway's one OpenAPI document: its own routes and every management route the services serve
through it (the table in gateway.api), with their request and response schemas, one error envelope
and the two ways in: a write key (SDK routes) and a bearer API key (/api/v1)."""

import copy
import re
from typing import Any

from fastapi import FastAPI

from gateway.api import API_ROUTES, ApiRoute

ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "a stable code: not_found, validation_error, missing_scope, …"},
        "detail": {"description": "what was wrong: a sentence, or a list of {loc, msg} naming each field"},
    },
}
ERROR_ANSWERS = {
    "400": "malformed request",
    "401": "no valid key",
    "403": "the key lacks the scope",
    "404": "no such resource in this workspace",
    "405": "method not allowed",
    "409": "the resource's state does not allow this (named in `detail`): archived, not active, …",
    "422": "a field is invalid (named in `detail`)",
    "429": "over the workspace's rate limit; retry after Retry-After",
    "503": "a dependency is unavailable; retry after Retry-After",
}
SECURITY_SCHEMES = {
    "apiKey": {"type": "http", "scheme": "bearer", "description": "an API key (`hk_…`) as `Authorization: Bearer`"},
    "writeKey": {
        "type": "http", "scheme": "basic",
        "description": "an app's write key as the Basic user with an empty password (or `writeKey` in the body)",
    },
}
_PARAMETER = re.compile(r"\{[^}]+\}")


def _shape(path: str) -> str:
    """A path with its parameters blanked, so `/users/{user_id}` and `/users/{id}` compare equal."""
    return _PARAMETER.sub("{}", path)


def _public(route: ApiRoute) -> str:
    return f"/api/v1/{route.template}"


def _service_specs() -> list[dict[str, Any]]:
    """Each service's own document (built from its app; nothing is started)."""
    from services.dispatcher.app import build as dispatcher
    from services.ingest.app import build as ingest
    from services.profiles.app import build as profiles
    from services.scheduler.app import build as scheduler
    from services.segmenter.app import build as segmenter

    return [build().openapi() for build in (ingest, profiles, segmenter, scheduler, dispatcher)]


def _merge_schemas(into: dict[str, Any], schemas: dict[str, Any], source: str) -> None:
    for name, schema in schemas.items():
        if name in into and into[name] != schema:
            raise ValueError(f"two different schemas are both called {name!r} (one from {source})")
        into[name] = schema


def _with_envelope(operation: dict[str, Any], secured_by: str) -> dict[str, Any]:
    """The operation answering errors in Herald's one envelope, secured by the scheme its path takes."""
    operation = copy.deepcopy(operation)
    responses = operation.setdefault("responses", {})
    for status, description in ERROR_ANSWERS.items():
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    operation["security"] = [{secured_by: []}]
    return operation


def merged(own: dict[str, Any]) -> dict[str, Any]:
    """The document: the gateway's own routes (`own`, its FastAPI document: SDK calls and settings, API
    keys) and the table's routes as their services describe them; the proxy and everything internal left out."""
    document: dict[str, Any] = {
        "openapi": own["openapi"],
        "info": {
            "title": "Herald API",
            "version": own["info"]["version"],
            "description": "SDK calls (Segment's HTTP API) with a write key; the management API under /api/v1 "
            "with an API key. Every error is `{\"error\", \"detail\"}`.",
        },
        "paths": {},
        "components": {"schemas": {"Error": ERROR_SCHEMA}, "securitySchemes": SECURITY_SCHEMES},
    }
    paths: dict[str, dict[str, Any]] = document["paths"]
    schemas: dict[str, Any] = document["components"]["schemas"]
    for path, operations in own["paths"].items():
        if path == "/api/v1/{path}" or not (path.startswith("/v1/") or path.startswith("/api/v1/")):
            continue  # the proxy is described by what it forwards to; health and docs are not the API
        scheme = "apiKey" if path.startswith("/api/v1/") else "writeKey"
        paths[path] = {method: _with_envelope(op, scheme) for method, op in operations.items()}
    _merge_schemas(schemas, own.get("components", {}).get("schemas", {}), "the gateway")
    wanted = {_shape(_public(route)): route for route in API_ROUTES}
    for spec in _service_specs():
        used = False
        for path, operations in spec["paths"].items():
            route = wanted.get(_shape(path))
            if route is None:
                continue
            kept = {m: _with_envelope(op, "apiKey") for m, op in operations.items() if m.upper() in route.methods}
            if kept:
                paths.setdefault(path, {}).update(kept)
                used = True
        if used:
            _merge_schemas(schemas, spec.get("components", {}).get("schemas", {}), spec["info"]["title"])
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return document


def serve_merged(app: FastAPI) -> None:
    """Make the app's /openapi.json (and so /docs and /redoc) the merged document, built on first use."""
    own = app.openapi
    built: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        if not built:
            built.append(merged(own()))
        return built[0]

    app.openapi = openapi  # type: ignore[method-assign]
