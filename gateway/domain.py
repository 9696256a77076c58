"""Pure gateway rules: what an API key's scopes let it do."""

from collections.abc import Iterable
from typing import Literal

# The resource families of the management API; a key holds read or write on each (write includes read).
Family = Literal["users", "segments", "campaigns", "ingest", "api_keys", "channels"]
FAMILIES: tuple[Family, ...] = ("users", "segments", "campaigns", "ingest", "api_keys", "channels")
Access = Literal["read", "write"]
ADMIN = "admin"  # everything, the families added later included
SCOPES: tuple[str, ...] = (ADMIN, *(f"{family}:{access}" for family in FAMILIES for access in ("read", "write")))


def access_of(method: str) -> Access:
    """Reading (GET, HEAD) needs read; anything else changes something and needs write."""
    return "read" if method in ("GET", "HEAD") else "write"


def allows(scopes: Iterable[str], family: Family, access: Access) -> bool:
    """Whether a key with `scopes` may `access` the `family`."""
    held = set(scopes)
    return ADMIN in held or f"{family}:write" in held or (access == "read" and f"{family}:read" in held)


def beyond(held: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """The scopes in `wanted` that a key holding `held` does not have itself (a key cannot grant more than it holds)."""
    held = list(held)
    missing = []
    for scope in wanted:
        if scope == ADMIN:
            covered = ADMIN in held
        else:
            family, access = scope.split(":")
            covered = allows(held, family, access)  # type: ignore[arg-type]
        if not covered:
            missing.append(scope)
    return missing


def can_manage_keys(scopes: Iterable[str]) -> bool:
    """Whether a key can create and revoke keys (a workspace must keep one that can)."""
    return allows(scopes, "api_keys", "write")
