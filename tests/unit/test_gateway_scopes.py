"""API key scopes: what each lets a key do, and that a key never grants more than it holds."""

from typing import get_args

import pytest

from gateway.domain import SCOPES, access_of, allows, beyond, can_manage_keys
from gateway.schemas import Scope


def test_the_schema_offers_exactly_the_scopes_the_rules_know() -> None:
    assert set(get_args(Scope)) == set(SCOPES)


@pytest.mark.parametrize(
    "scopes, family, access, allowed",
    [
        (["admin"], "api_keys", "write", True),
        (["users:read"], "users", "read", True),
        (["users:read"], "users", "write", False),
        (["users:write"], "users", "read", True),  # write includes read
        (["users:write"], "segments", "read", False),
        ([], "users", "read", False),
        (["segments:read", "campaigns:write"], "campaigns", "write", True),
    ],
)
def test_a_scope_allows_its_family_only(scopes: list[str], family: str, access: str, allowed: bool) -> None:
    assert allows(scopes, family, access) is allowed  # type: ignore[arg-type]


@pytest.mark.parametrize("method, access", [("GET", "read"), ("HEAD", "read"), ("POST", "write"), ("DELETE", "write"),
                                            ("PUT", "write"), ("PATCH", "write")])
def test_reading_needs_read_and_everything_else_write(method: str, access: str) -> None:
    assert access_of(method) == access


@pytest.mark.parametrize(
    "held, wanted, missing",
    [
        (["admin"], ["admin", "users:write"], []),
        (["users:write", "api_keys:write"], ["users:read", "users:write"], []),
        (["users:read", "api_keys:write"], ["users:write"], ["users:write"]),
        (["api_keys:write"], ["admin"], ["admin"]),
        (["segments:write", "api_keys:write"], ["segments:read", "campaigns:read"], ["campaigns:read"]),
    ],
)
def test_a_key_grants_only_what_it_holds(held: list[str], wanted: list[str], missing: list[str]) -> None:
    assert beyond(held, wanted) == missing


def test_who_can_manage_keys() -> None:
    assert can_manage_keys(["admin"]) and can_manage_keys(["api_keys:write"])
    assert not can_manage_keys(["api_keys:read"]) and not can_manage_keys(["users:write"])
