"""The gateway's OpenAPI document as a contract: Schemathesis generates requests for every management
operation from it and sends them through the whole stack with a valid key. No answer may be a 5xx,
and every answer must be one the document describes (status, content type, body schema)."""

import asyncio
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.api import API_ROUTES
from herald.stack import Stack, create_workspace, set_rate_limits
from tests.conftest import Infra
from tests.fuzz.conftest import RATE_LIMIT

# Examples per operation: enough to reach each one's validation, ids and bodies; the whole run stays
# within the fuzz tier's budget (about 30 operations).
EXAMPLES = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_key(stack: Stack, infra: Infra) -> str:
    """A workspace of its own with room in its rate limits; its admin key."""
    loop = asyncio.new_event_loop()
    try:
        creds = loop.run_until_complete(create_workspace(infra.database_url, "contract"))
        limits = {"sdk": RATE_LIMIT, "api": RATE_LIMIT}
        assert loop.run_until_complete(set_rate_limits(infra.database_url, creds["workspace_id"], limits))
    finally:
        loop.close()
    return str(creds["api_key"])


@pytest.fixture(scope="module")
def management_api(stack: Stack) -> Any:
    """The document as the running gateway serves it."""
    return schemathesis.openapi.from_url(f"{stack.config.url('gateway')}/openapi.json")


def test_every_management_operation_answers_as_documented(management_api: Any, api_key: str) -> None:
    """Each /api/v1 operation in turn, its examples generated from the document (Schemathesis's pytest
    plugin does not run under this pytest, so the operations are walked here)."""
    headers = {"authorization": f"Bearer {api_key}"}
    operations = [result.ok() for result in management_api.get_all_operations()]
    checked = [op for op in operations if op.path.startswith("/api/v1/")]
    # Every route of the gateway's table, and its own API-key routes.
    assert len(checked) == sum(len(route.methods) for route in API_ROUTES) + 3, [op.label for op in checked]
    answers: Counter[int] = Counter()
    for operation in checked:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=(Phase.explicit, Phase.generate),
            suppress_health_check=list(HealthCheck),
        )
        def answers_as_documented(case: Any) -> None:
            response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
            answers[response.status_code // 100] += 1

        answers_as_documented()
    # The examples reached the services: some were served, some refused as invalid or unknown.
    assert answers[2] and answers[4] and not answers[5], answers
