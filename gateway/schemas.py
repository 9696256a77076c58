"""Gateway I/O shapes."""

from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class WorkspaceCreated(BaseModel):
    """Credentials of a new workspace; the API key is shown only this once."""

    workspace_id: str
    name: str
    write_key: str
    api_key: str


Scope = Literal[
    "admin",
    "users:read", "users:write",
    "segments:read", "segments:write",
    "campaigns:read", "campaigns:write",
    "ingest:read", "ingest:write",
    "api_keys:read", "api_keys:write",
    "channels:read", "channels:write",
]


class ApiKeyCreate(BaseModel):
    """A new API key: a name for people, and what it may do (write includes read; `admin` is everything)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(get_args(Scope)))]


class ApiKeyOut(BaseModel):
    """An API key as listed: never the key itself, only its first characters."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    """A key just made: `key` is shown this once (only its hash is kept)."""

    key: str


class ApiKeyList(BaseModel):
    api_keys: list[ApiKeyOut]
