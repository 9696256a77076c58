"""Every request body of the management API refuses a field it does not know, at every level: a typo
like `"delay"` is a 422 naming it, never a default silently kept. Read from the gateway's one OpenAPI
document, so a new route or a new nested model is held to it without being listed here."""

from typing import Any

import pytest

from gateway.app import build

DOCUMENT = build().openapi()
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]
BODIES = [
    (method.upper(), path, operation["requestBody"]["content"]["application/json"]["schema"])
    for path, operations in DOCUMENT["paths"].items()
    if path.startswith("/api/v1/")
    for method, operation in operations.items()
    if "application/json" in operation.get("requestBody", {}).get("content", {})
]


def lenient(schema: Any, where: str, seen: set[str]) -> list[str]:
    """Where an object with named fields would keep one it does not name (a free-form map is left to its checks)."""
    if not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        seen.add(name)
        return lenient(SCHEMAS[name], name, seen)
    found = [where] if "properties" in schema and schema.get("additionalProperties") is not False else []
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        found += [w for i, s in enumerate(schema.get(key, [])) for w in lenient(s, f"{where}.{key}[{i}]", seen)]
    for key in ("items", "additionalProperties"):
        found += lenient(schema.get(key), f"{where}.{key}", seen)
    for name, field in schema.get("properties", {}).items():
        found += lenient(field, f"{where}.{name}", seen)
    return found


def test_the_management_routes_with_a_body_are_all_found() -> None:
    paths = {(method, path) for method, path, _ in BODIES}
    assert ("POST", "/api/v1/segments") in paths and ("PATCH", "/api/v1/campaigns/{campaign_id}") in paths
    assert ("POST", "/api/v1/api-keys") in paths


@pytest.mark.parametrize("method, path, schema", BODIES, ids=[f"{m} {p}" for m, p, _ in BODIES])
def test_every_request_body_refuses_unknown_fields_at_every_level(method: str, path: str, schema: dict[str, Any]) -> None:
    assert lenient(schema, "body", set()) == [], f"{method} {path} keeps unknown fields there"
