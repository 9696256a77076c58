"""The gateway's one OpenAPI document and its offline docs, through the real gateway."""

from typing import Any

import pytest

from gateway.api import API_ROUTES, SDK_CALLS, SDK_SHORT_PATHS
from tests.integration.conftest import Edge


@pytest.fixture
async def document(edge: Edge) -> dict[str, Any]:
    r = await edge.gateway.get("/openapi.json")
    assert r.status_code == 200, r.text
    spec: dict[str, Any] = r.json()
    return spec


def _shape(path: str) -> str:
    return "/".join("{}" if part.startswith("{") else part for part in path.split("/"))


async def test_every_route_of_the_table_is_documented_with_its_methods(document: dict[str, Any]) -> None:
    documented = {(_shape(path), method.upper()) for path, ops in document["paths"].items() for method in ops}
    for route in API_ROUTES:
        for method in route.methods:
            assert (_shape(f"/api/v1/{route.template}"), method) in documented, (route, method)
    for path in (*SDK_CALLS, *SDK_SHORT_PATHS):
        assert (f"/v1/{path}", "POST") in documented
    assert ("/api/v1/api-keys", "POST") in documented and ("/v1/projects/{}/settings", "GET") in documented
    # Nothing internal: the proxy's catch-all, health, metrics and the services' own ingest route.
    assert not any("{path}" in p or p in ("/healthz", "/metrics", "/v1/{call}") for p in document["paths"])


async def test_operation_ids_are_unique_and_every_operation_is_secured(document: dict[str, Any]) -> None:
    operations = [(path, op) for path, ops in document["paths"].items() for op in ops.values()]
    ids = [op["operationId"] for _, op in operations]
    assert len(ids) == len(set(ids)), sorted(ids)
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"]["scheme"] == "bearer" and schemes["writeKey"]["scheme"] == "basic"
    for path, op in operations:
        expected = "apiKey" if path.startswith("/api/v1/") else "writeKey"
        assert op["security"] == [{expected: []}], path


async def test_every_error_is_documented_in_the_one_envelope(document: dict[str, Any]) -> None:
    assert document["components"]["schemas"]["Error"]["required"] == ["error", "detail"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for status in ("401", "404", "422", "503"):
                schema = op["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


async def test_request_and_response_schemas_are_in_the_document(document: dict[str, Any]) -> None:
    create_key = document["paths"]["/api/v1/api-keys"]["post"]
    assert "requestBody" in create_key and "201" in create_key["responses"]
    segment = document["paths"]["/api/v1/segments"]["post"]
    assert segment["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/SegmentIn")
    profile = document["paths"]["/api/v1/users/{user_id}"]["get"]["responses"]["200"]
    assert profile["content"]["application/json"]["schema"]["$ref"].endswith("/UserProfile")


@pytest.mark.parametrize("page, asset", [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
async def test_the_docs_pages_load_their_scripts_from_the_gateway(edge: Edge, page: str, asset: str) -> None:
    html = await edge.gateway.get(page)
    assert html.status_code == 200 and f"/docs-assets/{asset}" in html.text
    assert "cdn.jsdelivr" not in html.text and "fonts.googleapis" not in html.text
    script = await edge.gateway.get(f"/docs-assets/{asset}")
    assert script.status_code == 200 and len(script.content) > 100_000


@pytest.mark.parametrize("path", ["/v1/track/", "/api/v1/api-keys/", "/healthz/"])
async def test_a_trailing_slash_is_a_404_in_the_envelope_never_a_redirect(edge: Edge, path: str) -> None:
    r = await edge.gateway.get(path, headers={"authorization": f"Bearer {edge.api_key}"})
    assert r.status_code in (404, 405) and "location" not in r.headers, (r.status_code, r.headers)
    assert r.json()["error"] in ("not_found", "method_not_allowed")
