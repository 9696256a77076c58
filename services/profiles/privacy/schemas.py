"""API shapes of the user's rights: an erasure job, and the export document."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kernel.contracts import ConversionRecord, DeliveryRecord, InboxRecord, MembershipRecord, SendRecord
from services.profiles.privacy.domain import ErasureStatus
from services.profiles.schemas import UserProfile


class ServiceProgress(BaseModel):
    status: Literal["pending", "done"]
    at: datetime | None = Field(default=None, description="when the service finished its part")
    erased: dict[str, int] = Field(default_factory=dict, description="what it removed or anonymized, by kind")


class ErasureOut(BaseModel):
    """An erasure job: pending until a service reports its part done, running until all four have, then done."""

    erasure_id: str
    status: ErasureStatus
    requested_at: datetime
    done_at: datetime | None
    services: dict[str, ServiceProgress]


class ExportedIdentity(BaseModel):
    kind: Literal["user", "anonymous"]
    value: str
    since: datetime


class MissingPart(BaseModel):
    part: str
    reason: str


class UserExport(BaseModel):
    """Everything Herald holds on a person. Every other table of theirs the profiles service keeps
    (subscriptions, consents, ...) is a further key holding its rows."""

    model_config = ConfigDict(extra="allow")

    exported_at: datetime
    user_id: str | None
    profile: UserProfile
    identities: list[ExportedIdentity]
    merged_profile_ids: list[str] = Field(description="profiles merged into this one, whose rows are included")
    events: list[dict[str, Any]] = Field(description="every event on the person's timeline, oldest first")
    memberships: list[MembershipRecord]
    sends: list[SendRecord]
    conversions: list[ConversionRecord]
    deliveries: list[DeliveryRecord]
    inbox_messages: list[InboxRecord]
    incomplete: list[MissingPart] = Field(description="parts another service could not give (empty: the export is whole)")
