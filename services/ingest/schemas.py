"""The Segment HTTP Tracking API shapes ingest accepts."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CallType = Literal["identify", "track", "page", "screen", "group", "alias"]


class SegmentCall(BaseModel):
    """One call as an SDK sends it (camelCase, Segment's names)."""

    model_config = ConfigDict(extra="allow")

    type: CallType
    userId: str | None = Field(default=None, max_length=512)
    anonymousId: str | None = Field(default=None, max_length=512)
    messageId: str | None = Field(default=None, min_length=1, max_length=256)
    previousId: str | None = Field(default=None, max_length=512)
    groupId: str | None = Field(default=None, max_length=512)
    event: str | None = Field(default=None, max_length=512)
    name: str | None = Field(default=None, max_length=512)
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None

    @field_validator("userId", "anonymousId", "previousId", "groupId", mode="before")
    @classmethod
    def _ids_as_strings(cls, value: Any) -> Any:
        # SDKs send numeric ids as numbers; Segment treats them as strings.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value or None

    @model_validator(mode="after")
    def _spec_rules(self) -> "SegmentCall":
        if self.type == "alias":
            if not self.userId or not self.previousId:
                raise ValueError("alias needs both userId and previousId")
        elif not self.userId and not self.anonymousId:
            raise ValueError("every call needs a userId or an anonymousId")
        if self.type == "track" and not self.event:
            raise ValueError("track needs a non-empty event name")
        if self.type == "group" and not self.groupId:
            raise ValueError("group needs a groupId")
        return self


class Batch(BaseModel):
    """`/v1/batch` and `/v1/import`: calls plus defaults for the whole batch."""

    model_config = ConfigDict(extra="allow")

    # Items are checked one by one: a malformed one is dropped with its reason, not the batch.
    batch: list[Any]
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)
    sentAt: datetime | None = None


class Accepted(BaseModel):
    """Segment's answer, `{"success": true}`, with how many calls of a batch were dropped when any were."""

    success: bool = True
    # Calls of the batch that were dropped (listed with why at GET /api/v1/ingest/rejections); absent when none.
    rejected: int | None = None
